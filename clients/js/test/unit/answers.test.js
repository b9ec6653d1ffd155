//! The protocol's frames as the client reads them, and request/answer matching: by the
//! request's id whatever the order answers come in, a late answer told from a stray one, and
//! answers without an id matched in order to their kind and name.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { busy, classify, Ledger } from '../../src/answers.js';

const kindOf = (text) => {
  const f = classify(JSON.parse(text));
  return f === null ? null : f.kind;
};

test('every frame of the pubsub protocol is told apart from a bare frame', () => {
  // text: [request, name, ok, id]
  const answers = {
    '{"subscribed":"scores"}': ['subscribe', 'scores', true, undefined],
    '{"subscribed":"scores","id":1}': ['subscribe', 'scores', true, 1],
    '{"subscribed":"s.nba","offset":12,"epoch":"9f2c01ab","id":2}': ['subscribe', 's.nba', true, 2],
    '{"subscribed":"s","recovered":true,"missed":3,"offset":15,"epoch":"9f2c01ab"}': [
      'subscribe',
      's',
      true,
      undefined,
    ],
    '{"subscribed":"s","recovered":false,"reason":"epoch changed","offset":0,"epoch":null}': [
      'subscribe',
      's',
      true,
      undefined,
    ],
    '{"error":"not permitted","subscribe":"s","id":3}': ['subscribe', 's', false, 3],
    '{"unsubscribed":"s","id":4}': ['unsubscribe', 's', true, 4],
    '{"error":"not subscribed","unsubscribed":"s"}': ['unsubscribe', 's', false, undefined],
    '{"error":"rate limit","unsubscribe":"s","id":5}': ['unsubscribe', 's', false, 5],
    '{"published":"scores","id":6}': ['publish', 'scores', true, 6],
    '{"error":"rate limit","publish":"scores","id":7}': ['publish', 'scores', false, 7],
    '{"error":"no swearing","publish":"t"}': ['publish', 't', false, undefined],
    '{"refreshed":true,"id":8}': ['refresh', undefined, true, 8],
    '{"refresh":null,"error":"bad token signature","id":9}': ['refresh', undefined, false, 9],
    '{"rpc":"time","id":7,"data":{"tz":"UTC"}}': ['rpc', 'time', true, 7],
    '{"rpc":"time","id":"x","error":"no rpc hook"}': ['rpc', 'time', false, 'x'],
    '{"rpc":"time","data":null}': ['rpc', 'time', true, undefined],
    // A request the server could not read: its id is all it names.
    '{"error":"expected \\"subscribe\\", ...","id":{"n":4}}': [null, undefined, false, { n: 4 }],
  };
  for (const [text, [request, name, ok, id]] of Object.entries(answers)) {
    const f = classify(JSON.parse(text));
    assert.equal(f.kind, 'answer', text);
    assert.equal(f.request, request, text);
    assert.equal(f.name, name, text);
    assert.equal(f.ok, ok, text);
    assert.deepEqual(f.id, id, text);
    assert.equal('id' in f, id !== undefined, text);
  }
  assert.deepEqual(classify({ expiring: 30 }), { kind: 'expiring', seconds: 30 });
  assert.deepEqual(classify({ topic: 't', offset: 13, epoch: '9f2c01ab', data: '2-1' }), {
    kind: 'envelope',
    topic: 't',
    offset: 13,
    epoch: '9f2c01ab',
    data: '2-1',
  });
  assert.equal(classify({ topic: 't', offset: 13, epoch: 'e', binary: 'AAEC/w==' }).binary, 'AAEC/w==');
  // A topic without history: its envelope names the topic, with no position.
  assert.deepEqual(classify({ topic: 't', data: '{"published":"t","id":1}' }), {
    kind: 'envelope',
    topic: 't',
    data: '{"published":"t","id":1}',
  });
  assert.deepEqual(classify({ topic: 't', binary: 'AAE=' }), { kind: 'envelope', topic: 't', binary: 'AAE=' });
  assert.deepEqual(classify({ topic: 't', missed: 4 }), { kind: 'missed', topic: 't', count: 4 });
  assert.deepEqual(classify({ error: 'expected a JSON object' }), {
    kind: 'error',
    error: 'expected a JSON object',
  });
  // JSON that is none of the above (an emit or a broadcast) is a bare frame.
  for (const text of [
    '{"a":1}',
    '{"id":1}',
    '{"topic":"t"}',
    '{"topic":"t","data":5}',
    '{"topic":"t","data":"x","binary":"AA=="}',
    '{"topic":"t","data":"x","from":"mallory"}',
    '{"topic":"t","offset":1,"data":"x"}',
    '[1,2]',
    '"s"',
    '3',
    '{"error":"x","code":5}',
    '{"error":"x","id":5,"code":5}',
    '{"expiring":"soon"}',
    '{"subscribe":"t"}',
    '{"published":"t","error":"x"}',
    '{"topic":"t","offset":-1,"epoch":"e","data":""}',
  ]) {
    assert.equal(kindOf(text), null, text);
  }
  assert.equal(busy('rate limit'), true);
  assert.equal(busy('too many requests waiting'), true);
  assert.equal(busy('not permitted'), false);
});

