//! Reconnect delays: exponential backoff with full jitter, capped, reset after a connection
//! that stayed up. Pure (the clock and the random source are passed in); no timers.

/**
 * Delays between connection attempts. The n-th attempt after a failure waits a random time in
 * [0, min(maxDelayMs, initialDelayMs × factor^n)) ("full jitter": a crowd of clients that lost
 * the same server spreads out instead of coming back in waves). A connection that stayed up for
 * stableAfterMs resets the count, so one drop after a long healthy session retries fast.
 */
export class Backoff {
  constructor({
    initialDelayMs = 500,
    maxDelayMs = 30_000,
    factor = 2,
    stableAfterMs = 10_000,
    random = Math.random,
  } = {}) {
    if (!(initialDelayMs > 0) || !(maxDelayMs >= initialDelayMs) || !(factor >= 1)) {
      throw new RangeError('backoff needs 0 < initialDelayMs <= maxDelayMs and factor >= 1');
    }
    this.initialDelayMs = initialDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.factor = factor;
    this.stableAfterMs = stableAfterMs;
    this.random = random;
    /** Attempts since the last reset: the exponent of the next ceiling. */
    this.attempt = 0;
    this.openedAt = null;
  }

  /** The ceiling of the next delay, before jitter. */
  ceiling() {
    // Capped before it can overflow to Infinity on a long outage.
    const exp = Math.min(this.attempt, 64);
    return Math.min(this.maxDelayMs, this.initialDelayMs * this.factor ** exp);
  }

  /** The delay before the next attempt, and counts it. */
  next() {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt += 1;
    return delay;
  }

  /** A connection opened at `now` (ms). */
  opened(now) {
    this.openedAt = now;
  }

  /** The connection closed at `now` (ms): one that stayed up long enough resets the count. */
  closed(now) {
    if (this.openedAt !== null && now - this.openedAt >= this.stableAfterMs) {
      this.attempt = 0;
    }
    this.openedAt = null;
  }

  reset() {
    this.attempt = 0;
    this.openedAt = null;
  }
}
