//! The keep-alive and liveness rules as pure functions of instants and durations: when a
//! silent peer is idle and when a late shard must recheck it instead, how long a peer has to
//! answer a ping, and when each connection's pings fall. Not the session that applies them
//! (`ws::session`) nor the shard's timers.

use std::time::{Duration, Instant};

/// How long after a peer's idle deadline the shard may look at it and still judge it. A look
/// later than this means the shard itself was behind (blocked by a long listener, overloaded):
/// it may not have read what the peer sent meanwhile, so the peer is not blamed (`judge_silence`).
/// Well above the timer heap's tick and ordinary scheduling jitter.
pub const LATE_TOLERANCE: Duration = Duration::from_millis(250);

/// Rechecks a silent peer is granted for looks that came late before it is judged anyway: what
/// bounds how long a shard that stays behind keeps a truly silent peer.
pub const MAX_LATE_RECHECKS: u8 = 2;

/// What the liveness rule finds (`judge_silence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The idle deadline has not passed.
    Alive,
    /// The deadline passed while the shard was behind: ping the peer now and judge it at this
    /// time instead.
    Recheck(Instant),
    /// Silent past its deadline, seen by a look on time (or after every recheck): torn down.
    Idle,
}

/// The liveness rule, as a pure function. A peer whose idle `deadline` has passed at `now` is
/// idle only when the shard looked on time (within `LATE_TOLERANCE` of the deadline): silence
/// the shard measured while it was itself behind may be its own (the peer's answer can sit
/// unread in the socket), so a late look grants a recheck instead, one `answer_window` after a
/// fresh ping, at most `MAX_LATE_RECHECKS` times since the peer was last heard (`rechecks`).
///
/// The bound: a peer that stays silent is torn down by the first look at or after
/// `deadline + MAX_LATE_RECHECKS × answer_window`, plus however late the shard's looks were.
pub fn judge_silence(
    deadline: Instant,
    now: Instant,
    rechecks: u8,
    answer_window: Duration,
) -> Liveness {
    let Some(late) = now.checked_duration_since(deadline) else {
        return Liveness::Alive;
    };
    if late > LATE_TOLERANCE && rechecks < MAX_LATE_RECHECKS {
        Liveness::Recheck(now + answer_window)
    } else {
        Liveness::Idle
    }
}

/// How long a peer has to answer a ping before it may be judged: what the regular schedule
/// gives it (the idle timeout less one ping interval), or the whole idle timeout when that is
/// not longer than the interval.
pub fn answer_window(ping_interval: Duration, read_idle_timeout: Duration) -> Duration {
    match read_idle_timeout.checked_sub(ping_interval) {
        Some(window) if !window.is_zero() => window,
        _ => read_idle_timeout,
    }
}

/// The ping after one due at `due`, seen at `now`: the first of `due + k × interval` later
/// than `now`, so a late look keeps the connection's own phase instead of moving every
/// connection it served onto its own time (which would line their pings up into bursts).
pub fn next_ping_after(due: Instant, now: Instant, interval: Duration) -> Instant {
    let interval_ns = interval.as_nanos().max(1);
    let behind = now.saturating_duration_since(due).as_nanos();
    let steps = behind / interval_ns + 1;
    u64::try_from(steps * interval_ns)
        .ok()
        .and_then(|ns| due.checked_add(Duration::from_nanos(ns)))
        .unwrap_or(now + interval)
}

/// The first ping's delay for a connection given a `spread` key (its slab slot): one interval,
/// then a point in `(0, interval]` from the key's golden-ratio hash, so connections accepted
/// together (a reconnect storm) ping spread over the interval rather than in one burst, and
/// consecutive slots fall far apart. Never before one interval: a client is not pinged sooner
/// than the interval says, and its first answer comes well within the idle timeout (three
/// intervals unless set).
pub fn first_ping_delay(interval: Duration, spread: u64) -> Duration {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let fraction = u128::from(spread.wrapping_mul(GOLDEN) >> 32) + 1; // in 1..=2^32
    let nanos = (interval.as_nanos() * fraction) >> 32;
    interval + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
