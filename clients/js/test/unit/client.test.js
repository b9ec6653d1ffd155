//! The client against a scripted server (a fake WebSocket): resubscribe and recovery after a
//! reconnect, no duplicate across the seam, in-flight requests failing on disconnect, every
//! request with an id and each answer settling the request of its id whatever the order,
//! envelopes for every topic (a bare frame reported, taken for no topic's), notices, the token
//! in a subprotocol and never in the URL (or in the query when asked), token refresh,
//! timeouts and when not to reconnect.

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { CorecastClient } from '../../src/index.js';
import { FakeWebSocket } from '../support/fake-websocket.js';
import { hs256, recorder, sleep } from '../support/server.js';

/** The clients a test made, closed after it: one that failed half-way does not keep reconnecting. */
const made = [];
beforeEach(() => FakeWebSocket.reset());
afterEach(() => Promise.all(made.splice(0).map((c) => c.close())));

/** A client on the fake socket whose reconnects wait 0 ms (random 0), not yet connected. */
function client(options = {}) {
  const c = new CorecastClient('ws://server.test/ws', {
    WebSocket: FakeWebSocket,
    reconnect: { initialDelayMs: 10, maxDelayMs: 10, random: () => 0 },
    ...options,
  });
  made.push(c);
  const events = recorder(c);
  return { c, events };
}

/** Lets queued microtasks and 0 ms timers run. */
const settle = () => sleep(5);

/** Connects `c` and opens its socket; returns the socket. */
async function connected(c) {
  const done = c.connect();
  await settle();
  const ws = FakeWebSocket.last;
  ws.open();
  await done;
  return ws;
}

/** Waits (bounded) for the client to make its next socket, and opens it. */
async function reconnected(count) {
  for (let i = 0; i < 200 && FakeWebSocket.made.length < count; i++) await sleep(5);
  assert.equal(FakeWebSocket.made.length, count, 'the client reconnected');
  const ws = FakeWebSocket.last;
  ws.open();
  return ws;
}

test('after a reconnect every topic is resubscribed, from its last position where it has one', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  const h = c.subscribe('h');
  const p = c.subscribe('p');
  assert.deepEqual(ws.take(), [
    { subscribe: 'h', positions: true, id: 1 },
    { subscribe: 'p', positions: true, id: 2 },
  ]);
  ws.receive({ subscribe: 'p', error: 'this topic keeps no history', id: 2 });
  ws.receive({ subscribed: 'h', offset: 2, epoch: 'e1', id: 1 });
  assert.deepEqual(ws.take(), [{ subscribe: 'p', id: 3 }], 'p falls back to a plain subscription');
  ws.receive({ subscribed: 'p', id: 3 });
  assert.deepEqual(await h, { topic: 'h', positions: true, offset: 2, epoch: 'e1', resubscribed: false });
  assert.deepEqual(await p, { topic: 'p', positions: false, resubscribed: false });
  for (let i = 3; i <= 5; i++) ws.receive({ topic: 'h', offset: i, epoch: 'e1', data: `m${i}` });
  ws.receive({ topic: 'p', data: 'plain' });

  ws.closed(1006);
  await settle();
  assert.equal(events.of('disconnected')[0].code, 1006);
  assert.equal(events.of('disconnected')[0].reconnectInMs, 0);
  const ws2 = await reconnected(2);
  // A new connection counts its ids from 1 again.
  assert.deepEqual(ws2.take(), [
    { subscribe: 'h', since: { offset: 5, epoch: 'e1' }, id: 1 },
    { subscribe: 'p', id: 2 },
  ]);
  ws2.receive({ subscribed: 'h', recovered: true, missed: 2, offset: 7, epoch: 'e1', id: 1 });
  ws2.receive({ subscribed: 'p', id: 2 });
  // The server's catch-up, with one it had already sent before the seam, then live.
  for (const i of [5, 6, 7, 7, 8]) ws2.receive({ topic: 'h', offset: i, epoch: 'e1', data: `m${i}` });
  assert.deepEqual(events.messages('h'), [
    [3, 'm3'],
    [4, 'm4'],
    [5, 'm5'],
    [6, 'm6'],
    [7, 'm7'],
    [8, 'm8'],
  ]);
  assert.deepEqual(events.messages('p'), ['plain']);
  const resubscribed = events.of('subscribed').filter((s) => s.resubscribed);
  assert.deepEqual(
    resubscribed.map((s) => [s.topic, s.recovered]),
    [
      ['h', true],
      ['p', undefined],
    ],
  );
  assert.deepEqual(events.of('notRecovered'), []);
  assert.deepEqual(c.position('h'), { offset: 8, epoch: 'e1' });
});

