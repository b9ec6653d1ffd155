//! The connection task: the TLS handshake (wss), reads the upgrade, answers it, then writes
//! what the flush pass could not (waiting for room) until teardown, and finishes the socket.
//! An open plain connection with nothing waiting parks instead of keeping a task (`run`),
//! and `resume` starts one again when it needs the socket.
//! Reads of an open plain connection come from the shard's readiness set; a TLS connection's
//! reads and writes all go through its task, which decrypts and encrypts. Not protocol logic:
//! framing, the close handshake, deadlines and queue policy live in `ws::session`, handshake
//! checks in `http`, events in `conn`.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::conn::{since_epoch, Conn};
use super::connections::Connections;
use super::handle::Websocket;
use super::shared::Route;
use super::state::ShardCore;
use super::transport::{OpenSocket, Transport};
use crate::backend::link::BackendLink;
use crate::backend::wire::{self, ConnectVerdict, EventBody};
use crate::backend::Hook;
use crate::event::{self, EventName};
use crate::handshake::{self, Accepted, Admission, Checked, Refusal, RequestData};
use crate::metrics::HandshakeFailure;
use crate::registry;
use crate::runtime::{self, HeadError};
use crate::Error;

/// Serves one accepted socket from handshake to close. The shard knows the socket while this
/// runs: when it halts it shuts the socket down, which ends whatever this task waits on.
pub(crate) fn serve(
    core: Rc<ShardCore>,
    socket: OwnedFd,
    remote: SocketAddr,
) -> impl Future<Output = ()> {
    let fd = socket.as_raw_fd();
    // Boxed here, outside the task's own state, so it is freed once the connection is open:
    // an idle connection's task carries only what `run` needs, not the handshake's futures
    // nor a moved-from copy of the stream (docs/architecture.md, "Memory per idle connection").
    let opening = Box::pin(open(Rc::clone(&core), socket, remote));
    async move {
        let hold = core.hold_socket(fd);
        let Some((conn, stream)) = opening.await else {
            return;
        };
        // No await since `open` let go of the first descriptor: nothing looked at the hold.
        hold.moved_to(stream.raw_fd());
        run(&conn, stream).await;
    }
}

/// A parked connection's task, started again with its socket (`Conn::wake`): it writes what
/// waits for room, closes, finishes, or parks the connection again.
pub(crate) async fn resume(core: Rc<ShardCore>, conn: Rc<Conn>, fd: OwnedFd) {
    let _hold = core.hold_socket(fd.as_raw_fd());
    run(&conn, OpenSocket::Bare(fd)).await;
}

/// The TLS handshake (for `wss`) and the upgrade, within the handshake timeout. A failure
/// comes with the socket to answer on, if there is still one.
async fn accept(
    core: &Rc<ShardCore>,
    socket: OwnedFd,
    remote: SocketAddr,
) -> Result<(Transport, Upgrade), (Option<Transport>, Failure)> {
    let mut transport = match &core.shared.tls {
        None => Transport::Fresh(socket),
        Some(tls) => {
            // SAFETY: an open TCP socket, handed over whole.
            let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
            // Boxed: a plain connection's handshake future does not carry the TLS one's room.
            Box::pin(tls_handshake(&tls.acceptor, stream)).await?
        }
    };
    match handshake(core, &mut transport, remote).await {
        Ok(upgrade) => Ok((transport, upgrade)),
        Err(failure) => Err((Some(transport), failure)),
    }
}

/// The TLS handshake of a `wss` connection; plain HTTP sent to it gets a 400 saying so.
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<Transport, (Option<Transport>, Failure)> {
    // A TLS record starts with its content type, 0x16 for a handshake (RFC 8446 §5.1); a
    // letter is a plain HTTP request sent to the TLS port.
    let mut first = [0u8; 1];
    if matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_alphabetic()) {
        let refusal = Refusal::plain_http_on_tls();
        return Err((Some(Transport::Plain(stream)), refusal.into()));
    }
    match acceptor.accept(stream).await {
        Ok(tls) => Ok(Transport::Tls(Box::new(tls))),
        Err(_) => Err((
            None,
            Failure::Silent("TLS handshake failed", HandshakeFailure::Tls),
        )),
    }
}

