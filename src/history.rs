//! Topic history (pure): the publications a topic keeps, each with its position (an offset that
//! grows by one per publication of the topic, and the epoch of the history that gave it), and
//! the seam that joins what a recovering subscriber missed to the live stream with no gap and
//! no duplicate. No I/O, no clock: callers pass `now`. Not where a topic's order is kept (its
//! home shard) nor how a subscriber learns positions (the envelope).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Where a publication sits in its topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// 1 for the first publication of an epoch, then one more for each.
    pub offset: u64,
    /// Which history the offset belongs to: a new one starts whenever publications could have
    /// been lost (the server restarted, the topic's history was evicted).
    pub epoch: Epoch,
}

/// A history's identity: random per history, shown as 8 hex digits (a string in JSON, where
/// numbers above 2^53 lose digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u32);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl Epoch {
    /// Reads the 8 hex digits `Display` writes.
    pub fn parse(s: &str) -> Option<Epoch> {
        (s.len() == 8)
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
            .map(Epoch)
    }
}

/// One kept publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub offset: u64,
    pub data: Bytes,
    pub binary: bool,
    at: Instant,
}

/// How much a topic keeps: at most `size` publications, none older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub size: usize,
    pub ttl: Duration,
}

/// Why a subscriber's position could not be recovered from: it must start afresh from the
/// live stream (and is told so, never left with a silent gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecovered {
    /// The position is from another history (a restart or an eviction came between).
    EpochChanged,
    /// Publications after the position are no longer kept (past the size or the ttl).
    TooOld,
    /// The position is ahead of the history: not one this server gave.
    Unknown,
}

impl NotRecovered {
    /// What the client is told.
    pub fn reason(self) -> &'static str {
        match self {
            NotRecovered::EpochChanged => "epoch changed",
            NotRecovered::TooOld => "position too old",
            NotRecovered::Unknown => "unknown position",
        }
    }
}

/// One topic's history.
#[derive(Debug)]
pub struct TopicHistory {
    epoch: Epoch,
    retention: Retention,
    /// The offset the next publication gets.
    next: u64,
    kept: VecDeque<Kept>,
}

impl TopicHistory {
    /// An empty history of `epoch`.
    pub fn new(epoch: Epoch, retention: Retention) -> TopicHistory {
        TopicHistory {
            epoch,
            retention,
            next: 1,
            kept: VecDeque::new(),
        }
    }

    /// Records a publication at `now`: its position.
    pub fn append(&mut self, data: Bytes, binary: bool, now: Instant) -> Position {
        let offset = self.next;
        self.next += 1;
        self.kept.push_back(Kept {
            offset,
            data,
            binary,
            at: now,
        });
        self.trim(now);
        Position {
            offset,
            epoch: self.epoch,
        }
    }

    /// Drops what is past the size or older than the ttl at `now`.
    pub fn trim(&mut self, now: Instant) {
        while self.kept.len() > self.retention.size {
            self.kept.pop_front();
        }
        while self
            .kept
            .front()
            .is_some_and(|k| now.saturating_duration_since(k.at) > self.retention.ttl)
        {
            self.kept.pop_front();
        }
    }

    /// The position of the last publication (offset 0 before any), for a fresh subscriber to
    /// start from.
    pub fn last(&self) -> Position {
        Position {
            offset: self.next - 1,
            epoch: self.epoch,
        }
    }

    /// The offsets kept at `now`: first and last, `None` when nothing is.
    pub fn window(&mut self, now: Instant) -> Option<(u64, u64)> {
        self.trim(now);
        Some((self.kept.front()?.offset, self.kept.back()?.offset))
    }

    /// Every publication after `position`, in order, if the history still has them all.
    pub fn since(&mut self, position: Position, now: Instant) -> Result<Vec<Kept>, NotRecovered> {
        if position.epoch != self.epoch {
            return Err(NotRecovered::EpochChanged);
        }
        if position.offset >= self.next {
            return Err(NotRecovered::Unknown);
        }
        self.trim(now);
        let first = self.kept.front().map_or(self.next, |k| k.offset);
        // Everything after `position` is kept only if the first kept one follows it directly
        // (or nothing was published since).
        if position.offset + 1 < first {
            return Err(NotRecovered::TooOld);
        }
        let skip = (position.offset + 1 - first) as usize;
        Ok(self.kept.iter().skip(skip).cloned().collect())
    }
}

/// A subscription catching up: live publications that arrive while its missed ones are being
/// fetched are held, then the two are joined by offset, so each publication is delivered once
/// and in order.
#[derive(Debug, Default)]
pub struct Seam {
    held: Vec<(u64, Bytes, bool)>,
}

impl Seam {
    /// Holds a live publication that arrived before the recovery was answered.
    pub fn hold(&mut self, offset: u64, data: Bytes, binary: bool) {
        self.held.push((offset, data, binary));
    }

    /// What to deliver, in order, once the recovery answered with `recovered` (the publications
    /// after `after`): those, then the held live ones not among them. With no recovery
    /// (`None`: the subscriber starts afresh), the held ones after `after`.
    pub fn join(self, after: u64, recovered: Option<Vec<Kept>>) -> Vec<(u64, Bytes, bool)> {
        let mut out: Vec<(u64, Bytes, bool)> = recovered
            .unwrap_or_default()
            .into_iter()
            .map(|k| (k.offset, k.data, k.binary))
            .collect();
        let mut last = out.last().map_or(after, |(o, _, _)| *o);
        let mut held = self.held;
        held.sort_by_key(|(o, _, _)| *o);
        for (offset, data, binary) in held {
            if offset > last {
                last = offset;
                out.push((offset, data, binary));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
