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
    /// Its offset in its topic's history.
    pub offset: u64,
    /// The payload as published.
    pub data: Bytes,
    /// Binary, or text.
    pub binary: bool,
    at: Instant,
}

impl Kept {
    /// A publication read back from a history kept elsewhere (cluster mode's JetStream), which
    /// keeps its own times.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn read_back(offset: u64, data: Bytes, binary: bool) -> Kept {
        Kept {
            offset,
            data,
            binary,
            at: Instant::now(),
        }
    }
}

/// How much a topic keeps: at most `size` publications, none older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept, at most.
    pub size: usize,
    /// How long one is kept, at most.
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
    /// The history could not be read in time (in cluster mode: NATS is unreachable, or did
    /// not answer within the bound): what was missed is not known, so it is not claimed.
    Unavailable,
}

impl NotRecovered {
    /// What the client is told.
    pub fn reason(self) -> &'static str {
        match self {
            NotRecovered::EpochChanged => "epoch changed",
            NotRecovered::TooOld => "position too old",
            NotRecovered::Unknown => "unknown position",
            NotRecovered::Unavailable => "history unavailable",
        }
    }
}

/// What `Websocket::subscribe_from` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// A fresh subscription: the live stream from `position` on (`None`: nothing published
    /// yet).
    Fresh {
        /// The topic's last position.
        position: Option<Position>,
    },
    /// Every publication after the given position was sent (`missed` of them), then the live
    /// stream.
    Recovered {
        /// Publications sent to catch up.
        missed: usize,
        /// The topic's last position when they were.
        position: Option<Position>,
    },
    /// What was missed cannot be told: the live stream from `position` on, and the client
    /// should treat what it had as stale.
    NotRecovered {
        /// Why not.
        reason: NotRecovered,
        /// The topic's last position: the live stream follows it.
        position: Option<Position>,
    },
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
    held: Vec<(Position, Bytes, bool)>,
}

impl Seam {
    /// Holds a live publication that arrived before the recovery was answered.
    pub fn hold(&mut self, position: Position, data: Bytes, binary: bool) {
        self.held.push((position, data, binary));
    }