test('a position the server cannot recover from is reported with its reason', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  const got = [];
  c.subscribe('h', { onMessage: (m) => got.push([m.epoch, m.offset]) });
  ws.receive({ subscribed: 'h', offset: 0, epoch: null, id: 1 });
  ws.receive({ topic: 'h', offset: 1, epoch: 'e1', data: 'a' });
  ws.closed(1006);
  const ws2 = await reconnected(2);
  assert.deepEqual(ws2.take(), [{ subscribe: 'h', since: { offset: 1, epoch: 'e1' }, id: 1 }]);
  ws2.receive({ subscribed: 'h', recovered: false, reason: 'epoch changed', offset: 3, epoch: 'e2', id: 1 });
  ws2.receive({ topic: 'h', offset: 4, epoch: 'e2', data: 'b' });
  assert.deepEqual(events.of('notRecovered'), [
    {
      topic: 'h',
      positions: true,
      offset: 3,
      epoch: 'e2',
      recovered: false,
      reason: 'epoch changed',
      resubscribed: true,
    },
  ]);
  assert.deepEqual(got, [
    ['e1', 1],
    ['e2', 4],
  ]);
});

test('requests in flight are rejected when the connection drops; the topic is still resubscribed', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  const sub = c.subscribe('t');
  const pub = c.publish('t', 'x');
  const rpc = c.rpc('time');
  const unsub = c.unsubscribe('other');
  assert.deepEqual(ws.take(), [
    { subscribe: 't', positions: true, id: 1 },
    { publish: 't', data: 'x', id: 2 },
    { rpc: 'time', id: 3 },
    { unsubscribe: 'other', id: 4 },
  ]);
  ws.closed(1001, 'server shutting down');
  for (const p of [sub, pub, rpc, unsub]) {
    await assert.rejects(
      p,
      (e) => e.kind === 'disconnected' && e.code === 1001 && e.reason === 'server shutting down',
    );
  }
  await assert.rejects(c.publish('t', 'y'), (e) => e.kind === 'not-connected');
  const ws2 = await reconnected(2);
  assert.deepEqual(ws2.take(), [{ subscribe: 't', positions: true, id: 1 }]);
  // An answer meant for the old connection's requests settles nothing on the new one.
  ws2.receive({ published: 't', id: 2 });
  assert.equal(events.of('error').at(-1).kind, 'protocol');
});

test('a subscribe made while disconnected is sent at the next connection and settled by its answer', async () => {
  const { c } = client();
  const early = c.subscribe('t', { history: false });
  const ws = await connected(c);
  assert.deepEqual(ws.take(), [{ subscribe: 't', id: 1 }]);
  ws.receive({ subscribed: 't', id: 1 });
  assert.deepEqual(await early, { topic: 't', positions: false, resubscribed: false });
  assert.deepEqual(
    await c.subscribe('t'),
    { topic: 't', positions: false, resubscribed: false },
    'already subscribed',
  );
  assert.deepEqual(ws.take(), []);
});

/** Whether `promise` has settled, after what is queued has run: 'pending', 'resolved' or 'rejected'. */
async function stateOf(promise) {
  let state = 'pending';
  promise.then(
    () => (state = 'resolved'),
    () => (state = 'rejected'),
  );
  await settle();
  return state;
}

