//! One WebSocket connection's protocol state, with no socket and no clock: the decoder, the
//! outbound queue, the close phase and every deadline. Not events, listeners or the registry:
//! the shard's connection glue turns what a session reports into those.
//!
//! A session is driven by inputs that carry the time (`handle_read`, `handle_written`,
//! `handle_timeout`, `send`, `close`, ...) and read through outputs (`poll_transmit`,
//! `poll_timeout`, `poll_event`), so every rule here is tested with a virtual clock.
//!
//! Inbound frames are acted on lazily, one per `poll_event`: a message's listeners run (and may
//! queue a reply, or close) before the frame after it is looked at. So an echo of a message is
//! queued before the answer to a close frame that followed it in the same read, and nothing the
//! peer sent after the server began to close is delivered.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::deflate::{self, Agreement, Deflate};
use super::frame::{self, Decoder, Inbound, OpCode, ProtocolError};
use super::liveness::{answer_window, first_ping_delay, judge_silence, next_ping_after, Liveness};
use super::queue::{Displace, Droppable, FrameBytes, OutboundQueue, Push};
use super::stamp::Stamp;

/// What a session needs of its route's settings, every duration and size already resolved
/// (no zero meaning "default"). The library's `Config` is one.
pub trait Settings {
    /// How often the server pings.
    fn ping_interval(&self) -> Duration;
    /// Silence from the peer after which the session ends.
    fn read_idle_timeout(&self) -> Duration;
    /// How long a write may stall, or the queue stay full, and how long a close may linger.
    fn write_timeout(&self) -> Duration;
    /// The largest frame or message accepted (close 1009 above it).
    fn max_message_size(&self) -> usize;
    /// Data messages the outbound queue holds before messages wait.
    fn send_queue_size(&self) -> usize;
    /// How long a message waits for room in a full queue before it is dropped.
    fn retry_window(&self) -> Duration;
    /// permessage-deflate settings, when the route offers it.
    fn deflate(&self) -> Option<&Deflate>;
    /// Inbound messages a connection may send per second, in bursts of up to as many; 0: no
    /// limit (see `RateLimit`).
    fn client_message_rate(&self) -> u32 {
        0
    }
    /// Inbound payload bytes a connection may send per second, in bursts of up to as many; 0:
    /// no limit (see `InboundLimit`).
    fn client_byte_rate(&self) -> u32 {
        0
    }
}

/// Why a session ended other than by a clean close.
#[derive(Debug)]
pub enum SessionError {
    /// The peer closed with a code other than 1000 or 1001, or with none.
    PeerClosed {
        /// Its code; `None` for an empty close frame.
        code: Option<u16>,
        /// Its reason.
        reason: String,
    },
    /// A read or write failed, or the peer ended the stream without a close frame.
    Io(io::Error),
    /// Nothing came from the peer for this long.
    IdleTimeout(Duration),
    /// A write stalled, or the queue stayed full, for this long.
    WriteTimeout(Duration),
    /// The peer broke the protocol (its close code was sent).
    Protocol(ProtocolError),
    /// The peer pinged faster than it read the pongs.
    PingFlood,
    /// The server's side failed (`Session::fail`).
    Failed,
    /// The server ended it at a deadline (`Session::force_close`).
    Forced,
}

/// Pings a peer may send while pongs for earlier ones are still unwritten (it is not reading
/// them) before it is torn down with `SessionError::PingFlood`.
pub const MAX_UNANSWERED_PINGS: usize = 1024;

/// The close reason sent with 1008 when a peer keeps sending past its rate limit.
pub const RATE_LIMIT_REASON: &str = "rate limit";

/// A token bucket of `rate` tokens, refilled at `rate` tokens per second and never above
/// `rate`, as a pure function of the time: `refill` and `take` change nothing but the values
/// they are given.
///
/// The rule past the limit: a message that finds the bucket empty is refused, and one refused
/// when more than `rate` have been refused since the bucket was last full closes the connection
/// (1008 "rate limit"): a client that floods at once has `rate` messages delivered and
/// `rate + 1` refused, the last of them closing; one that stays a little over the limit loses
/// what is over it until, `rate + 1` refusals later, it is closed; one that slows down until the
/// bucket fills again starts afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// When `tokens` was last brought up to date (the time of the last whole token earned, so
    /// the fraction of one earned since is not lost).
    pub refilled: Stamp,
    /// Messages that may still be sent now.
    pub tokens: u32,
    /// Messages refused since the bucket was last full.
    pub refused: u32,
}