/// The handshake, the registration and the route callback: an open connection and its
/// socket, or `None` when the upgrade was refused or the client went.
async fn open(
    core: Rc<ShardCore>,
    socket: OwnedFd,
    remote: SocketAddr,
) -> Option<(Rc<Conn>, OpenSocket)> {
    // TCP_NODELAY comes from the listener (`Listener::bind`).
    if let Some(bytes) = core.shared.options.socket_send_buffer {
        // Best effort: a socket the kernel refuses it for keeps its own.
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(bytes);
    }
    let timeout = core.shared.options.handshake_timeout;
    let accepted = future::or(accept(&core, socket, remote), async {
        Timer::new(timeout).await;
        Err((
            None,
            Failure::Silent("handshake timed out", HandshakeFailure::Timeout),
        ))
    })
    .await;
    let (stream, (accepted, leftover, claim)) = match accepted {
        Ok(accepted) => accepted,
        Err((stream, failure)) => return Box::pin(refuse(&core, stream, remote, failure)).await,
    };
    let Accepted {
        route,
        request,
        response,
        name,
    } = accepted;
    let response = Bytes::from(response);
    let now = Instant::now();
    let Some(conn) = register(&core.conns, &route, request, response, name, claim, now) else {
        // Another connection took the name between the check and now.
        let refusal = Refusal::name_taken();
        return Box::pin(refuse(&core, Some(stream), remote, refusal.into())).await;
    };
    core.conns.metrics().upgraded();
    let mut stream = OpenSocket::bare(stream);
    if !stream.is_tls() {
        // The shard's flush pass and readiness set take over this socket's writes and reads.
        // SAFETY: the socket stays open, held by a connection task or parked in the
        // connection, until `finish`, which takes the loan back before it closes it.
        unsafe { conn.fd.lend(stream.raw_fd()) };
    }
    tracing::debug!(uuid = &*conn.uuid(), %remote, "connection open");
    // Get the 101 out before the callback runs: it may take a while.
    match &mut stream {
        OpenSocket::Bare(fd) => {
            // What does not fit now, `run` writes.
            let _ = conn.write_queue(fd.as_fd(), now);
        }
        OpenSocket::Stream(t) => {
            let _ = poll_fn(|cx| Poll::Ready(flush(&conn, t, cx, now))).await;
        }
    }

    let kws = Websocket::from_conn(Rc::clone(&conn));
    let callback = Arc::clone(&route.callback);
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| callback(&kws))) {
        let reason = panic_message(&*panic);
        tracing::warn!(uuid = &*conn.uuid(), reason, "route callback panicked");
        // The session ends with `Failed`, which the listeners see as `Error::CallbackPanic`.
        conn.fail(1011);
    } else {
        if conn.conns.backend.is_some() {
            conn.forward(EventBody::Connect {
                remote: &remote.to_string(),
            });
        }
        conn.fire(EventName::Static(event::CONNECT), Bytes::new(), None);
    }
    drop(kws);
    if !leftover.is_empty() {
        // After the callback, which may have taken a while.
        conn.received(Instant::now(), &leftover);
        conn.drive();
    }
    drop(leftover);
    if !conn.is_gone() && !stream.is_tls() {
        if let Err(e) = conn.watch() {
            conn.handle_io_error(e);
        }
    }
    Some((conn, stream))
}

/// Why no connection opened.
enum Failure {
    /// Refused with an HTTP answer.
    Refused(Refusal),
    /// Nothing to answer: the client went, or there is no HTTP to answer (counted by cause).
    Silent(&'static str, HandshakeFailure),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refused(refusal)
    }
}

/// Counts a failed upgrade, answers it (if it has an answer and a socket to answer on) and
/// closes the socket.
async fn refuse(
    core: &ShardCore,
    stream: Option<Transport>,
    remote: SocketAddr,
    failure: Failure,
) -> Option<(Rc<Conn>, OpenSocket)> {
    let metrics = core.conns.metrics();
    let response = match failure {
        Failure::Refused(refusal) => {
            tracing::debug!(%remote, reason = refusal.reason, "upgrade refused");
            metrics.rejected(refusal.status);
            if let Some(cause) = refusal.auth {
                metrics.auth_refused(cause);
            }
            Some(refusal.response)
        }
        Failure::Silent(reason, cause) => {
            tracing::debug!(%remote, reason, "upgrade refused");
            metrics.handshake_failed(cause);
            None
        }
    };
    // Without a socket there is nothing to answer on: it was dropped, which closed it.
    let mut stream = stream?;
    if let Some(response) = response {
        // Best effort, bounded: the client may not be reading.
        let timeout = core.shared.options.handshake_timeout;
        let _ = future::or(
            async {
                stream.write_all(&response).await.ok()?;
                stream.shutdown_write().await;
                Some(())
            },
            async {
                Timer::new(timeout).await;
                None
            },
        )
        .await;
    }
    stream.shutdown(Shutdown::Both).await;
    None
}

