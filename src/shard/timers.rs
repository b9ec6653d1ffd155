//! The shard's one timer facility: a heap of (deadline, connection) entries and the task that
//! serves them. Not a timer per connection: an idle connection costs one heap entry, and
//! deadlines are rounded up to a tick, so one wake-up serves every connection due in it.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;

use super::notify::LocalNotify;
use crate::registry::ConnId;
use crate::ws::stamp::Stamp;

/// The timers' resolution: a deadline is rounded up to a tick of 1/64 of how far ahead it was
/// set, kept between `MIN_TICK` and `MAX_TICK`, so the connections due within one tick are
/// served by one pass, one wake-up, however their pings are spread. A 25 s ping waits at most
/// 100 ms more (at most 10 passes a second for all of them); a 20 ms retry window, 10 ms. Far
/// below the liveness rule's tolerance for a late look (`ws::liveness::LATE_TOLERANCE`).
pub(crate) const MIN_TICK: Duration = Duration::from_millis(10);
/// The coarsest tick (see `MIN_TICK`).
pub(crate) const MAX_TICK: Duration = Duration::from_millis(100);

/// The tick for a deadline set `ahead` of now.
fn tick_for(ahead: Duration) -> Duration {
    (ahead / 64).clamp(MIN_TICK, MAX_TICK)
}

/// `at` rounded up to the next whole `tick` after `epoch` (`at` itself when it is on one, or
/// before `epoch`).
fn round_up(epoch: Instant, at: Instant, tick: Duration) -> Instant {
    let Some(since) = at.checked_duration_since(epoch) else {
        return at;
    };
    let tick_ns = tick.as_nanos().max(1);
    let ticks = since.as_nanos().div_ceil(tick_ns);
    u64::try_from(ticks * tick_ns)
        .ok()
        .and_then(|ns| epoch.checked_add(Duration::from_nanos(ns)))
        .unwrap_or(at)
}

/// Entries may be stale (a connection that moved its deadline or went away): each is checked
/// against the connection when it comes due, which costs less than removing it from the heap.
pub(crate) struct Timers {
    /// (when, slot, generation): 24 bytes an entry.
    heap: RefCell<BinaryHeap<Reverse<(Stamp, usize, u64)>>>,
    earlier: LocalNotify,
    /// Where the ticks count from.
    epoch: Instant,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            heap: RefCell::default(),
            earlier: LocalNotify::default(),
            epoch: Instant::now(),
        }
    }
}

impl Timers {
    /// Makes sure connection `id` is looked at by the end of the tick that holds `at`.
    /// `scheduled` is the connection's own record of its earliest entry, so a later deadline
    /// adds nothing.
    pub(crate) fn schedule(&self, scheduled: &Cell<Option<Stamp>>, id: ConnId, at: Instant) {
        let ahead = at.saturating_duration_since(Instant::now());
        let at = Stamp::of(round_up(self.epoch, at, tick_for(ahead)));
        if scheduled.get().is_some_and(|s| s <= at) {
            return;
        }
        scheduled.set(Some(at));
        let mut heap = self.heap.borrow_mut();
        let wake_driver = heap.peek().map_or(true, |Reverse((first, ..))| at < *first);
        heap.push(Reverse((at, id.slot, id.generation)));
        drop(heap);
        if wake_driver {
            self.earlier.notify();
        }
    }

    fn next(&self) -> Option<Instant> {
        self.heap
            .borrow()
            .peek()
            .map(|Reverse((at, ..))| at.instant())
    }

    fn pop_due(&self, now: Instant, due: &mut Vec<(usize, u64)>) {
        let now = Stamp::of(now);
        let mut heap = self.heap.borrow_mut();
        while let Some(Reverse((at, slot, generation))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            due.push((slot, generation));
        }
    }

    /// Waits until the earliest entry is due (or an earlier one is added), then moves the due
    /// entries, as (slot, generation), into `due`.
    pub(crate) async fn next_due(&self, due: &mut Vec<(usize, u64)>) {
        loop {
            match self.next() {
                None => self.earlier.wait().await,
                Some(at) => {
                    let now = Instant::now();
                    if at <= now {
                        self.pop_due(now, due);
                        return;
                    }
                    future::or(
                        async {
                            Timer::new(at - now).await;
                        },
                        self.earlier.wait(),
                    )
                    .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = MIN_TICK;

    #[test]
    fn deadlines_round_up_to_the_next_tick() {
        let epoch = Instant::now();
        let ms = |n| epoch + Duration::from_millis(n);
        assert_eq!(round_up(epoch, ms(0), TICK), ms(0));
        assert_eq!(round_up(epoch, ms(1), TICK), ms(10));
        assert_eq!(round_up(epoch, ms(10), TICK), ms(10));
        assert_eq!(
            round_up(epoch, ms(10) + Duration::from_nanos(1), TICK),
            ms(20)
        );
        assert_eq!(round_up(ms(5), epoch, TICK), epoch, "before the epoch");
        let tick = tick_for(Duration::from_secs(1));
        assert_eq!(tick, Duration::from_nanos(15_625_000));
        assert_eq!(round_up(epoch, ms(1), tick), epoch + tick);
    }

    #[test]
    fn a_tick_is_a_64th_of_how_far_ahead_within_bounds() {
        assert_eq!(tick_for(Duration::from_millis(20)), MIN_TICK);
        assert_eq!(tick_for(Duration::from_secs(25)), MAX_TICK);
        assert_eq!(
            tick_for(Duration::from_secs(3)),
            Duration::from_millis(46) + Duration::from_micros(875)
        );
    }
}