/// What `RateLimit::take` decided about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Admit {
    /// Within the limit: delivered.
    Yes,
    /// Past the limit: not delivered.
    Refused,
    /// Past the limit once too often: not delivered, and the connection is closed.
    Close,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn full(rate: u32, now: Instant) -> RateLimit {
        RateLimit {
            refilled: Stamp::of(now),
            tokens: rate,
            refused: 0,
        }
    }

    /// The bucket at `now`: `tokens` plus one per `1 / rate` s since `refilled`, never more
    /// than `rate`. A clock that did not move (or went back) changes nothing.
    pub fn refill(self, rate: u32, now: Instant) -> RateLimit {
        const NANOS: u128 = 1_000_000_000;
        let Some(elapsed) = now.checked_duration_since(self.refilled.instant()) else {
            return self;
        };
        let earned = elapsed.as_nanos() * u128::from(rate) / NANOS;
        if earned == 0 {
            return self;
        }
        let tokens = u128::from(self.tokens) + earned;
        if tokens >= u128::from(rate) {
            // Full: what was earned past the burst is lost, and so are the refusals.
            return RateLimit::full(rate, now);
        }
        // Only the time the whole tokens took is used up; the rest counts towards the next.
        let used = Duration::from_nanos((earned * NANOS / u128::from(rate)) as u64);
        RateLimit {
            refilled: Stamp::of(self.refilled.instant() + used),
            tokens: tokens as u32,
            refused: self.refused,
        }
    }

    /// Refills to `now`, then takes a token for one message, or counts a refusal; more than
    /// `rate` refusals close.
    pub fn take(self, rate: u32, now: Instant) -> (RateLimit, Admit) {
        self.take_cost(rate, 1, rate, now)
    }

    /// Refills to `now`, then takes `cost` tokens, or counts a refusal when fewer are left;
    /// more than `patience` refusals close. A cost above `rate` counts as `rate`: it needs a
    /// full bucket and empties it, so no message is refused for ever.
    pub fn take_cost(
        self,
        rate: u32,
        cost: u32,
        patience: u32,
        now: Instant,
    ) -> (RateLimit, Admit) {
        let mut bucket = self.refill(rate, now);
        let cost = cost.min(rate);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return (bucket, Admit::Yes);
        }
        bucket.refused = bucket.refused.saturating_add(1);
        let admit = if bucket.refused > patience {
            Admit::Close
        } else {
            Admit::Refused
        };
        (bucket, admit)
    }
}

/// Refusals by the byte bucket since it was last full after which the connection is closed
/// (1008 "rate limit"). Fixed, unlike the message bucket's (its rate): a byte rate says
/// nothing about how many messages are abuse.
pub const BYTE_REFUSALS_BEFORE_CLOSE: u32 = 32;

/// A connection's inbound limits: a bucket of messages (`Settings::client_message_rate`) and one
/// of payload bytes (`Settings::client_byte_rate`), either of them off. A message is admitted
/// only when both have room, and then takes from both; one that either refuses takes nothing
/// and counts as a refusal of the bucket that refused it (of both, when both did), so a
/// message refused for its size does not use up the message count, nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimit {
    pub messages: Option<RateLimit>,
    pub bytes: Option<RateLimit>,
}

impl InboundLimit {
    /// Full buckets at `now` for the rates; `None` when both are off.
    pub fn new(message_rate: u32, byte_rate: u32, now: Instant) -> Option<InboundLimit> {
        let bucket = |rate| (rate > 0).then(|| RateLimit::full(rate, now));
        let limit = InboundLimit {
            messages: bucket(message_rate),
            bytes: bucket(byte_rate),
        };
        (limit.messages.is_some() || limit.bytes.is_some()).then_some(limit)
    }

