//! A shard: one glommio executor pinned to a CPU, with its acceptor, its slab of connections,
//! its timer heap and its inbox. Not shared with any other thread: other threads reach it only
//! through its inbox (`link::ShardMsg`).
//!
//! Files, each importing only those below it:
//!
//! | file | what it is |
//! |---|---|
//! | `mod.rs` | the shard thread's tasks: inbox loop, acceptor, timer driver, flush pass, resumes |
//! | `io.rs` | the connection task: handshake, writes that wait for room, the final linger; none while a plain connection is open and idle |
//! | `dispatch.rs` | where work for connections goes: this shard inline, other shards' inboxes, other nodes |
//! | `state.rs` | the shard's state and lifecycle; what each inbox message does |
//! | `shared.rs` | the state all shards share: routes, gate, listeners, registry, links |
//! | `conn.rs`, `connections.rs`, `handle.rs` | one layer, their types refer to each other: a connection's glue; the slab and what connections share; `Websocket` and `EventPayload` |
//! | `link.rs` | what other threads hold of a shard: bounded inbox, live count, counters |
//! | `readiness.rs` | the epoll set that reports which open connections have bytes |
//! | `timers.rs`, `notify.rs`, `socket.rs` | the timer heap, a wake-up signal, `sendmsg`/`recv` |
//! | `coalescing.rs` | when the flush pass writes: at once, or held briefly on a fan-out shard |

mod coalescing;
pub(crate) mod conn;
pub(crate) mod connections;
pub(crate) mod dispatch;
pub(crate) mod handle;
mod io;
pub(crate) mod link;
pub(crate) mod notify;
pub(crate) mod readiness;
pub(crate) mod shared;
mod socket;
pub(crate) mod state;
mod timers;
mod transport;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};

use self::coalescing::Coalescing;
use self::link::ShardMsg;
use self::readiness::Readiness;
use self::shared::Shared;
use self::state::ShardCore;
use crate::registry::ShardId;
use crate::{runtime, Error};

/// What a shard thread runs: the acceptor, the timers, the flush pass and the inbox, until
/// told to stop; then it drops every socket left and ends.
pub(crate) async fn run(
    id: ShardId,
    shared: Arc<Shared>,
    listener: Listener,
    readiness: Readiness,
    inbox: flume::Receiver<ShardMsg>,
) {
    let core = ShardCore::install(id, shared, readiness);
    let listener = Rc::new(listener);
    let reader = glommio::spawn_local(serve_readiness(Rc::clone(&core), Rc::clone(&listener)));
    let timers = glommio::spawn_local(serve_timers(Rc::clone(&core)));
    let flusher = glommio::spawn_local({
        let conns = Rc::clone(&core.conns);
        let coalescing = Coalescing::new(core.shared.options.write_coalescing);
        async move { conns.flush_dirty(coalescing).await }
    });
    let resumer = glommio::spawn_local(serve_resumes(Rc::clone(&core)));
    while !core.is_stopped() {
        let next = future::or(async { inbox.recv_async().await.ok() }, async {
            core.finished().await;
            None
        })
        .await;
        if let Some(msg) = next {
            // One clock read for the burst.
            let now = Instant::now();
            core.conns.begin_round();
            core.handle(msg, now);
            // Take a burst in one go: the connections it touched flush once, after it.
            while let Ok(msg) = inbox.try_recv() {
                core.handle(msg, now);
            }
            core.conns.round_done();
        } else if inbox.is_disconnected() && !core.is_stopping() {
            break;
        }
    }
    listener.stop(&core.conns.readiness);
    core.halt_sockets().await;
    if let Some(backend) = &core.conns.backend {
        backend.drain().await;
    }
    drop(timers);
    drop(flusher);
    drop(reader);
    drop(resumer);
    core.uninstall();
}

/// Bytes one round of reads takes from all ready connections together, shared out evenly.
/// A client flooding the shard (say 100,000 one-byte fragments) then gets only its share of
/// a round, the round stays short, and everyone else's replies go out after it: fairness
/// costs a few more `recv`s only while many connections have bytes at once.
const ROUND_BYTES: usize = 16 << 10;

