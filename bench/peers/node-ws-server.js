// Node `ws` peer for the corecast benchmarks.
// Usage: node node-ws-server.js <relay|echo|shootout> <port>. Binds 127.0.0.1 only.
const { WebSocketServer, WebSocket } = require("ws");
const mode = process.argv[2] || "relay";
const port = Number(process.argv[3] || 9201);

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  perMessageDeflate: false,
  maxPayload: 16 * 1024 * 1024,
  clientTracking: true,
});

function toAll(data, isBinary) {
  for (const c of wss.clients) {
    if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
  }
}

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (mode === "echo") {
      ws.send(data, { binary: isBinary });
    } else if (mode === "relay") {
      toAll(data, isBinary);
    } else if (mode === "shootout") {
      const m = JSON.parse(data.toString());
      if (m.type === "echo") {
        ws.send(data, { binary: false });
      } else if (m.type === "broadcast") {
        toAll(data, false);
        ws.send(JSON.stringify({ type: "broadcastResult", payload: m.payload }));
      }
    }
  });
});
wss.on("listening", () => console.log(`node ws peer (${mode}) on 127.0.0.1:${port}`));
