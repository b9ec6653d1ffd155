//! The sockets that the shard's short-lived tasks hold (handshakes, lingering closes), so that a
//! stopping shard can end those tasks and leave no descriptor behind. Not the open
//! connections' sockets: their connection owns them.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;
use slab::Slab;

use super::notify::LocalNotify;

/// Longest a stopping shard waits for its tasks to drop their sockets.
const HALT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct TaskSockets {
    held: RefCell<Slab<RawFd>>,
    released: LocalNotify,
}

/// A task's socket, known to the shard while the guard lives.
pub(crate) struct Hold {
    sockets: Rc<TaskSockets>,
    key: usize,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.sockets.held.borrow_mut().remove(self.key);
        self.sockets.released.notify();
    }
}

impl TaskSockets {
    /// Makes `fd` known to the shard until the guard drops.
    pub(crate) fn hold(self: &Rc<Self>, fd: RawFd) -> Hold {
        let key = self.held.borrow_mut().insert(fd);
        Hold {
            sockets: Rc::clone(self),
            key,
        }
    }

    /// Shuts down every socket still held, so the tasks' reads and writes end and they drop
    /// their sockets, then waits until they have, for at most `HALT_TIMEOUT`.
    pub(crate) async fn halt(&self, shard: usize) {
        for (_, &fd) in self.held.borrow().iter() {
            // SAFETY: the fd belongs to a live task (its guard is in the slab), so it is open;
            // shutdown only ends the stream's traffic.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
        let give_up = Instant::now() + HALT_TIMEOUT;
        while !self.held.borrow().is_empty() {
            let now = Instant::now();
            if now >= give_up {
                let left = self.held.borrow().len();
                tracing::warn!(shard, left, "sockets still open at exit");
                return;
            }
            future::or(self.released.wait(), async {
                Timer::new(give_up - now).await;
            })
            .await;
        }
    }
}
