//! The shard's connections: each one's glue (`Conn`) between its protocol session
//! (`ws::session`), its socket's reads and writes, its listeners and the shard; the slab and
//! the services they share (`Connections`: readiness set, timer heap, flush list, read buffer,
//! listener cache); and the types users see of a connection, `Websocket` and `EventPayload`
//! (their methods live in `websocket.rs`). Not protocol decisions, which the session makes,
//! nor the connection task in `io.rs`, which owns the socket and waits for room to write.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use super::link::ShardLinks;
use super::notify::LocalNotify;
use super::readiness::{self, Readiness};
use super::socket::{recv, send_vectored};
use super::timers::Timers;
use crate::cluster::handle::ClusterHandle;
use crate::event::{self, Attributes, EventName, ListenerMap, ListenerRegistry, ServerListener};
use crate::handshake::RequestData;
use crate::metrics::{DropCause, ShardMetrics};
use crate::registry::{ConnId, Registry, ShardId};
use crate::topics::{TopicIndex, TopicTable};
use crate::ws::deflate;
use crate::ws::frame::{self, MessageType};
use crate::ws::queue::{Push, MAX_IOVECS};
use crate::ws::session::{Event, Session};
use crate::{Config, Error};

/// A cheap, cloneable handle to one connection (Go: `*event.Websocket`); its methods are in
/// `websocket.rs`. Not `Send`: it lives on its connection's shard.
#[derive(Clone)]
pub struct Websocket {
    pub(crate) conn: Rc<Conn>,
}

impl Websocket {
    pub(crate) fn from_conn(conn: Rc<Conn>) -> Self {
        Websocket { conn }
    }
}

/// What a listener receives (Go: `*event.EventPayload`).
pub struct EventPayload {
    pub(crate) kws: Websocket,
    pub(crate) name: EventName,
    pub(crate) uuid: Arc<str>,
    pub(crate) attributes: Attributes,
    pub(crate) error: Option<Arc<Error>>,
    pub(crate) data: Bytes,
    pub(crate) binary: bool,
}

impl EventPayload {
    /// The connection the event is about.
    pub fn kws(&self) -> &Websocket {
        &self.kws
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection's UUID when the event fired.
    pub fn socket_uuid(&self) -> &str {
        &self.uuid
    }

    /// The connection's attributes when the event fired.
    pub fn socket_attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The error, for `error` and for `disconnect` after a failure.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }

    /// The payload: the message, ping or pong data, or what `fire` was given.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// How a `message` arrived: `Binary` for a binary message, `Text` for everything else.
    pub fn message_type(&self) -> MessageType {
        if self.binary {
            MessageType::Binary
        } else {
            MessageType::Text
        }
    }
}

impl std::fmt::Debug for EventPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPayload")
            .field("name", &&*self.name)
            .field("uuid", &self.uuid)
            .field("error", &self.error)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Size of the shard's read buffer: the most one `recv` takes.
pub(crate) const SCRATCH: usize = 64 << 10;

/// A shard's connections and what they share. Lives on the shard's thread only.
pub(crate) struct Connections {
    pub(crate) id: ShardId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) links: Arc<ShardLinks>,
    listeners: Arc<ListenerRegistry<EventPayload>>,
    /// This shard's copy of the server-wide listeners, re-read when their version moves.
    listener_cache: RefCell<(u64, Arc<ListenerMap<EventPayload>>)>,
    slab: RefCell<Slab<Rc<Conn>>>,
    next_generation: Cell<u64>,
    pub(crate) timers: Timers,
    /// One read buffer for every connection of the shard: a connection holds bytes only for
    /// an incomplete frame, never a buffer of its own while idle.
    pub(crate) scratch: RefCell<Box<[u8]>>,
    /// Reports which open connections have bytes to read.
    pub(crate) readiness: Readiness,
    /// Signalled after every teardown.
    pub(crate) teardowns: LocalNotify,
    /// Connections with something queued since the last flush pass.
    dirty: RefCell<Vec<Rc<Conn>>>,
    flush_wanted: LocalNotify,
    /// This shard's subscriptions, by slab slot.
    pub(crate) topics: RefCell<TopicIndex>,
    /// Which shards hold subscribers of each topic, shared by all shards.
    pub(crate) topic_table: Arc<TopicTable>,
    /// This node's NATS link, in cluster mode.
    pub(crate) cluster: Option<Arc<ClusterHandle>>,
}