test('each publish is settled by its own answer, not by the answer of a later request', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  const p1 = c.publish('t', 'one');
  const p2 = c.publish('u', { n: 2 });
  const s = c.subscribe('w', { history: false });
  const p3 = c.publish('v', 'four', { key: 'AAPL' });
  await settle();
  // Nothing but the requests themselves, each with its id.
  assert.deepEqual(ws.take(), [
    { publish: 't', data: 'one', id: 1 },
    { publish: 'u', data: { n: 2 }, id: 2 },
    { subscribe: 'w', id: 3 },
    { publish: 'v', data: 'four', key: 'AAPL', id: 4 },
  ]);
  ws.receive({ subscribed: 'w', id: 3 });
  await s;
  assert.equal(await stateOf(p1), 'pending', 'a later answer proves nothing of p1');
  assert.equal(await stateOf(p2), 'pending');
  ws.receive({ published: 'u', id: 2 });
  assert.equal(await p2, undefined);
  assert.equal(await stateOf(p1), 'pending');
  ws.receive({ error: 'not permitted', publish: 't', id: 1 });
  await assert.rejects(
    p1,
    (e) => e.kind === 'server' && e.request === 'publish' && e.error === 'not permitted' && e.topic === 't',
  );
  ws.receive({ published: 'v', id: 4 });
  await p3;
  assert.deepEqual(events.of('error'), []);
});

test('answers out of order settle the requests of their ids: one topic, refusals first', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  const burst = Array.from({ length: 6 }, (_, i) => c.publish('t', `m${i}`));
  const rpc = c.rpc('slow', { n: 1 });
  const sub = c.subscribe('h');
  const sent = ws.take();
  assert.deepEqual(
    sent.map((f) => f.id),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
  assert.deepEqual(sent[6], { rpc: 'slow', data: { n: 1 }, id: 7 });
  // As the server does with a publish hook and the rate limit: the refusals of the rate
  // limit come at once (m3, m5), the rest once the hook answered, the RPC's and the
  // subscribe's (which waited on the topic's history) last, in reverse.
  ws.receive({ error: 'rate limit', publish: 't', id: 6 });
  ws.receive({ error: 'rate limit', publish: 't', id: 4 });
  for (const id of [1, 2, 3]) ws.receive({ published: 't', id });
  ws.receive({ error: 'no swearing', publish: 't', id: 5 });
  ws.receive({ subscribed: 'h', offset: 0, epoch: null, id: 8 });
  ws.receive({ rpc: 'slow', id: 7, data: 'done' });
  const results = await Promise.allSettled(burst);
  assert.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? 'ok' : r.reason.error)),
    ['ok', 'ok', 'ok', 'rate limit', 'no swearing', 'rate limit'],
  );
  assert.equal(await rpc, 'done');
  assert.equal((await sub).offset, 0);
  assert.deepEqual(events.of('error'), []);
});

test('refusals by the rate limit, a full lane or an unreadable request reject by id', async () => {
  const { c, events } = client({ token: () => hs256('k', { sub: 'a' }) });
  const ws = await connected(c);
  const r = c.refresh('jwt-2');
  const u = c.unsubscribe('x');
  const p = c.publish('t', 'x');
  assert.deepEqual(ws.take(), [
    { refresh: 'jwt-2', id: 1 },
    { unsubscribe: 'x', id: 2 },
    { publish: 't', data: 'x', id: 3 },
  ]);
  ws.receive({ error: 'too many requests waiting', publish: 't', id: 3 });
  ws.receive({ refresh: null, error: 'rate limit', id: 1 });
  // A request the server could not read names nothing but its id.
  ws.receive({ error: 'expected "subscribe", "unsubscribe", "publish", "refresh" or "rpc"', id: 2 });
  await assert.rejects(p, (e) => e.request === 'publish' && e.error === 'too many requests waiting');
  await assert.rejects(r, (e) => e.request === 'refresh' && e.error === 'rate limit');
  await assert.rejects(u, (e) => e.request === 'unsubscribe' && e.error.startsWith('expected'));
  // Without an id, an error is no request's: it is reported on its own.
  ws.receive({ error: 'expected a JSON object' });
  assert.deepEqual(
    events.of('error').map((e) => [e.kind, e.error]),
    [['server', 'expected a JSON object']],
  );
});

test('an answer no request waits for is reported; a late one, after its timeout, is dropped', async () => {
  const { c, events } = client({ requestTimeoutMs: 30 });
  const ws = await connected(c);
  await assert.rejects(c.publish('t', 'x'), (e) => e.kind === 'timeout');
  ws.receive({ published: 't', id: 1 });
  assert.deepEqual(events.of('error'), []);
  ws.receive({ published: 't', id: 9 });
  // An answer whose kind is not its id's request's is not taken for it.
  const p = c.publish('t', 'y');
  ws.receive({ unsubscribed: 't', id: 2 });
  assert.deepEqual(
    events.of('error').map((e) => e.kind),
    ['protocol', 'protocol'],
  );
  ws.receive({ published: 't', id: 2 });
  await p;
});

