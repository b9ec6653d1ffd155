//! A one-shot event of one generator thread that many of its tasks wait on, each in a slot of
//! its own (so waiting again does not pile up wakers): the run's end, a storm's start. Not a
//! channel: nothing is sent, and it does not cross threads.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

pub(crate) struct Signal {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Option<Waker>>>,
}

impl Signal {
    /// A signal for `slots` waiting tasks, not fired.
    pub(crate) fn new(slots: usize) -> Signal {
        Signal {
            fired: Cell::new(false),
            wakers: RefCell::new(vec![None; slots]),
        }
    }

    /// Fires it: every task waiting now, and every one that waits later, goes on.
    pub(crate) fn fire(&self) {
        self.fired.set(true);
        for w in self.wakers.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    /// Whether it has fired.
    pub(crate) fn fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once it has fired; `slot` is the waiting task's own place.
    pub(crate) async fn wait(&self, slot: usize) {
        std::future::poll_fn(|cx| {
            if self.fired.get() {
                return Poll::Ready(());
            }
            if let Some(w) = self.wakers.borrow_mut().get_mut(slot) {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_go_on_once_it_fires_and_later_ones_at_once() {
        use std::future::Future;
        let signal = Signal::new(2);
        let mut first = Box::pin(signal.wait(0));
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(!signal.fired());
        signal.fire();
        assert!(signal.fired());
        assert!(first.as_mut().poll(&mut cx).is_ready());
        // Waiting after it fired ends at once.
        futures_lite::future::block_on(signal.wait(1));
    }
}
