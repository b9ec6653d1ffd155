//! A shard: one glommio executor pinned to a CPU, with its acceptor, its slab of connections,
//! its timer heap and its inbox. Not shared with any other thread: other threads reach it only
//! through the inbox (`ShardMsg`).

mod conn;
mod io;
mod notify;
mod socket;
mod timers;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::net::TcpListener;
use glommio::timer::Timer;
use slab::Slab;

pub(crate) use conn::Conn;
pub(crate) use notify::LocalNotify;
pub(crate) use timers::Timers;

use crate::event::{EventName, ListenerMap, ServerListener};
use crate::registry::{ConnId, ShardId};
use crate::server::Shared;

/// Work sent to a shard by other threads (or run inline by the shard's own thread).
pub(crate) enum ShardMsg {
    /// A framed message for one connection.
    Emit { to: ConnId, frame: Bytes },
    /// A framed message for every connection of the shard, maybe but one.
    Broadcast {
        frame: Bytes,
        except: Option<ConnId>,
    },
    /// Run the listeners of `name` once per live connection.
    Fire { name: Arc<str>, data: Bytes },
    /// Close one connection.
    Close {
        to: ConnId,
        code: u16,
        reason: String,
    },
    /// Close every connection; report `true` on `done` if some had to be forced.
    CloseAll {
        frame: Bytes,
        deadline: Instant,
        done: flume::Sender<bool>,
    },
    /// Stop accepting, close everything (1001) by the deadline, then end the executor.
    Stop { deadline: Instant },
}

thread_local! {
    /// The shard this thread runs, if it is a shard thread.
    static CURRENT: RefCell<Option<Rc<ShardCore>>> = const { RefCell::new(None) };
}

/// The shard of `shared` that this thread runs, if any.
pub(crate) fn current(shared: &Arc<Shared>) -> Option<Rc<ShardCore>> {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|core| Arc::ptr_eq(&core.shared, shared))
            .cloned()
    })
}

/// Whether this thread runs a shard of any server: blocking here would stall it.
pub(crate) fn on_shard_thread() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

pub(crate) struct ShardCore {
    pub(crate) id: ShardId,
    pub(crate) shared: Arc<Shared>,
    conns: RefCell<Slab<Rc<Conn>>>,
    next_generation: Cell<u64>,
    pub(crate) timers: Timers,
    /// One read buffer for every connection of the shard: a connection holds bytes only for
    /// an incomplete frame, never a buffer of its own while idle.
    pub(crate) scratch: RefCell<Box<[u8]>>,
    listeners: RefCell<(u64, Arc<ListenerMap>)>,
    /// Signalled after every teardown.
    pub(crate) teardowns: LocalNotify,
    /// Connections with something queued since the last flush pass.
    dirty: RefCell<Vec<Rc<Conn>>>,
    flush_wanted: LocalNotify,
    stopping: Cell<bool>,
    stop: LocalNotify,
    stopped: Cell<bool>,
    finished: LocalNotify,
    /// Connection tasks still holding a socket, and a signal each time one lets go.
    sockets: Cell<usize>,
    socket_closed: LocalNotify,
    /// Set when the shard ends, after its closes: every connection task drops its socket.
    halting: Cell<bool>,
    halt: LocalNotify,
}

/// Longest a stopping shard waits for its connection tasks to drop their sockets.
const HALT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection task's socket, counted while it lives (see `ShardCore::hold_socket`).
pub(crate) struct SocketHold<'a>(&'a ShardCore);

impl Drop for SocketHold<'_> {
    fn drop(&mut self) {
        self.0.sockets.set(self.0.sockets.get() - 1);
        self.0.socket_closed.notify();
    }
}

/// Size of the shared read buffer.
const SCRATCH: usize = 64 << 10;

impl ShardCore {
    fn new(id: ShardId, shared: Arc<Shared>) -> Rc<ShardCore> {
        let listeners = shared.listeners.snapshot();
        Rc::new(ShardCore {
            id,
            shared,
            conns: RefCell::new(Slab::new()),
            next_generation: Cell::new(0),
            timers: Timers::default(),
            scratch: RefCell::new(vec![0; SCRATCH].into_boxed_slice()),
            listeners: RefCell::new(listeners),
            teardowns: LocalNotify::default(),
            dirty: RefCell::new(Vec::new()),
            flush_wanted: LocalNotify::default(),
            stopping: Cell::new(false),
            stop: LocalNotify::default(),
            stopped: Cell::new(false),
            finished: LocalNotify::default(),
            sockets: Cell::new(0),
            socket_closed: LocalNotify::default(),
            halting: Cell::new(false),
            halt: LocalNotify::default(),
        })
    }

    /// This shard's traffic counters.
    pub(crate) fn metrics(&self) -> &crate::metrics::ShardMetrics {
        &self.shared.shards[self.id.0].metrics
    }

