// Bun.serve WebSocket peer (uWebSockets inside) for the corecast benchmarks.
// Usage: bun bun-server.js <relay|echo|shootout|pubsub> <port>. Binds 127.0.0.1 only.
// pubsub speaks corecast's protocol: `?topics=a,b` at upgrade (each acknowledged with
// {"subscribed":"a"}), then {"subscribe":t}, {"unsubscribe":t}, {"publish":t,"data":d}; a
// publish reaches the topic's other subscribers through uWebSockets' own pub/sub.
// DEFLATE=1: permessage-deflate with uWebSockets' shared compressor and decompressor.
const mode = process.argv[2] || "relay";
const deflate = process.env.DEFLATE === "1";
// TLS_CERT and TLS_KEY (PEM files): serve wss.
const tls = process.env.TLS_CERT
  ? { cert: Bun.file(process.env.TLS_CERT), key: Bun.file(process.env.TLS_KEY) }
  : undefined;
const port = Number(process.argv[3] || 9200);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  tls,
  fetch(req, server) {
    const topics =
      mode === "pubsub"
        ? (new URL(req.url).searchParams.get("topics") || "").split(",").filter((t) => t)
        : [];
    if (server.upgrade(req, { data: { topics } })) return;
    return new Response("upgrade required", { status: 426 });
  },
  websocket: {
    maxPayloadLength: 16 * 1024 * 1024,
    // Keep-alive as Bun's users get it: idleTimeout (120 s) and sendPings (true) left at their
    // defaults, so uWebSockets pings a connection after 104 s without traffic.
    perMessageDeflate: deflate ? { compress: "shared", decompress: "shared" } : false,
    open(ws) {
      if (mode === "pubsub") {
        for (const t of ws.data.topics) {
          ws.subscribe(t);
          ws.send(JSON.stringify({ subscribed: t }));
        }
      } else {
        ws.subscribe("all");
      }
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
      } else if (mode === "pubsub") {
        let m;
        try {
          m = JSON.parse(msg);
        } catch {
          ws.send(JSON.stringify({ error: "expected a JSON object" }));
          return;
        }
        if (typeof m.subscribe === "string") {
          ws.subscribe(m.subscribe);
          ws.send(JSON.stringify({ subscribed: m.subscribe }));
        } else if (typeof m.unsubscribe === "string") {
          ws.unsubscribe(m.unsubscribe);
          ws.send(JSON.stringify({ unsubscribed: m.unsubscribe }));
        } else if (typeof m.publish === "string") {
          ws.publish(m.publish, typeof m.data === "string" ? m.data : JSON.stringify(m.data));
        } else {
          ws.send(JSON.stringify({ error: "expected subscribe, unsubscribe or publish" }));
        }
      }
    },
  },
});
console.log(`bun peer (${mode}) on 127.0.0.1:${server.port}`);
