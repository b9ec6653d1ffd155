//! One connection's glue (`Conn`) between its protocol session (`ws::session`), its socket's
//! reads and writes, its listeners and its shard's `Connections`. Not protocol decisions,
//! which the session makes, nor the connection task in `io.rs`, which owns the socket and
//! waits for room to write.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::connections::Connections;
use super::handle::{EventPayload, Websocket};
use super::readiness;
use super::socket::{gather, recv, send_vectored, LentSocket};
use crate::auth::{self, Expiry};
use crate::backend::wire::{EventBody, Origin};
use crate::event::{self, Attributes, EventName};
use crate::handshake::{RequestData, Token};
use crate::history::{self, Epoch, Kept, Position, Seam};
use crate::metrics::{self, DropCause};
use crate::registry::ConnId;
use crate::topics;

use crate::ws::queue::{Displace, Droppable, FrameBytes, Push, MAX_IOVECS};
use crate::ws::session::{Event, Session};
use crate::ws::stamp::Stamp;
use crate::{Config, Error};

/// A listener registered on one connection.
pub(crate) type LocalListener = Rc<dyn Fn(&EventPayload)>;

/// This connection's own listeners by event name; allocated on the first `kws.on`.
type LocalListeners = HashMap<Box<str>, Rc<Vec<LocalListener>>>;

pub(crate) struct Conn {
    pub(crate) conns: Rc<Connections>,
    pub(crate) id: ConnId,
    pub(crate) uuid: RefCell<Arc<str>>,
    pub(crate) request: RequestData,
    attributes: RefCell<Attributes>,
    listeners: RefCell<Option<Box<LocalListeners>>>,
    /// Borrowed only inside this file's methods, never while a listener runs.
    session: RefCell<Session<Config>>,
    /// Torn down: events have fired; only the socket is left to finish.
    gone: Cell<bool>,
    close_forced: Cell<bool>,
    /// Earliest entry this connection has in the shard's timer heap.
    pub(crate) scheduled: Cell<Option<Stamp>>,
    waker: Cell<Option<Waker>>,
    /// The plain socket, lent by the connection task for the readiness set's reads and the
    /// flush pass's writes until the task finishes it.
    pub(crate) fd: LentSocket,
    /// An open plain connection with nothing waiting keeps its socket here and has no task:
    /// `wake` hands the socket to a new one (`Connections::resume`).
    parked: Cell<Option<OwnedFd>>,
    /// Whether it is on the shard's list of connections with something to write.
    dirty: Cell<bool>,
    /// Cluster mode: the revision of this connection's claim on its UUID, 0 for none.
    claim: Cell<u64>,
    /// Publications of topics with history reach it in the position envelope.
    positions: Cell<bool>,
    /// Publications its full queue drops under a slow-consumer policy are told to it in band.
    notices: Cell<bool>,
    /// Topics it is catching up on, with the live publications held meanwhile; allocated
    /// only during a recovery.
    recovering: RefCell<Option<Box<Recovering>>>,
}

/// The topics a connection is catching up on, each with its seam.
type Recovering = Vec<(Arc<str>, Seam)>;

impl Conn {
    pub(crate) fn new(
        conns: Rc<Connections>,
        id: ConnId,
        uuid: Arc<str>,
        config: Arc<Config>,
        request: RequestData,
        now: Instant,
        response: Bytes,
    ) -> Conn {
        // The handshake's 101 is the first thing the session sends.
        let mut session = Session::opened(config, now, response);
        // Connections accepted together ping spread over the interval, not in one burst.
        session.spread_pings(now, id.slot as u64);
        if let Some(agreement) = request.deflate {
            session.accept_deflate(agreement);
        }
        if let Some(token) = request.token() {
            // The expiry rule is first applied at `exp` (at once if that is past).
            let expires = token.identity.borrow().expires;
            token
                .check_at
                .set(expires.map(|e| instant_of(e, now, since_epoch())));
        }
        Conn {
            id,
            uuid: RefCell::new(uuid),
            session: RefCell::new(session),
            request,
            conns,
            attributes: RefCell::default(),
            listeners: RefCell::default(),
            gone: Cell::new(false),
            close_forced: Cell::new(false),
            claim: Cell::new(0),
            scheduled: Cell::new(None),
            waker: Cell::new(None),
            fd: LentSocket::default(),
            parked: Cell::new(None),
            dirty: Cell::new(false),
            positions: Cell::new(false),
            notices: Cell::new(false),
            recovering: RefCell::new(None),
        }
    }

