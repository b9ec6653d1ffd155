//! The shard's one timer facility: a heap of (deadline, connection) entries and the task that
//! serves them. Not a timer per connection: an idle connection costs one heap entry.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future;
use glommio::timer::Timer;

use super::conn::Conn;
use super::notify::LocalNotify;
use super::ShardCore;

/// Entries may be stale (a connection that moved its deadline or went away): each is checked
/// against the connection when it comes due, which costs less than removing it from the heap.
#[derive(Default)]
pub(crate) struct Timers {
    heap: RefCell<BinaryHeap<Reverse<(Instant, usize, u64)>>>,
    earlier: LocalNotify,
}

impl Timers {
    /// Makes sure `conn` is looked at no later than `at`.
    pub(crate) fn schedule(&self, conn: &Conn, at: Instant) {
        if conn.scheduled.get().is_some_and(|s| s <= at) {
            return;
        }
        conn.scheduled.set(Some(at));
        let mut heap = self.heap.borrow_mut();
        let wake_driver = heap.peek().map_or(true, |Reverse((first, ..))| at < *first);
        heap.push(Reverse((at, conn.id.slot, conn.id.generation)));
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
}

/// Serves the heap until the shard stops.
pub(crate) async fn run(core: Rc<ShardCore>) {
    let mut due = Vec::new();
    loop {
        match core.timers.next() {
            None => core.timers.earlier.wait().await,
            Some(at) => {
                let now = Instant::now();
                if at > now {
                    future::or(
                        async {
                            Timer::new(at - now).await;
                        },
                        core.timers.earlier.wait(),
                    )
                    .await;
                    continue;
                }
            }
        }
        let now = Instant::now();
        core.timers.pop_due(now, &mut due);
        for (slot, generation) in due.drain(..) {
            if let Some(conn) = core.conn_at(slot, generation) {
                conn.on_timer(now);
            }
        }
        glommio::yield_if_needed().await;
    }
}
