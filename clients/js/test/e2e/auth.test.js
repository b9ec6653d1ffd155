//! The client against the real binary with client tokens (`--jwt-secret-file`): short-lived
//! tokens refreshed over the open connection ahead of `exp` and on the `expiring` notice, a
//! static token's expiry closing with 1008, grants refusing subscribe and publish, a forged
//! refresh refused, and a refused upgrade retried with backoff.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CorecastClient } from '../../src/index.js';
import { Server, hs256, recorder } from '../support/server.js';

const SECRET = 'client test secret';
const secretDir = mkdtempSync(path.join(tmpdir(), 'corecast-js-'));
const secretFile = path.join(secretDir, 'secret');
writeFileSync(secretFile, `${SECRET}\n`);

const cleanup = [() => rmSync(secretDir, { recursive: true, force: true })];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function server(extra = []) {
  const s = await Server.start(['--jwt-secret-file', secretFile, '--history', 'h.*=100/60s', ...extra]);
  cleanup.push(() => s.kill());
  return s;
}

const now = () => Math.floor(Date.now() / 1000);

/** A token for alice, valid `seconds` from now, granted h.* (subscribe and publish) and open. */
function token(seconds, secret = SECRET) {
  return hs256(secret, { sub: 'alice', exp: now() + seconds, subscribe: ['h.*', 'open'], publish: ['h.*'] });
}

function client(url, options) {
  const c = new CorecastClient(url, { reconnect: { initialDelayMs: 50, maxDelayMs: 300 }, ...options });
  const events = recorder(c);
  cleanup.push(() => c.close());
  return { c, events };
}

test('short-lived tokens are refreshed over the open connection ahead of exp', async () => {
  const srv = await server(['--jwt-refresh-grace', '1s']);
  let minted = 0;
  const { c, events } = client(srv.url(), {
    token: async () => {
      minted += 1;
      return token(3);
    },
  });
  await c.connect();
  await c.subscribe('h.a');
  // Three tokens of 2-3 s each outlived, on one connection.
  await events.waitFor('refreshed', { count: 3, ms: 12_000 });
  await srv.publish('h.a', 'still here');
  await events.waitFor('message');
  assert.deepEqual(events.messages('h.a'), [[1, 'still here']]);
  assert.deepEqual(events.of('disconnected'), []);
  assert.deepEqual(events.of('expiring'), [], 'refreshed before the server had to ask');
  assert.equal(events.of('connected').length, 1);
  assert.ok(minted >= 4);
  assert.deepEqual(events.of('error'), []);
});

test("the server's expiring notice is answered with a fresh token within the grace", async () => {
  const srv = await server(['--jwt-refresh-grace', '3s']);
  const { c, events } = client(srv.url(), { token: async () => token(2), refreshAhead: false });
  await c.connect();
  await c.subscribe('h.a');
  await events.waitFor('refreshed', { count: 2, ms: 12_000 });
  assert.ok(events.of('expiring').length >= 2, 'each refresh followed a notice');
  assert.deepEqual(events.of('disconnected'), []);
  await srv.publish('h.a', 'x');
  await events.waitFor('message');
  assert.deepEqual(events.of('error'), []);
});

test('a static token that expires is closed with 1008 and not retried', async () => {
  const srv = await server(['--jwt-refresh-grace', '1s']);
  const { c, events } = client(srv.url(), { token: token(2) });
  await c.connect();
  await events.waitFor('expiring');
  const [err] = await events.waitFor('error');
  assert.equal(err.kind, 'token');
  const [closed] = await events.waitFor('disconnected');
  assert.deepEqual([closed.code, closed.reason, closed.reconnectInMs], [1008, 'token expired', null]);
  assert.equal(c.state, 'closed');
});

test("the token's grants refuse what they do not cover, each refusal on its own request", async () => {
  const srv = await server();
  const { c, events } = client(srv.url(), { token: async () => token(600) });
  await c.connect();
  const results = await Promise.allSettled([
    c.subscribe('secret'),
    c.subscribe('open'),
    c.publish('secret', 'no'),
    c.publish('h.a', 'yes'),
    c.publish('open', 'no'),
  ]);
  assert.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? 'ok' : r.reason.error)),
    ['not permitted', 'ok', 'not permitted', 'ok', 'not permitted'],
  );
  await assert.rejects(
    c.refresh(token(600, 'another secret')),
    (e) => e.request === 'refresh' && e.error === 'bad token signature',
  );
  assert.equal((await c.refresh(token(600))).exp > now(), true);
  assert.deepEqual(c.topics, ['open']);
  assert.equal(events.of('connected').length, 1);
});

test('a refused upgrade is retried with backoff, and never connects with a bad token', async () => {
  const srv = await server();
  const { c, events } = client(srv.url(), { token: token(600, 'wrong secret') });
  c.connect().catch(() => {});
  const gone = await events.waitFor('disconnected', { count: 3 });
  assert.ok(gone.every((d) => d.code === 1006 && d.reconnectInMs !== null));
  assert.deepEqual(events.of('connected'), []);
  const metrics = await fetch(`http://${srv.api}/metrics`).then((r) => r.text());
  const refused = Number(/corecast_auth_refusals_total\{cause="bad_signature"\} (\d+)/.exec(metrics)?.[1]);
  assert.ok(refused >= 3, `${refused} upgrades refused for the signature`);
});
