//! Backoff: full jitter under an exponential, capped ceiling; reset only after a connection
//! that stayed up. Pure: the random source and the clock are the test's.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../../src/backoff.js';

test('the ceiling doubles from the initial delay and stops at the cap', () => {
  const b = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, random: () => 0.999999 });
  const delays = Array.from({ length: 7 }, () => b.next());
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999, 999]);
});

test('full jitter: every delay lies in [0, ceiling) and spreads over it', () => {
  const b = new Backoff({ initialDelayMs: 1000, maxDelayMs: 1000 });
  const delays = Array.from({ length: 2000 }, () => b.next());
  assert.ok(delays.every((d) => Number.isInteger(d) && d >= 0 && d < 1000));
  // Spread, not clustered at the ceiling: each quarter of the range holds a fair share.
  for (let q = 0; q < 4; q++) {
    const n = delays.filter((d) => d >= q * 250 && d < (q + 1) * 250).length;
    assert.ok(n > 350 && n < 650, `quarter ${q}: ${n} of 2000`);
  }
  assert.deepEqual(new Backoff({ random: () => 0 }).next(), 0);
});

test('a connection that stayed up resets the count; a short one does not', () => {
  const b = new Backoff({ initialDelayMs: 100, maxDelayMs: 10_000, stableAfterMs: 5000, random: () => 0.5 });
  b.next();
  b.next();
  b.next();
  assert.equal(b.ceiling(), 800);
  b.opened(1000);
  b.closed(5999);
  assert.equal(b.ceiling(), 800, 'up 4,999 ms: not stable');
  b.opened(10_000);
  b.closed(15_000);
  assert.equal(b.ceiling(), 100, 'up 5,000 ms: stable');
  assert.equal(b.next(), 50);
});

test('attempts that never opened never reset, and a long outage stays at the cap', () => {
  const b = new Backoff({ initialDelayMs: 1, maxDelayMs: 30_000, random: () => 0.999999 });
  for (let i = 0; i < 2000; i++) {
    b.closed(i * 1_000_000);
    b.next();
  }
  assert.equal(b.ceiling(), 30_000);
  assert.equal(b.next(), 29_999);
});

test('nonsense settings are refused', () => {
  assert.throws(() => new Backoff({ initialDelayMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ initialDelayMs: 10, maxDelayMs: 5 }), RangeError);
  assert.throws(() => new Backoff({ factor: 0.5 }), RangeError);
});