test('a server that sends no ids back: its answers are matched in order by kind and topic', async () => {
  const { c } = client();
  const ws = await connected(c);
  const a = c.subscribe('a', { history: false });
  const b = c.subscribe('b', { history: false });
  const u = c.unsubscribe('never');
  const p = c.publish('t', 'x');
  ws.take();
  ws.receive({ error: 'not subscribed', unsubscribed: 'never' });
  ws.receive({ subscribed: 'b' });
  ws.receive({ subscribe: 'a', error: 'not permitted' });
  ws.receive({ error: 'no swearing', publish: 't' });
  await assert.rejects(u, (e) => e.error === 'not subscribed');
  assert.equal((await b).topic, 'b');
  await assert.rejects(a, (e) => e.error === 'not permitted');
  await assert.rejects(p, (e) => e.error === 'no swearing');
});

test("refusals reject with the server's error; a resubscribe refused drops the topic and says so", async () => {
  const { c, events } = client({ token: () => hs256('k', { sub: 'a' }) });
  const ws = await connected(c);
  const s = c.subscribe('secret');
  const u = c.unsubscribe('never');
  const r = c.rpc('time', { tz: 'UTC' });
  assert.deepEqual(ws.take(), [
    { subscribe: 'secret', positions: true, id: 1 },
    { unsubscribe: 'never', id: 2 },
    { rpc: 'time', data: { tz: 'UTC' }, id: 3 },
  ]);
  ws.receive({ rpc: 'time', id: 3, error: 'no rpc hook' });
  ws.receive({ error: 'not permitted', subscribe: 'secret', id: 1 });
  ws.receive({ error: 'not subscribed', unsubscribed: 'never', id: 2 });
  await assert.rejects(
    s,
    (e) => e.kind === 'server' && e.request === 'subscribe' && e.error === 'not permitted',
  );
  await assert.rejects(u, (e) => e.request === 'unsubscribe' && e.error === 'not subscribed');
  await assert.rejects(r, (e) => e.request === 'rpc' && e.error === 'no rpc hook');
  assert.deepEqual(c.topics, []);

  const kept = c.subscribe('kept', { history: false });
  assert.deepEqual(ws.take(), [{ subscribe: 'kept', id: 4 }]);
  ws.receive({ subscribed: 'kept', id: 4 });
  await kept;
  ws.closed(1006);
  const ws2 = await reconnected(2);
  assert.deepEqual(ws2.take(), [{ subscribe: 'kept', id: 1 }]);
  ws2.receive({ error: 'not permitted', subscribe: 'kept', id: 1 });
  assert.deepEqual(events.of('unsubscribed'), [{ topic: 'kept', error: 'not permitted' }]);
  assert.equal(events.of('error').at(-1).error, 'not permitted');
  assert.deepEqual(c.topics, []);
});

test("unsubscribe stops the topic's messages at once and it is not resubscribed", async () => {
  const { c, events } = client();
  const ws = await connected(c);
  c.subscribe('h');
  ws.receive({ subscribed: 'h', offset: 0, epoch: null, id: 1 });
  ws.receive({ topic: 'h', offset: 1, epoch: 'e', data: 'in' });
  const u = c.unsubscribe('h');
  ws.receive({ topic: 'h', offset: 2, epoch: 'e', data: 'after' });
  ws.receive({ unsubscribed: 'h', id: 2 });
  await u;
  assert.deepEqual(events.messages('h'), [[1, 'in']]);
  ws.closed(1006);
  const ws2 = await reconnected(2);
  assert.deepEqual(ws2.take(), []);
});

