//! One connection's state on its shard: identity, request data, listeners, the outbound queue,
//! deadlines, and the one teardown. Not the socket: the connection task in `io.rs` owns that and
//! acts on what this state asks for.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;

use super::ShardCore;
use crate::event::{self, Attributes, EventName, EventPayload};
use crate::http::{Params, RequestHead};
use crate::metrics::DropCause;
use crate::registry::ConnId;
use crate::upgrade::Locals;
use crate::ws::frame::{self, Decoder};
use crate::ws::queue::{OutboundQueue, Push};
use crate::{Config, Error, Websocket};

/// A listener registered on one connection.
pub(crate) type LocalListener = Rc<dyn Fn(&EventPayload)>;

/// This connection's own listeners by event name; allocated on the first `kws.on`.
type LocalListeners = HashMap<Box<str>, Rc<Vec<LocalListener>>>;

/// Request data, fixed for the connection's whole life (listeners of `disconnect` included).
pub(crate) struct RequestData {
    pub(crate) head: RequestHead,
    pub(crate) params: Params,
    pub(crate) remote: SocketAddr,
    /// Boxed, and only when the gate set any: most connections have none.
    pub(crate) locals: Option<Box<Locals>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving.
    Open,
    /// The server queued a close frame; `close` fires once it is written.
    Closing,
    /// Torn down: events have fired; only the socket is left to finish.
    Gone,
}

/// What the connection task should do with the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketPlan {
    /// Read and write as usual.
    Serve,
    /// Write what is queued (a close frame last), then shut the socket down; past the deadline,
    /// drop it. The connection task keeps this deadline itself.
    FlushThenClose(Instant),
    /// Drop the socket now.
    Abort,
}

pub(crate) struct Conn {
    pub(crate) core: Rc<ShardCore>,
    pub(crate) id: ConnId,
    pub(crate) uuid: RefCell<Arc<str>>,
    pub(crate) config: Arc<Config>,
    pub(crate) request: RequestData,
    attributes: RefCell<Attributes>,
    listeners: RefCell<Option<Box<LocalListeners>>>,
    pub(crate) out: RefCell<OutboundQueue>,
    pub(crate) decoder: RefCell<Decoder>,
    phase: Cell<Phase>,
    plan: Cell<SocketPlan>,
    last_inbound: Cell<Instant>,
    next_ping: Cell<Instant>,
    write_blocked_since: Cell<Option<Instant>>,
    close_deadline: Cell<Option<Instant>>,
    close_forced: Cell<bool>,
    /// Earliest entry this connection has in the shard's timer heap.
    pub(crate) scheduled: Cell<Option<Instant>>,
    waker: RefCell<Option<Waker>>,
    /// The socket, while the connection is open, for the shard's flush pass; -1 otherwise.
    pub(crate) fd: Cell<i32>,
    /// Whether it is on the shard's list of connections with something to write.
    dirty: Cell<bool>,
}