    /// Serving: not closing, not torn down.
    pub(crate) fn is_open(&self) -> bool {
        self.session.borrow().is_open()
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.get()
    }

    pub(crate) fn close_forced(&self) -> bool {
        self.close_forced.get()
    }

    pub(crate) fn uuid(&self) -> Arc<str> {
        Arc::clone(&self.uuid.borrow())
    }

    pub(crate) fn set_uuid(&self, uuid: Arc<str>) {
        *self.uuid.borrow_mut() = uuid;
    }

    pub(crate) fn attributes(&self) -> std::cell::Ref<'_, Attributes> {
        self.attributes.borrow()
    }

    pub(crate) fn set_attribute(&self, key: String, value: Arc<dyn std::any::Any + Send + Sync>) {
        self.attributes.borrow_mut().insert(key, value);
    }

    // ---- topics ---------------------------------------------------------------------------

    /// Subscribes to `topic`: `Ok(false)` if it already was. The server-wide table learns of
    /// it before this returns, so a publish called afterwards on any thread reaches it.
    pub(crate) fn subscribe(&self, topic: &str) -> Result<bool, Error> {
        if self.is_gone() {
            // A torn-down connection would never leave the index again.
            return Err(Error::InvalidConnection);
        }
        let limit = self.session.borrow().config().max_topics;
        let added = self
            .conns
            .topics
            .borrow_mut()
            .subscribe(self.id.slot, topic, limit)?;
        let Some(name) = added else {
            return Ok(false);
        };
        if self.conns.topic_table.add(&name, self.conns.id) {
            self.conns.interest_changed(&name);
        }
        self.conns.metrics().subscribed(1);
        self.forward(EventBody::Subscribe { topic });
        Ok(true)
    }

    /// Unsubscribes from `topic`: false if it was not subscribed.
    pub(crate) fn unsubscribe(&self, topic: &str) -> bool {
        let left = self
            .conns
            .topics
            .borrow_mut()
            .unsubscribe(self.id.slot, topic);
        if left {
            self.conns.leave_topic(topic);
            self.conns.metrics().unsubscribed(1);
            self.forward(EventBody::Unsubscribe { topic });
        }
        left
    }

    pub(crate) fn is_subscribed(&self, topic: &str) -> bool {
        self.conns
            .topics
            .borrow()
            .is_subscribed(self.id.slot, topic)
    }

    /// This connection's topics, in the order it subscribed.
    pub(crate) fn topics(&self) -> Vec<String> {
        let index = self.conns.topics.borrow();
        index
            .topics_of(self.id.slot)
            .map(|t| t.to_string())
            .collect()
    }

    /// Drops every subscription, at teardown: before `disconnect` fires, and before the slot
    /// can be reused.
    fn unsubscribe_all(&self) {
        let topics = self.conns.topics.borrow_mut().remove_member(self.id.slot);
        for topic in &topics {
            self.conns.leave_topic(topic);
        }
        self.conns.metrics().unsubscribed(topics.len() as u64);
    }

    // ---- history ---------------------------------------------------------------------------

    /// Whether publications of topics with history reach it in the position envelope.
    pub(crate) fn wants_positions(&self) -> bool {
        self.positions.get()
    }

    pub(crate) fn set_positions(&self, on: bool) {
        self.positions.set(on);
    }

    pub(crate) fn set_notices(&self, on: bool) {
        self.notices.set(on);
    }

    /// Queues a publication of a topic whose slow-consumer policy lets a full queue drop it
    /// (`OutboundQueue::push_droppable`); the caller tells the connection of a drop
    /// (`tell_dropped`) once it holds no borrow of the shard's tables.
    pub(crate) fn offer_droppable(
        self: &Rc<Self>,
        frame: FrameBytes,
        tag: Droppable,
        displace: Displace,
    ) -> Push {
        let push = self
            .session
            .borrow_mut()
            .send_droppable(frame, tag, displace);
        match push {
            Push::Closed | Push::Dropped => {}
            _ => {
                self.conns.metrics().queued();
                self.mark_dirty();
            }
        }
        push
    }

    /// A publication of `topic` (`hash` is `topics::fnv1a` of it) was dropped for this
    /// connection under the topic's slow-consumer policy: the in-band notice, when it asked for
    /// notices, and `error` with `Error::Dropped`.
    pub(crate) fn tell_dropped(self: &Rc<Self>, topic: &str, hash: u64) {
        if self.notices.get() || self.positions.get() {
            self.session
                .borrow_mut()
                .send_notice(hash, 1, |n| topics::missed_notice(topic, n));
            self.mark_dirty();
        }
        let error = Error::Dropped {
            topic: topic.to_string(),
            dropped: 1,
        };
        self.fire_error(error, Bytes::copy_from_slice(topic.as_bytes()));
    }

    /// While it catches up on `topic`, holds a live publication for the seam: `true` when held.
    pub(crate) fn hold_if_recovering(
        &self,
        topic: &str,
        position: Position,
        frame: &Bytes,
    ) -> bool {
        let mut recovering = self.recovering.borrow_mut();
        let Some(seam) = recovering
            .as_mut()
            .and_then(|r| r.iter_mut().find(|(t, _)| &**t == topic))
        else {
            return false;
        };
        let (payload, binary) = history::unframe(frame);
        seam.1.hold(position, payload, binary);
        true
    }

    /// Starts catching up on `topic`: live publications are held until `end_recovery`.
    pub(crate) fn begin_recovery(&self, topic: &str) {
        let mut recovering = self.recovering.borrow_mut();
        let list = recovering.get_or_insert_with(Box::default);
        if !list.iter().any(|(t, _)| &**t == topic) {
            list.push((topic.into(), Seam::default()));
        }
    }

    /// Ends catching up on `topic`: sends what it missed (`recovered`: of `epoch`, after
    /// offset `after`) and what was held, joined without gap or duplicate, in the position
    /// envelope. Returns how many went out.
    pub(crate) fn end_recovery(
        self: &Rc<Self>,
        topic: &str,
        epoch: Option<Epoch>,
        after: u64,
        recovered: Vec<Kept>,
    ) -> usize {
        let seam = {
            let mut recovering = self.recovering.borrow_mut();
            let Some(list) = recovering.as_mut() else {
                return 0;
            };
            let Some(i) = list.iter().position(|(t, _)| &**t == topic) else {
                return 0;
            };
            let (_, seam) = list.swap_remove(i);
            if list.is_empty() {
                *recovering = None;
            }
            seam
        };
        let out = seam.join(epoch, after, recovered);
        let now = Instant::now();
        for (position, payload, binary) in &out {
            self.offer_frame(
                history::envelope(topic, Some(*position), payload, *binary).into(),
                now,
            );
        }
        out.len()
    }

    // ---- the connection task's side ------------------------------------------------------

    /// Remembers the task to wake when there is something to write or decide.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        let kept = self.waker.take().filter(|old| old.will_wake(waker));
        self.waker.set(kept.or_else(|| Some(waker.clone())));
    }

    /// Something for the connection task: a write that waits for room, a close, the teardown.
    /// A parked connection gets a task again, with its socket.
    pub(crate) fn wake(self: &Rc<Self>) {
        if let Some(w) = self.waker.take() {
            w.wake_by_ref();
            self.waker.set(Some(w));
        } else if let Some(fd) = self.parked.take() {
            self.conns.resume(Rc::clone(self), fd);
        }
    }

    /// The connection task ends and leaves the socket (still lent) with the connection, until
    /// `wake`: an idle connection then holds no task and no glommio stream.
    pub(crate) fn park(&self, fd: OwnedFd) {
        self.waker.take();
        self.parked.set(Some(fd));
    }

    /// Shuts a parked socket down (a halting shard's last step: the readiness set then reports
    /// it, and the connection is torn down as on a peer's reset); whether it was parked.
    pub(crate) fn shut_down_parked(&self) -> bool {
        let Some(fd) = self.parked.take() else {
            return false;
        };
        // SAFETY: the fd is open (owned here); shutdown only ends the stream's traffic.
        unsafe {
            libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR);
        }
        self.parked.set(Some(fd));
        true
    }

    /// Something was queued: the shard's flush pass writes it at the end of this tick, in one
    /// vectored write with whatever else is queued by then, without waking this connection's
    /// task (docs/architecture.md, "Performance rules").
    fn mark_dirty(self: &Rc<Self>) {
        if !self.dirty.replace(true) {
            self.conns.mark_dirty(Rc::clone(self));
        }
    }

    /// The shard's flush pass: writes what the socket takes now. The connection task takes
    /// over when the socket is full (to wait for room), on an error, or once the connection is
    /// closing, since those need the socket itself.
    pub(crate) fn flush_now(self: &Rc<Self>, now: Instant) {
        self.dirty.set(false);
        let Some(fd) = self.fd.get().filter(|_| self.is_open()) else {
            self.wake();
            return;
        };
        match self.write_queue(fd, now) {
            Ok(true) => {}
            Ok(false) | Err(_) => self.wake(),
        }
    }

    /// Writes as much of the queue as the socket takes, one vectored write per pass (sends per
    /// flush, not per message): `Ok(true)` once the queue is empty, `Ok(false)` when the socket
    /// is full. Needs only the fd, so the flush pass and the connection task share it.
    pub(crate) fn write_queue(&self, fd: BorrowedFd<'_>, now: Instant) -> io::Result<bool> {
        loop {
            let result = {
                let session = self.session.borrow();
                // Checked first: the slice array below costs a kilobyte of stores.
                if !session.wants_write() {
                    return Ok(true);
                }
                let mut slices: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
                let n = session.poll_transmit(&mut slices);
                if n > 1 {
                    let mut buf = self.conns.gather.borrow_mut();
                    let mut out: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
                    let m = gather(&slices[..n], &mut buf, &mut out);
                    send_vectored(fd, &out[..m])
                } else {
                    send_vectored(fd, &slices[..n])
                }
            };
            match result {
                Ok(written) => self.wrote(now, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// `written` bytes of the queue went out.
    pub(crate) fn wrote(&self, now: Instant, written: usize) {
        self.conns.metrics().written(written);
        self.session.borrow_mut().handle_written(now, written);
    }

    /// The first unwritten slice, for a write that waits for room.
    pub(crate) fn with_front<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let session = self.session.borrow();
        let mut slices: [&[u8]; 1] = [&[]];
        session.poll_transmit(&mut slices);
        f(slices[0])
    }

    /// A copy of the unwritten bytes, front first, at most `max` (for a TLS connection, which
    /// encrypts them together).
    pub(crate) fn unwritten(&self, max: usize) -> Vec<u8> {
        let session = self.session.borrow();
        let mut slices: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
        let n = session.poll_transmit(&mut slices);
        let mut out = Vec::with_capacity(slices.iter().map(|s| s.len()).sum::<usize>().min(max));
        for slice in slices.iter().take(n) {
            let room = max - out.len();
            out.extend_from_slice(slice.get(..room.min(slice.len())).unwrap_or_default());
            if out.len() == max {
                break;
            }
        }
        out
    }

    /// Whether anything is left to write.
    pub(crate) fn wants_write(&self) -> bool {
        self.session.borrow().wants_write()
    }

    /// A write would block: start (or keep) the stall clock.
    pub(crate) fn write_blocked(self: &Rc<Self>, now: Instant) {
        self.session.borrow_mut().handle_write_blocked(now);
        self.schedule();
    }

    /// From now on the shard's readiness set reads this connection (see `read_ready`).
    pub(crate) fn watch(&self) -> io::Result<()> {
        let Some(fd) = self.fd.get() else {
            return Ok(());
        };
        self.conns.readiness.watch(fd, readiness::key_of(self.id))
    }

    /// The socket has bytes (or the peer closed): one `recv` of at most `max` bytes into the
    /// shard's buffer, then the session acts on them. More bytes left are reported again
    /// (level-triggered).
    pub(crate) fn read_ready(self: &Rc<Self>, max: usize, now: Instant) {
        let Some(fd) = self.fd.get().filter(|_| !self.is_gone()) else {
            return;
        };
        let read = {
            let mut scratch = self.conns.scratch.borrow_mut();
            let len = max.clamp(1, scratch.len());
            match recv(fd, &mut scratch[..len]) {
                Ok(n) if n > 0 => {
                    // The session copies what it keeps: the buffer is free again after this.
                    self.received(now, &scratch[..n]);
                    Ok(n)
                }
                other => other,
            }
        };
        match read {
            Ok(0) => self.handle_eof(),
            Ok(_) => self.drive(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => self.handle_io_error(e),
        }
    }

    /// Bytes the peer sent; nothing fires until `drive`.
    pub(crate) fn received(&self, now: Instant, bytes: &[u8]) {
        self.session.borrow_mut().handle_read(now, bytes);
    }

    /// The peer ended the stream.
    pub(crate) fn handle_eof(self: &Rc<Self>) {
        self.session.borrow_mut().handle_eof();
        self.drive();
    }

    /// A read or write failed.
    pub(crate) fn handle_io_error(self: &Rc<Self>, error: io::Error) {
        self.session.borrow_mut().handle_io_error(error);
        self.drive();
    }

    /// After teardown: until when to keep writing what is queued (the close frame) before
    /// closing the socket; `None`: drop it now.
    pub(crate) fn linger(&self) -> Option<Instant> {
        self.session.borrow().linger()
    }

    /// After teardown: whether it ended on the peer's close frame (`Session::peer_closed`).
    pub(crate) fn peer_closed(&self) -> bool {
        self.session.borrow().peer_closed()
    }

    /// Acts on what the session reports: events for listeners, the one teardown; then makes
    /// sure queued bytes get written and the timer heap knows the next deadline.
    pub(crate) fn drive(self: &Rc<Self>) {
        loop {
            let event = self.session.borrow_mut().poll_event();
            let Some(event) = event else { break };
            match event {
                Event::Message { data, binary } => self.fire_message(data, binary),
                Event::Ping(data) => self.fire(EventName::Static(event::PING), data, None),
                Event::Pong(data) => self.fire(EventName::Static(event::PONG), data, None),
                Event::Dropped(payload) => {
                    self.conns.metrics().dropped(DropCause::QueueFull);
                    self.fire_error(Error::QueueFull, payload);
                }
                Event::RateLimited(payload) => {
                    self.conns.metrics().dropped(DropCause::RateLimited);
                    self.fire_error(Error::RateLimited, payload);
                }
                Event::CloseComplete => {
                    self.fire(EventName::Static(event::CLOSE), Bytes::new(), None)
                }
                Event::Closed(error) => self.teardown(error.map(Error::from)),
            }
        }
        if self.is_gone() {
            return;
        }
        if self.wants_write() {
            self.mark_dirty();
        }
        self.schedule();
    }

    /// Makes sure the timer heap looks at this connection by the session's next deadline.
    fn schedule(&self) {
        let next = self.session.borrow().poll_timeout();
        // The token's next check, while open; nothing to look at without a token.
        let token = self
            .request
            .token()
            .and_then(|t| t.check_at.get())
            .filter(|_| self.is_open());
        let next = match (next, token) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = next {
            self.conns.timers.schedule(&self.scheduled, self.id, at);
        }
    }

    // ---- sending --------------------------------------------------------------------------

    /// Queues an already framed data message. Fails once the connection is closing or gone,
    /// and counts the drop.
    pub(crate) fn send_frame(self: &Rc<Self>, frame: Bytes, now: Instant) -> Result<(), Error> {
        if self.offer_frame(frame.into(), now) {
            Ok(())
        } else {
            self.conns.metrics().dropped(DropCause::Closed);
            Err(Error::InvalidConnection)
        }
    }

    /// Queues an already framed data message if the connection is open; false (and nothing
    /// counted) if not: a broadcast's way to skip connections that are no longer targets.
    pub(crate) fn offer_frame(self: &Rc<Self>, frame: FrameBytes, now: Instant) -> bool {
        let push = self.session.borrow_mut().send(now, frame);
        match push {
            Push::Queued => {}
            Push::Waiting { deadline } => {
                self.conns
                    .timers
                    .schedule(&self.scheduled, self.id, deadline)
            }
            // Only `push_droppable` answers these.
            Push::Closed | Push::Displaced { .. } | Push::Dropped => return false,
        }
        self.conns.metrics().queued();
        self.mark_dirty();
        true
    }

    /// Starts a server-initiated close that waits for the shard's deadline (`close_all`):
    /// the queue is flushed, then `close_frame`, then `close` and `disconnect` fire; the caller
    /// force-closes at its deadline.
    pub(crate) fn close_shared(self: &Rc<Self>, close_frame: Bytes) {
        self.begin_close(|session| session.close_shared(close_frame));
    }

    /// A close the server starts, bounded by the connection's own write timeout.
    pub(crate) fn close(self: &Rc<Self>, code: u16, reason: &str) {
        let now = Instant::now();
        self.begin_close(|session| session.close(now, code, reason));
    }

    fn begin_close(self: &Rc<Self>, close: impl FnOnce(&mut Session<Config>)) {
        if !self.is_open() {
            return;
        }
        self.unregister();
        close(&mut self.session.borrow_mut());
        self.schedule();
        self.wake();
    }

    /// Ends the connection after a failure on the server's side: the peer gets `close_code`.
    pub(crate) fn fail(self: &Rc<Self>, close_code: u16) {
        self.session.borrow_mut().fail(Instant::now(), close_code);
        self.drive();
    }

    /// Force-closes at a close deadline.
    pub(crate) fn force_close(self: &Rc<Self>) {
        if !self.is_gone() {
            self.close_forced.set(true);
            self.session.borrow_mut().force_close();
            self.drive();
        }
    }

    /// The timer heap found this connection due at `now`.
    pub(crate) fn on_timer(self: &Rc<Self>, now: Instant) {
        if self.scheduled.get().is_some_and(|s| s.instant() <= now) {
            self.scheduled.set(None);
        }
        if self.is_gone() {
            return;
        }
        self.session.borrow_mut().handle_timeout(now);
        if let Some(token) = self.request.token() {
            self.check_token(token, now);
        }
        self.drive();
    }

    // ---- the token -------------------------------------------------------------------------

    /// The grace an expired token's connection has (`Verifier::refresh_grace`), in seconds.
    fn grace(&self) -> u64 {
        self.conns
            .auth
            .as_ref()
            .map_or(auth::DEFAULT_REFRESH_GRACE.as_secs(), |v| v.grace())
    }

    /// Applies the expiry rule (`auth::expiry`) once its check is due: from `exp` on, tells
    /// the connection (`event::TOKEN_EXPIRING`, once per token, with the seconds left);
    /// past the grace, closes it with 1008.
    fn check_token(self: &Rc<Self>, token: &Token, now: Instant) {
        if !self.is_open() || !token.check_at.get().is_some_and(|at| at <= now) {
            return;
        }
        let since = since_epoch();
        let expires = token.identity.borrow().expires;
        match auth::expiry(since.as_secs(), expires, self.grace()) {
            Expiry::Never => token.check_at.set(None),
            Expiry::Valid { until } => token.check_at.set(Some(instant_of(until, now, since))),
            Expiry::Grace { until } => {
                token.check_at.set(Some(instant_of(until, now, since)));
                if !token.told.replace(true) {
                    let left = until.saturating_sub(since.as_secs());
                    let data = Bytes::from(left.to_string());
                    self.fire(EventName::Static(event::TOKEN_EXPIRING), data, None);
                }
            }
            Expiry::Over => {
                token.check_at.set(None);
                self.close(1008, "token expired");
            }
        }
    }

    /// A fresh token for this connection, verified with the server's verifier now. A token
    /// for another user closes the connection with 1008; a refused one changes nothing.
    pub(crate) fn refresh_token(self: &Rc<Self>, jwt: &str) -> Result<(), Error> {
        if !self.is_open() {
            return Err(Error::InvalidConnection);
        }
        let (Some(token), Some(verifier)) = (self.request.token(), self.conns.auth.as_ref()) else {
            return Err(Error::Config(
                "the server does not authenticate clients".into(),
            ));
        };
        let since = since_epoch();
        let identity = verifier
            .verify(jwt, since.as_secs())
            .map_err(|refusal| Error::Token(refusal.reason()))?;
        if *identity.user != *token.user {
            self.close(1008, "token for another user");
            return Err(Error::Token("the token is for another user"));
        }
        let check_at = identity
            .expires
            .map(|e| instant_of(e, Instant::now(), since));
        *token.identity.borrow_mut() = Arc::new(identity);
        token.told.set(false);
        token.check_at.set(check_at);
        self.schedule();
        Ok(())
    }

    // ---- events ----------------------------------------------------------------------------

    /// Runs the listeners of `name`: server-wide first, then this connection's own, each in
    /// registration order. Nothing fires once the connection is torn down.
    pub(crate) fn fire(self: &Rc<Self>, name: EventName, data: Bytes, error: Option<Arc<Error>>) {
        if self.is_gone() {
            return;
        }
        self.fire_unchecked(name, data, error, false);
    }

    /// Fires `message` for a message that arrived, with its type (forwarded to the backend
    /// first, so it sees the message before anything a listener does about it).
    pub(crate) fn fire_message(self: &Rc<Self>, data: Bytes, binary: bool) {
        self.conns.metrics().received(data.len());
        if !self.is_gone() {
            self.forward(EventBody::Message {
                data: &data,
                binary,
            });
            self.fire_unchecked(EventName::Static(event::MESSAGE), data, None, binary);
        }
    }

    fn fire_unchecked(
        self: &Rc<Self>,
        name: EventName,
        data: Bytes,
        error: Option<Arc<Error>>,
        binary: bool,
    ) {
        let shared = self.conns.server_listeners(&name);
        let own = self
            .listeners
            .borrow()
            .as_ref()
            .and_then(|m| m.get(&*name).cloned());
        if shared.is_none() && own.is_none() {
            return;
        }
        let payload = EventPayload {
            kws: Websocket::from_conn(Rc::clone(self)),
            uuid: self.uuid(),
            attributes: self.attributes.borrow().clone(),
            name,
            error,
            data,
            binary,
        };
        for l in shared.iter().flat_map(|l| l.iter()) {
            self.guarded(&payload, || l(&payload));
        }
        for l in own.iter().flat_map(|l| l.iter()) {
            self.guarded(&payload, || l(&payload));
        }
    }

    /// Runs one listener; a panic goes to the recover handler and the next listener still runs.
    fn guarded(&self, payload: &EventPayload, f: impl FnOnce()) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
            // The session is never borrowed while a listener runs.
            let handler = self.session.borrow().config().recover_handler.clone();
            match handler {
                Some(h) => {
                    let name = payload.name();
                    if catch_unwind(AssertUnwindSafe(|| h(name, &*panic))).is_err() {
                        tracing::warn!(event = name, "recover handler panicked");
                    }
                }
                None => tracing::debug!(event = payload.name(), "listener panicked"),
            }
        }
    }

    pub(crate) fn on(&self, name: &str, listener: LocalListener) {
        let mut map = self.listeners.borrow_mut();
        let list = map
            .get_or_insert_with(Box::default)
            .entry(name.into())
            .or_default();
        Rc::make_mut(list).push(listener);
    }

    pub(crate) fn off(&self, name: &str) {
        if let Some(m) = self.listeners.borrow_mut().as_mut() {
            m.remove(name);
        }
    }

    /// Reports a failure on this connection through its `error` listeners.
    pub(crate) fn fire_error(self: &Rc<Self>, error: Error, data: Bytes) {
        self.fire(EventName::Static(event::ERROR), data, Some(Arc::new(error)));
    }

    /// Forwards an event about this connection to the backend, when its kind goes anywhere.
    pub(crate) fn forward(&self, body: EventBody<'_>) {
        let Some(backend) = &self.conns.backend else {
            return;
        };
        if !backend.forwards(body.kind()) {
            return;
        }
        let uuid = self.uuid();
        let token = self.request.token();
        let origin = Origin {
            uuid: &uuid,
            user: token.map(|t| &*t.user),
            path: self.request.head.path(),
        };
        backend.forward(origin, body);
    }

    // ---- teardown --------------------------------------------------------------------------

    fn unregister(&self) {
        let uuid = self.uuid();
        self.conns.registry.remove(&uuid, self.id);
        self.release_claim(&uuid);
    }

    /// Remembers the cluster-wide claim (its revision) on the UUID this connection now holds.
    pub(crate) fn set_claim(&self, revision: u64) {
        self.claim.set(revision);
    }

    /// Gives up the cluster-wide claim on `uuid`, if this connection holds one.
    pub(crate) fn release_claim(&self, uuid: &str) {
        let revision = self.claim.replace(0);
        if let Some(cluster) = self.conns.cluster.as_ref().filter(|_| revision != 0) {
            cluster.release(uuid, revision);
        }
    }

    /// The one teardown (docs/behaviour.md, "Lifecycle" 6): mark dead, unregister, fire `disconnect`
    /// (with the error), then `error` if there was one, then drop this connection's listeners.
    /// Only the session's `Closed` event leads here, so it runs once.
    fn teardown(self: &Rc<Self>, error: Option<Error>) {
        if self.gone.replace(true) {
            return;
        }
        // Nothing is read for it any more; the connection task finishes the socket.
        if let Some(fd) = self.fd.get() {
            self.conns.readiness.unwatch(fd);
        }
        self.unregister();
        self.unsubscribe_all();
        self.conns.remove(self.id);
        match &error {
            Some(e) => tracing::debug!(uuid = &*self.uuid(), error = %e, "connection closed"),
            None => tracing::debug!(uuid = &*self.uuid(), "connection closed"),
        }
        let error = error.map(Arc::new);
        self.conns.metrics().torn_down(error.as_deref());
        let code = self.session.borrow().close_code();
        self.forward(EventBody::Disconnect {
            code,
            cause: metrics::teardown_cause(error.as_deref()),
        });
        self.fire_unchecked(
            EventName::Static(event::DISCONNECT),
            Bytes::new(),
            error.clone(),
            false,
        );
        if let Some(e) = error {
            self.fire_unchecked(
                EventName::Static(event::ERROR),
                Bytes::new(),
                Some(e),
                false,
            );
        }
        self.listeners.borrow_mut().take();
        self.conns.teardowns.notify();
        self.wake();
    }
}

/// The time since the epoch by the system clock (zero before 1970), for token expiry.
pub(crate) fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The instant of `secs` (seconds since the epoch), given that `now` is `since` after the
/// epoch; `now` itself for a time already past.
fn instant_of(secs: u64, now: Instant, since: Duration) -> Instant {
    now + Duration::from_secs(secs).saturating_sub(since)
}

#[cfg(test)]
mod tests {
    use super::Conn;

    /// Every open connection holds one: a field added here is paid by every idle connection
    /// (docs/architecture.md, "Memory per idle connection").
    #[test]
    fn a_connection_stays_within_its_size() {
        assert!(
            std::mem::size_of::<Conn>() <= 488,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
