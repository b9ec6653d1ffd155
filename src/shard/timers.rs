//! The shard's one timer facility: a heap of (deadline, connection) entries and the task that
//! serves them. Not a timer per connection: an idle connection costs one heap entry.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use futures_lite::future;
use glommio::timer::Timer;

use super::notify::LocalNotify;
use crate::registry::ConnId;

/// Entries may be stale (a connection that moved its deadline or went away): each is checked
/// against the connection when it comes due, which costs less than removing it from the heap.
#[derive(Default)]
pub(crate) struct Timers {
    heap: RefCell<BinaryHeap<Reverse<(Instant, usize, u64)>>>,
    earlier: LocalNotify,
}

impl Timers {
    /// Makes sure connection `id` is looked at no later than `at`. `scheduled` is the
    /// connection's own record of its earliest entry, so a later deadline adds nothing.
    pub(crate) fn schedule(&self, scheduled: &Cell<Option<Instant>>, id: ConnId, at: Instant) {
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
        self.heap.borrow().peek().map(|Reverse((at, ..))| *at)
    }

    fn pop_due(&self, now: Instant, due: &mut Vec<(usize, u64)>) {
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