/// Registers the connection (UUID map and slab) before the route callback runs, so the
/// callback can already be reached (docs/behaviour.md, "Lifecycle" 2): under the name the
/// gate gave it, or a random v4 UUID. `None` if another connection took the name meanwhile
/// (its cluster-wide claim is released).
fn register(
    conns: &Rc<Connections>,
    route: &Route,
    request: RequestData,
    response: Bytes,
    name: Option<Arc<str>>,
    claim: Option<u64>,
    now: Instant,
) -> Option<Rc<Conn>> {
    let id = conns.next_id();
    let uuid = match name {
        Some(uuid) => {
            if !conns.registry.insert(Arc::clone(&uuid), id) {
                if let (Some(cluster), Some(revision)) = (&conns.cluster, claim) {
                    cluster.release(&uuid, revision);
                }
                return None;
            }
            uuid
        }
        None => loop {
            let uuid = registry::random_uuid();
            // A v4 collision is practically impossible, but a taken UUID is never handed out.
            if conns.registry.insert(Arc::clone(&uuid), id) {
                break uuid;
            }
        },
    };
    let conn = Rc::new(Conn::new(
        Rc::clone(conns),
        id,
        uuid,
        Arc::clone(&route.config),
        request,
        now,
        response,
    ));
    if let Some(revision) = claim {
        conn.set_claim(revision);
    }
    conns.insert(Rc::clone(&conn));
    conn.drive();
    Some(conn)
}

/// An upgrade decided and, in cluster mode, its name claimed: the decision, the bytes the
/// client sent after its head, and the claim's revision.
type Upgrade = (Accepted<Arc<Route>>, Vec<u8>, Option<u64>);

/// Reads the request head, lets `handshake::decide` decide, and claims the name it gave.
async fn handshake(
    core: &Rc<ShardCore>,
    stream: &mut Transport,
    remote: SocketAddr,
) -> Result<Upgrade, Failure> {
    let limit = core.shared.options.max_handshake_size;
    // Read through the shard's buffer: a client trickling its head in holds only its bytes.
    let (head, leftover) = match runtime::read_head_with(stream, limit, &core.conns.scratch).await {
        Ok(read) => read,
        Err(HeadError::Gone) => {
            return Err(Failure::Silent(
                "closed during handshake",
                HandshakeFailure::Closed,
            ))
        }
        Err(HeadError::Http(e)) => return Err(Refusal::bad_head(&e).into()),
    };
    let shared = &core.shared;
    let now = Instant::now();
    let refusals = core.conns.token_refusals.as_ref();
    let admission = Admission {
        refusals_exhausted: refusals.is_some_and(|r| r.borrow().exhausted(remote.ip(), now)),
        draining: shared.draining.load(Ordering::Acquire) || core.is_stopping(),
        connections: shared.links.connections(),
        max_connections: shared.options.max_connections,
        unix_now: since_epoch().as_secs(),
    };
    let checked = handshake::check(
        head,
        remote,
        &shared.routes,
        admission,
        shared.auth.as_deref(),
    );
    if let (Some(refusals), Err(Refusal { auth: Some(_), .. })) = (refusals, &checked) {
        refusals.borrow_mut().refused(remote.ip(), now);
    }
    let mut checked = checked?;
    if let Some(backend) = core
        .conns
        .backend
        .as_ref()
        .filter(|b| b.has_hook(Hook::Connect))
    {
        Box::pin(ask_connect_hook(backend, &mut checked)).await?;
    }
    let accepted = handshake::finish(checked, shared.gate.as_ref(), &shared.registry)?;
    let claim = match &accepted.name {
        Some(name) => Box::pin(claim_name(core, name)).await?,
        None => None,
    };
    Ok((accepted, leftover, claim))
}

