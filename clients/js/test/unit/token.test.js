//! Reading a JWT's exp without verifying it, and when to refresh ahead of it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jwtExpiry, refreshDelay } from '../../src/token.js';
import { hs256 } from '../support/server.js';

test('exp is read from a JWT, and nothing from what is not one', () => {
  assert.equal(jwtExpiry(hs256('s', { sub: 'alice', exp: 1_900_000_000 })), 1_900_000_000);
  // Claims whose base64url uses '-' and '_' and needs no padding, or one or two.
  for (const sub of ['a', 'ab', 'abc', '>>>???', 'ü€']) {
    assert.equal(jwtExpiry(hs256('s', { sub, exp: 42 })), 42, sub);
  }
  assert.equal(jwtExpiry(hs256('s', { sub: 'alice' })), null);
  assert.equal(jwtExpiry('not a token'), null);
  assert.equal(jwtExpiry('a.b.c'), null);
  assert.equal(jwtExpiry(undefined), null);
  assert.equal(jwtExpiry(hs256('s', { sub: 'a', exp: 'soon' })), null);
});

test('a long token is refreshed the margin ahead of exp, a short one at half its life', () => {
  const now = 1_000_000_000_000;
  assert.equal(refreshDelay(now / 1000 + 3600, now, 30_000), 3_570_000);
  assert.equal(refreshDelay(now / 1000 + 4, now, 30_000), 2000);
  assert.equal(refreshDelay(now / 1000, now, 30_000), 0);
  assert.equal(refreshDelay(now / 1000 - 10, now, 30_000), 0);
  assert.equal(refreshDelay(now / 1000 + 60, now, 0), 60_000);
});