test('missed notices and gaps in offsets are events', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  c.subscribe('h');
  ws.receive({ subscribed: 'h', offset: 10, epoch: 'e', id: 1 });
  ws.receive({ topic: 'h', missed: 3 });
  ws.receive({ topic: 'h', offset: 14, epoch: 'e', data: 'x' });
  ws.receive({ topic: 'plain', missed: 1 });
  assert.deepEqual(events.of('missed'), [
    { topic: 'h', count: 3 },
    { topic: 'plain', count: 1 },
  ]);
  assert.deepEqual(events.of('gap'), [{ topic: 'h', after: 10, count: 3, offset: 14, epoch: 'e' }]);
  assert.deepEqual(events.messages('h'), [[14, 'x']]);
});

test('binary publications arrive as bytes in their envelopes; a binary frame outside one is bare', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  c.subscribe('h');
  c.subscribe('p', { history: false });
  ws.receive({ subscribed: 'h', offset: 0, epoch: null, id: 1 });
  ws.receive({ subscribed: 'p', id: 2 });
  ws.receive({ topic: 'h', offset: 1, epoch: 'e', binary: 'AAEC/w==' });
  ws.receive({ topic: 'p', binary: 'BwY=' });
  ws.receive(new Uint8Array([9, 8]).buffer);
  ws.receive({ topic: 'p', binary: '*not base64*' });
  const [withPosition, without] = events.of('message');
  assert.deepEqual(
    [withPosition.topic, withPosition.offset, withPosition.binary, [...withPosition.data]],
    ['h', 1, true, [0, 1, 2, 255]],
  );
  assert.deepEqual(
    [without.topic, 'offset' in without, without.binary, [...without.data]],
    ['p', false, true, [7, 6]],
  );
  assert.equal(events.of('message').length, 2);
  const [bare] = events.of('bare');
  assert.deepEqual([bare.binary, [...bare.data]], [true, [9, 8]]);
  assert.deepEqual(
    events.of('error').map((e) => e.kind),
    ['protocol'],
    'an envelope that cannot be read is reported',
  );
});

test('every topic comes in its envelope: no payload, however it looks, passes for an answer', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  const got = [];
  const sub = c.subscribe('p', { onMessage: (m) => got.push(m) });
  ws.receive({ subscribe: 'p', error: 'this topic keeps no history', id: 1 });
  ws.receive({ subscribed: 'p', id: 2 });
  await sub;
  const pub = c.publish('p', 'x');
  assert.deepEqual(ws.take().at(-1), { publish: 'p', data: 'x', id: 3 });
  // Another publisher's payload, shaped like the answer the publish waits for, and like an
  // error: in its envelope it is a message of the topic, nothing more.
  const forged = [JSON.stringify({ published: 'p', id: 3 }), JSON.stringify({ error: 'gotcha' })];
  for (const data of forged) ws.receive({ topic: 'p', data });
  assert.equal(await stateOf(pub), 'pending', 'the payload settled nothing');
  assert.deepEqual(
    got.map((m) => [m.topic, m.data, m.offset]),
    forged.map((d) => ['p', d, undefined]),
  );
  assert.deepEqual(events.of('message'), got);
  ws.receive({ published: 'p', id: 3 });
  await pub;
  // A text frame outside any envelope (an emit or a broadcast of the HTTP API) is reported
  // as it came, and is no topic's message.
  ws.receive('hello from the backend');
  ws.receive('{"score":1}');
  assert.deepEqual(events.of('bare'), [
    { data: 'hello from the backend', binary: false },
    { data: '{"score":1}', binary: false },
  ]);
  assert.equal(got.length, 2);
  assert.deepEqual(events.of('error'), []);
});

test('the token travels in a subprotocol, never in the URL; envelopes are asked for in the query', async () => {
  const jwt = hs256('k', { sub: 'a' });
  const { c, events } = client({ token: jwt });
  const ws = await connected(c);
  assert.deepEqual(ws.protocols, ['corecast', `corecast.token.${jwt}`]);
  assert.equal(ws.url, 'ws://server.test/ws?envelope=1');
  assert.ok(!ws.url.includes(jwt), 'the token is not in the URL');
  assert.equal(events.of('connected')[0].protocol, 'corecast');
  await c.close();

  // The application's query and subprotocols are kept, its own offers first.
  FakeWebSocket.reset();
  const own = new CorecastClient('ws://server.test/ws?room=7&envelope=0', {
    WebSocket: FakeWebSocket,
    token: jwt,
    protocols: 'chat',
  });
  own.connect().catch(() => {});
  await settle();
  const mine = FakeWebSocket.last;
  assert.deepEqual(mine.protocols, ['chat', 'corecast', `corecast.token.${jwt}`]);
  assert.deepEqual(Object.fromEntries(new URL(mine.url).searchParams), { room: '7', envelope: '1' });
  await own.close();

  // Without a token nothing is offered but the application's.
  FakeWebSocket.reset();
  const { c: anonymous } = client();
  const open = await connected(anonymous);
  assert.equal(open.protocols, undefined);
  assert.equal(open.url, 'ws://server.test/ws?envelope=1');
  await anonymous.close();
});