/// Asks the backend's connect hook about an upgrade that passed the first checks: its answer
/// refuses it, or lets it in as it came or as the identity it gives. This task waits for the
/// backend (within the handshake timeout), the shard does not.
async fn ask_connect_hook(
    backend: &BackendLink,
    checked: &mut Checked<Arc<Route>>,
) -> Result<(), Refusal> {
    let head = &checked.head;
    let headers: Vec<(&str, &str)> = head.headers().collect();
    let request = wire::connect_request(
        head.path(),
        head.raw_query(),
        &checked.remote.to_string(),
        &headers,
        checked.identity.as_ref().map(|i| i.user.as_str()),
    );
    match backend.ask_connect(request).await {
        Ok(ConnectVerdict::Allow(Some(identity))) => {
            checked.identity = Some(identity);
            Ok(())
        }
        Ok(ConnectVerdict::Allow(None)) => Ok(()),
        Ok(ConnectVerdict::Refuse { status, reason }) => {
            Err(Refusal::hook_refused(status, &reason))
        }
        Err(e) => Err(Refusal::backend_down(matches!(e, Error::BackendBusy))),
    }
}

/// In cluster mode, claims the name a gate gave the connection across the cluster: this task
/// waits for NATS, the shard does not.
async fn claim_name(core: &ShardCore, name: &str) -> Result<Option<u64>, Refusal> {
    let Some(cluster) = &core.shared.cluster else {
        return Ok(None);
    };
    match cluster.claim(name).await {
        Ok(revision) => Ok(Some(revision)),
        Err(Error::UuidDuplication) => Err(Refusal::name_taken()),
        Err(e) => {
            tracing::warn!(uuid = name, error = %e, "cluster claim failed");
            Err(Refusal::new(503, "cluster claim failed"))
        }
    }
}

/// What one wake-up of the connection task found.
enum Step {
    /// A write failed.
    Failed(io::Error),
    /// The state moved on (a server close was written, the connection was torn down).
    Changed,
    /// A bare socket is full: it goes back into glommio's stream, which waits for room.
    Full,
    /// A bare socket's queue is written and the connection is not torn down: nothing is left
    /// for the task until `Conn::wake`.
    Idle,
}

/// Until the connection is torn down: writes what the flush pass could not (waiting for room)
/// and a server close; a plain connection's reads come from the shard's readiness set
/// (`Conn::read_ready`), a TLS connection's from here. Then finishes the socket as the session
/// asks. A plain connection with nothing left to write parks instead (`Conn::park`): the task
/// ends and the socket stays with the connection, so an idle connection holds no task.
async fn run(conn: &Rc<Conn>, mut stream: OpenSocket) {
    while !conn.is_gone() {
        let step = poll_fn(|cx| poll_io(conn, &mut stream, cx)).await;
        match step {
            Step::Changed => conn.drive(),
            Step::Failed(e) => conn.handle_io_error(e),
            Step::Full => stream = OpenSocket::Stream(Box::new(stream.into_transport())),
            Step::Idle => {
                // What the writes moved on (a close frame sent) is acted on before parking.
                conn.drive();
                if !conn.is_gone() && !conn.wants_write() {
                    if let OpenSocket::Bare(fd) = stream {
                        conn.park(fd);
                        return;
                    }
                }
            }
        }
        glommio::yield_if_needed().await;
    }
    // Boxed for the same reason as the handshake: only a closing connection needs it.
    Box::pin(finish(conn, stream.into_transport())).await;
}

/// The most plaintext a TLS connection encrypts at once: the queue's bytes of one flush are
/// copied into one buffer and sealed together, in records of up to 16 KiB, rather than one
/// record per queued frame.
const TLS_BATCH: usize = 64 << 10;