    /// Whether a message of `len` payload bytes read at `now` is admitted.
    pub fn admit(&mut self, message_rate: u32, byte_rate: u32, len: usize, now: Instant) -> Admit {
        let messages = self.messages.map(|b| b.take(message_rate, now));
        let cost = u32::try_from(len).unwrap_or(u32::MAX);
        let bytes = self
            .bytes
            .map(|b| b.take_cost(byte_rate, cost, BYTE_REFUSALS_BEFORE_CLOSE, now));
        let admit = [messages, bytes]
            .iter()
            .flatten()
            .map(|&(_, admit)| admit)
            .max()
            .unwrap_or(Admit::Yes);
        // Admitted: both buckets pay. Refused: only a bucket that refused keeps its new state
        // (its refusal count); the other is left as it was.
        for (bucket, taken) in [(&mut self.messages, messages), (&mut self.bytes, bytes)] {
            if let Some((next, own)) = taken {
                if admit == Admit::Yes || own != Admit::Yes {
                    *bucket = Some(next);
                }
            }
        }
        admit
    }
}

/// An empty unmasked ping frame (RFC 6455 §5.5.2): the server's keep-alive.
const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// What a session reports, in the order it happened.
#[derive(Debug)]
pub enum Event {
    /// A complete text or binary message from the peer.
    Message {
        /// The payload (text already validated as UTF-8).
        data: Bytes,
        /// `true` for binary, `false` for text.
        binary: bool,
    },
    /// The peer pinged; the pong is already queued.
    Ping(Bytes),
    /// The peer ponged.
    Pong(Bytes),
    /// A message from the peer was refused by the rate limit (`Settings::client_message_rate`,
    /// `Settings::client_byte_rate`) and not delivered; carries its payload. When it was one refusal too many, the session is
    /// already closing with 1008 "rate limit".
    RateLimited(Bytes),
    /// A data message waited past the retry window for room in the full queue and was dropped;
    /// carries its payload.
    Dropped(Bytes),
    /// A close the server started is complete: its close frame went out, the peer went away, or
    /// the close deadline passed. `Closed` follows.
    CloseComplete,
    /// The session is over; the error says why when it was not a clean close. Nothing follows.
    Closed(Option<SessionError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The server queued a close frame; past the deadline (if any) the close completes anyway.
    Closing {
        deadline: Option<Stamp>,
    },
    /// Over: only the queued bytes (a close frame) are left to write, until `linger`; with no
    /// linger the socket is dropped at once. `peer_closed`: it ended on the peer's close frame,
    /// after which the peer sends nothing more (RFC 6455 §5.5.1).
    Closed {
        linger: Option<Stamp>,
        peer_closed: bool,
    },
}

/// What is waiting to be reported, in order.
#[derive(Debug)]
enum Pending {
    /// A decoded frame, acted on when it is polled.
    Frame(Inbound),
    /// The peer broke the protocol after the frames before it.
    Violation(ProtocolError),
    /// Already decided: reported as it is.
    Report(Event),
}

/// Lets the decoder append frames to the pending list.
struct Frames<'a>(&'a mut VecDeque<Pending>);

impl Extend<Inbound> for Frames<'_> {
    fn extend<I: IntoIterator<Item = Inbound>>(&mut self, items: I) {
        self.0.extend(items.into_iter().map(Pending::Frame));
    }
}

/// The protocol state of one connection, with its route's settings `C`.
#[derive(Debug)]
pub struct Session<C> {
    config: Arc<C>,
    decoder: Decoder,
    out: OutboundQueue,
    phase: Phase,
    /// Decoded frames not yet acted on, and events not yet reported. Empty, and holding no
    /// heap memory, between inputs.
    pending: VecDeque<Pending>,
    last_inbound: Stamp,
    /// Rechecks granted since the peer was last heard because the shard looked late
    /// (`judge_silence`); `recheck_at` is when the last one judges.
    late_rechecks: u8,
    recheck_at: Option<Stamp>,
    next_ping: Stamp,
    write_blocked_since: Option<Stamp>,
    /// Pings received since the queue last held no unwritten pong.
    unanswered_pings: u32,
    /// permessage-deflate: the window the client allows the server, in bits; 0 when not agreed.
    deflate_window: u8,
    /// The code of the first close frame, the server's or the peer's; 0 before one (or for an
    /// empty one).
    close_code: u16,
    /// The inbound rate limit's buckets; `None` (no heap memory) when the route has no limit.
    rate: Option<Box<InboundLimit>>,
}

