// Socket.IO peer with connection-state recovery, for the recovery benchmark: one node with the
// in-memory adapter, the only stock adapter here that can recover (the Redis pub/sub adapter of
// socketio-server.js keeps no session and no packets, so its clients cannot).
// Usage: node socketio-recovery-server.js pubsub <port>. Binds 127.0.0.1 only.
// pubsub: `subscribe` joins the room named by its argument and answers `subscribed` (an emit,
// so it carries an offset too); `publish` (topic, data) emits `m` with data to that room. With
// connectionStateRecovery every emit gets an offset as its last argument and is kept for
// maxDisconnectionDuration; a client that reconnects with its session id and last offset gets
// the events it missed, then its rooms back. WebSocket transport only, no compression.
const http = require("http");
const { Server } = require("socket.io");

const mode = process.argv[2] || "pubsub";
const port = Number(process.argv[3] || 9204);
if (mode !== "pubsub") {
  console.error(`socketio-recovery-server: only pubsub mode, not ${mode}`);
  process.exit(2);
}

const io = new Server({
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 16 * 1024 * 1024,
  pingInterval: 10000,
  pingTimeout: 20000,
  connectionStateRecovery: {
    maxDisconnectionDuration: 2 * 60 * 1000,
    skipMiddlewares: true,
  },
});
io.on("connection", (socket) => {
  socket.on("subscribe", (topic) => {
    socket.join(topic);
    socket.emit("subscribed", topic);
  });
  socket.on("publish", (topic, data) => {
    io.to(topic).emit("m", data);
  });
});
const server = http.createServer();
io.attach(server);
// The same accept backlog as corecast's, so a storm of reconnects meets the same queue.
server.listen({ port, host: "127.0.0.1", backlog: 4096 });
console.log(`socket.io recovery peer (${mode}) on 127.0.0.1:${port}`);
