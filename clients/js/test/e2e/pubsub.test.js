//! The client against the real `corecast` binary (`--mode pubsub`, `--history`): connect,
//! subscribe, receive from the API and from another client, every topic in its envelope (a
//! payload shaped like an answer settles nothing; a broadcast is bare), publishes settled, refusals,
//! a burst past the rate limit whose answers come out of order behind a publish hook,
//! permessage-deflate; a network cut (recovered, exactly what was missed) and a server killed
//! and restarted (reconnect, resubscribe, "epoch changed" reported); a slow reader told what
//! it missed (`--slow-consumers`), in notices that add up with the gaps in its offsets.

import { test, after } from 'node:test';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { CorecastClient } from '../../src/index.js';
import { Server, recorder, sleep, startHook, startProxy } from '../support/server.js';

const HISTORY = ['--history', 'h.*=1000/60s'];
const FAST_RECONNECT = { initialDelayMs: 50, maxDelayMs: 400 };
const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function server(args = HISTORY) {
  const s = await Server.start(args);
  cleanup.push(() => s.kill());
  return s;
}

function client(url, options = {}) {
  const c = new CorecastClient(url, { reconnect: FAST_RECONNECT, ...options });
  const events = recorder(c);
  cleanup.push(() => c.close());
  return { c, events };
}

const numbered = (from, to, prefix = 'p') =>
  Array.from({ length: to - from + 1 }, (_, i) => [from + i, `${prefix}${from + i}`]);

test('subscribe, receive from the API and from another client, in order, with positions', async () => {
  const srv = await server();
  const { c, events } = client(srv.url());
  await c.connect();
  const [connected] = events.of('connected');
  assert.match(connected.extensions, /permessage-deflate/, 'deflate negotiated');
  assert.deepEqual(await c.subscribe('h.a'), {
    topic: 'h.a',
    positions: true,
    offset: 0,
    epoch: null,
    resubscribed: false,
  });
  assert.deepEqual(await c.subscribe('plain'), { topic: 'plain', positions: false, resubscribed: false });

  const { c: pub } = client(srv.url());
  await pub.connect();
  for (let i = 1; i <= 3; i++) await srv.publish('h.a', `p${i}`);
  // The API's publications reach the topic's shard through its inbox, after its 200: a
  // client's made now could be numbered first. Each source's are seen before the next's.
  await events.waitFor('message', { count: 3 });
  await Promise.all([pub.publish('h.a', 'p4'), pub.publish('h.a', 'p5')]);
  await pub.publish('plain', { score: [2, 1] });
  // Shaped like an answer to the subscriber (its next id): in its envelope it stays a message
  // of the topic, where bare it would be taken for an answer no request waited for.
  await pub.publish('plain', { published: 'plain', id: 4 });
  // Compressed on the wire (past --deflate-min-size), whole on arrival.
  const big = 'x'.repeat(64 * 1024);
  await pub.publish('h.a', big);
  await srv.publish('h.a', new Uint8Array([0, 1, 2, 255]), { binary: true });
  await events.waitFor('message', { count: 9 });
  const [msgs] = [events.messages('h.a')];
  assert.deepEqual(msgs.slice(0, 5), numbered(1, 5));
  assert.deepEqual(msgs[5], [6, big]);
  const bin = events.of('message').find((m) => m.binary);
  assert.deepEqual([bin.topic, bin.offset, [...bin.data]], ['h.a', 7, [0, 1, 2, 255]]);
  // A topic without history comes in an envelope too (asked for with envelope=1): it names
  // the topic, with no position.
  assert.deepEqual(events.messages('plain').map((d) => JSON.parse(d)), [
    { score: [2, 1] },
    { published: 'plain', id: 4 },
  ]);
  assert.equal(events.of('message').length, 9, 'nothing else, nothing twice');
  // A broadcast of the HTTP API is no topic's: it comes bare, and is reported as such.
  await srv.broadcast('to everyone');
  const [bare] = await events.waitFor('bare');
  assert.deepEqual(bare, { data: 'to everyone', binary: false });
  assert.equal(events.of('message').length, 9);
  assert.deepEqual(events.of('error'), []);
  assert.deepEqual(events.of('bare').length, 1);
});

