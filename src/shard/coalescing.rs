//! When the shard's flush pass writes: at once, or after holding a fan-out shard's writes for a
//! short, bounded time so that more frames share each socket's write. Pure state driven by
//! `handle_pass` (what the last pass wrote) and `hold_until` (when the next pass may start);
//! no I/O and no timers of its own: the flush pass in `connections.rs` applies it.
//!
//! Why: on loopback and on real NICs alike, a `sendmsg` costs several microseconds in the
//! kernel (the TCP send and waking the receiver) whatever it carries, so a shard that writes
//! 10,000 sockets one frame each spends ten times what it would spend writing ten frames to
//! each. A shard that is already saturated batches by itself (frames pile up while a long
//! pass runs); holding helps between idle and saturated, where every message would otherwise
//! get a pass of its own.
//!
//! The rule, in five parts:
//! * **Only fan-out passes are held.** A pass that wrote at least `FAN_OUT_SOCKETS` sockets,
//!   fewer than 1.5 frames each, could have carried more per write; anything smaller (an echo,
//!   a chat among a few, a lone emit) is written at once.
//! * **Holding must pay.** A held pass that still carried fewer than 1.5 frames per socket
//!   shows the traffic goes to disjoint sockets (say, many topics with one publication each),
//!   where waiting gathers nothing: the shard writes at once again for `RETRY_AFTER` passes
//!   before it tries once more.
//! * **A hold ends once it pays.** A held pass goes as soon as it carries more than one frame
//!   per socket on the whole, before the bound if the frames are in by then
//!   (`Coalescing::short`).
//! * **A quiet shard writes at once.** Frames that find the shard idle since at least
//!   `QUIET_PASSES` bounds are written without waiting, so a lone message after a lull is not
//!   delayed; and `SMALL_LIMIT` held passes in a row that were not fan-out (pings, replies, a
//!   few emits) end holding, so traffic that is no longer fan-out is not held.
//! * **A burst is taken whole.** A fan-out pass that is about to start with fewer frames per
//!   socket than the fan-out pass before it waits, within the bound, until it has as many
//!   (`Coalescing::burst_short`). A publisher that answers a whole pass with a burst (a
//!   closed loop: each delivery releases the next message) sends it over the time it takes
//!   to read that pass; a pass that starts on the first message of it splits the burst over
//!   two passes, each socket then gets two writes where one would do, and the next burst
//!   arrives split the same way, for good. Waiting for the count the last pass carried keeps
//!   bursts whole; a pass that does not get there in the bound lowers the count, and one that
//!   already carries `BURST_ENOUGH` frames per socket does not wait.
//!
//! The bound (`Builder::write_coalescing`) is the most any frame waits for its write on
//! account of holding; zero turns holding off.

use std::time::{Duration, Instant};

/// Sockets a pass must write to count as fan-out: at a few microseconds per write, a pass of
/// this size costs hundreds of microseconds, the scale a short hold can save on.
pub(crate) const FAN_OUT_SOCKETS: usize = 64;

/// After a hold that gathered nothing, passes written at once before holding is tried again.
pub(crate) const RETRY_AFTER: u32 = 64;

/// Dirty sockets seen this many bounds after the last pass ended find a quiet shard.
pub(crate) const QUIET_PASSES: u32 = 4;

/// Held passes in a row that were not fan-out before holding ends.
pub(crate) const SMALL_LIMIT: u32 = 8;

/// Frames per socket from which a pass goes without waiting for the rest of a burst: a write
/// of eight frames already spreads its fixed cost thin, and waiting for more only adds
/// latency. A chat among 100 (every client publishing to all) otherwise waited for passes of
/// 35 frames a write instead of 18: 7% less CPU per delivery for 0.6 ms more at p50.
pub(crate) const BURST_ENOUGH: u64 = 8;

/// Whether the flush pass writes at once or holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Writes at once; holds again after a sparse fan-out pass once `wait` passes went by.
    Direct { wait: u32 },
    /// Holds each pass for up to the bound, while held fan-out passes carry enough per write;
    /// `small` counts the held passes since the last fan-out one.
    Holding { small: u32 },
}

/// The flush pass's holding rule (module doc).
#[derive(Debug, Clone)]
pub(crate) struct Coalescing {
    bound: Duration,
    state: State,
    last_end: Option<Instant>,
    /// What the last fan-out pass carried: (frames, sockets).
    last_fan_out: Option<(u64, usize)>,
}

/// What one pass wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Sockets written to.
    pub(crate) sockets: usize,
    /// Frames queued for them since the pass before.
    pub(crate) frames: u64,
    /// Whether it was held.
    pub(crate) held: bool,
}

impl Pass {
    /// At least 1.5 frames per socket: writes that carry more than one frame on the whole.
    fn dense(&self) -> bool {
        self.frames.saturating_mul(2) >= self.sockets as u64 * 3
    }

    fn fan_out(&self) -> bool {
        self.sockets >= FAN_OUT_SOCKETS
    }
}