impl Conn {
    pub(crate) fn new(
        core: Rc<ShardCore>,
        id: ConnId,
        uuid: Arc<str>,
        config: Arc<Config>,
        request: RequestData,
        now: Instant,
    ) -> Conn {
        Conn {
            id,
            uuid: RefCell::new(uuid),
            out: RefCell::new(OutboundQueue::new(config.send_queue_size)),
            decoder: RefCell::new(Decoder::new(config.max_message_size)),
            next_ping: Cell::new(now + config.ping_interval),
            last_inbound: Cell::new(now),
            config,
            request,
            core,
            attributes: RefCell::default(),
            listeners: RefCell::default(),
            phase: Cell::new(Phase::Open),
            plan: Cell::new(SocketPlan::Serve),
            write_blocked_since: Cell::new(None),
            close_deadline: Cell::new(None),
            close_forced: Cell::new(false),
            scheduled: Cell::new(None),
            waker: RefCell::new(None),
            fd: Cell::new(-1),
            dirty: Cell::new(false),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.phase.get() == Phase::Open
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.phase.get() == Phase::Closing
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.phase.get() == Phase::Gone
    }

    pub(crate) fn plan(&self) -> SocketPlan {
        self.plan.get()
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

    // ---- the connection task's side ------------------------------------------------------

    /// Remembers the task to wake when there is something to write or decide.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        let mut w = self.waker.borrow_mut();
        match &*w {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = &*self.waker.borrow() {
            w.wake_by_ref();
        }
    }

    /// Something was queued: the shard's flush pass writes it at the end of this tick, in one
    /// vectored write with whatever else is queued by then, without waking this connection's
    /// task (DESIGN "Performance rules").
    fn mark_dirty(self: &Rc<Self>) {
        if !self.dirty.replace(true) {
            self.core.mark_dirty(Rc::clone(self));
        }
    }

    /// The shard's flush pass: writes what the socket takes now. The connection task takes
    /// over when the socket is full (to wait for room), on an error, or once the connection is
    /// closing, since those need the socket itself.
    pub(crate) fn flush_now(&self) {
        self.dirty.set(false);
        let fd = self.fd.get();
        if fd < 0 || !self.is_open() {
            self.wake();
            return;
        }
        match super::io::write_queue(self, fd) {
            Ok(true) => {}
            Ok(false) | Err(_) => self.wake(),
        }
    }

    /// Any bytes from the peer prove it is alive (BEHAVIOUR: data, ping or pong).
    pub(crate) fn touch(&self, now: Instant) {
        self.last_inbound.set(now);
    }

    /// A write would block: start (or keep) the stall clock.
    pub(crate) fn write_blocked(&self, now: Instant) {
        if self.write_blocked_since.get().is_none() {
            self.write_blocked_since.set(Some(now));
            self.core
                .timers
                .schedule(self, now + self.config.write_timeout);
        }
    }

    pub(crate) fn write_progressed(&self) {
        self.write_blocked_since.set(None);
    }

    /// The queue is empty: a server-initiated close has gone out, so `close` fires, then the
    /// teardown.
    pub(crate) fn close_written(self: &Rc<Self>) {
        if self.phase.get() == Phase::Closing {
            self.fire(EventName::Static(event::CLOSE), Bytes::new(), None);
            let linger = Instant::now() + self.config.write_timeout;
            self.teardown(None, SocketPlan::FlushThenClose(linger));
        }
    }

    // ---- sending --------------------------------------------------------------------------

    /// Queues an already framed data message. Fails once the connection is closing or gone.
    pub(crate) fn send_frame(self: &Rc<Self>, frame: Bytes, now: Instant) -> Result<(), Error> {
        if !self.is_open() {
            self.core.metrics().dropped(DropCause::Closed);
            return Err(Error::InvalidConnection);
        }
        let push = self
            .out
            .borrow_mut()
            .push_data(frame, now, self.config.retry_window());
        match push {
            Push::Queued => {
                self.core.metrics().queued();
                self.mark_dirty();
                Ok(())
            }
            Push::Waiting { deadline } => {
                self.core.metrics().queued();
                self.core.timers.schedule(self, deadline);
                self.mark_dirty();
                Ok(())
            }
            Push::Closed => {
                self.core.metrics().dropped(DropCause::Closed);
                Err(Error::InvalidConnection)
            }
        }
    }

    /// Queues a control frame (ping, pong) or the handshake response.
    pub(crate) fn send_control(self: &Rc<Self>, frame: Bytes) {
        if self.out.borrow_mut().push_control(frame) == Push::Queued {
            self.mark_dirty();
        }
    }

    /// Starts a server-initiated close: the queue is flushed, then the close frame, then `close`
    /// and `disconnect` fire. Past `deadline` the socket is force-closed with `Error::Timeout`.
    pub(crate) fn begin_close(self: &Rc<Self>, close_frame: Bytes, deadline: Instant) {
        if !self.is_open() {
            return;
        }
        self.phase.set(Phase::Closing);
        self.unregister();
        self.out.borrow_mut().push_close(close_frame);
        self.close_deadline.set(Some(deadline));
        self.core.timers.schedule(self, deadline);
        self.wake();
    }

    /// A close the server starts with the connection's own write timeout as its deadline.
    pub(crate) fn close(self: &Rc<Self>, code: u16, reason: &str) {
        let deadline = Instant::now() + self.config.write_timeout;
        self.begin_close(frame::encode_close(code, reason), deadline);
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

    /// Fires `message` for a message that arrived, with its type.
    pub(crate) fn fire_message(self: &Rc<Self>, data: Bytes, binary: bool) {
        self.core.metrics().received(data.len());
        if !self.is_gone() {
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
        let shared = self.core.server_listeners(&name);
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
            match &self.config.recover_handler {
                Some(h) => {
                    let h = Arc::clone(h);
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

    // ---- teardown --------------------------------------------------------------------------

    fn unregister(&self) {
        self.core
            .shared
            .registry
            .remove(&self.uuid.borrow(), self.id);
    }

    /// The one teardown (BEHAVIOUR "Lifecycle" 6): mark dead, unregister, fire `disconnect`
    /// (with the error), then `error` if there was one, then drop this connection's listeners.
    /// Later calls do nothing.
    pub(crate) fn teardown(self: &Rc<Self>, error: Option<Error>, plan: SocketPlan) {
        if self.is_gone() {
            return;
        }
        self.phase.set(Phase::Gone);
        self.plan.set(plan);
        self.unregister();
        self.core.remove(self.id);
        match &error {
            Some(e) => tracing::debug!(uuid = &*self.uuid(), error = %e, "connection closed"),
            None => tracing::debug!(uuid = &*self.uuid(), "connection closed"),
        }
        let error = error.map(Arc::new);
        self.core.metrics().torn_down(error.as_deref());
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
        self.core.teardowns.notify();
        self.wake();
    }

    /// Tears down after a protocol failure: the peer gets a close frame with `code` first.
    pub(crate) fn fail(self: &Rc<Self>, error: Error, close_code: u16) {
        self.out
            .borrow_mut()
            .push_close(frame::encode_close(close_code, ""));
        let deadline = Instant::now() + self.config.write_timeout;
        self.teardown(Some(error), SocketPlan::FlushThenClose(deadline));
    }

    /// Force-closes at a close deadline.
    pub(crate) fn force_close(self: &Rc<Self>) {
        if !self.is_gone() {
            self.close_forced.set(true);
            self.teardown(Some(Error::Timeout), SocketPlan::Abort);
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    /// Runs whatever is due at `now` (pings, idle and write timeouts, expired waiting messages,
    /// close deadlines), then asks for the next deadline.
    pub(crate) fn on_timer(self: &Rc<Self>, now: Instant) {
        if self.scheduled.get().is_some_and(|s| s <= now) {
            self.scheduled.set(None);
        }
        match self.phase.get() {
            Phase::Open => {
                let cfg = &self.config;
                if now >= self.last_inbound.get() + cfg.read_idle_timeout {
                    self.teardown(
                        Some(Error::IdleTimeout(cfg.read_idle_timeout)),
                        SocketPlan::Abort,
                    );
                    return;
                }
                let stalled = self.write_blocked_since.get();
                let full = self.out.borrow().full_since();
                if [stalled, full]
                    .iter()
                    .flatten()
                    .any(|since| now >= *since + cfg.write_timeout)
                {
                    self.teardown(
                        Some(Error::WriteTimeout(cfg.write_timeout)),
                        SocketPlan::Abort,
                    );
                    return;
                }
                let dropped = self.out.borrow_mut().expire(now);
                for framed in dropped {
                    self.core.metrics().dropped(DropCause::QueueFull);
                    self.fire_error(Error::QueueFull, payload_of(&framed));
                    if !self.is_open() {
                        return;
                    }
                }
                if now >= self.next_ping.get() {
                    self.next_ping.set(now + cfg.ping_interval);
                    self.send_control(Bytes::from_static(&PING_FRAME));
                    let mut out = self.out.borrow_mut();
                    if out.is_empty() {
                        out.compact();
                    }
                }
            }
            Phase::Closing => {
                if self.close_deadline.get().is_some_and(|d| now >= d) {
                    self.force_close();
                    return;
                }
            }
            // The connection task bounds its own last flush.
            Phase::Gone => return,
        }
        if let Some(next) = self.next_deadline() {
            self.core.timers.schedule(self, next);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self.phase.get() {
            Phase::Open => {
                let cfg = &self.config;
                let out = self.out.borrow();
                [
                    Some(self.next_ping.get()),
                    Some(self.last_inbound.get() + cfg.read_idle_timeout),
                    self.write_blocked_since
                        .get()
                        .map(|s| s + cfg.write_timeout),
                    out.full_since().map(|s| s + cfg.write_timeout),
                    out.next_expiry(),
                ]
                .into_iter()
                .flatten()
                .min()
            }
            Phase::Closing => self.close_deadline.get(),
            Phase::Gone => None,
        }
    }
}

/// An empty unmasked ping frame (RFC 6455 §5.5.2).
const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// The payload of a server frame built by `frame::encode` (header skipped, bytes shared).
pub(crate) fn payload_of(framed: &Bytes) -> Bytes {
    let header = match framed.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return Bytes::new(),
    };
    framed.slice(header.min(framed.len())..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::OpCode;

    #[test]
    fn payload_of_skips_every_header_size() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let data = vec![7u8; len];
            let framed = frame::encode(OpCode::Binary, &data);
            assert_eq!(payload_of(&framed), Bytes::from(data));
        }
    }

    #[test]
    fn ping_frame_matches_the_encoder() {
        assert_eq!(&PING_FRAME[..], &frame::encode(OpCode::Ping, b"")[..]);
    }
}