impl<C: Settings> Session<C> {
    /// A session that starts at `now` with its route's settings.
    pub fn new(config: Arc<C>, now: Instant) -> Session<C> {
        Session {
            decoder: Decoder::new(config.max_message_size()),
            out: OutboundQueue::new(config.send_queue_size()),
            phase: Phase::Open,
            pending: VecDeque::new(),
            last_inbound: Stamp::of(now),
            late_rechecks: 0,
            recheck_at: None,
            next_ping: Stamp::of(now + config.ping_interval()),
            write_blocked_since: None,
            unanswered_pings: 0,
            deflate_window: 0,
            close_code: 0,
            rate: InboundLimit::new(config.client_message_rate(), config.client_byte_rate(), now)
                .map(Box::new),
            config,
        }
    }

    /// permessage-deflate was agreed in the handshake (RFC 7692): compressed messages are
    /// accepted, and data messages are sent compressed as the route's `Settings::deflate` says.
    pub fn accept_deflate(&mut self, agreement: Agreement) {
        self.decoder.accept_deflate();
        self.deflate_window = agreement.window_bits();
    }

    /// A session that starts at `now` by sending `response`, the handshake's 101: the first
    /// bytes the peer gets, ahead of anything queued after.
    pub fn opened(config: Arc<C>, now: Instant, response: Bytes) -> Session<C> {
        let mut session = Session::new(config, now);
        session.out.push_control(response);
        session
    }

    /// Moves the first ping of a session opened at `now` to `first_ping_delay` for `spread`
    /// (the shard passes the connection's slot), so pings are spread over the interval.
    pub fn spread_pings(&mut self, now: Instant, spread: u64) {
        self.next_ping = Stamp::of(now + first_ping_delay(self.config.ping_interval(), spread));
    }

    /// The settings the session runs with.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// The code of the first close frame, sent or received: what the connection ended with.
    /// `None` before one, for an empty one, and for a session that ended without one.
    pub fn close_code(&self) -> Option<u16> {
        (self.close_code != 0).then_some(self.close_code)
    }