impl Coalescing {
    /// Holding for at most `bound`; `Duration::ZERO` never holds.
    pub(crate) fn new(bound: Duration) -> Coalescing {
        Coalescing {
            bound,
            state: State::Direct { wait: 0 },
            last_end: None,
            last_fan_out: None,
        }
    }

    /// The longest any pass waits on account of holding.
    pub(crate) fn bound(&self) -> Duration {
        self.bound
    }

    /// Whether a pass about to write `sockets` sockets with `frames` frames queued for them is
    /// a burst's first part: a fan-out pass with fewer frames per socket than the fan-out pass
    /// before it (module doc), worth waiting for the rest within the bound, unless it already
    /// carries `BURST_ENOUGH` per socket.
    fn burst_short(&self, sockets: usize, frames: u64) -> bool {
        if self.bound.is_zero() || sockets < FAN_OUT_SOCKETS {
            return false;
        }
        if frames >= sockets as u64 * BURST_ENOUGH {
            return false;
        }
        let Some((last_frames, last_sockets)) = self.last_fan_out else {
            return false;
        };
        // frames / sockets < last_frames / last_sockets, without division.
        u128::from(frames) * (last_sockets as u128) < u128::from(last_frames) * (sockets as u128)
    }

    /// Whether a pass about to write `sockets` sockets with `frames` frames queued for them
    /// waits for more, within the bound: a `held` one until it carries more than a frame per
    /// write on the whole (`Pass::dense`), and the first part of a burst until it has the rest
    /// (`burst_short`). A hold ends there rather than at the bound since waiting longer adds
    /// latency for less: a second frame per write halves the writes, a third saves only a
    /// sixth more. A steady stream then waits one interval between its messages, not the bound.
    pub(crate) fn short(&self, held: bool, sockets: usize, frames: u64) -> bool {
        let pass = Pass {
            sockets,
            frames,
            held,
        };
        (held && !pass.dense()) || self.burst_short(sockets, frames)
    }

    /// When the pass for frames first queued at `first_dirty` may start: `None` at once.
    pub(crate) fn hold_until(&self, first_dirty: Instant) -> Option<Instant> {
        if self.bound.is_zero() || !matches!(self.state, State::Holding { .. }) {
            return None;
        }
        let last_end = self.last_end?;
        let quiet = self.bound * QUIET_PASSES;
        if first_dirty.saturating_duration_since(last_end) >= quiet {
            return None;
        }
        Some(first_dirty + self.bound)
    }

    /// A pass ended at `end` having written `pass`.
    pub(crate) fn handle_pass(&mut self, pass: Pass, end: Instant) {
        self.last_end = Some(end);
        if self.bound.is_zero() {
            return;
        }
        if pass.fan_out() {
            self.last_fan_out = Some((pass.frames, pass.sockets));
        }
        self.state = match self.state {
            State::Direct { wait } if pass.fan_out() && !pass.dense() => match wait {
                0 => State::Holding { small: 0 },
                n => State::Direct { wait: n - 1 },
            },
            State::Direct { wait } => State::Direct { wait },
            // Written at once after a lull: says nothing about holding.
            State::Holding { small } if !pass.held => State::Holding { small },
            // Pings, replies, a few emits: held a while, until the fan-out looks over.
            State::Holding { small } if !pass.fan_out() => match small + 1 {
                SMALL_LIMIT => State::Direct { wait: 0 },
                small => State::Holding { small },
            },
            // Held and gathered: keep holding.
            State::Holding { .. } if pass.dense() => State::Holding { small: 0 },
            // Held and gathered nothing: the traffic goes to disjoint sockets.
            State::Holding { .. } => State::Direct { wait: RETRY_AFTER },
        };
    }

    /// Whether the next pass will be held (for tests and metrics).
    #[cfg(test)]
    fn holding(&self) -> bool {
        matches!(self.state, State::Holding { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_millis(1);

    fn pass(sockets: usize, frames: u64, held: bool) -> Pass {
        Pass {
            sockets,
            frames,
            held,
        }
    }

    /// Drives `c` with `p` ending at `t`, then asks about frames queued 100 µs later.
    fn after(c: &mut Coalescing, p: Pass, t: Instant) -> Option<Instant> {
        c.handle_pass(p, t);
        c.hold_until(t + Duration::from_micros(100))
    }

    #[test]
    fn small_passes_and_dense_passes_are_written_at_once() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        assert_eq!(c.hold_until(t), None, "nothing known yet");
        assert_eq!(after(&mut c, pass(10, 10, false), t), None, "an echo");
        assert_eq!(after(&mut c, pass(FAN_OUT_SOCKETS - 1, 63, false), t), None);
        assert_eq!(
            after(&mut c, pass(10_000, 80_000, false), t),
            None,
            "a saturated broadcast batches by itself"
        );
    }

    #[test]
    fn a_sparse_fan_out_pass_holds_the_next_for_the_bound() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        let next = after(&mut c, pass(10_000, 10_000, false), t);
        assert_eq!(next, Some(t + Duration::from_micros(100) + BOUND));
    }

    #[test]
    fn holding_stays_while_it_gathers_and_stops_when_it_does_not() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        c.handle_pass(pass(1_000, 1_000, false), t);
        assert!(c.holding());
        c.handle_pass(pass(1_000, 4_000, true), t);
        assert!(c.holding(), "held passes carry four frames a write");
        c.handle_pass(pass(1_000, 1_100, true), t);
        assert!(!c.holding(), "a held pass that gathered nothing");
        for _ in 0..RETRY_AFTER {
            assert_eq!(after(&mut c, pass(1_000, 1_000, false), t), None);
        }
        c.handle_pass(pass(1_000, 1_000, false), t);
        assert!(c.holding(), "tried again after RETRY_AFTER passes");
    }

