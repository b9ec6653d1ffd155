//! A child process for the wss test: Node reads extra CA certificates only at start
//! (NODE_EXTRA_CA_CERTS), so the client runs here, trusting the test's self-signed
//! certificate. Prints one JSON line per step for the parent; not a test of its own.

import { createInterface } from 'node:readline';
import { CorecastClient } from '../../src/index.js';

const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const c = new CorecastClient(process.argv[2], { reconnect: false });
c.on('error', (e) => say({ error: e.message }));
c.on('message', (m) => say({ message: [m.topic, m.offset, m.data] }));
c.on('connected', (info) => say({ connected: info.extensions }));
// Bounded: the parent kills it too, but it never outlives 20 s on its own.
setTimeout(() => process.exit(3), 20_000).unref();
try {
  await c.connect();
  say({ subscribed: await c.subscribe('h.tls') });
} catch (e) {
  say({ failed: e.message });
  process.exit(2);
}
// The parent says when to stop.
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'close') break;
}
await c.close();
say({ closed: c.state });
// stdin stays referenced after readline is done with it.
process.exit(0);
