// Node `ws` peer for the corecast benchmarks.
// Usage: node node-ws-server.js <relay|echo|shootout|pubsub> <port>. Binds 127.0.0.1 only.
// pubsub speaks corecast's protocol (see bun-server.js) with a set of sockets per topic.
const { WebSocketServer, WebSocket } = require("ws");
// DEFLATE=1: permessage-deflate at zlib level 1 (corecast's default level), messages of
// 128 bytes and more (corecast's default threshold).
const mode = process.argv[2] || "relay";
const deflate = process.env.DEFLATE === "1";
const port = Number(process.argv[3] || 9201);

// TLS_CERT and TLS_KEY (PEM files): serve wss through an https server.
const fs = require("fs");
const https = process.env.TLS_CERT
  ? require("https").createServer({
      cert: fs.readFileSync(process.env.TLS_CERT),
      key: fs.readFileSync(process.env.TLS_KEY),
    })
  : null;
if (https) https.listen(port, "127.0.0.1");

const wss = new WebSocketServer({
  ...(https ? { server: https } : { host: "127.0.0.1", port }),
  perMessageDeflate: deflate ? { zlibDeflateOptions: { level: 1 }, threshold: 128 } : false,
  maxPayload: 16 * 1024 * 1024,
  clientTracking: true,
});

function toAll(data, isBinary) {
  for (const c of wss.clients) {
    if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
  }
}

const topics = new Map(); // topic -> Set of sockets

function subscribe(ws, t) {
  let set = topics.get(t);
  if (!set) topics.set(t, (set = new Set()));
  set.add(ws);
  ws.topics.add(t);
  ws.send(JSON.stringify({ subscribed: t }));
}

function unsubscribe(ws, t) {
  const set = topics.get(t);
  if (set) {
    set.delete(ws);
    if (set.size === 0) topics.delete(t);
  }
  ws.topics.delete(t);
}

function pubsub(ws, data) {
  let m;
  try {
    m = JSON.parse(data.toString());
  } catch {
    ws.send(JSON.stringify({ error: "expected a JSON object" }));
    return;
  }
  if (typeof m.subscribe === "string") {
    subscribe(ws, m.subscribe);
  } else if (typeof m.unsubscribe === "string") {
    unsubscribe(ws, m.unsubscribe);
    ws.send(JSON.stringify({ unsubscribed: m.unsubscribe }));
  } else if (typeof m.publish === "string") {
    const out = typeof m.data === "string" ? m.data : JSON.stringify(m.data);
    for (const c of topics.get(m.publish) || []) {
      if (c !== ws && c.readyState === WebSocket.OPEN) c.send(out);
    }
  } else {
    ws.send(JSON.stringify({ error: "expected subscribe, unsubscribe or publish" }));
  }
}

wss.on("connection", (ws, req) => {
  ws.topics = new Set();
  if (mode === "pubsub") {
    const list = new URL(req.url, "http://x").searchParams.get("topics") || "";
    for (const t of list.split(",").filter((t) => t)) subscribe(ws, t);
    ws.on("close", () => {
      for (const t of [...ws.topics]) unsubscribe(ws, t);
    });
  }
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
    } else if (mode === "pubsub") {
      pubsub(ws, data);
    }
  });
});
wss.on("listening", () => console.log(`node ws peer (${mode}) on 127.0.0.1:${port}`));
if (https) https.on("listening", () => console.log(`node ws peer (${mode}, tls) on 127.0.0.1:${port}`));
