//! One shard's webhook outbox (pure): the events waiting for the backend, which of them are
//! being delivered, and when a failed delivery is tried again. No I/O and no clock: the
//! shard's forwarding task (`backend::forward`) posts what `next_batch` gives and reports back.
//!
//! The rules: at most `capacity` events wait (an event past that is refused at once, and the
//! caller counts it dropped); one delivery is in flight at a time, so the backend sees each
//! connection's events in order; while it is in flight new events gather, so a busy shard
//! sends big batches and an idle one sends each event at once; a delivery that fails in a way
//! worth retrying is retried, with the same events first, after a backoff that doubles up to a
//! cap, `retries` times; then its events are dropped and counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first, before the events are dropped.
    pub retries: u32,
    /// The wait before the first retry; each next one doubles it.
    pub first_backoff: Duration,
    /// The longest wait between tries.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1`, after `attempt` (1-based) failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend took the batch (a 2xx answer).
    Delivered,
    /// A failure another try may fix: no connection, a timeout, 5xx, 408 or 429.
    Retry,
    /// A failure no retry fixes: the backend refused the batch (any other answer).
    Refused,
}

impl Outcome {
    /// The outcome of an HTTP answer with `status`.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Delivered,
            408 | 429 | 500..=599 => Outcome::Retry,
            _ => Outcome::Refused,
        }
    }
}

/// What became of a delivery once reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// This many events reached the backend.
    Delivered(usize),
    /// It will be tried again at this time.
    RetryAt(Instant),
    /// This many events were given up.
    Dropped(usize),
}

/// The events waiting for one destination, oldest first.
#[derive(Debug)]
pub struct Outbox {
    waiting: VecDeque<Vec<u8>>,
    capacity: usize,
    batch_max: usize,
    policy: RetryPolicy,
    /// Events at the front of `waiting` that are being delivered.
    in_flight: usize,
    /// Failed tries of the events at the front.
    attempts: u32,
    /// No delivery before this time (a backoff).
    not_before: Option<Instant>,
}