test('tokenIn "query": the token goes in the query parameter and in no subprotocol', async () => {
  const { c } = client({ token: () => 'tok.en.1', tokenIn: 'query', tokenParam: 'jwt' });
  const ws = await connected(c);
  assert.deepEqual(Object.fromEntries(new URL(ws.url).searchParams), { envelope: '1', jwt: 'tok.en.1' });
  assert.equal(ws.protocols, undefined);
  await c.close();
  assert.throws(() => client({ tokenIn: 'header' }), /tokenIn/);
});

test('a token a subprotocol cannot carry is refused before any socket, and says what to do', async () => {
  const { c, events } = client({ token: 'not a jwt', reconnect: false });
  await assert.rejects(c.connect(), (e) => e.kind === 'closed');
  assert.equal(FakeWebSocket.made.length, 0);
  const [err] = events.of('error');
  assert.equal(err.kind, 'token');
  assert.match(err.message, /tokenIn: "query"/);
});

test('a reconnect uses the current token: the last one a refresh presented', async () => {
  const first = hs256('k', { sub: 'a', n: 1 });
  const second = hs256('k', { sub: 'a', n: 2 });
  const { c } = client({ token: first });
  const ws = await connected(c);
  const refreshed = c.refresh(second);
  const [frame] = ws.take();
  ws.receive({ refreshed: true, id: frame.id });
  await refreshed;
  ws.closed(1006);
  const ws2 = await reconnected(2);
  assert.deepEqual(ws2.protocols, ['corecast', `corecast.token.${second}`]);
  // A refresh refused changes nothing.
  const refused = c.refresh(hs256('k', { sub: 'a', n: 3 }));
  const [again] = ws2.take();
  ws2.receive({ refresh: null, error: 'bad token signature', id: again.id });
  await assert.rejects(refused);
  ws2.closed(1006);
  const ws3 = await reconnected(3);
  assert.deepEqual(ws3.protocols, ['corecast', `corecast.token.${second}`]);
  await c.close();
});

test('the token is refreshed on the expiring notice and ahead of exp', async () => {
  let n = 0;
  const exp = () => Math.floor(Date.now() / 1000) + 2;
  const { c, events } = client({ token: async () => hs256('k', { sub: 'a', exp: exp(), n: ++n }) });
  const ws = await connected(c);
  assert.equal(ws.protocols[1].split('.').length, 5, 'corecast.token.<jwt>');
  ws.receive({ expiring: 30 });
  await settle();
  const [refresh] = ws.take();
  assert.ok(refresh.refresh.length > 20, JSON.stringify(refresh));
  ws.receive({ refreshed: true, id: refresh.id });
  await events.waitFor('refreshed');
  assert.deepEqual(events.of('expiring'), [{ seconds: 30 }]);
  // exp is 2 s away: the next refresh goes at about half of it, with no notice.
  for (let i = 0; i < 400 && ws.sent.length === 0; i++) await sleep(5);
  const [ahead] = ws.take();
  assert.equal(typeof ahead?.refresh, 'string', 'refreshed ahead of exp');
  ws.receive({ refresh: null, error: 'token expired', id: ahead.id });
  const [err] = await events.waitFor('error');
  assert.equal(err.request, 'refresh');
  c.close();
});

test('a token function that fails counts as a failed attempt and is retried', async () => {
  let calls = 0;
  const { c, events } = client({
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error('identity provider down');
      return 'tok';
    },
  });
  const done = c.connect();
  const ws = await reconnected(1);
  await done;
  assert.deepEqual(ws.protocols, ['corecast', 'corecast.token.tok']);
  assert.equal(events.of('error')[0].kind, 'token');
  assert.equal(events.of('disconnected')[0].reconnectInMs, 0);
});