    /// What to deliver, in order, once the recovery answered: the publications of epoch
    /// `epoch` after offset `after` that it `recovered`, then the held live ones that come
    /// after them. With nothing recovered (the subscriber starts afresh), the held ones after
    /// `after`. Held ones of another epoch (the history was started again while this one
    /// caught up) follow, in the order they came: their offsets count from a new start.
    pub fn join(
        self,
        epoch: Option<Epoch>,
        after: u64,
        recovered: Vec<Kept>,
    ) -> Vec<(Position, Bytes, bool)> {
        let mut out: Vec<(Position, Bytes, bool)> = match epoch {
            Some(epoch) => recovered
                .into_iter()
                .map(|k| {
                    (
                        Position {
                            offset: k.offset,
                            epoch,
                        },
                        k.data,
                        k.binary,
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        let mut last = out.last().map_or(after, |(p, _, _)| p.offset);
        let (mut held, newer): (Vec<_>, Vec<_>) = self
            .held
            .into_iter()
            .partition(|(p, _, _)| epoch.map_or(true, |e| p.epoch == e));
        held.sort_by_key(|(p, _, _)| p.offset);
        for (position, data, binary) in held {
            if position.offset > last {
                last = position.offset;
                out.push((position, data, binary));
            }
        }
        out.extend(newer);
        out
    }
}

/// Which topics keep history, and how much: the first rule whose pattern matches a topic
/// (an exact name, or a prefix ending in `*`, as token grants are written).
#[derive(Debug, Clone, Default)]
pub struct HistoryRules {
    rules: Vec<(String, Retention)>,
}

impl HistoryRules {
    /// Adds a rule; earlier rules win.
    pub fn add(&mut self, pattern: impl Into<String>, retention: Retention) {
        self.rules.push((pattern.into(), retention));
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What `topic` keeps, if anything.
    pub fn retention(&self, topic: &str) -> Option<Retention> {
        self.rules
            .iter()
            .find(|(p, _)| crate::auth::pattern_matches(p, topic))
            .map(|(_, r)| *r)
    }
}

/// The shard that keeps `topic`'s history and gives its publications their offsets: one per
/// topic, so a topic's order is kept by one thread with no lock (FNV-1a of the name).
pub fn home_shard(topic: &str, shards: usize) -> usize {
    let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards.max(1) as u64) as usize
}

/// The payload of a frame the server made (unmasked, FIN set, RFC 6455 §5.2), and whether it
/// is binary; the frame's own bytes, not a copy.
pub fn unframe(frame: &Bytes) -> (Bytes, bool) {
    let binary = frame.first().is_some_and(|b| b & 0x0f == 0x2);
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    (frame.slice(header.min(frame.len())..), binary)
}

/// The text frame a subscriber that asked for positions gets instead of the bare payload:
/// `{"topic":"t","offset":5,"epoch":"abcd0001","data":"<text>"}`, or `"binary":"<base64>"`
/// for a binary payload (or text that is not UTF-8). A publication of a topic without history
/// has no position: `{"topic":"t","data":"<text>"}`.
pub fn envelope(topic: &str, position: Option<Position>, payload: &[u8], binary: bool) -> Bytes {
    use base64::Engine;
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let (key, value) = match (binary, std::str::from_utf8(payload)) {
        (false, Ok(text)) => ("data", quoted(text)),
        _ => (
            "binary",
            quoted(&base64::engine::general_purpose::STANDARD.encode(payload)),
        ),
    };
    let at = position.map_or(String::new(), |p| {
        format!(r#","offset":{},"epoch":"{}""#, p.offset, p.epoch)
    });
    let text = format!(r#"{{"topic":{}{at},"{key}":{value}}}"#, quoted(topic));
    crate::ws::frame::encode(crate::ws::frame::OpCode::Text, text.as_bytes())
}

/// A home shard's answer to a recovering subscriber: what it missed (or why that cannot be
/// told), and the topic's position now (`None` when it has no history).
pub type RecoverAnswer = (Result<Vec<Kept>, NotRecovered>, Option<Position>);

/// The histories one shard keeps: those of the topics it is home to.
#[derive(Debug, Default)]
pub struct Histories {
    topics: std::collections::HashMap<std::sync::Arc<str>, TopicHistory>,
    /// Appends since the last sweep.
    appends: u32,
}

/// Appends between two sweeps of every history (what expired is dropped, and a history left
/// empty is forgotten: its topic starts a new epoch).
const SWEEP_EVERY: u32 = 1024;

impl Histories {
    /// Records a publication of `topic` (which keeps `retention`), starting its history with a
    /// fresh epoch if it has none.
    pub fn append(
        &mut self,
        topic: &std::sync::Arc<str>,
        retention: Retention,
        frame: Bytes,
        now: Instant,
    ) -> Position {
        self.appends += 1;
        if self.appends >= SWEEP_EVERY {
            self.appends = 0;
            self.sweep(now);
        }
        let (data, binary) = unframe(&frame);
        self.topics
            .entry(std::sync::Arc::clone(topic))
            .or_insert_with(|| TopicHistory::new(new_epoch(), retention))
            .append(data, binary, now)
    }

    /// What a subscriber of `topic` that last saw `since` missed (`None`: a fresh subscriber,
    /// which only learns where the topic stands); and the topic's position now.
    pub fn recover(&mut self, topic: &str, since: Option<Position>, now: Instant) -> RecoverAnswer {
        let Some(history) = self.topics.get_mut(topic) else {
            // No history: nothing was published, or it all expired and was forgotten.
            let answer = match since {
                None => Ok(Vec::new()),
                Some(_) => Err(NotRecovered::EpochChanged),
            };
            return (answer, None);
        };
        let answer = match since {
            None => Ok(Vec::new()),
            Some(position) => history.since(position, now),
        };
        (answer, Some(history.last()))
    }

    /// The kept window of `topic`: first and last offsets, and the epoch.
    pub fn window(&mut self, topic: &str, now: Instant) -> Option<(u64, u64, Epoch)> {
        let history = self.topics.get_mut(topic)?;
        let (first, last) = history.window(now)?;
        Some((first, last, history.epoch))
    }

    fn sweep(&mut self, now: Instant) {
        self.topics.retain(|_, h| h.window(now).is_some());
    }

    /// Topics with a history here.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// A random epoch: a restarted server, or a history started again, never reuses one (but by
/// a 1 in 2^32 chance).
fn new_epoch() -> Epoch {
    Epoch(uuid::Uuid::new_v4().as_u128() as u32)
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