impl Connections {
    pub(crate) fn new(
        id: ShardId,
        registry: Arc<Registry>,
        links: Arc<ShardLinks>,
        listeners: Arc<ListenerRegistry<EventPayload>>,
        topic_table: Arc<TopicTable>,
        cluster: Option<Arc<ClusterHandle>>,
        readiness: Readiness,
    ) -> Connections {
        let cache = listeners.snapshot();
        Connections {
            id,
            registry,
            links,
            listeners,
            listener_cache: RefCell::new(cache),
            slab: RefCell::new(Slab::new()),
            next_generation: Cell::new(0),
            timers: Timers::default(),
            scratch: RefCell::new(vec![0; SCRATCH].into_boxed_slice()),
            readiness,
            teardowns: LocalNotify::default(),
            dirty: RefCell::new(Vec::new()),
            flush_wanted: LocalNotify::default(),
            topics: RefCell::default(),
            topic_table,
            cluster,
        }
    }

    /// This shard's traffic counters.
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.links.get(self.id).metrics
    }

    /// Server-wide listeners of `name`, from this shard's copy of the registry snapshot.
    fn server_listeners(&self, name: &str) -> Option<Arc<[ServerListener<EventPayload>]>> {
        let version = self.listeners.version();
        if self.listener_cache.borrow().0 != version {
            *self.listener_cache.borrow_mut() = self.listeners.snapshot();
        }
        self.listener_cache.borrow().1.get(name).cloned()
    }

    /// Puts a connection on the flush list (see `Conn::mark_dirty`).
    fn mark_dirty(&self, conn: Rc<Conn>) {
        let mut dirty = self.dirty.borrow_mut();
        dirty.push(conn);
        if dirty.len() == 1 {
            drop(dirty);
            self.flush_wanted.notify();
        }
    }

    /// The flush pass: writes every dirty connection's queue, then waits for more. Runs as one
    /// task per shard, after the tasks that queued messages have yielded, so each dirty
    /// connection's whole queue leaves in one write.
    pub(crate) async fn flush_dirty(&self) {
        let mut batch = Vec::new();
        loop {
            if self.dirty.borrow().is_empty() {
                self.flush_wanted.wait().await;
            }
            std::mem::swap(&mut batch, &mut *self.dirty.borrow_mut());
            // One clock read for the whole pass.
            let now = Instant::now();
            for conn in batch.drain(..) {
                conn.flush_now(now);
            }
            glommio::yield_if_needed().await;
        }
    }

    /// The id the next inserted connection will get (nothing may be inserted in between).
    pub(crate) fn next_id(&self) -> ConnId {
        ConnId {
            shard: self.id,
            slot: self.slab.borrow().vacant_key(),
            generation: self.next_generation.get(),
        }
    }

    /// Adds a connection made with `next_id()` to the slab.
    pub(crate) fn insert(&self, conn: Rc<Conn>) {
        self.next_generation.set(conn.id.generation + 1);
        let expected = conn.id.slot;
        let slot = self.slab.borrow_mut().insert(conn);
        debug_assert_eq!(slot, expected);
        self.links.get(self.id).live.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, id: ConnId) {
        let mut slab = self.slab.borrow_mut();
        if slab.get(id.slot).is_some_and(|c| c.id == id) {
            slab.remove(id.slot);
            self.links.get(self.id).live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The live or closing connection with this id, if it is still there.
    pub(crate) fn get(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conn_at(id.slot, id.generation)
    }

    /// The connection a readiness key names, if it is still there.
    pub(crate) fn by_key(&self, key: u64) -> Option<Rc<Conn>> {
        self.slab
            .borrow()
            .get(readiness::slot_of(key))
            .filter(|c| readiness::key_of(c.id) == key)
            .cloned()
    }

    /// The connection at `slot`, if it is still the one of `generation`.
    pub(crate) fn conn_at(&self, slot: usize, generation: u64) -> Option<Rc<Conn>> {
        self.slab
            .borrow()
            .get(slot)
            .filter(|c| c.id.generation == generation)
            .cloned()
    }

    /// Every connection now in the slab (for work that may run listeners, which can change the
    /// slab while it goes).
    pub(crate) fn snapshot(&self) -> Vec<Rc<Conn>> {
        self.slab
            .borrow()
            .iter()
            .map(|(_, c)| Rc::clone(c))
            .collect()
    }

    /// Queues `frame` for every open subscriber of `topic` on this shard but `except`: walks
    /// the topic's members only, never the slab. Pushing runs no listener, so neither the
    /// index nor the slab changes while it goes.
    pub(crate) fn publish(&self, topic: &str, frame: &Bytes, except: Option<ConnId>) {
        let now = Instant::now();
        let index = self.topics.borrow();
        let slab = self.slab.borrow();
        let mut delivered = 0u64;
        for slot in index.members(topic) {
            if let Some(c) = slab.get(slot).filter(|c| Some(c.id) != except) {
                delivered += u64::from(c.offer_frame(frame.clone(), now));
            }
        }
        let nanos = u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.metrics().published(delivered, nanos);
    }

    /// One subscriber of `topic` on this shard left.
    fn leave_topic(&self, topic: &str) {
        if self.topic_table.remove(topic, self.id, 1) {
            self.interest_changed(topic);
        }
    }

    /// A topic gained its first subscriber on this node, or lost its last: in cluster mode
    /// the NATS link takes or lets go of the topic's subject.
    fn interest_changed(&self, topic: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.interest(topic);
        }
    }

    /// Runs `f` on every connection without copying the list; `f` must not run listeners.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Rc<Conn>)) {
        for (_, c) in self.slab.borrow().iter() {
            f(c);
        }
    }
}

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
    session: RefCell<Session>,
    /// Torn down: events have fired; only the socket is left to finish.
    gone: Cell<bool>,
    close_forced: Cell<bool>,
    /// Earliest entry this connection has in the shard's timer heap.
    pub(crate) scheduled: Cell<Option<Instant>>,
    waker: RefCell<Option<Waker>>,
    /// The socket, until the connection task finishes it, for the readiness set's reads and
    /// the flush pass's writes; -1 after.
    pub(crate) fd: Cell<i32>,
    /// Whether it is on the shard's list of connections with something to write.
    dirty: Cell<bool>,
    /// Cluster mode: the revision of this connection's claim on its UUID, 0 for none.
    claim: Cell<u64>,
}