/// The least one ready connection may read in a round: a whole small message in one `recv`.
const MIN_READ: usize = 4 << 10;

/// Reads every open connection that has bytes, one `recv` each, and accepts what the listener
/// holds, as the readiness set reports them; then lets the flush pass write the replies before
/// looking again, and sleeps on the set (one poll for the whole shard) when nothing is ready.
async fn serve_readiness(core: Rc<ShardCore>, listener: Rc<Listener>) {
    let mut keys = [0u64; readiness::BATCH];
    loop {
        let n = core.conns.readiness.ready(&mut keys);
        if n == 0 {
            if let Err(e) = core.conns.readiness.wait().await {
                // Out of descriptors for the duplicate: look again after a pause.
                tracing::warn!(shard = core.id().0, error = %e, "readiness wait failed");
                Timer::new(Duration::from_millis(5)).await;
            }
            continue;
        }
        let share = (ROUND_BYTES / n).clamp(MIN_READ, connections::SCRATCH);
        // One clock read for the round.
        let now = Instant::now();
        core.conns.begin_round();
        for &key in &keys[..n] {
            if key == readiness::LISTENER {
                listener.accept_ready(&core);
            } else if let Some(conn) = core.conns.by_key(key) {
                conn.read_ready(share, now);
            }
        }
        core.conns.round_done();
        // Behind the other ready tasks: the flush pass sends this round's replies in one go.
        future::yield_now().await;
    }
}

/// Gives parked connections (no task while open and idle) a task again when they need one:
/// a write that waits for room, a close, the teardown (`io::resume`).
async fn serve_resumes(core: Rc<ShardCore>) {
    let mut resumes = Vec::new();
    loop {
        core.conns.next_resumes(&mut resumes).await;
        for (conn, fd) in resumes.drain(..) {
            glommio::spawn_local(io::resume(Rc::clone(&core), conn, fd)).detach();
        }
    }
}

/// Serves the timer heap until the shard stops: each due connection runs its deadlines.
async fn serve_timers(core: Rc<ShardCore>) {
    let mut due = Vec::new();
    loop {
        core.conns.timers.next_due(&mut due).await;
        let now = Instant::now();
        for (slot, generation) in due.drain(..) {
            if let Some(conn) = core.conns.conn_at(slot, generation) {
                conn.on_timer(now);
            }
        }
        glommio::yield_if_needed().await;
    }
}

/// How long a shard may take to report that it is accepting.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory glommio registers per ring: sockets need little (docs/architecture.md, "glommio facts").
const IO_MEMORY: usize = 64 << 10;
/// Submission queue depth per ring.
const RING_DEPTH: usize = 256;

/// A running shard's thread.
pub(crate) type ShardHandle = glommio::ExecutorJoinHandle<()>;

/// Starts shard `i` on its own executor pinned to `cpu`: it binds `addr` (shard 0 claims it,
/// see `Listener::bind`) and reports the address it listens on, or why it could not start.
pub(crate) fn spawn(
    i: usize,
    cpu: usize,
    addr: SocketAddr,
    shared: Arc<Shared>,
    inbox: flume::Receiver<ShardMsg>,
) -> Result<(ShardHandle, SocketAddr), Error> {
    let start_error = move |reason: String| Error::Start { shard: i, reason };
    let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("corecast-{i}"))
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH);
    let started = runtime::spawn_ready(builder, START_TIMEOUT, move |ready| async move {
        let bound = Listener::bind(addr, i == 0).and_then(|l| Ok((l.local_addr()?, l)));
        let (local, listener) = match bound {
            Ok(bound) => bound,
            Err(e) => return ready.fail(listen_error(i, addr, e)),
        };
        let readiness = Readiness::new().and_then(|r| {
            r.watch(listener.socket.as_fd(), readiness::LISTENER)?;
            Ok(r)
        });
        match readiness {
            Ok(readiness) => {
                ready.ok(local);
                run(ShardId(i), shared, listener, readiness, inbox).await;
            }
            Err(e) => ready.fail(start_error(format!("cannot create an epoll set: {e}"))),
        }
    });
    started.map_err(|e| match e {
        // The executor itself did not start: most often io_uring or the memlock limit.
        Error::Executor(reason) => start_error(with_hint(reason)),
        other => other,
    })
}

