//! The client against the real binary with client tokens (`--jwt-secret-file`), the token
//! carried in a subprotocol and never in the URL (as the server read the upgrade, and for
//! every connection of this file), or in the query when asked: short-lived tokens refreshed
//! over the open connection ahead of `exp` and on the `expiring` notice, a reconnect with the
//! current token, a static token's expiry closing with 1008, grants refusing subscribe and
//! publish, a forged refresh refused, and a refused upgrade retried with backoff.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CorecastClient } from '../../src/index.js';
import { Server, hs256, recorder, startProxy } from '../support/server.js';

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

/** Every socket the clients of this file opened: its URL and the subprotocols it offered. */
const opened = [];
class RecordingWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    opened.push({ url, protocols });
  }
}

function client(url, options) {
  const c = new CorecastClient(url, {
    reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
    WebSocket: RecordingWebSocket,
    ...options,
  });
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

/** The `Sec-WebSocket-Protocol` header's value in an HTTP head, or null. */
function protocolHeader(head) {
  return /^sec-websocket-protocol:\s*(.*)$/im.exec(head)?.[1].trim() ?? null;
}

test('the token travels in a subprotocol, read there by the server, never in the URL or the 101', async () => {
  const srv = await server();
  const proxy = await startProxy(srv.ws);
  cleanup.push(() => proxy.close());
  const minted = [];
  const { c, events } = client(`ws://${proxy.address}/ws`, {
    token: async () => {
      const claims = { sub: 'alice', exp: now() + 600, subscribe: ['h.*'], n: minted.length };
      minted.push(hs256(SECRET, claims));
      return minted.at(-1);
    },
  });
  await c.connect();
  // The grants are the token's: the server verified the one it found in the subprotocol.
  await c.subscribe('h.a');
  await assert.rejects(c.subscribe('secret'), (e) => e.error === 'not permitted');
  assert.equal(events.of('connected')[0].protocol, 'corecast');

  proxy.down();
  await events.waitFor('disconnected');
  proxy.up();
  await events.waitFor('connected', { count: 2 });
  await events.waitFor('subscribed', { pred: (s) => s.topic === 'h.a' && s.resubscribed });
  await srv.publish('h.a', 'after');
  await events.waitFor('message');

  // The upgrades as the server read them, and its answers: each connection carried the
  // token current at the time, in the subprotocol alone; the 101 names corecast, not it.
  const upgrades = proxy.heads.filter((h) => h.response?.startsWith('HTTP/1.1 101'));
  assert.equal(upgrades.length, 2);
  for (const [i, { request, response }] of upgrades.entries()) {
    const jwt = minted[minted.length - 2 + i];
    assert.equal(request.split('\r\n')[0], 'GET /ws?envelope=1 HTTP/1.1');
    assert.equal(protocolHeader(request), `corecast, corecast.token.${jwt}`);
    assert.equal(request.split(jwt).length, 2, 'the token appears once, in the subprotocol');
    assert.equal(protocolHeader(response), 'corecast');
    assert.ok(!response.includes(jwt), 'the 101 does not send the token back');
  }
  assert.notEqual(minted.at(-2), minted.at(-1), 'a fresh token for the reconnect');
  assert.deepEqual(events.of('error'), []);
});

test('tokenIn "query": the token travels in the URL, in no subprotocol, and is taken there', async () => {
  const srv = await server();
  const proxy = await startProxy(srv.ws);
  cleanup.push(() => proxy.close());
  const jwt = token(600);
  const before = opened.length;
  const { c, events } = client(`ws://${proxy.address}/ws`, { token: jwt, tokenIn: 'query' });
  await c.connect();
  await c.subscribe('h.a');
  await assert.rejects(c.subscribe('secret'), (e) => e.error === 'not permitted');
  const [{ request, response }] = proxy.heads;
  assert.equal(request.split('\r\n')[0], `GET /ws?envelope=1&token=${jwt} HTTP/1.1`);
  assert.equal(protocolHeader(request), null);
  assert.equal(protocolHeader(response), null);
  assert.equal(events.of('connected')[0].protocol, '');
  opened.splice(before); // the check below is of the default
});

test('no connection of this file carried its token in the URL', () => {
  assert.ok(opened.length >= 8, `${opened.length} sockets opened`);
  for (const { url, protocols } of opened) {
    const u = new URL(url);
    assert.deepEqual([...u.searchParams.keys()], ['envelope'], url);
    assert.equal(protocols?.[0], 'corecast', url);
    assert.match(protocols?.[1] ?? '', /^corecast\.token\.[\w-]+\.[\w-]+\.[\w-]+$/);
  }
});
