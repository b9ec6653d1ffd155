//! The outbound queue of one connection: framed bytes waiting for the socket, the queue-full
//! policies (wait for room, or drop a publication a topic's slow-consumer policy lets go) and
//! the notices of what was dropped. Pure bookkeeping; not the socket writes themselves.

use std::collections::VecDeque;
use std::ops::Deref;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

/// Iovecs handed to one vectored write: enough to drain a burst, small enough for the stack.
pub const MAX_IOVECS: usize = 64;

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for writing.
    Queued,
    /// The queue is full: the message waits for room until the deadline, then is dropped.
    Waiting {
        /// When it is dropped if no room has freed up.
        deadline: Instant,
    },
    /// A close frame is already queued; nothing may follow it (RFC 6455 §5.5.1).
    Closed,
    /// The queue was full: the publication was queued in place of an older one of topic
    /// `topic` (a hash, as in `Droppable`), which was dropped.
    Displaced {
        /// The topic of the publication dropped.
        topic: u64,
    },
    /// The queue was full of what may not be dropped: this publication was dropped.
    Dropped,
}

/// A publication whose topic's slow-consumer policy lets a full queue drop it: its topic and,
/// for a topic that keeps the latest publication per key, its key, both as 64-bit hashes
/// (`topic_hash`; 0 for no key). Hashes keep each queued frame small; two names sharing one
/// are as likely as two random 64-bit numbers being equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Droppable {
    /// The topic's hash.
    pub topic: u64,
    /// The key's hash, 0 without a key.
    pub key: u64,
}

/// Which queued publication a full queue drops for a new `Droppable` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Displace {
    /// The oldest of the same topic.
    Oldest,
    /// The one with the same topic and key; without one, the oldest of the same topic.
    SameKey,
}

/// A queued frame's bytes: its own, or shared by every connection of the shard it was fanned
/// out to. A fan-out makes one `Rc` per shard, so queueing it for each recipient and dropping it
/// once written bump a count without a locked instruction; `Bytes` counts atomically, which in a
/// chat among 300 clients took a tenth of the server's CPU (a locked add per queued frame waits
/// for the stores of the frames queued before it).
#[derive(Debug, Clone)]
pub enum FrameBytes {
    /// One connection's own frame (a reply, a ping, an emit).
    Own(Bytes),
    /// A fan-out's frame, shared on one shard's thread.
    Shared(Rc<Bytes>),
}

impl FrameBytes {
    /// `frame`, to be queued for many connections of this shard.
    pub fn shared(frame: Bytes) -> FrameBytes {
        FrameBytes::Shared(Rc::new(frame))
    }

    /// The `Bytes` underneath (a fan-out's is the same for every recipient).
    pub fn as_bytes(&self) -> &Bytes {
        match self {
            FrameBytes::Own(b) => b,
            FrameBytes::Shared(b) => b,
        }
    }

    /// The bytes as a `Bytes` (a fan-out's: one more atomic count).
    pub fn into_bytes(self) -> Bytes {
        match self {
            FrameBytes::Own(b) => b,
            FrameBytes::Shared(b) => Rc::unwrap_or_clone(b),
        }
    }
}

impl Deref for FrameBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<Bytes> for FrameBytes {
    fn from(b: Bytes) -> FrameBytes {
        FrameBytes::Own(b)
    }
}

/// Most pongs kept queued at once; past it, a new pong replaces the newest unwritten one
/// (RFC 6455 §5.5.3 lets an endpoint answer only the most recent ping).
pub const MAX_QUEUED_PONGS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A data message: counts against the capacity.
    Data,
    /// A data message a full queue may drop: counts against the capacity.
    Droppable(Droppable),
    /// A notice of `count` publications of `topic` dropped: does not count, like a control
    /// frame, and at most one per topic is left unwritten (`push_notice`).
    Notice { topic: u64, count: u64 },
    /// A ping, a close frame or the handshake response.
    Control,
    /// A pong: counted, so a ping flood cannot grow the queue.
    Pong,
}

#[derive(Debug)]
struct Frame {
    bytes: FrameBytes,
    kind: Kind,
}

/// Frames in order, the first one held inline: most connections have at most one frame queued
/// at a time (a ping, a reply), and then hold no heap buffer for it. The spill buffer is boxed
/// too, so a connection that never had two frames queued pays one pointer for it.
#[derive(Debug, Default)]
struct Frames {
    first: Option<Frame>,
    /// Empty whenever `first` is. Boxed on purpose: 8 bytes in every connection rather than
    /// 32, for one more allocation in a connection's first burst.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Frame>>>,
}