test('a client that never asks for positions still gets every topic in its envelope', async () => {
  const srv = await server();
  const { c, events } = client(srv.url());
  await c.connect();
  const got = [];
  await c.subscribe('plain', { history: false, onMessage: (m) => got.push(m.data) });
  await c.subscribe('h.off', { history: false });
  // Payloads shaped like the protocol's frames: an error, an answer to the client's next
  // request (id 3), an expiring notice.
  const forged = [{ error: 'gotcha' }, { published: 'plain', id: 3 }, { expiring: 1 }];
  for (const data of forged) await srv.publish('plain', JSON.stringify(data));
  await srv.publish('h.off', 'with a position');
  await events.waitFor('message', { count: 4 });
  assert.deepEqual(got.map((d) => JSON.parse(d)), forged);
  const [off] = events.of('message').filter((m) => m.topic === 'h.off');
  assert.deepEqual([off.offset, off.data], [1, 'with a position']);
  assert.deepEqual(events.of('bare'), []);
  assert.deepEqual(events.of('expiring'), []);
  assert.deepEqual(events.of('error'), []);
  assert.equal(await c.publish('plain', 'mine'), undefined, 'the publish of id 3 is settled by its own answer');
});

test("the server's refusals reject the requests they answer", async () => {
  const srv = await server();
  const { c, events } = client(srv.url());
  await c.connect();
  await assert.rejects(
    c.subscribe('plain', { history: true }),
    (e) => e.kind === 'server' && e.error === 'this topic keeps no history',
  );
  await assert.rejects(c.unsubscribe('never'), (e) => e.error === 'not subscribed');
  await assert.rejects(c.rpc('time', { tz: 'UTC' }), (e) => e.request === 'rpc' && e.error === 'no rpc hook');
  await assert.rejects(c.subscribe('x'.repeat(300)), (e) => e.kind === 'server' && e.request === 'subscribe');
  // A refusal in the middle of a burst is matched to its own request.
  const results = await Promise.allSettled([
    c.subscribe('h.ok'),
    c.subscribe('y'.repeat(300)),
    c.subscribe('h.ok2'),
  ]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
  assert.deepEqual(c.topics, ['h.ok', 'h.ok2']);
  assert.deepEqual(events.of('error'), []);
});

test('a publish past the rate limit is rejected with it; the others resolve', async () => {
  const srv = await server([...HISTORY, '--client-message-rate', '20']);
  const { c } = client(srv.url());
  const { c: sub, events } = client(srv.url());
  await Promise.all([c.connect(), sub.connect()]);
  await sub.subscribe('h.r');
  // 10 publishes, one message each, within the burst of 20.
  const topics = Array.from({ length: 10 }, (_, i) => `r${i}`);
  await Promise.all(topics.map((t) => c.publish(t, 'x')));
  // Then 16 more, past it: some are refused, and exactly those never reach the subscriber.
  const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => c.publish('h.r', `q${i}`)));
  const refused = results.filter((r) => r.status === 'rejected');
  assert.ok(refused.length > 0, 'some were past the limit');
  assert.ok(
    refused.every((r) => r.reason.error === 'rate limit'),
    JSON.stringify(refused.map((r) => r.reason.message)),
  );
  const accepted = results.flatMap((r, i) => (r.status === 'fulfilled' ? [`q${i}`] : []));
  assert.ok(accepted.length > 0);
  // A last one once the bucket has room again: what was accepted before it arrives before it.
  let sent = false;
  for (let i = 0; i < 50 && !sent; i++) {
    sent = await c.publish('h.r', 'end').then(
      () => true,
      (e) => {
        if (e.error !== 'rate limit') throw e;
        return sleep(100).then(() => false);
      },
    );
  }
  assert.ok(sent, 'the last one went out within 5 s');
  await events.waitFor('message', { pred: (m) => m.data === 'end' });
  assert.deepEqual(
    events.messages('h.r').map(([, d]) => d),
    [...accepted, 'end'],
  );
  assert.equal(c.state, 'connected');
});

/**
 * Publishes `end` to `topic` until the rate limit lets it through (at most 5 s): what was
 * published before it then reaches a subscriber before it.
 */