test('a request with no answer times out, and its late answer is not taken for another', async () => {
  const { c, events } = client({ requestTimeoutMs: 30 });
  const ws = await connected(c);
  await assert.rejects(c.subscribe('slow', { history: false }), (e) => e.kind === 'timeout');
  ws.receive({ subscribed: 'slow', id: 1 });
  assert.deepEqual(events.of('error'), []);
  assert.deepEqual(await c.subscribe('slow'), { topic: 'slow', positions: false, resubscribed: false });
});

test('a rate-limited subscribe is asked again; the application waits for the real answer', async () => {
  const { c } = client();
  const ws = await connected(c);
  const s = c.subscribe('t', { history: false });
  assert.deepEqual(ws.take(), [{ subscribe: 't', id: 1 }]);
  ws.receive({ error: 'rate limit', subscribe: 't', id: 1 });
  for (let i = 0; i < 500 && ws.sent.length === 0; i++) await sleep(5);
  assert.deepEqual(ws.take(), [{ subscribe: 't', id: 2 }]);
  ws.receive({ subscribed: 't', id: 2 });
  assert.equal((await s).topic, 't');
});

test('close() stops reconnecting; some closes are not retried', async () => {
  const { c, events } = client();
  const ws = await connected(c);
  await c.close();
  assert.equal(c.state, 'closed');
  assert.equal(ws.readyState, 3);
  await sleep(30);
  assert.equal(FakeWebSocket.made.length, 1);
  await assert.rejects(c.subscribe('t'), (e) => e.kind === 'closed');
  assert.deepEqual(
    events.of('disconnected').map((d) => d.reconnectInMs),
    [null],
  );

  for (const [code, reason, token] of [
    [1008, 'token for another user', () => 't'],
    [1008, 'token expired', 'static'],
  ]) {
    FakeWebSocket.reset();
    const { c: d, events: e } = client({ token });
    const s = await connected(d);
    s.closed(code, reason, true);
    await sleep(30);
    assert.equal(FakeWebSocket.made.length, 1, reason);
    assert.equal(d.state, 'closed');
    assert.deepEqual(
      e.of('disconnected').map((x) => [x.code, x.reason, x.reconnectInMs]),
      [[code, reason, null]],
    );
  }
  // With a token function an expired token is worth a new connection.
  FakeWebSocket.reset();
  const { c: f } = client({ token: () => 'fresh' });
  (await connected(f)).closed(1008, 'token expired', true);
  await reconnected(2);
  f.close();
});

test('the backoff grows while attempts fail and starts over after a connection that stayed up', async () => {
  const delays = [];
  const c = new CorecastClient('ws://server.test/ws', {
    WebSocket: FakeWebSocket,
    reconnect: { initialDelayMs: 4, maxDelayMs: 16, stableAfterMs: 50, random: () => 0.999 },
  });
  c.on('disconnected', (d) => delays.push(d.reconnectInMs));
  c.on('error', () => {});
  await connected(c);
  FakeWebSocket.last.closed(1006);
  for (let n = 2; n <= 5; n++) {
    for (let i = 0; i < 200 && FakeWebSocket.made.length < n; i++) await sleep(2);
    FakeWebSocket.last.closed(1006); // refused before it opened
  }
  for (let i = 0; i < 200 && FakeWebSocket.made.length < 6; i++) await sleep(2);
  FakeWebSocket.last.open();
  await sleep(60);
  FakeWebSocket.last.closed(1006);
  assert.deepEqual(delays, [3, 7, 15, 15, 15, 3]);
  await c.close();
});

test('resubscriptions go out before what a connected listener sends', async () => {
  const { c } = client();
  const ws = await connected(c);
  c.subscribe('t', { history: false });
  ws.receive({ subscribed: 't', id: 1 });
  ws.take();
  c.on('connected', () => c.publish('t', 'hello again').catch(() => {}));
  ws.closed(1006);
  const ws2 = await reconnected(2);
  await settle();
  assert.deepEqual(ws2.take(), [
    { subscribe: 't', id: 1 },
    { publish: 't', data: 'hello again', id: 2 },
  ]);
});