    /// Server-wide listeners of `name`, from this shard's copy of the registry snapshot.
    pub(crate) fn server_listeners(&self, name: &str) -> Option<Arc<[ServerListener]>> {
        let version = self.shared.listeners.version();
        if self.listeners.borrow().0 != version {
            *self.listeners.borrow_mut() = self.shared.listeners.snapshot();
        }
        self.listeners.borrow().1.get(name).cloned()
    }

    /// Puts a connection on the flush list (see `Conn::mark_dirty`).
    pub(crate) fn mark_dirty(&self, conn: Rc<Conn>) {
        let mut dirty = self.dirty.borrow_mut();
        dirty.push(conn);
        if dirty.len() == 1 {
            drop(dirty);
            self.flush_wanted.notify();
        }
    }

    /// The id the next inserted connection will get (nothing may be inserted in between).
    pub(crate) fn next_id(&self) -> ConnId {
        ConnId {
            shard: self.id,
            slot: self.conns.borrow().vacant_key(),
            generation: self.next_generation.get(),
        }
    }

    /// Adds a connection made with `next_id()` to the slab.
    pub(crate) fn insert(&self, conn: Rc<Conn>) {
        self.next_generation.set(conn.id.generation + 1);
        let expected = conn.id.slot;
        let slot = self.conns.borrow_mut().insert(conn);
        debug_assert_eq!(slot, expected);
        self.shared.shards[self.id.0]
            .live
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, id: ConnId) {
        let mut conns = self.conns.borrow_mut();
        if conns.get(id.slot).is_some_and(|c| c.id == id) {
            conns.remove(id.slot);
            self.shared.shards[self.id.0]
                .live
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The live or closing connection at `slot`, if it is still the one of `generation`.
    pub(crate) fn conn_at(&self, slot: usize, generation: u64) -> Option<Rc<Conn>> {
        self.conns
            .borrow()
            .get(slot)
            .filter(|c| c.id.generation == generation)
            .cloned()
    }

    fn conn(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conn_at(id.slot, id.generation)
    }

    /// Every connection now in the slab (for work that may run listeners, which can change the
    /// slab while we go).
    fn snapshot(&self) -> Vec<Rc<Conn>> {
        self.conns
            .borrow()
            .iter()
            .map(|(_, c)| Rc::clone(c))
            .collect()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Counts a connection task's socket until the guard drops.
    pub(crate) fn hold_socket(&self) -> SocketHold<'_> {
        self.sockets.set(self.sockets.get() + 1);
        SocketHold(self)
    }

    /// Resolves once the shard ends (at once if it has).
    pub(crate) async fn halted(&self) {
        if !self.halting.get() {
            self.halt.wait().await;
        }
    }

    /// Tells every connection task to drop its socket and waits until they have, for at most
    /// `HALT_TIMEOUT`: a shard leaves no descriptor open behind it.
    async fn halt_sockets(&self) {
        self.halting.set(true);
        self.halt.notify();
        let give_up = Instant::now() + HALT_TIMEOUT;
        while self.sockets.get() > 0 {
            let now = Instant::now();
            if now >= give_up {
                tracing::warn!(
                    shard = self.id.0,
                    left = self.sockets.get(),
                    "sockets still open at exit"
                );
                return;
            }
            future::or(self.socket_closed.wait(), async {
                Timer::new(give_up - now).await;
            })
            .await;
        }
    }

    /// Does what a message asks. Runs on the shard thread, from the inbox or inline.
    pub(crate) fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Emit { to, frame } => {
                if let Some(c) = self.conn(to) {
                    // The target may have closed since the sender looked it up; that is not
                    // an error the sender can still be told about.
                    let _ = c.send_frame(frame, Instant::now());
                }
            }
            ShardMsg::Broadcast { frame, except } => {
                let now = Instant::now();
                // Pushing never runs listeners, so the slab can stay borrowed.
                // A connection already closing is no longer a target (nor an error).
                for (_, c) in self.conns.borrow().iter() {
                    if Some(c.id) != except && c.is_open() {
                        let _ = c.send_frame(frame.clone(), now);
                    }
                }
                let nanos = now.elapsed().as_nanos();
                self.metrics()
                    .fanned_out(u64::try_from(nanos).unwrap_or(u64::MAX));
            }
            ShardMsg::Fire { name, data } => {
                for c in self.snapshot() {
                    if c.is_open() {
                        c.fire(EventName::Shared(Arc::clone(&name)), data.clone(), None);
                    }
                }
            }
            ShardMsg::Close { to, code, reason } => {
                if let Some(c) = self.conn(to) {
                    c.close(code, &reason);
                }
            }
            ShardMsg::CloseAll {
                frame,
                deadline,
                done,
            } => {
                let core = Rc::clone(self);
                glommio::spawn_local(async move {
                    let forced = core.close_all(frame, deadline).await;
                    let _ = done.send(forced);
                })
                .detach();
            }
            ShardMsg::Stop { deadline } => {
                if self.stopping.replace(true) {
                    return;
                }
                self.stop.notify();
                let core = Rc::clone(self);
                glommio::spawn_local(async move {
                    let frame = crate::ws::frame::encode_close(1001, "server shutting down");
                    core.close_all(frame, deadline).await;
                    core.stopped.set(true);
                    core.finished.notify();
                })
                .detach();
            }
        }
    }