/// An event refused because `capacity` were already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Outbox {
    /// An empty outbox: at most `capacity` waiting events, at most `batch_max` per delivery.
    pub fn new(capacity: usize, batch_max: usize, policy: RetryPolicy) -> Outbox {
        Outbox {
            waiting: VecDeque::new(),
            capacity: capacity.max(1),
            batch_max: batch_max.max(1),
            policy,
            in_flight: 0,
            attempts: 0,
            not_before: None,
        }
    }

    /// Adds one serialised event, unless `capacity` are waiting.
    pub fn push(&mut self, event: Vec<u8>) -> Result<(), Full> {
        if self.waiting.len() >= self.capacity {
            return Err(Full);
        }
        self.waiting.push_back(event);
        Ok(())
    }

    /// Events waiting, those in flight included.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The next delivery, if one may start at `now`: the oldest events, at most `batch_max`.
    /// `None` while one is in flight, during a backoff, or when nothing waits.
    pub fn next_batch(&mut self, now: Instant) -> Option<impl Iterator<Item = &[u8]>> {
        if self.in_flight > 0 || self.waiting.is_empty() || self.not_before.is_some_and(|t| now < t)
        {
            return None;
        }
        self.not_before = None;
        self.in_flight = self.waiting.len().min(self.batch_max);
        Some(self.waiting.iter().take(self.in_flight).map(Vec::as_slice))
    }

    /// When the caller should look again though nothing new arrived: the end of a backoff.
    pub fn wake_at(&self) -> Option<Instant> {
        self.not_before.filter(|_| !self.waiting.is_empty())
    }

    /// Reports how the delivery in flight ended, at `now`.
    pub fn settle(&mut self, outcome: Outcome, now: Instant) -> Settled {
        let n = std::mem::take(&mut self.in_flight);
        match outcome {
            Outcome::Delivered => {
                self.waiting.drain(..n);
                self.attempts = 0;
                Settled::Delivered(n)
            }
            Outcome::Retry if self.attempts < self.policy.retries => {
                self.attempts += 1;
                let at = now + self.policy.backoff(self.attempts);
                self.not_before = Some(at);
                Settled::RetryAt(at)
            }
            Outcome::Retry | Outcome::Refused => {
                self.waiting.drain(..n);
                self.attempts = 0;
                Settled::Dropped(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        retries: 2,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(150),
    };

    fn batch(o: &mut Outbox, now: Instant) -> Option<Vec<String>> {
        o.next_batch(now)
            .map(|b| b.map(|e| String::from_utf8_lossy(e).into()).collect())
    }

    fn filled(n: usize) -> Outbox {
        let mut o = Outbox::new(4, 3, POLICY);
        for i in 0..n {
            o.push(format!("e{i}").into_bytes()).unwrap();
        }
        o
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy {
            retries: 9,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn statuses_sort_into_delivered_retry_and_refused() {
        assert_eq!(Outcome::of_status(204), Outcome::Delivered);
        for s in [408, 429, 500, 503] {
            assert_eq!(Outcome::of_status(s), Outcome::Retry, "{s}");
        }
        for s in [301, 400, 401, 404, 413] {
            assert_eq!(Outcome::of_status(s), Outcome::Refused, "{s}");
        }
    }

    #[test]
    fn a_bounded_outbox_refuses_past_its_capacity() {
        let mut o = filled(4);
        assert_eq!(o.push(b"e4".to_vec()), Err(Full));
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn one_delivery_at_a_time_oldest_first_in_batches() {
        let t0 = Instant::now();
        let mut o = filled(4);
        assert_eq!(batch(&mut o, t0).unwrap(), ["e0", "e1", "e2"]);
        // In flight: nothing more goes, and new events wait behind.
        assert_eq!(batch(&mut o, t0), None);
        assert_eq!(o.settle(Outcome::Delivered, t0), Settled::Delivered(3));
        o.push(b"e4".to_vec()).unwrap();
        assert_eq!(batch(&mut o, t0).unwrap(), ["e3", "e4"]);
        assert_eq!(o.settle(Outcome::Delivered, t0), Settled::Delivered(2));
        assert!(o.is_empty());
        assert_eq!(batch(&mut o, t0), None);
    }

    #[test]
    fn a_failed_delivery_is_retried_first_after_a_backoff_then_dropped() {
        let t0 = Instant::now();
        let mut o = filled(4);
        batch(&mut o, t0).unwrap();
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(o.settle(Outcome::Retry, t0), Settled::RetryAt(t1));
        assert_eq!(o.wake_at(), Some(t1));
        assert_eq!(batch(&mut o, t1 - Duration::from_millis(1)), None);
        // The same events, first.
        assert_eq!(batch(&mut o, t1).unwrap(), ["e0", "e1", "e2"]);
        let t2 = t1 + Duration::from_millis(150);
        assert_eq!(o.settle(Outcome::Retry, t1), Settled::RetryAt(t2));
        batch(&mut o, t2).unwrap();
        // Two retries spent: the batch is given up, the rest goes on.
        assert_eq!(o.settle(Outcome::Retry, t2), Settled::Dropped(3));
        assert_eq!(batch(&mut o, t2).unwrap(), ["e3"]);
        assert_eq!(o.settle(Outcome::Delivered, t2), Settled::Delivered(1));
    }

    #[test]
    fn a_refused_delivery_is_dropped_at_once_and_resets_the_attempts() {
        let t0 = Instant::now();
        let mut o = filled(4);
        batch(&mut o, t0).unwrap();
        assert!(matches!(o.settle(Outcome::Retry, t0), Settled::RetryAt(_)));
        let later = t0 + Duration::from_secs(1);
        batch(&mut o, later).unwrap();
        assert_eq!(o.settle(Outcome::Refused, later), Settled::Dropped(3));
        batch(&mut o, later).unwrap();
        // A fresh batch has its own two retries.
        assert!(matches!(
            o.settle(Outcome::Retry, later),
            Settled::RetryAt(_)
        ));
        assert_eq!(o.wake_at(), Some(later + Duration::from_millis(100)));
    }
}
