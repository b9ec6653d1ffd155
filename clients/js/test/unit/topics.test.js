//! Subscription bookkeeping: which subscribe frame, what an answer means, and which envelopes
//! are delivered: none twice across a recovery's seam, gaps counted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Topics, NO_HISTORY } from '../../src/topics.js';

const env = (topic, offset, epoch = 'e1', data = `p${offset}`) => ({
  kind: 'envelope',
  topic,
  offset,
  epoch,
  data,
});

test('a topic is asked with positions, then from the last position it saw', () => {
  const t = new Topics();
  const st = t.want('s');
  assert.deepEqual(t.frame(st), { subscribe: 's', positions: true });
  assert.deepEqual(t.subscribed(st, { subscribed: 's', offset: 4, epoch: 'e1' }), {
    topic: 's',
    positions: true,
    offset: 4,
    epoch: 'e1',
  });
  assert.deepEqual(t.frame(st), { subscribe: 's', since: { offset: 4, epoch: 'e1' } });
  assert.deepEqual(t.envelope(env('s', 5)), { deliver: true, gap: null });
  assert.deepEqual(t.frame(st), { subscribe: 's', since: { offset: 5, epoch: 'e1' } });
});

test('before any publication the position is offset 0 of no epoch, and is sent as such', () => {
  const t = new Topics();
  const st = t.want('s');
  t.frame(st);
  t.subscribed(st, { subscribed: 's', offset: 0, epoch: null });
  assert.deepEqual(t.frame(st), { subscribe: 's', since: { offset: 0, epoch: null } });
  assert.deepEqual(t.envelope(env('s', 1)), { deliver: true, gap: null });
  assert.deepEqual(t.envelope(env('s', 2)), { deliver: true, gap: null });
});

test('recovered: the missed publications follow and each is delivered once', () => {
  const t = new Topics();
  const st = t.want('s');
  t.frame(st);
  t.subscribed(st, { subscribed: 's', offset: 0, epoch: null });
  for (let i = 1; i <= 5; i++) t.envelope(env('s', i));
  t.disconnected();
  assert.deepEqual(t.frame(st), { subscribe: 's', since: { offset: 5, epoch: 'e1' } });
  const info = t.subscribed(st, { subscribed: 's', recovered: true, missed: 3, offset: 8, epoch: 'e1' });
  assert.equal(info.recovered, true);
  assert.equal(info.missed, 3);
  const delivered = [4, 5, 6, 7, 7, 8, 6, 9].filter((o) => t.envelope(env('s', o)).deliver);
  assert.deepEqual(delivered, [6, 7, 8, 9]);
});

test("not recovered: the reason is kept and the live stream follows the topic's last position", () => {
  const t = new Topics();
  const st = t.want('s');
  t.frame(st);
  t.subscribed(st, { subscribed: 's', offset: 9, epoch: 'e1' });
  t.disconnected();
  t.frame(st);
  const info = t.subscribed(st, {
    subscribed: 's',
    recovered: false,
    reason: 'epoch changed',
    offset: 2,
    epoch: 'e2',
  });
  assert.deepEqual(info, {
    topic: 's',
    positions: true,
    offset: 2,
    epoch: 'e2',
    recovered: false,
    reason: 'epoch changed',
  });
  assert.deepEqual(
    t.envelope(env('s', 2, 'e2')),
    { deliver: false, gap: null },
    'at the position: already held',
  );
  assert.deepEqual(t.envelope(env('s', 3, 'e2')), { deliver: true, gap: null });
});

test('skipped offsets are a gap; a new epoch starts again at 1', () => {
  const t = new Topics();
  const st = t.want('s');
  t.frame(st);
  t.subscribed(st, { subscribed: 's', offset: 3, epoch: 'e1' });
  assert.deepEqual(t.envelope(env('s', 4)), { deliver: true, gap: null });
  assert.deepEqual(t.envelope(env('s', 9)), { deliver: true, gap: { after: 4, count: 4 } });
  assert.deepEqual(t.envelope(env('s', 1, 'e2')), { deliver: true, gap: null });
  assert.deepEqual(t.envelope(env('s', 3, 'e2')), { deliver: true, gap: { after: 1, count: 1 } });
  assert.deepEqual(t.envelope(env('s', 4, 'e3')), { deliver: true, gap: { after: 0, count: 3 } });
});

test('envelopes of topics not wanted are not delivered', () => {
  const t = new Topics();
  const st = t.want('s');
  t.frame(st);
  t.subscribed(st, { subscribed: 's', offset: 0, epoch: null });
  t.drop('s');
  assert.equal(t.envelope(env('s', 1)).deliver, false);
  assert.equal(t.envelope(env('other', 1)).deliver, false);
  assert.equal(t.envelope({ kind: 'envelope', topic: 'other', data: 'x' }).deliver, false);
});

test('an envelope without a position is delivered as it comes; history off keeps no position', () => {
  const t = new Topics();
  const plain = t.want('p');
  t.frame(plain);
  t.refused(plain, NO_HISTORY);
  t.subscribed(plain, { subscribed: 'p' });
  for (let i = 0; i < 2; i++) {
    assert.deepEqual(t.envelope({ kind: 'envelope', topic: 'p', data: 'same' }), { deliver: true, gap: null });
  }
  assert.equal(plain.position, null);
  assert.deepEqual(t.frame(plain), { subscribe: 'p' });

  // A topic with history subscribed plainly: its envelopes carry positions (the connection
  // asked for envelopes), delivered as they come and never recovered from.
  const off = t.want('o', 'off');
  t.frame(off);
  t.subscribed(off, { subscribed: 'o' });
  assert.deepEqual(t.envelope(env('o', 5)), { deliver: true, gap: null });
  assert.deepEqual(t.envelope(env('o', 9)), { deliver: true, gap: null });
  t.disconnected();
  assert.deepEqual(t.frame(off), { subscribe: 'o' }, 'still plain after a reconnect');
});

test('a topic without history falls back to a plain subscription, unless history was required', () => {
  const t = new Topics();
  const auto = t.want('a');
  assert.deepEqual(t.frame(auto), { subscribe: 'a', positions: true });
  assert.deepEqual(t.refused(auto, NO_HISTORY), { retry: { subscribe: 'a' } });
  assert.deepEqual(t.subscribed(auto, { subscribed: 'a' }), { topic: 'a', positions: false });
  assert.deepEqual(t.frame(auto), { subscribe: 'a' }, 'and stays plain after a reconnect');
  assert.deepEqual(t.refused(auto, NO_HISTORY), { dropped: true }, 'a plain subscribe refused is final');

  const required = t.want('r', 'require');
  t.frame(required);
  assert.deepEqual(t.refused(required, NO_HISTORY), { dropped: true });
  const off = t.want('o', 'off');
  assert.deepEqual(t.frame(off), { subscribe: 'o' });
  const denied = t.want('d');
  t.frame(denied);
  assert.deepEqual(t.refused(denied, 'not permitted'), { dropped: true });
});