    /// Closes every connection of the shard; past `deadline` force-closes the rest. Returns
    /// whether any had to be forced.
    async fn close_all(self: &Rc<Self>, frame: Bytes, deadline: Instant) -> bool {
        let targets = self.snapshot();
        for c in &targets {
            // No deadline of its own: this loop force-closes at the shard's deadline.
            c.begin_close(frame.clone(), None);
        }
        loop {
            if targets.iter().all(|c| c.is_gone()) {
                return targets.iter().any(|c| c.close_forced());
            }
            let now = Instant::now();
            if now >= deadline {
                for c in &targets {
                    c.force_close();
                }
                continue;
            }
            future::or(self.teardowns.wait(), async {
                Timer::new(deadline - now).await;
            })
            .await;
        }
    }
}

/// What a shard thread runs: the acceptor, the timers and the inbox, until told to stop.
pub(crate) async fn run(
    id: ShardId,
    shared: Arc<Shared>,
    listener: Listener,
    inbox: flume::Receiver<ShardMsg>,
) {
    let core = ShardCore::new(id, shared);
    CURRENT.with(|c| *c.borrow_mut() = Some(Rc::clone(&core)));
    let timers = glommio::spawn_local(timers::run(Rc::clone(&core)));
    let flusher = glommio::spawn_local(flush_dirty(Rc::clone(&core)));
    let listener = Rc::new(listener);
    let acceptor = glommio::spawn_local(accept(Rc::clone(&core), Rc::clone(&listener)));
    while !core.stopped.get() {
        let next = future::or(async { inbox.recv_async().await.ok() }, async {
            core.finished.wait().await;
            None
        })
        .await;
        if let Some(msg) = next {
            core.handle(msg);
            // Take a burst in one go: the connections it touched flush once, after it.
            while let Ok(msg) = inbox.try_recv() {
                core.handle(msg);
            }
        } else if inbox.is_disconnected() && !core.stopping.get() {
            break;
        }
    }
    stop_listening(&listener);
    drop(acceptor);
    core.halt_sockets().await;
    drop(timers);
    drop(flusher);
    CURRENT.with(|c| c.borrow_mut().take());
}

/// The flush pass: runs after the tasks that queued messages have yielded, so each dirty
/// connection's whole queue leaves in one write.
async fn flush_dirty(core: Rc<ShardCore>) {
    let mut batch = Vec::new();
    loop {
        if core.dirty.borrow().is_empty() {
            core.flush_wanted.wait().await;
        }
        std::mem::swap(&mut batch, &mut *core.dirty.borrow_mut());
        for conn in batch.drain(..) {
            conn.flush_now();
        }
        glommio::yield_if_needed().await;
    }
}

/// Accepts connections until the shard stops. Errors such as running out of file descriptors
/// are logged and retried after a short, growing pause: they never end the shard.
async fn accept(core: Rc<ShardCore>, listener: Rc<Listener>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = future::or(async { Some(listener.inner.accept().await) }, async {
            core.stop.wait().await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            stop_listening(&listener);
            return;
        };
        match accepted {
            Ok(stream) => {
                backoff = Duration::from_millis(5);
                glommio::spawn_local(io::serve(Rc::clone(&core), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = core.id.0, error = %e, "accept failed; retrying");
                future::or(
                    async {
                        Timer::new(backoff).await;
                    },
                    core.stop.wait(),
                )
                .await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
        if core.is_stopping() {
            stop_listening(&listener);
            return;
        }
    }
}

/// Stops the listening socket now. Closing the fd is not enough: an accept still in flight in
/// io_uring holds the socket open (and listening) until the ring is torn down, which the
/// kernel finishes later, after the shard thread has gone.
fn stop_listening(listener: &Listener) {
    // SAFETY: shutdown on the fd the listener owns, still open; on Linux it ends listening and
    // fails the pending accept.
    unsafe {
        libc::shutdown(listener.fd, libc::SHUT_RDWR);
    }
}

/// A listening socket on the shared port, and its fd (glommio's listener does not expose it).
pub(crate) struct Listener {
    inner: TcpListener,
    fd: std::os::fd::RawFd,
}

/// Listen backlog: bursts of thousands of connects are normal for a fan-out server.
const BACKLOG: i32 = 4096;

impl Listener {
    /// Binds with SO_REUSEPORT so every shard accepts on the same port and the kernel spreads
    /// connections between them.
    pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<Listener> {
        use socket2::{Domain, Protocol, Socket, Type};
        use std::os::fd::{FromRawFd, IntoRawFd};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let fd = socket.into_raw_fd();
        // SAFETY: `fd` is a bound, listening TCP socket whose ownership moves to the listener.
        let inner = unsafe { TcpListener::from_raw_fd(fd) };
        Ok(Listener { inner, fd })
    }

    /// The bound address (with the real port after binding port 0).
    pub(crate) fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr().map_err(std::io::Error::from)
    }
}