async function publishEnd(c, topic) {
  for (let i = 0; i < 50; i++) {
    const sent = await c.publish(topic, 'end').then(
      () => true,
      (e) => {
        if (e.error !== 'rate limit') throw e;
        return sleep(100).then(() => false);
      },
    );
    if (sent) return;
  }
  assert.fail('the last publish went out within 5 s');
}

test('behind a publish hook, rate-limit refusals overtake a burst, rejecting just the refused', async () => {
  // Each publish waits 50 ms on the backend, one after another (a connection's requests stay
  // in order); the rate limit refuses the ones past it the moment they arrive.
  const hook = await startHook(async ({ data }) => {
    await sleep(50);
    return data === 'swear' ? { error: 'no swearing' } : {};
  });
  cleanup.push(() => hook.close());
  const srv = await server([
    ...HISTORY,
    '--client-message-rate',
    '10',
    '--hook-publish',
    hook.url('/publish'),
  ]);
  const { c } = client(srv.url());
  const { c: sub, events } = client(srv.url());
  await Promise.all([c.connect(), sub.connect()]);
  await sub.subscribe('h.r');

  const data = Array.from({ length: 16 }, (_, i) => (i === 3 ? 'swear' : `q${i}`));
  const settled = [];
  const burst = data.map((d, i) =>
    c.publish('h.r', d).then(
      () => settled.push(i),
      (e) => {
        settled.push(i);
        throw e;
      },
    ),
  );
  const results = await Promise.allSettled(burst);
  const outcome = results.map((r) => (r.status === 'fulfilled' ? 'ok' : r.reason.error));
  const limited = data.filter((_, i) => outcome[i] === 'rate limit');
  assert.ok(limited.length > 0, `some were past the limit: ${JSON.stringify(outcome)}`);
  assert.ok(
    outcome.every((o) => ['ok', 'rate limit', 'no swearing'].includes(o)),
    JSON.stringify(outcome),
  );
  assert.equal(outcome[3], 'no swearing', 'the hook refused the one it refused');
  // The answers came out of order: a refusal of the rate limit settled before the first publish.
  assert.equal(outcome[settled[0]], 'rate limit', `settled in the order ${settled}`);
  // The backend was asked about exactly the publishes not refused by the rate limit...
  assert.deepEqual(
    hook.calls.map((call) => call.data),
    data.filter((_, i) => outcome[i] !== 'rate limit'),
  );
  // ...and exactly those it let through reached the subscriber, in order.
  await publishEnd(c, 'h.r');
  await events.waitFor('message', { pred: (m) => m.data === 'end' });
  assert.deepEqual(
    events.messages('h.r').map(([, d]) => d),
    [...data.filter((_, i) => outcome[i] === 'ok'), 'end'],
  );
  assert.equal(c.state, 'connected');
});

test('after a network cut the client reconnects and recovers exactly what it missed', async () => {
  const srv = await server();
  const proxy = await startProxy(srv.ws);
  cleanup.push(() => proxy.close());
  const { c, events } = client(`ws://${proxy.address}/ws`);
  await c.connect();
  await c.subscribe('h.a');
  await c.subscribe('plain');
  for (let i = 1; i <= 3; i++) await srv.publish('h.a', `p${i}`);
  await events.waitFor('message', { count: 3 });

  proxy.down();
  const [gone] = await events.waitFor('disconnected');
  assert.equal(gone.code, 1006);
  assert.ok(gone.reconnectInMs !== null);
  // Published while the client is away, and while its attempts are refused: lost on the wire
  // or sent to nobody, but kept in the topic's history.
  for (let i = 4; i <= 6; i++) await srv.publish('h.a', `p${i}`);
  await events.waitFor('connecting', { count: 3 });
  proxy.up();
  await events.waitFor('connected', { count: 2 });
  const [back] = await events.waitFor('subscribed', { pred: (s) => s.topic === 'h.a' && s.resubscribed });
  assert.equal(back.recovered, true, JSON.stringify(back));
  assert.equal(back.missed, 3);
  await events.waitFor('subscribed', { pred: (s) => s.topic === 'plain' && s.resubscribed });
  await srv.publish('h.a', 'p7');
  await srv.publish('plain', 'bare after');
  await events.waitFor('message', { count: 8 });
  assert.deepEqual(events.messages('h.a'), numbered(1, 7));
  assert.deepEqual(events.messages('plain'), ['bare after']);
  assert.deepEqual(events.of('notRecovered'), []);
  assert.deepEqual(events.of('error'), []);
});

