//! The protocol's frames as the client reads them, and request/answer matching: answers first
//! in first out per key, publishes proven by later answers or refused, errors that overtake.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classify, Ledger, BARRIER_TOPIC } from '../../src/answers.js';

const kindOf = (text) => {
  const f = classify(JSON.parse(text));
  return f === null ? null : f.kind;
};

test('every frame of the pubsub protocol is told apart from a bare publication', () => {
  const answers = {
    '{"subscribed":"scores"}': ['subscribe:scores', true],
    '{"subscribed":"s.nba","offset":12,"epoch":"9f2c01ab"}': ['subscribe:s.nba', true],
    '{"subscribed":"s","recovered":true,"missed":3,"offset":15,"epoch":"9f2c01ab"}': ['subscribe:s', true],
    '{"subscribed":"s","recovered":false,"reason":"epoch changed","offset":0,"epoch":null}': [
      'subscribe:s',
      true,
    ],
    '{"error":"not permitted","subscribe":"s"}': ['subscribe:s', false],
    '{"unsubscribed":"s"}': ['unsubscribe:s', true],
    '{"error":"not subscribed","unsubscribed":"s"}': ['unsubscribe:s', false],
    '{"error":"rate limit","unsubscribe":"s"}': ['unsubscribe:s', false],
    '{"refreshed":true}': ['refresh', true],
    '{"refresh":null,"error":"bad token signature"}': ['refresh', false],
    '{"rpc":"time","id":7,"data":{"tz":"UTC"}}': ['rpc:7', true],
    '{"rpc":"time","id":"x","error":"no rpc hook"}': ['rpc:"x"', false],
    '{"rpc":"time","data":null}': ['rpc:null', true],
  };
  for (const [text, [key, ok]] of Object.entries(answers)) {
    const f = classify(JSON.parse(text));
    assert.equal(f.kind, 'answer', text);
    assert.equal(f.key, key, text);
    assert.equal(f.ok, ok, text);
  }
  assert.deepEqual(classify({ error: 'no swearing', publish: 't' }), {
    kind: 'publishError',
    topic: 't',
    error: 'no swearing',
  });
  assert.deepEqual(classify({ expiring: 30 }), { kind: 'expiring', seconds: 30 });
  assert.deepEqual(classify({ topic: 't', offset: 13, epoch: '9f2c01ab', data: '2-1' }), {
    kind: 'envelope',
    topic: 't',
    offset: 13,
    epoch: '9f2c01ab',
    data: '2-1',
  });
  assert.equal(classify({ topic: 't', offset: 13, epoch: 'e', binary: 'AAEC/w==' }).binary, 'AAEC/w==');
  assert.deepEqual(classify({ topic: 't', missed: 4 }), { kind: 'missed', topic: 't', count: 4 });
  assert.deepEqual(classify({ error: 'expected a JSON object' }), {
    kind: 'error',
    error: 'expected a JSON object',
  });
  // What applications publish: JSON that is none of the above stays a payload.
  for (const text of [
    '{"a":1}',
    '{"topic":"t"}',
    '{"topic":"t","data":"x"}',
    '[1,2]',
    '"s"',
    '3',
    '{"error":"x","code":5}',
    '{"expiring":"soon"}',
    '{"subscribe":"t"}',
    '{"topic":"t","offset":-1,"epoch":"e","data":""}',
  ]) {
    assert.equal(kindOf(text), null, text);
  }
});

test('answers are matched first in first out per key, whatever comes between', () => {
  const l = new Ledger();
  const a1 = l.request('subscribe:a', 'a1');
  const b1 = l.request('subscribe:b', 'b1');
  const a2 = l.request('subscribe:a', 'a2');
  assert.equal(l.answer({ key: 'subscribe:b', ok: true }).entry, b1);
  assert.equal(l.answer({ key: 'subscribe:a', ok: false, error: 'not permitted' }).entry, a1);
  assert.equal(l.answer({ key: 'subscribe:a', ok: true }).entry, a2);
  assert.equal(l.answer({ key: 'subscribe:a', ok: true }).entry, null, 'nothing waits any more');
  assert.equal(l.has('subscribe:a'), false);
});

test('a publish is proven by the answer of a request sent after it, and refused by its error', () => {
  const l = new Ledger();
  const p1 = l.publish('t', 'p1');
  const p2 = l.publish('u', 'p2');
  assert.equal(l.needsBarrier(), true);
  assert.equal(l.needsBarrierBefore('t'), true, 'a second publish of t needs an answer between');
  assert.equal(l.needsBarrierBefore('v'), false);
  const barrier = l.request(`unsubscribe:${BARRIER_TOPIC}`, 'barrier');
  assert.equal(l.needsBarrier(), false);
  assert.equal(l.needsBarrierBefore('t'), false);
  const p3 = l.publish('t', 'p3');
  // The refusal of t comes before the barrier's answer: it is p1's, the oldest.
  assert.equal(l.refusePublish('t'), p1);
  const { entry, proven } = l.answer({
    key: `unsubscribe:${BARRIER_TOPIC}`,
    ok: false,
    error: 'not subscribed',
  });
  assert.equal(entry, barrier);
  assert.deepEqual(proven, [p2], 'p2 went out; p3 was sent after the barrier');
  assert.equal(l.needsBarrier(), true);
  assert.deepEqual(l.drain(), [p3]);
});

test('an error answered on arrival proves what came before it, unless the server queues requests', () => {
  const l = new Ledger();
  const p1 = l.publish('t', 'p1');
  l.request('subscribe:x', 'x');
  assert.deepEqual(
    l.answer({ key: 'subscribe:x', ok: false, error: 'rate limit' }).proven,
    [p1],
    'nothing queued: in order',
  );
  const p2 = l.publish('t', 'p2');
  l.request('subscribe:h', 'h', { queues: true }); // waits on the topic's home shard
  const p3 = l.publish('u', 'p3');
  for (const error of ['rate limit', 'too many requests waiting']) {
    l.request('unsubscribe:b', 'b');
    assert.deepEqual(
      l.answer({ key: 'unsubscribe:b', ok: false, error }).proven,
      [],
      `${error} overtook the queue`,
    );
  }
  assert.deepEqual(l.answer({ key: 'subscribe:h', ok: true }).proven, [p2]);
  l.request('unsubscribe:b', 'b');
  assert.deepEqual(
    l.answer({ key: 'unsubscribe:b', ok: false, error: 'rate limit' }).proven,
    [p3],
    'the queue is done',
  );
});

test('drain gives back everything in flight, in the order it was sent', () => {
  const l = new Ledger();
  const order = [l.request('refresh', 1), l.publish('t', 2), l.request('rpc:1', 3), l.publish('t', 4)];
  assert.deepEqual(l.drain(), order);
  assert.deepEqual(l.drain(), []);
  assert.equal(l.needsBarrier(), false);
});