    #[test]
    fn a_load_that_is_no_longer_fan_out_is_written_at_once() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        c.handle_pass(pass(1_000, 1_000, false), t);
        for _ in 1..SMALL_LIMIT {
            assert!(
                after(&mut c, pass(5, 5, true), t).is_some(),
                "a ping between fan-outs"
            );
        }
        c.handle_pass(pass(1_000, 4_000, true), t);
        for _ in 1..SMALL_LIMIT {
            c.handle_pass(pass(5, 5, true), t);
        }
        assert!(
            c.holding(),
            "a fan-out pass that gathered starts the count again"
        );
        assert_eq!(after(&mut c, pass(5, 5, true), t), None);
        assert!(
            after(&mut c, pass(1_000, 1_000, false), t).is_some(),
            "free to hold again at the next sparse fan-out pass"
        );
    }

    #[test]
    fn a_quiet_shard_writes_at_once() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        c.handle_pass(pass(1_000, 1_000, false), t);
        assert!(c
            .hold_until(t + BOUND * QUIET_PASSES - Duration::from_micros(1))
            .is_some());
        assert_eq!(c.hold_until(t + BOUND * QUIET_PASSES), None);
        // That quiet pass, not held, does not end holding.
        c.handle_pass(pass(1_000, 1_000, false), t + BOUND * 10);
        assert!(c.holding());
    }

    #[test]
    fn a_pass_waits_for_the_rest_of_a_burst() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        assert!(!c.burst_short(10_000, 10_000), "no fan-out pass seen yet");
        c.handle_pass(pass(10_000, 80_000, false), t);
        assert!(c.burst_short(10_000, 10_000), "one of a burst of eight");
        assert!(c.burst_short(10_000, 79_999));
        assert!(!c.burst_short(10_000, 80_000), "the burst is whole");
        assert!(
            !c.burst_short(5_000, 40_000),
            "as many per socket, to fewer sockets"
        );
        assert!(
            !c.burst_short(FAN_OUT_SOCKETS - 1, 1),
            "a small pass is written at once"
        );
        // A burst that did not get whole in the bound lowers the count.
        c.handle_pass(pass(10_000, 30_000, true), t);
        assert!(!c.burst_short(10_000, 30_000));
        assert!(c.burst_short(10_000, 20_000));
        // Small passes in between say nothing about bursts.
        c.handle_pass(pass(3, 3, false), t);
        assert!(c.burst_short(10_000, 20_000));
    }

    #[test]
    fn a_pass_with_enough_per_socket_does_not_wait_for_the_rest() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        c.handle_pass(pass(100, 3_500, false), t);
        assert!(c.burst_short(100, 100 * BURST_ENOUGH - 1));
        assert!(
            !c.burst_short(100, 100 * BURST_ENOUGH),
            "eight a socket: go"
        );
        assert!(!c.short(true, 100, 1_800), "a chat's pass of 18 a socket");
    }

    #[test]
    fn a_held_pass_goes_once_it_carries_more_than_a_frame_per_write() {
        let t = Instant::now();
        let mut c = Coalescing::new(BOUND);
        c.handle_pass(pass(100, 100, false), t);
        assert!(c.short(true, 100, 100), "one frame a socket: wait");
        assert!(c.short(true, 100, 149));
        assert!(!c.short(true, 100, 150), "a frame and a half a socket: go");
        assert!(!c.short(true, 100, 200), "the second message of a stream");
        assert!(
            !c.short(false, 100, 100),
            "not held, not a burst's part: go"
        );
        // Held and dense, but short of the last burst: wait for the rest.
        c.handle_pass(pass(100, 400, true), t);
        assert!(c.short(true, 100, 200));
        assert!(!c.short(true, 100, 400));
    }

    #[test]
    fn a_zero_bound_never_holds() {
        let t = Instant::now();
        let mut c = Coalescing::new(Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(after(&mut c, pass(10_000, 10_000, false), t), None);
        }
        c.handle_pass(pass(10_000, 80_000, false), t);
        assert!(!c.burst_short(10_000, 10_000));
    }
}