fn poll_io(conn: &Rc<Conn>, socket: &mut OpenSocket, cx: &mut Context<'_>) -> Poll<Step> {
    conn.register_waker(cx.waker());
    // One clock read for this wake.
    let now = Instant::now();
    let stream = match socket {
        OpenSocket::Bare(fd) => {
            return match conn.write_queue(fd.as_fd(), now) {
                Err(e) => Poll::Ready(Step::Failed(e)),
                Ok(false) => {
                    conn.write_blocked(now);
                    Poll::Ready(Step::Full)
                }
                Ok(true) if conn.is_gone() => Poll::Ready(Step::Changed),
                Ok(true) => Poll::Ready(Step::Idle),
            };
        }
        OpenSocket::Stream(stream) => &mut **stream,
    };
    if matches!(stream, Transport::Tls(_)) && conn.is_open() {
        // Decrypted into the shard's read buffer, as the readiness set's reads are: an idle
        // TLS connection holds no read buffer of its own.
        let read = {
            let mut scratch = conn.conns.scratch.borrow_mut();
            match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    conn.received(now, scratch.get(..n).unwrap_or_default());
                    Poll::Ready(Ok(n))
                }
                other => other,
            }
        };
        match read {
            Poll::Ready(Ok(0)) => {
                conn.handle_eof();
                return Poll::Ready(Step::Changed);
            }
            Poll::Ready(Ok(_)) => {
                conn.drive();
                // More may be buffered: come back after the other tasks had a turn.
                cx.waker().wake_by_ref();
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(e)),
            Poll::Pending => {}
        }
    }
    if let Err(e) = flush(conn, stream, cx, now) {
        return Poll::Ready(Step::Failed(e));
    }
    if conn.is_gone() || !conn.is_open() && !conn.wants_write() {
        return Poll::Ready(Step::Changed);
    }
    // Woken by `Conn::wake` (something to write, a close, the teardown) or by the socket.
    Poll::Pending
}

/// Writes what the connection has queued until the socket is full; glommio then wakes the task
/// once it has room. Plain: `Conn::write_queue` on the raw fd. TLS: the queued bytes of this
/// flush, encrypted together.
fn flush(
    conn: &Rc<Conn>,
    stream: &mut Transport,
    cx: &mut Context<'_>,
    now: Instant,
) -> io::Result<()> {
    if let Transport::Fresh(fd) = stream {
        if conn.write_queue(fd.as_fd(), now)? {
            return Ok(());
        }
        // Full: wait for room in glommio's stream.
    }
    match stream.waitable() {
        Transport::Fresh(_) => Ok(()),
        Transport::Plain(tcp) => {
            // SAFETY: `tcp` owns the descriptor and outlives this borrow (glommio's stream does
            // not implement `AsFd`).
            let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
            while !conn.write_queue(fd, now)? {
                // glommio's write tries once more and otherwise arms a writability poll.
                let polled = conn.with_front(|front| Pin::new(&mut *tcp).poll_write(cx, front));
                if !wrote(conn, polled, now)? {
                    return Ok(());
                }
            }
            Ok(())
        }
        Transport::Tls(tls) => {
            while conn.wants_write() {
                let batch = conn.unwritten(TLS_BATCH);
                if batch.is_empty() {
                    break;
                }
                let polled = Pin::new(&mut **tls).poll_write(cx, &batch);
                if !wrote(conn, polled, now)? {
                    return Ok(());
                }
            }
            // Records sealed but not yet sent.
            match Pin::new(&mut **tls).poll_flush(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    conn.write_blocked(now);
                    Ok(())
                }
            }
        }
    }
}

/// Accounts for one write attempt: `Ok(true)` when bytes went, `Ok(false)` when the socket is
/// full (the stall clock runs).
fn wrote(conn: &Rc<Conn>, polled: Poll<io::Result<usize>>, now: Instant) -> io::Result<bool> {
    match polled {
        Poll::Ready(Ok(written)) => {
            conn.wrote(now, written);
            Ok(true)
        }
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => {
            conn.write_blocked(now);
            Ok(false)
        }
    }
}

/// After teardown: write what is left (the close frame) within the deadline, half-close (after
/// a TLS close_notify), and read until the peer closes too, so it gets our close frame rather
/// than a reset.
async fn finish(conn: &Rc<Conn>, mut stream: Transport) {
    let stream = &mut stream;
    // From here on only this task touches the socket.
    conn.fd.take_back();
    let Some(deadline) = conn.linger() else {
        return;
    };
    let wait = deadline.saturating_duration_since(Instant::now());
    future::or(
        async {
            let flushed = poll_fn(|cx| {
                conn.register_waker(cx.waker());
                match flush(conn, stream, cx, Instant::now()) {
                    Err(_) => Poll::Ready(false),
                    Ok(()) if !conn.wants_write() => Poll::Ready(true),
                    Ok(()) => Poll::Pending,
                }
            })
            .await;
            if flushed && !(conn.peer_closed() && stream.nothing_unread()) {
                stream.shutdown_write().await;
                runtime::drain(stream).await;
            }
        },
        async {
            Timer::new(wait).await;
        },
    )
    .await;
    // Dropping the stream closes the socket. `close` would first shut down both directions,
    // which after the half-close and the peer's end fails (ENOTCONN): a wasted system call per
    // connection.
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}