impl Frames {
    fn push_back(&mut self, frame: Frame) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.spill().push_back(frame);
        }
    }

    /// The spill buffer, made on first use.
    fn spill(&mut self) -> &mut VecDeque<Frame> {
        self.rest.get_or_insert_with(Box::default)
    }

    fn pop_front(&mut self) -> Option<Frame> {
        let front = self.first.take();
        self.first = self.rest.as_mut().and_then(|rest| rest.pop_front());
        front
    }

    fn front(&self) -> Option<&Frame> {
        self.first.as_ref()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn len(&self) -> usize {
        self.first.is_some() as usize + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Frame> {
        match i {
            0 => self.first.as_mut(),
            i => self.rest.as_mut()?.get_mut(i - 1),
        }
    }

    /// Puts `frame` at `i` (at most `len()`), keeping the order of the others.
    fn insert(&mut self, i: usize, frame: Frame) {
        match (i, self.first.take()) {
            (_, None) => self.first = Some(frame),
            (0, Some(first)) => {
                self.spill().push_front(first);
                self.first = Some(frame);
            }
            (i, Some(first)) => {
                self.first = Some(first);
                self.spill().insert(i - 1, frame);
            }
        }
    }

    /// Takes out the frame at `i`, keeping the order of the others.
    fn remove(&mut self, i: usize) -> Option<Frame> {
        match i {
            0 => self.pop_front(),
            i => self.rest.as_mut()?.remove(i - 1),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Frame> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    /// Drops the spill buffer once nothing is in it.
    fn compact(&mut self) {
        if self.rest.as_ref().is_some_and(|rest| rest.is_empty()) {
            self.rest = None;
        }
    }
}

/// A data message waiting for room: the frame to send, the frame before compression when it
/// was compressed (what a drop reports), and until when it may wait.
#[derive(Debug)]
struct Waiting {
    frame: FrameBytes,
    plain: Option<FrameBytes>,
    deadline: Instant,
}

/// Frames for one connection, in emit order.
///
/// Data messages count against `capacity`; control frames (ping, pong, close) and the handshake
/// response never wait and never count, so liveness and closing work on a full queue. Pongs are
/// bounded by coalescing (`push_pong`).
#[derive(Debug)]
pub struct OutboundQueue {
    frames: Frames,
    /// Bytes of `frames[0]` already written.
    offset: usize,
    /// Counters kept narrow: this struct is in every connection.
    data_count: u32,
    /// Unwritten pongs in `frames`.
    pongs: u32,
    capacity: u32,
    /// Present from when a data message first finds the queue full until room comes back:
    /// boxed, since most connections are never full.
    full: Option<Box<Full>>,
    closed: bool,
}

/// A full queue's state.
#[derive(Debug)]
struct Full {
    since: Instant,
    waiting: VecDeque<Waiting>,
}

impl OutboundQueue {
    /// An empty queue holding at most `capacity` undelivered data messages.
    pub fn new(capacity: usize) -> Self {
        OutboundQueue {
            frames: Frames::default(),
            offset: 0,
            data_count: 0,
            pongs: 0,
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX).max(1),
            full: None,
            closed: false,
        }
    }

    /// Queues a framed data message, or lets it wait `window` for room when the queue is full.
    #[cfg(test)]
    pub fn push_data(&mut self, frame: Bytes, now: Instant, window: std::time::Duration) -> Push {
        self.push_data_from(frame.into(), None, now, window)
    }

    /// `push_data` for a frame made from `plain` (compressed): a drop reports `plain`.
    pub fn push_data_from(
        &mut self,
        frame: FrameBytes,
        plain: Option<FrameBytes>,
        now: Instant,
        window: std::time::Duration,
    ) -> Push {
        if self.closed {
            return Push::Closed;
        }
        if self.has_room() {
            self.push(frame, Kind::Data);
            return Push::Queued;
        }
        let deadline = now + window;
        let full = self.full.get_or_insert_with(|| {
            Box::new(Full {
                since: now,
                waiting: VecDeque::new(),
            })
        });
        full.waiting.push_back(Waiting {
            frame,
            plain,
            deadline,
        });
        Push::Waiting { deadline }
    }

    /// Queues a control frame (ping, pong) or raw bytes (the handshake response) ahead of
    /// nothing: it goes after what is already queued but never waits for room.
    pub fn push_control(&mut self, frame: Bytes) -> Push {
        if self.closed {
            return Push::Closed;
        }
        self.push(frame.into(), Kind::Control);
        Push::Queued
    }

    /// Queues a ping ahead of the data messages not yet started (behind the frame being
    /// written and the control frames before them): RFC 6455 §5.5 lets control frames go
    /// between messages, and a reader slower than its publishers, whose queue stays full, then
    /// sees each ping after what its socket already holds rather than after its whole queue,
    /// so its liveness does not depend on its backlog.
    pub fn push_ping(&mut self, frame: Bytes) -> Push {
        if self.closed {
            return Push::Closed;
        }
        let first_free = (self.offset > 0) as usize;
        let at = self
            .frames
            .iter()
            .enumerate()
            .skip(first_free)
            .find(|(_, f)| matches!(f.kind, Kind::Data | Kind::Droppable(_)))
            .map_or(self.frames.len(), |(i, _)| i);
        self.frames.insert(
            at,
            Frame {
                bytes: frame.into(),
                kind: Kind::Control,
            },
        );
        Push::Queued
    }

    /// Queues a publication a full queue may drop: with room it is queued as any data message;
    /// a full queue drops, to make room, the queued publication `victim` picks (with none of
    /// its topic, the oldest droppable one of any topic, so a busy topic cannot starve a quiet
    /// one), or else this one. It never waits, so a queue full of droppable publications is
    /// never a reason to tear the connection down.
    pub fn push_droppable(
        &mut self,
        frame: FrameBytes,
        tag: Droppable,
        displace: Displace,
    ) -> Push {
        if self.closed {
            return Push::Closed;
        }
        if self.has_room() {
            self.push(frame, Kind::Droppable(tag));
            return Push::Queued;
        }
        let Some(victim) = self.victim(tag, displace) else {
            return Push::Dropped;
        };
        let topic = match self.frames.remove(victim).map(|f| f.kind) {
            Some(Kind::Droppable(dropped)) => dropped.topic,
            _ => tag.topic,
        };
        // One out, one in: the count of data messages stays as it was.
        self.frames.push_back(Frame {
            bytes: frame,
            kind: Kind::Droppable(tag),
        });
        Push::Displaced { topic }
    }

    /// Which queued publication a full queue drops for `tag` (an index into `frames`), among
    /// those not yet started: under `SameKey`, the one with the same key, or else the oldest
    /// one of the topic that a later one with its key supersedes (so each key's latest stays
    /// while the queue holds more places than the topic has keys); then the oldest of the
    /// topic; then the oldest droppable one of any topic.
    fn victim(&self, tag: Droppable, displace: Displace) -> Option<usize> {
        let first_free = (self.offset > 0) as usize;
        let droppable = || {
            self.frames
                .iter()
                .enumerate()
                .skip(first_free)
                .filter_map(|(i, f)| match f.kind {
                    Kind::Droppable(queued) => Some((i, queued)),
                    _ => None,
                })
        };
        let of_topic = || droppable().filter(|(_, q)| q.topic == tag.topic);
        let oldest_any = || droppable().next().map(|(i, _)| i);
        let oldest_of_topic = || of_topic().next().map(|(i, _)| i);
        if displace == Displace::Oldest {
            return oldest_of_topic().or_else(oldest_any);
        }
        if let Some((i, _)) = of_topic().find(|(_, q)| q.key == tag.key) {
            return Some(i);
        }
        let mut later_keys = std::collections::HashSet::new();
        let mut superseded = None;
        let queued: Vec<(usize, u64)> = of_topic().map(|(i, q)| (i, q.key)).collect();
        for (i, key) in queued.into_iter().rev() {
            if !later_keys.insert(key) {
                superseded = Some(i);
            }
        }
        superseded.or_else(oldest_of_topic).or_else(oldest_any)
    }

    /// Tells the client that `added` more publications of `topic` (a hash) were dropped: an
    /// unwritten notice for the topic is rewritten to the new total (`make` frames it), or else
    /// a new one goes last. Notices never wait and do not count against the capacity; there
    /// is at most one unwritten per topic, so they take bounded room.
    pub fn push_notice(&mut self, topic: u64, added: u64, make: impl FnOnce(u64) -> Bytes) {
        if self.closed {
            return;
        }
        let first_free = (self.offset > 0) as usize;
        for i in first_free..self.frames.len() {
            if let Some(f) = self.frames.get_mut(i) {
                if let Kind::Notice { topic: t, count } = f.kind {
                    if t == topic {
                        let count = count.saturating_add(added);
                        f.kind = Kind::Notice { topic, count };
                        f.bytes = make(count).into();
                        return;
                    }
                }
            }
        }
        self.push(
            make(added).into(),
            Kind::Notice {
                topic,
                count: added,
            },
        );
    }

    /// Queues a pong like a control frame; with `MAX_QUEUED_PONGS` already waiting, it replaces
    /// the newest one not yet started instead, so pongs never take more than a fixed amount of
    /// memory. Returns false when it replaced one.
    pub fn push_pong(&mut self, frame: Bytes) -> bool {
        if self.closed {
            return false;
        }
        if self.pongs as usize >= MAX_QUEUED_PONGS {
            // The newest pong not yet started: a partly written front frame stays as it is.
            let first_free = (self.offset > 0) as usize;
            for i in (first_free..self.frames.len()).rev() {
                if let Some(f) = self.frames.get_mut(i).filter(|f| f.kind == Kind::Pong) {
                    f.bytes = frame.into();
                    return false;
                }
            }
        }
        self.push(frame.into(), Kind::Pong);
        true
    }

    /// Unwritten pongs (a partly written one included).
    pub fn pongs(&self) -> usize {
        self.pongs as usize
    }

    fn push(&mut self, bytes: FrameBytes, kind: Kind) {
        match kind {
            Kind::Data | Kind::Droppable(_) => self.data_count += 1,
            Kind::Pong => self.pongs += 1,
            Kind::Control | Kind::Notice { .. } => {}
        }
        self.frames.push_back(Frame { bytes, kind });
    }

    /// Queues the close frame after everything queued or waiting; nothing is accepted after it.
    pub fn push_close(&mut self, frame: Bytes) -> Push {
        if self.closed {
            return Push::Closed;
        }
        if let Some(full) = self.full.take() {
            for waiting in full.waiting {
                self.push(waiting.frame, Kind::Data);
            }
        }
        self.push(frame.into(), Kind::Control);
        self.closed = true;
        Push::Queued
    }

    /// Whether a close frame has been queued.
    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Undelivered data messages, queued or waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.data_count as usize + self.full.as_ref().map_or(0, |f| f.waiting.len())
    }

    /// Room for a data message now: nothing waits ahead of it and the count is below capacity.
    fn has_room(&self) -> bool {
        self.full.as_ref().map_or(true, |f| f.waiting.is_empty()) && self.data_count < self.capacity
    }

    /// Since when messages have been waiting for room, if they are.
    pub fn full_since(&self) -> Option<Instant> {
        self.full.as_ref().map(|f| f.since)
    }

    /// The earliest deadline of a waiting message.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.full.as_ref()?.waiting.front().map(|w| w.deadline)
    }

    /// Fills `out` with the unwritten bytes, front first, for one vectored write; returns how
    /// many slices it filled.
    pub fn slices<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        let mut n = 0;
        for (i, f) in self.frames.iter().enumerate() {
            if n == out.len() {
                break;
            }
            let start = if i == 0 { self.offset } else { 0 };
            out[n] = &f.bytes[start..];
            n += 1;
        }
        n
    }

    /// The first unwritten slice, if any.
    #[cfg(test)]
    pub fn front(&self) -> Option<&[u8]> {
        self.frames.front().map(|f| &f.bytes[self.offset..])
    }

    /// Marks `written` bytes as sent, then lets waiting messages in as room frees up.
    pub fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.bytes.len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.offset = 0;
            match self.frames.pop_front().map(|f| f.kind) {
                Some(Kind::Data | Kind::Droppable(_)) => self.data_count -= 1,
                Some(Kind::Pong) => self.pongs -= 1,
                _ => {}
            }
        }
        let Some(mut full) = self.full.take() else {
            return;
        };
        while self.data_count < self.capacity {
            let Some(waiting) = full.waiting.pop_front() else {
                break;
            };
            self.push(waiting.frame, Kind::Data);
        }
        if !full.waiting.is_empty() {
            self.full = Some(full);
        }
    }

    /// Removes the waiting messages whose deadline has passed and returns them, framed as they
    /// were before any compression.
    pub fn expire(&mut self, now: Instant) -> Vec<Bytes> {
        let mut dropped = Vec::new();
        if let Some(full) = self.full.as_mut() {
            while full.waiting.front().is_some_and(|w| w.deadline <= now) {
                if let Some(w) = full.waiting.pop_front() {
                    dropped.push(w.plain.unwrap_or(w.frame).into_bytes());
                }
            }
        }
        dropped
    }

    /// Releases buffers left over from a burst once they are empty, so an idle connection holds
    /// no heap memory here (one queued frame is held inline).
    pub fn compact(&mut self) {
        self.frames.compact();
        if let Some(full) = self.full.as_mut().filter(|f| f.waiting.is_empty()) {
            full.waiting = VecDeque::new();
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