test('a server killed and restarted: reconnect, resubscribe, and "epoch changed" reported', async () => {
  let srv = await server();
  const { c, events } = client(srv.url());
  await c.connect();
  await c.subscribe('h.a');
  await c.subscribe('plain');
  await srv.publish('h.a', 'before');
  await events.waitFor('message');

  await srv.kill();
  await events.waitFor('disconnected');
  // Attempts fail while it is down; the client keeps trying.
  await events.waitFor('connecting', { count: 3 });
  srv = await srv.restart();
  cleanup.push(() => srv.kill());
  await events.waitFor('connected', { count: 2 });
  const [lost] = await events.waitFor('notRecovered');
  assert.deepEqual([lost.topic, lost.reason], ['h.a', 'epoch changed']);
  await events.waitFor('subscribed', { pred: (s) => s.topic === 'plain' && s.resubscribed });
  await srv.publish('h.a', 'after');
  await srv.publish('plain', 'plain after');
  await events.waitFor('message', { count: 3 });
  assert.deepEqual(
    events.messages('h.a').map(([o, d]) => [o, d]),
    [
      [1, 'before'],
      [1, 'after'],
    ],
  );
  assert.deepEqual(events.messages('plain'), ['plain after']);
  assert.notEqual(events.of('message')[0].epoch, events.of('message')[1].epoch);
  assert.deepEqual(events.of('error'), []);
});

test('a publish in flight when the server dies is rejected, not left pending', async () => {
  const srv = await server();
  const { c, events } = client(srv.url(), { reconnect: false });
  await c.connect();
  const inFlight = Promise.allSettled([c.subscribe('h.z')]);
  await srv.kill();
  const settled = await inFlight;
  // The answer may have come before the kill; if not, the disconnect rejects it.
  if (settled[0].status === 'rejected') assert.equal(settled[0].reason.kind, 'disconnected');
  await events.waitFor('disconnected');
  await assert.rejects(c.publish('h.z', 'x'), (e) => e.kind === 'not-connected');
  assert.equal(c.state, 'closed');
});

test('a slow reader is told what it missed, and the gaps in its offsets say the same', async () => {
  const srv = await server([
    ...HISTORY,
    '--slow-consumers',
    'h.*=drop-oldest',
    '--send-queue-size',
    '8',
    '--deflate',
    'off',
  ]);
  const proxy = await startProxy(srv.ws);
  cleanup.push(() => proxy.close());
  const { c, events } = client(`ws://${proxy.address}/ws`);
  await c.connect();
  await c.subscribe('h.s');
  // The client stops reading while publications of 64 KiB are made, past the socket buffers,
  // until its queue of 8 has dropped the oldest a few times (the publish reports say).
  proxy.pause();
  let published = 0;
  let drops = 0;
  while (drops < 20 && published < 2000) {
    published += 1;
    const data = `${published}:${randomBytes(48 * 1024).toString('base64')}`;
    drops += (await srv.publish('h.s', data, { report: true })).dropped;
  }
  assert.ok(drops >= 20, `${published} publications made, ${drops} dropped`);
  proxy.resume();
  const missed = () => events.of('missed').reduce((sum, m) => sum + m.count, 0);
  await events.waitFor('message', { pred: (m) => m.offset === published });
  await events.waitFor('missed', { pred: () => events.of('message').length + missed() === published });
  const delivered = events.of('message');
  assert.equal(missed(), drops, 'the notices add up to what the reports counted');
  assert.ok(events.of('missed').every((m) => m.topic === 'h.s'));
  const gaps = events.of('gap').reduce((sum, g) => sum + g.count, 0);
  assert.equal(gaps, missed(), 'the offsets skipped are the ones the notices counted');
  // What arrived is in order, each once, each the publication its offset names.
  const offsets = delivered.map((m) => m.offset);
  assert.deepEqual(
    offsets,
    [...new Set(offsets)].sort((a, b) => a - b),
  );
  assert.ok(delivered.every((m) => m.data.startsWith(`${m.offset}:`)));
  assert.deepEqual(events.of('disconnected'), []);
});