/// Shard `shard` cannot listen on `addr`: the start error, naming the address.
pub(crate) fn listen_error(shard: usize, addr: SocketAddr, e: std::io::Error) -> Error {
    Error::Start {
        shard,
        reason: format!("cannot listen on {addr}: {e}"),
    }
}

/// A start error's reason with what corecast needs of the machine.
fn with_hint(reason: String) -> String {
    format!(
        "{reason} (corecast needs io_uring: Linux 5.8 or later, not blocked by seccomp \
         (Docker: --security-opt seccomp=unconfined) nor by sysctl kernel.io_uring_disabled; \
         and a memlock limit of about 512 KiB per shard: `ulimit -l` / LimitMEMLOCK=, or \
         CAP_IPC_LOCK)"
    )
}

/// The CPUs this process may run on (taskset, cgroup cpusets), in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills at most its size.
    let cpus = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            Vec::new()
        } else {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    };
    if cpus.is_empty() {
        vec![0]
    } else {
        cpus
    }
}

/// Listen backlog: bursts of thousands of connects are normal for a fan-out server.
const BACKLOG: i32 = 4096;

/// Connections one round accepts at most: the listener stays ready (level-triggered) for the
/// rest, which the next round takes, after the connections ready meanwhile had their reads.
const ACCEPT_BATCH: usize = 64;
/// The first pause after an accept failed for want of resources (descriptors, memory); each
/// failure in a row doubles it, up to `MAX_ACCEPT_PAUSE`.
const MIN_ACCEPT_PAUSE: Duration = Duration::from_millis(5);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// A non-blocking listening socket on the shared port, in the shard's readiness set: the shard
/// accepts with plain `accept4` calls when the set reports it, as many as are waiting, rather
/// than one io_uring accept at a time. Why: glommio's accept made five more system calls per
/// connection (it tries a non-blocking accept first, switching the listener's flags there and
/// back, and asks for the peer's address again), and its stream armed a poll on each socket
/// that an upgrade arriving whole never needs (`transport::Transport::Fresh`).
///
/// It accepts for the shard's whole life, draining and stopping included: upgrades then get
/// 503 (the upgrade decision sees the drain), so a load balancer or a client is told why
/// rather than refused at the TCP level; the shard's run loop ends listening once every
/// connection is closed (`stop`). Errors such as running out of file descriptors are logged
/// and the listener leaves the set for a short, growing pause: they never end the shard.
pub(crate) struct Listener {
    socket: std::net::TcpListener,
    /// Set once it stopped listening: a failed accept is then the end, not a pause.
    stopped: Cell<bool>,
    /// The next pause after a failed accept.
    pause: Cell<Duration>,
}

impl Listener {
    /// Binds with SO_REUSEPORT so every shard accepts on the same port and the kernel spreads
    /// connections between them. The first shard (`first`) claims the address: it fails, as
    /// any server does, where something already listens there (`ensure_free`); the others
    /// join it on the port it bound.
    ///
    /// A connection is handed over once its first bytes are in, or after about a second
    /// without any (`defer_accept`).
    pub(crate) fn bind(addr: std::net::SocketAddr, first: bool) -> std::io::Result<Listener> {
        if first {
            // Right before the bind, so that the window another start can slip into is this
            // function's few system calls.
            Self::ensure_free(addr)?;
        }
        let socket = new_socket(addr)?;
        socket.set_reuse_port(true)?;
        // Every accepted socket inherits it (Linux copies the listener's TCP options into the
        // sockets it accepts): one `setsockopt` per listener rather than per connection.
        socket.set_nodelay(true)?;
        // Accepting stops at EAGAIN rather than blocking the shard; the accepted sockets stay
        // blocking, as every call the shard makes on them says MSG_DONTWAIT or goes through
        // glommio.
        socket.set_nonblocking(true)?;
        defer_accept(&socket)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(Listener {
            socket: socket.into(),
            stopped: Cell::new(false),
            pause: Cell::new(MIN_ACCEPT_PAUSE),
        })
    }

