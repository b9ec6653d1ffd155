// Bun.serve WebSocket peer (uWebSockets inside) for the corecast benchmarks.
// Usage: bun bun-server.js <relay|echo|shootout> <port>. Binds 127.0.0.1 only.
const mode = process.argv[2] || "relay";
const port = Number(process.argv[3] || 9200);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("upgrade required", { status: 426 });
  },
  websocket: {
    maxPayloadLength: 16 * 1024 * 1024,
    idleTimeout: 240,
    perMessageDeflate: false,
    open(ws) {
      ws.subscribe("all");
    },
    message(ws, msg) {
      if (mode === "echo") {
        ws.send(msg);
      } else if (mode === "relay") {
        // server.publish reaches every subscriber, the sender included (ws.publish would not).
        server.publish("all", msg);
      } else if (mode === "shootout") {
        const m = JSON.parse(msg);
        if (m.type === "echo") {
          ws.send(msg);
        } else if (m.type === "broadcast") {
          server.publish("all", msg);
          ws.send(JSON.stringify({ type: "broadcastResult", payload: m.payload }));
        }
      }
    },
  },
});
console.log(`bun peer (${mode}) on 127.0.0.1:${server.port}`);
