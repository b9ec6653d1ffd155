// Socket.IO peer with its Redis adapter, for the corecast cluster benchmark: the fan-out stack
// users would otherwise pick to run several nodes as one.
// Usage: node socketio-server.js relay <port> <redis-port>. Binds 127.0.0.1 only.
// relay: every "m" event a client emits goes to every client on every node (sender included),
// as `io.emit`, through Redis pub/sub between the nodes. WebSocket transport only, no
// compression, so clients speak plain Engine.IO v4 frames: `42["m","<payload>"]`.
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const mode = process.argv[2] || "relay";
const port = Number(process.argv[3] || 9203);
const redisPort = Number(process.argv[4] || 6379);

async function main() {
  const pub = createClient({ url: `redis://127.0.0.1:${redisPort}` });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server({
    adapter: createAdapter(pub, sub),
    transports: ["websocket"],
    perMessageDeflate: false,
    maxHttpBufferSize: 16 * 1024 * 1024,
    pingInterval: 10000,
    pingTimeout: 20000,
  });
  io.on("connection", (socket) => {
    socket.on("m", (data) => {
      if (mode === "relay") io.emit("m", data);
    });
  });
  const http = require("http").createServer();
  io.attach(http);
  http.listen(port, "127.0.0.1");
  console.log(`socket.io peer (${mode}) on 127.0.0.1:${port}, redis on ${redisPort}`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