    /// The bound address (with the real port after binding port 0).
    pub(crate) fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }

    /// Accepts the connections waiting, up to `ACCEPT_BATCH`, each into a connection task.
    fn accept_ready(self: &Rc<Self>, core: &Rc<ShardCore>) {
        for _ in 0..ACCEPT_BATCH {
            match self.socket.accept() {
                Ok((socket, remote)) => {
                    self.pause.set(MIN_ACCEPT_PAUSE);
                    let fd = std::os::fd::OwnedFd::from(socket);
                    glommio::spawn_local(io::serve(Rc::clone(core), fd, remote)).detach();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // The client gave up before it was accepted: the next one.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {}
                Err(_) if self.stopped.get() => return,
                Err(e) => {
                    tracing::warn!(shard = core.id().0, error = %e, "accept failed; retrying");
                    return self.pause_accepting(core);
                }
            }
        }
    }

    /// Leaves the readiness set (a level-triggered listener that cannot be accepted from would
    /// report itself every round) and comes back after the pause, which doubles each time.
    fn pause_accepting(self: &Rc<Self>, core: &Rc<ShardCore>) {
        core.conns.readiness.unwatch(self.socket.as_fd());
        let (listener, core) = (Rc::clone(self), Rc::clone(core));
        glommio::spawn_local(async move {
            loop {
                let pause = listener.pause.get();
                listener.pause.set((pause * 2).min(MAX_ACCEPT_PAUSE));
                Timer::new(pause).await;
                if listener.stopped.get() {
                    return;
                }
                let watched = core
                    .conns
                    .readiness
                    .watch(listener.socket.as_fd(), readiness::LISTENER);
                match watched {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(shard = core.id().0, error = %e, "cannot watch the listener; retrying"),
                }
            }
        })
        .detach();
    }

    /// Stops listening now: out of the readiness set, and shut down, which ends listening on
    /// Linux (connections still in its backlog are reset).
    fn stop(&self, readiness: &Readiness) {
        self.stopped.set(true);
        readiness.unwatch(self.socket.as_fd());
        let _ = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Both);
    }

    /// Fails with "address in use" where a socket already listens on `addr`: another process,
    /// another `Server` in this one, any server. SO_REUSEPORT alone would let the shards join
    /// such a listener's group (same user) and the kernel would split connections between the
    /// two. So a probe binds the address without SO_REUSEPORT, and is dropped at once. It sets
    /// SO_REUSEADDR like the shards: connections an earlier run left in TIME_WAIT do not count.
    /// Port 0 is always free: the kernel picks a port no listener holds.
    ///
    /// Two starts within the same few microseconds can both pass the probe; telling them apart
    /// would need the group's members from the kernel (sock_diag), not worth it for that race.
    pub(crate) fn ensure_free(addr: std::net::SocketAddr) -> std::io::Result<()> {
        if addr.port() == 0 {
            return Ok(());
        }
        let probe = new_socket(addr)?;
        match probe.bind(&addr.into()) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
                e.kind(),
                "address in use: another process, or another server in this one, listens there",
            )),
            other => other,
        }
    }
}

/// Has the kernel hand over a connection only once its first bytes are in, or, for one that
/// sends nothing, after its first SYN-ACK retransmission (a second): its handshake timeout
/// starts then. Why: a client sends its upgrade request right after connecting, and a
/// connection accepted before the request is in has its first read come back empty and must
/// wait for the rest (on loopback, nearly every one under load: 97% in the `upgrades` plan).
/// Accepted after the request, it is read, answered and watched with one call each. A second,
/// not the handshake timeout: the kernel counts the wait in SYN-ACK retransmissions (1, 3,
/// 7 s...), and a longer one would add up to 7 s before a silent connection's timeout starts.
fn defer_accept(socket: &socket2::Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let seconds: libc::c_int = 1;
    // SAFETY: `socket` is open; the kernel copies the option's value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP socket for `addr` with SO_REUSEADDR, as every listener here has.
fn new_socket(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::new_socket;

    /// `Listener::bind` sets TCP_NODELAY once, on the listener, because the kernel copies it
    /// into every socket it accepts; the connections' sockets are not set one by one.
    #[test]
    fn an_accepted_socket_inherits_the_listeners_nodelay() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let socket = new_socket(addr).unwrap();
        socket.set_nodelay(true).unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(8).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
