//! The handshake task: reads the upgrade request, answers it, and hands the socket to the
//! connection, which the shard's readiness set and flush pass serve from then on. Not protocol
//! logic: handshake checks live in `http`, framing, deadlines and queue policy in
//! `ws::session`, events in `conn`.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::{future, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::conn::{Conn, Connections, RequestData, Websocket};
use super::mesh::Route;
use super::state::ShardCore;
use crate::event::{self, EventName};
use crate::http::{self, UpgradeCheck};
use crate::runtime::{self, HeadError};
use crate::upgrade::UpgradeRequest;
use crate::Error;

/// Serves one accepted socket up to the upgrade, then hands it to the connection and ends: an
/// open connection has no task of its own. The shard knows the socket while this runs: when it
/// halts it shuts the socket down, which ends whatever this task waits on.
pub(crate) async fn serve(core: Rc<ShardCore>, mut stream: TcpStream) {
    let _hold = core.conns.task_sockets.hold(stream.as_raw_fd());
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let timeout = core.shared.options.handshake_timeout;
    let upgrade = future::or(handshake(&core, &mut stream, remote), async {
        Timer::new(timeout).await;
        Err(Refusal::quiet("handshake timed out"))
    })
    .await;
    let (route, request, accept, leftover) = match upgrade {
        Ok(u) => u,
        Err(refusal) => {
            tracing::debug!(%remote, reason = refusal.reason, "upgrade refused");
            if let Some((status, response)) = refusal.response {
                core.conns.metrics().rejected(status);
                // Best effort, bounded: the client may not be reading.
                let _ = future::or(async { stream.write_all(&response).await.ok() }, async {
                    Timer::new(timeout).await;
                    None
                })
                .await;
            }
            let _ = stream.shutdown(Shutdown::Both).await;
            return;
        }
    };

    // The connection owns the socket from here on, outside glommio's stream (which would
    // keep a read poll armed on it): a duplicate descriptor, and the stream closes its own.
    // SAFETY: plain syscall on an open descriptor; the result is checked.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    drop(stream);
    if fd < 0 {
        let e = io::Error::last_os_error();
        tracing::warn!(%remote, error = %e, "cannot take over the socket; dropping the client");
        return;
    }
    core.conns.metrics().upgraded();
    let conn = register(&core.conns, &route, request);
    conn.fd.set(fd);
    // Nothing below awaits: the readiness set reports this socket only after the callback
    // and the bytes read with the request head have been handled.
    if let Err(e) = conn.watch() {
        conn.handle_io_error(e);
        return;
    }
    conn.send_raw(Bytes::from(http::switching_protocols(&accept)));
    tracing::debug!(uuid = &*conn.uuid(), %remote, "connection open");
    // Get the 101 out before the callback runs: it may take a while.
    conn.flush_now(Instant::now());

    let kws = Websocket::from_conn(Rc::clone(&conn));
    let callback = Arc::clone(&route.callback);
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| callback(&kws))) {
        let reason = panic_message(&*panic);
        tracing::warn!(uuid = &*conn.uuid(), reason, "route callback panicked");
        conn.fail(Error::CallbackPanic, 1011);
    } else {
        conn.fire(EventName::Static(event::CONNECT), Bytes::new(), None);
    }
    drop(kws);
    if !leftover.is_empty() {
        conn.received(Instant::now(), &leftover);
        conn.drive();
    }
}

/// Registers the connection (UUID map and slab) before the route callback runs, so the
/// callback can already be reached (docs/behaviour.md, "Lifecycle" 2).
fn register(conns: &Rc<Connections>, route: &Route, request: RequestData) -> Rc<Conn> {
    let now = Instant::now();
    let id = conns.next_id();
    let uuid = loop {
        let uuid: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        // A v4 collision is practically impossible, but a taken UUID is never handed out.
        if conns.registry.insert(Arc::clone(&uuid), id) {
            break uuid;
        }
    };
    let conn = Rc::new(Conn::new(
        Rc::clone(conns),
        id,
        uuid,
        Arc::clone(&route.config),
        request,
        now,
    ));
    conns.insert(Rc::clone(&conn));
    conn.drive();
    conn
}

/// Why an upgrade did not happen, and what to answer, if anything.
struct Refusal {
    reason: &'static str,
    /// The status answered, with the response bytes; none when the client just goes.
    response: Option<(u16, Vec<u8>)>,
}

impl Refusal {
    fn quiet(reason: &'static str) -> Self {
        Refusal {
            reason,
            response: None,
        }
    }

    fn status(status: u16, reason: &'static str) -> Self {
        Self::with_headers(status, reason, reason, &[])
    }

    fn with_headers(
        status: u16,
        reason: &'static str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Self {
        Refusal {
            reason,
            response: Some((status, http::error_response(status, body, headers))),
        }
    }
}

type Upgrade = (Arc<Route>, RequestData, String, Vec<u8>);

/// Reads the request head and decides: route, drain check, handshake check, gate.
async fn handshake(
    core: &Rc<ShardCore>,
    stream: &mut TcpStream,
    remote: SocketAddr,
) -> Result<Upgrade, Refusal> {
    let limit = core.shared.options.max_handshake_size;
    let (head, leftover) = match runtime::read_head(stream, limit).await {
        Ok(read) => read,
        Err(HeadError::Gone) => return Err(Refusal::quiet("closed during handshake")),
        Err(HeadError::Http(e)) => {
            let reason = if e.status() == 431 {
                "request head too large"
            } else {
                "malformed request"
            };
            return Err(Refusal::with_headers(
                e.status(),
                reason,
                &e.to_string(),
                &[],
            ));
        }
    };

    let Some((route, params)) = core.shared.routes.find(head.path()) else {
        return Err(Refusal::status(404, "not found"));
    };
    let route = Arc::clone(route);
    let accept = match http::check_upgrade(&head) {
        UpgradeCheck::Accept(a) => a,
        UpgradeCheck::NotUpgrade => {
            return Err(Refusal::with_headers(
                426,
                "not an upgrade",
                "upgrade required",
                &[("Upgrade", "websocket")],
            ))
        }
        UpgradeCheck::BadVersion => {
            return Err(Refusal::with_headers(
                426,
                "unsupported version",
                "unsupported websocket version",
                &[("Sec-WebSocket-Version", "13")],
            ))
        }
        UpgradeCheck::Malformed(why) => return Err(Refusal::status(400, why)),
    };
    if core.shared.draining.load(Ordering::Acquire) || core.is_stopping() {
        return Err(Refusal::status(503, "server is draining"));
    }
    if let Some(max) = core.shared.options.max_connections {
        if core.shared.links.connections() >= max {
            return Err(Refusal::status(503, "too many connections"));
        }
    }
    let mut req = UpgradeRequest {
        head,
        params,
        remote,
        locals: Default::default(),
        registry: Arc::clone(&core.shared.registry),
        links: Arc::clone(&core.shared.links),
    };
    if let Some(gate) = &core.shared.gate {
        match catch_unwind(AssertUnwindSafe(|| gate(&mut req))) {
            Ok(Ok(())) => {}
            Ok(Err(rejection)) => {
                return Err(Refusal {
                    reason: "rejected by before_upgrade",
                    response: Some((rejection.status(), rejection.to_response())),
                })
            }
            Err(_) => return Err(Refusal::status(500, "before_upgrade panicked")),
        }
    }
    let request = RequestData {
        head: req.head,
        params: req.params,
        remote,
        locals: (!req.locals.is_empty()).then(|| Box::new(req.locals)),
    };
    Ok((route, request, accept, leftover))
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