impl Conn {
    pub(crate) fn new(
        conns: Rc<Connections>,
        id: ConnId,
        uuid: Arc<str>,
        config: Arc<Config>,
        request: RequestData,
        now: Instant,
    ) -> Conn {
        let mut session = Session::new(config, now);
        if let Some(agreement) = request.deflate {
            session.accept_deflate(agreement);
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
            waker: RefCell::new(None),
            fd: Cell::new(-1),
            dirty: Cell::new(false),
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
    /// task (docs/architecture.md, "Performance rules").
    fn mark_dirty(self: &Rc<Self>) {
        if !self.dirty.replace(true) {
            self.conns.mark_dirty(Rc::clone(self));
        }
    }

    /// The shard's flush pass: writes what the socket takes now. The connection task takes
    /// over when the socket is full (to wait for room), on an error, or once the connection is
    /// closing, since those need the socket itself.
    pub(crate) fn flush_now(&self, now: Instant) {
        self.dirty.set(false);
        let fd = self.fd.get();
        if fd < 0 || !self.is_open() {
            self.wake();
            return;
        }
        match self.write_queue(fd, now) {
            Ok(true) => {}
            Ok(false) | Err(_) => self.wake(),
        }
    }

    /// Writes as much of the queue as the socket takes, one vectored write per pass (sends per
    /// flush, not per message): `Ok(true)` once the queue is empty, `Ok(false)` when the socket
    /// is full. Needs only the fd, so the flush pass and the connection task share it.
    pub(crate) fn write_queue(&self, fd: i32, now: Instant) -> io::Result<bool> {
        loop {
            let result = {
                let session = self.session.borrow();
                // Checked first: the slice array below costs a kilobyte of stores.
                if !session.wants_write() {
                    return Ok(true);
                }
                let mut slices: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
                let n = session.poll_transmit(&mut slices);
                send_vectored(fd, &slices[..n])
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
        self.conns
            .readiness
            .watch(self.fd.get(), readiness::key_of(self.id))
    }

    /// The socket has bytes (or the peer closed): one `recv` of at most `max` bytes into the
    /// shard's buffer, then the session acts on them. More bytes left are reported again
    /// (level-triggered).
    pub(crate) fn read_ready(self: &Rc<Self>, max: usize) {
        let fd = self.fd.get();
        if fd < 0 || self.is_gone() {
            return;
        }
        let read = {
            let mut scratch = self.conns.scratch.borrow_mut();
            let len = max.clamp(1, scratch.len());
            match recv(fd, &mut scratch[..len]) {
                Ok(n) if n > 0 => {
                    // The session copies what it keeps: the buffer is free again after this.
                    self.received(Instant::now(), &scratch[..n]);
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
                Event::Dropped(framed) => {
                    self.conns.metrics().dropped(DropCause::QueueFull);
                    self.fire_error(Error::QueueFull, payload_of(&framed));
                }
                Event::CloseComplete => {
                    self.fire(EventName::Static(event::CLOSE), Bytes::new(), None)
                }
                Event::Closed(error) => self.teardown(error),
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
        if let Some(at) = next {
            self.conns.timers.schedule(&self.scheduled, self.id, at);
        }
    }

    // ---- sending --------------------------------------------------------------------------

    /// Queues an already framed data message. Fails once the connection is closing or gone,
    /// and counts the drop.
    pub(crate) fn send_frame(self: &Rc<Self>, frame: Bytes, now: Instant) -> Result<(), Error> {
        if self.offer_frame(frame, now) {
            Ok(())
        } else {
            self.conns.metrics().dropped(DropCause::Closed);
            Err(Error::InvalidConnection)
        }
    }

    /// Queues an already framed data message if the connection is open; false (and nothing
    /// counted) if not: a broadcast's way to skip connections that are no longer targets.
    pub(crate) fn offer_frame(self: &Rc<Self>, frame: Bytes, now: Instant) -> bool {
        let push = self.session.borrow_mut().send(now, frame);
        match push {
            Push::Queued => {}
            Push::Waiting { deadline } => {
                self.conns
                    .timers
                    .schedule(&self.scheduled, self.id, deadline)
            }
            Push::Closed => return false,
        }
        self.conns.metrics().queued();
        self.mark_dirty();
        true
    }

    /// Queues the handshake response.
    pub(crate) fn send_raw(self: &Rc<Self>, bytes: Bytes) {
        self.session.borrow_mut().send_raw(bytes);
        self.mark_dirty();
    }

    /// Starts a server-initiated close: the queue is flushed, then the close frame, then `close`
    /// and `disconnect` fire. With a deadline, they fire then even if the peer never reads;
    /// without one, the caller force-closes.
    pub(crate) fn begin_close(self: &Rc<Self>, close_frame: Bytes, deadline: Option<Instant>) {
        if !self.is_open() {
            return;
        }
        self.unregister();
        self.session.borrow_mut().close(close_frame, deadline);
        self.schedule();
        self.wake();
    }

    /// A close the server starts with the connection's own write timeout as its deadline.
    pub(crate) fn close(self: &Rc<Self>, code: u16, reason: &str) {
        let deadline = Instant::now() + self.session.borrow().config().write_timeout;
        self.begin_close(frame::encode_close(code, reason), Some(deadline));
    }

    /// Ends the connection after a failure on the server's side: the peer gets `close_code`.
    pub(crate) fn fail(self: &Rc<Self>, error: Error, close_code: u16) {
        self.session
            .borrow_mut()
            .fail(Instant::now(), error, close_code);
        self.drive();
    }

    /// Force-closes at a close deadline.
    pub(crate) fn force_close(self: &Rc<Self>) {
        if !self.is_gone() {
            self.close_forced.set(true);
            self.session.borrow_mut().force_close(Error::Timeout);
            self.drive();
        }
    }

    /// The timer heap found this connection due at `now`.
    pub(crate) fn on_timer(self: &Rc<Self>, now: Instant) {
        if self.scheduled.get().is_some_and(|s| s <= now) {
            self.scheduled.set(None);
        }
        if self.is_gone() {
            return;
        }
        self.session.borrow_mut().handle_timeout(now);
        self.drive();
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
        self.conns.metrics().received(data.len());
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
        let fd = self.fd.get();
        if fd >= 0 {
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

/// The payload of a server frame built by `frame::encode` (header skipped, bytes shared), or
/// of one that `deflate::compress_frame` compressed (RSV1 set: inflated again).
pub(crate) fn payload_of(framed: &Bytes) -> Bytes {
    let Some(&b1) = framed.get(1) else {
        return Bytes::new();
    };
    let header = frame::header_len(b1, false);
    let payload = framed.slice(header.min(framed.len())..);
    if framed.first().is_some_and(|b0| b0 & 0x40 != 0) {
        // The server's own compressed bytes: they inflate, or the payload is reported as is.
        if let Ok(plain) = deflate::inflate(&payload, usize::MAX) {
            return Bytes::from(plain);
        }
    }
    payload
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
}