    /// Serving: not closing, not closed.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Over: `Closed` has been (or is about to be) reported.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed { .. })
    }

    // ---- inputs ------------------------------------------------------------------------------

    /// Bytes read from the peer. Any bytes prove the peer alive (data, ping or pong alike).
    pub fn handle_read(&mut self, now: Instant, bytes: &[u8]) {
        if self.phase != Phase::Open {
            return;
        }
        self.last_inbound = Stamp::of(now);
        self.late_rechecks = 0;
        self.recheck_at = None;
        if let Err(e) = self.decoder.feed(bytes, &mut Frames(&mut self.pending)) {
            self.pending.push_back(Pending::Violation(e));
        }
    }

    /// The peer ended the stream without a close frame.
    pub fn handle_eof(&mut self) {
        self.end_by_peer(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed the stream without a close frame",
        ));
    }

    /// A read or write failed.
    pub fn handle_io_error(&mut self, error: io::Error) {
        self.end_by_peer(error);
    }

    fn end_by_peer(&mut self, error: io::Error) {
        match self.phase {
            Phase::Open => self.end(Some(SessionError::Io(error)), None),
            // The server was closing anyway: the close is complete.
            Phase::Closing { .. } => self.complete_close(None),
            Phase::Closed { .. } => {}
        }
    }

    /// `written` bytes of `poll_transmit`'s slices went out.
    pub fn handle_written(&mut self, now: Instant, written: usize) {
        self.out.advance(written);
        self.write_blocked_since = None;
        if self.out.pongs() == 0 {
            self.unanswered_pings = 0;
        }
        if matches!(self.phase, Phase::Closing { .. }) && self.out.is_empty() {
            self.complete_close(self.linger_from(now));
        }
    }

    /// The socket took nothing: the peer is not reading. Starts (or keeps) the stall clock.
    pub fn handle_write_blocked(&mut self, now: Instant) {
        self.write_blocked_since.get_or_insert(Stamp::of(now));
    }

    /// Runs whatever is due at `now`: the idle and write timeouts, expired waiting messages, the
    /// keep-alive ping, the close deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Open => {
                let idle = self.config.read_idle_timeout();
                let window = answer_window(self.config.ping_interval(), idle);
                match judge_silence(self.idle_deadline(), now, self.late_rechecks, window) {
                    Liveness::Alive => {}
                    Liveness::Recheck(at) => {
                        self.late_rechecks += 1;
                        self.recheck_at = Some(Stamp::of(at));
                        // The peer is judged on a ping it was sent after the shard caught up.
                        if now < self.next_ping.instant() {
                            self.out.push_ping(Bytes::from_static(&PING_FRAME));
                        }
                    }
                    Liveness::Idle => {
                        self.end(Some(SessionError::IdleTimeout(idle)), None);
                        return;
                    }
                }
                let write_timeout = self.config.write_timeout();
                let stalled = [
                    self.write_blocked_since.map(Stamp::instant),
                    self.out.full_since(),
                ]
                .into_iter()
                .flatten()
                .any(|since| now >= since + write_timeout);
                if stalled {
                    self.end(Some(SessionError::WriteTimeout(write_timeout)), None);
                    return;
                }
                for framed in self.out.expire(now) {
                    self.report(Event::Dropped(frame::payload(&framed)));
                }
                if now >= self.next_ping.instant() {
                    let interval = self.config.ping_interval();
                    self.next_ping =
                        Stamp::of(next_ping_after(self.next_ping.instant(), now, interval));
                    // Once per ping interval: an idle connection gives back what a burst left.
                    self.out.compact();
                    self.out.push_ping(Bytes::from_static(&PING_FRAME));
                }
            }
            Phase::Closing {
                deadline: Some(deadline),
            } if now >= deadline.instant() => self.complete_close(None),
            Phase::Closing { .. } | Phase::Closed { .. } => {}
        }
    }

    /// Queues a framed data message; on a full queue it waits for room until the retry window
    /// ends (`Push::Waiting`). `Push::Closed` once the session is closing or closed. With
    /// permessage-deflate it goes out compressed when that pays; the compressed frame of the
    /// same `frame` is shared with every other connection of this thread.
    pub fn send(&mut self, now: Instant, frame: impl Into<FrameBytes>) -> Push {
        if self.phase != Phase::Open {
            return Push::Closed;
        }
        let window = self.config.retry_window();
        let (sent, plain) = self.outgoing(frame.into());
        self.out.push_data_from(sent, plain, now, window)
    }

    /// `send` for a publication of a topic whose slow-consumer policy lets a full queue drop
    /// it (`OutboundQueue::push_droppable`): it never waits.
    pub fn send_droppable(
        &mut self,
        frame: impl Into<FrameBytes>,
        tag: Droppable,
        displace: Displace,
    ) -> Push {
        if self.phase != Phase::Open {
            return Push::Closed;
        }
        let (sent, _) = self.outgoing(frame.into());
        self.out.push_droppable(sent, tag, displace)
    }

    /// Tells the client of `added` more dropped publications of `topic`
    /// (`OutboundQueue::push_notice`); the notice goes uncompressed, which RFC 7692 §6 allows
    /// on any connection. Does nothing unless open.
    pub fn send_notice(&mut self, topic: u64, added: u64, make: impl FnOnce(u64) -> Bytes) {
        if self.phase == Phase::Open {
            self.out.push_notice(topic, added, make);
        }
    }

    /// A data frame as it goes out (compressed where permessage-deflate is on) and, when that
    /// differs, the frame as given, which is what a drop reports.
    fn outgoing(&self, frame: FrameBytes) -> (FrameBytes, Option<FrameBytes>) {
        match (self.config.deflate(), self.deflate_window) {
            (Some(settings), bits @ 1..) => {
                let sent = deflate::compress_frame(frame.as_bytes(), settings, bits);
                if sent.as_ptr() == frame.as_ptr() {
                    (frame, None)
                } else {
                    (sent.into(), Some(frame))
                }
            }
            _ => (frame, None),
        }
    }

    /// Starts a server-initiated close with `code` and `reason` (RFC 6455 §7.4 sanitised):
    /// what is queued goes first, then the close frame. The close completes when the frame is
    /// written, when the peer goes, or a write timeout after `now` even when the peer never
    /// reads it. Does nothing unless open.
    pub fn close(&mut self, now: Instant, code: u16, reason: &str) {
        let deadline = now + self.config.write_timeout();
        self.begin_close(frame::encode_close(code, reason), Some(deadline));
    }

    /// `close` with a close frame many sessions share (`close_all`) and no deadline of its own:
    /// the caller force-closes at its deadline.
    pub fn close_shared(&mut self, close_frame: Bytes) {
        self.begin_close(close_frame, None);
    }

    fn begin_close(&mut self, close_frame: Bytes, deadline: Option<Instant>) {
        if self.phase != Phase::Open {
            return;
        }
        self.phase = Phase::Closing {
            deadline: deadline.map(Stamp::of),
        };
        // A server frame is unmasked; its code, when it has one, is the first two payload bytes.
        if let [_, len, hi, lo, ..] = close_frame[..] {
            if len >= 2 {
                self.close_code = u16::from_be_bytes([hi, lo]);
            }
        }
        self.out.push_close(close_frame);
        self.drop_inbound();
    }

    /// Ends the session after a failure of the server's side (a panicking route callback): the
    /// peer is sent a close frame with `close_code`, then the session is over with `Failed`.
    pub fn fail(&mut self, now: Instant, close_code: u16) {
        if self.phase == Phase::Open {
            self.out.push_close(frame::encode_close(close_code, ""));
            self.end(Some(SessionError::Failed), self.linger_from(now));
        }
    }

    /// Ends the session now and drops the socket (a close deadline of the whole shard).
    pub fn force_close(&mut self) {
        if !self.is_closed() {
            self.end(Some(SessionError::Forced), None);
        }
    }

    // ---- outputs -----------------------------------------------------------------------------

    /// Fills `out` with the unwritten bytes, front first, for one vectored write; returns how
    /// many slices it filled.
    pub fn poll_transmit<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        self.out.slices(out)
    }

    /// Whether anything is waiting to be written.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// When `handle_timeout` must next be called; `None` once closed (the linger is the
    /// caller's, see `linger`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => {
                let write_timeout = self.config.write_timeout();
                [
                    Some(self.next_ping.instant()),
                    Some(self.idle_deadline()),
                    self.write_blocked_since
                        .map(|s| s.instant() + write_timeout),
                    self.out.full_since().map(|s| s + write_timeout),
                    self.out.next_expiry(),
                ]
                .into_iter()
                .flatten()
                .min()
            }
            Phase::Closing { deadline } => deadline.map(Stamp::instant),
            Phase::Closed { .. } => None,
        }
    }

    /// The next thing that happened, acting on the next inbound frame when nothing else is
    /// pending (see the module doc).
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            let Some(next) = self.pending.pop_front() else {
                if self.pending.capacity() > 0 {
                    // Nothing left: an idle connection holds no heap memory here.
                    self.pending = VecDeque::new();
                }
                return None;
            };
            let event = match next {
                Pending::Report(event) => return Some(event),
                // What the peer sent after the server began to close is not delivered.
                Pending::Frame(_) | Pending::Violation(_) if self.phase != Phase::Open => None,
                Pending::Frame(frame) => self.act_on(frame),
                Pending::Violation(violation) => {
                    self.out
                        .push_close(frame::encode_close(violation.close_code(), ""));
                    let linger = self.linger_from(self.last_inbound.instant());
                    self.end(Some(SessionError::Protocol(violation)), linger);
                    None
                }
            };
            if event.is_some() {
                return event;
            }
        }
    }

    /// After `Closed`: until when the caller should keep writing what is queued (then half-close
    /// and wait for the peer's end); `None` means drop the socket at once.
    pub fn linger(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed { linger, .. } => linger.map(Stamp::instant),
            _ => None,
        }
    }

    /// After `Closed`: whether the session ended on the peer's close frame. The peer then sends
    /// nothing more, so once the answer is written the socket may be closed without waiting
    /// for the peer's end of the stream: nothing unread is left to turn the close into a reset.
    pub fn peer_closed(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closed {
                peer_closed: true,
                ..
            }
        )
    }

    // ---- inside ------------------------------------------------------------------------------

    /// When the peer's silence is next judged: the idle timeout after it was last heard, or a
    /// recheck granted for a late look (`judge_silence`).
    fn idle_deadline(&self) -> Instant {
        self.recheck_at
            .map(Stamp::instant)
            .unwrap_or(self.last_inbound.instant() + self.config.read_idle_timeout())
    }

    /// What an inbound frame means now; `None` when it ended the session (its `Closed` is
    /// pending then).
    fn act_on(&mut self, frame: Inbound) -> Option<Event> {
        match frame {
            Inbound::Message { data, binary } => {
                let Some(limit) = self.rate.as_deref_mut() else {
                    return Some(Event::Message { data, binary });
                };
                // The last read is the best "now" a frame decoded from it has.
                let now = self.last_inbound.instant();
                let (messages, bytes) = (
                    self.config.client_message_rate(),
                    self.config.client_byte_rate(),
                );
                match limit.admit(messages, bytes, data.len(), now) {
                    Admit::Yes => Some(Event::Message { data, binary }),
                    Admit::Refused => Some(Event::RateLimited(data)),
                    Admit::Close => {
                        self.close(now, 1008, RATE_LIMIT_REASON);
                        Some(Event::RateLimited(data))
                    }
                }
            }
            Inbound::Ping(data) => {
                self.unanswered_pings += 1;
                if self.unanswered_pings as usize > MAX_UNANSWERED_PINGS {
                    self.end(Some(SessionError::PingFlood), None);
                    return None;
                }
                self.out.push_pong(frame::encode(OpCode::Pong, &data));
                Some(Event::Ping(data))
            }
            Inbound::Pong(data) => Some(Event::Pong(data)),
            Inbound::Close { code, reason } => {
                if self.close_code == 0 {
                    self.close_code = code.unwrap_or(0);
                }
                // Answer with the same code and reason (RFC 6455 §5.5.1), as browsers show the
                // reason to the page; an empty close gets an empty one.
                self.out
                    .push_close(frame::encode_close(code.unwrap_or(1005), &reason));
                let error = match code {
                    Some(1000 | 1001) => None,
                    code => Some(SessionError::PeerClosed { code, reason }),
                };
                // The last read is the best "now" a frame decoded from it has.
                let linger = self.linger_from(self.last_inbound.instant());
                self.end(error, linger);
                if let Phase::Closed { peer_closed, .. } = &mut self.phase {
                    *peer_closed = true;
                }
                None
            }
        }
    }

    fn report(&mut self, event: Event) {
        self.pending.push_back(Pending::Report(event));
    }

    /// The one rule for how long a closed session's last bytes may take: a write timeout.
    fn linger_from(&self, now: Instant) -> Option<Instant> {
        Some(now + self.config.write_timeout())
    }

    fn complete_close(&mut self, linger: Option<Instant>) {
        self.report(Event::CloseComplete);
        self.end(None, linger);
    }

    /// Over: what the peer sent and is not yet acted on is dropped, and `Closed` is reported
    /// after whatever was reported before.
    fn end(&mut self, error: Option<SessionError>, linger: Option<Instant>) {
        self.phase = Phase::Closed {
            linger: linger.map(Stamp::of),
            peer_closed: false,
        };
        self.write_blocked_since = None;
        self.drop_inbound();
        self.report(Event::Closed(error));
    }

    fn drop_inbound(&mut self) {
        self.pending.retain(|p| matches!(p, Pending::Report(_)));
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