const answer = (msg) => classify(msg);

test('answers are matched by id, whatever order they come in', () => {
  const l = new Ledger();
  const p1 = l.request('publish', 't', 'p1');
  const s = l.request('subscribe', 'h', 's');
  const p2 = l.request('publish', 't', 'p2');
  const p3 = l.request('publish', 't', 'p3');
  const r = l.request('rpc', 'time', 'r');
  assert.deepEqual([p1, s, p2, p3, r].map((e) => e.id), [1, 2, 3, 4, 5], 'ids count from 1');
  // p3 is refused at once by the rate limit, ahead of everything sent before it; three
  // publishes of one topic, so only the id tells which.
  assert.equal(l.answer(answer({ error: 'rate limit', publish: 't', id: 4 })).entry, p3);
  assert.equal(l.answer(answer({ rpc: 'time', id: 5, data: 1 })).entry, r);
  assert.equal(l.answer(answer({ published: 't', id: 3 })).entry, p2);
  assert.equal(l.answer(answer({ subscribed: 'h', offset: 0, epoch: null, id: 2 })).entry, s);
  assert.equal(l.answer(answer({ published: 't', id: 1 })).entry, p1);
  assert.equal(l.size, 0);
});

test('an answer for no waiting request: late when its id was given, stray otherwise', () => {
  const l = new Ledger();
  const p = l.request('publish', 't', 'p');
  const u = l.request('unsubscribe', 'u', 'u');
  assert.deepEqual(l.answer(answer({ published: 't', id: 1 })), { entry: p, late: false });
  // Answered twice, or answered after its timeout forgot it: late, dropped quietly.
  assert.deepEqual(l.answer(answer({ published: 't', id: 1 })), { entry: null, late: true });
  l.forget(u);
  assert.deepEqual(l.answer(answer({ unsubscribed: 'u', id: 2 })), { entry: null, late: true });
  // Ids this connection never gave.
  for (const id of [3, 0, -1, 1.5, '1', null]) {
    assert.deepEqual(l.answer(answer({ published: 't', id })), { entry: null, late: false }, String(id));
  }
});

test("an answer whose kind or name is not its id's request's is not taken for it", () => {
  const l = new Ledger();
  const p = l.request('publish', 't', 'p');
  assert.deepEqual(l.answer(answer({ subscribed: 't', id: 1 })), { entry: null, late: false });
  assert.deepEqual(l.answer(answer({ published: 'other', id: 1 })), { entry: null, late: false });
  assert.equal(l.size, 1, 'it still waits');
  // An error that names no request is its id's, whatever it was.
  assert.equal(l.answer(answer({ error: '"key" must be 1 to 256 bytes', id: 1 })).entry, p);
});

test('answers without an id (a server that sends none back) are matched in order by kind and name', () => {
  const l = new Ledger();
  const a1 = l.request('subscribe', 'a', 'a1');
  const b1 = l.request('subscribe', 'b', 'b1');
  const a2 = l.request('subscribe', 'a', 'a2');
  const r = l.request('refresh', undefined, 'r');
  assert.equal(l.answer(answer({ subscribed: 'b' })).entry, b1);
  assert.equal(l.answer(answer({ subscribe: 'a', error: 'not permitted' })).entry, a1);
  assert.equal(l.answer(answer({ refreshed: true })).entry, r);
  assert.equal(l.answer(answer({ subscribed: 'a' })).entry, a2);
  assert.equal(l.answer(answer({ subscribed: 'a' })).entry, null, 'nothing waits any more');
  assert.equal(l.size, 0);
});

test('drain gives back everything in flight, in the order it was sent, and ids start again', () => {
  const l = new Ledger();
  const order = [
    l.request('refresh', undefined, 1),
    l.request('publish', 't', 2),
    l.request('rpc', 'm', 3),
    l.request('publish', 't', 4),
  ];
  l.answer(answer({ rpc: 'm', id: 3, data: null }));
  assert.deepEqual(l.drain(), [order[0], order[1], order[3]]);
  assert.deepEqual(l.drain(), []);
  assert.equal(l.request('subscribe', 'x', 5).id, 1, 'a new connection counts from 1');
});
