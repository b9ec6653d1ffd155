//! The upgrade decision: from a parsed request head and what the server knows at that moment,
//! either the 101 to send and what the connection keeps, or the refusal to answer with.
//! Pure: no socket, no clock, no waiting. `shard::io` reads the head, writes the answer and,
//! in cluster mode, claims a gate-given name across the cluster after this has decided.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crate::auth::{self, AuthRefusal, Identity, Verifier};
use crate::http::{self, HttpError, Params, RequestHead, Router, UpgradeCheck};
use crate::registry::Registry;
use crate::upgrade::{Gate, Locals, UpgradeRequest};
use crate::ws::deflate::{self, Agreement};

/// What the decision needs of a mounted route.
pub(crate) trait RouteOffer {
    /// The route's subprotocols, most preferred first.
    fn subprotocols(&self) -> &[Arc<str>];
    /// Whether the route offers permessage-deflate.
    fn offers_deflate(&self) -> bool;
}

/// What the server knows when an upgrade arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    /// Draining or stopping: new upgrades get 503 while the port stays open.
    pub(crate) draining: bool,
    /// Live connections on all shards.
    pub(crate) connections: usize,
    /// `Builder::max_connections`.
    pub(crate) max_connections: Option<usize>,
    /// The time, in seconds since the epoch, a client's token is checked against.
    pub(crate) unix_now: u64,
    /// The client's address has used up its token refusals (`Verifier::refusals_per_address`):
    /// with a verifier, 429 before any token check.
    pub(crate) refusals_exhausted: bool,
}

/// What a connection keeps of its upgrade request, fixed for its whole life (listeners of
/// `disconnect` included), but for its token, which a refresh replaces.
pub(crate) struct RequestData {
    pub(crate) head: RequestHead,
    pub(crate) params: Params,
    pub(crate) remote: SocketAddr,
    /// Boxed, and only when there is any: most connections have neither.
    pub(crate) extras: Option<Box<RequestExtras>>,
    /// permessage-deflate, when the route offers it and the client asked for it.
    pub(crate) deflate: Option<Agreement>,
}

/// What only some upgrades carry.
pub(crate) struct RequestExtras {
    /// Values the gate set.
    pub(crate) locals: Locals,
    /// The subprotocol the 101 named, shared with the route.
    pub(crate) protocol: Option<Arc<str>>,
    /// Who the client's token said it is, when the server authenticates.
    pub(crate) token: Option<Token>,
}

/// An authenticated connection's token: the user, fixed for the connection's life; the
/// identity, which a refresh replaces; and when the connection glue next looks at its expiry.
/// Kept in the extras box, so a connection without a token pays nothing for it.
pub(crate) struct Token {
    /// The token's `sub`: a refresh may change the grants, never the user.
    pub(crate) user: Box<str>,
    pub(crate) identity: RefCell<Arc<Identity>>,
    /// When the expiry rule (`auth::expiry`) is next applied; `None` for a token without `exp`.
    pub(crate) check_at: Cell<Option<Instant>>,
    /// Whether the connection was told its token expired (once per token).
    pub(crate) told: Cell<bool>,
}

impl Token {
    fn new(identity: Identity) -> Token {
        Token {
            user: identity.user.as_str().into(),
            identity: RefCell::new(Arc::new(identity)),
            check_at: Cell::new(None),
            told: Cell::new(false),
        }
    }

    /// The identity now: the upgrade's, or the last refresh's.
    pub(crate) fn identity(&self) -> Arc<Identity> {
        Arc::clone(&self.identity.borrow())
    }
}

impl RequestData {
    pub(crate) fn protocol(&self) -> Option<&str> {
        self.extras.as_ref()?.protocol.as_deref()
    }

    pub(crate) fn token(&self) -> Option<&Token> {
        self.extras.as_ref()?.token.as_ref()
    }

    pub(crate) fn identity(&self) -> Option<Arc<Identity>> {
        self.token().map(Token::identity)
    }
}

/// An upgrade the server takes.
pub(crate) struct Accepted<R> {
    pub(crate) route: R,
    pub(crate) request: RequestData,
    /// The whole 101 response (RFC 6455 §4.2.2).
    pub(crate) response: Vec<u8>,
    /// The UUID the gate asked for: free when decided; in cluster mode still to be claimed.
    pub(crate) name: Option<Arc<str>>,
}

/// A refused upgrade: its status and its whole response. Every refusal is written by
/// `http::error_response`, so its `Content-Length` always matches its body.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    /// For the log.
    pub(crate) reason: &'static str,
    pub(crate) response: Vec<u8>,
    /// Why the token was refused, for a 401 of `Builder::authenticate`.
    pub(crate) auth: Option<AuthRefusal>,
}

impl Refusal {
    /// `status` with `reason` as the body too.
    pub(crate) fn new(status: u16, reason: &'static str) -> Self {
        Self::with(status, reason, reason, &[])
    }

    fn with(status: u16, reason: &'static str, body: &str, headers: &[(&str, &str)]) -> Self {
        Refusal {
            status,
            reason,
            response: http::error_response(status, body, headers),
            auth: None,
        }
    }

    /// A token missing or refused: 401 with the cause as the body (never the token).
    pub(crate) fn unauthenticated(cause: AuthRefusal) -> Self {
        Refusal {
            auth: Some(cause),
            ..Self::with(
                401,
                cause.reason(),
                cause.reason(),
                &[("WWW-Authenticate", "Bearer")],
            )
        }
    }

    /// A request head that could not be read: 400 or 431 with the parser's reason.
    pub(crate) fn bad_head(e: &HttpError) -> Self {
        let reason = if e.status() == 431 {
            "request head too large"
        } else {
            "malformed request"
        };
        Self::with(e.status(), reason, &e.to_string(), &[])
    }

    /// Plain HTTP sent to a `wss` port.
    pub(crate) fn plain_http_on_tls() -> Self {
        Self::with(
            400,
            "plain HTTP on the TLS port",
            "this port speaks TLS: connect with wss",
            &[],
        )
    }

    /// The client's address used up its token refusals: 429, try again in a second.
    pub(crate) fn too_many_refusals() -> Self {
        let reason = "too many refused tokens";
        Self::with(429, reason, reason, &[("Retry-After", "1")])
    }

    /// The connect hook refused the client: its status (400–599) and reason.
    pub(crate) fn hook_refused(status: u16, reason: &str) -> Self {
        Self::with(status, "refused by the connect hook", reason, &[])
    }

    /// The connect hook could not be asked (`busy`: this shard has its limit of calls in
    /// flight) or gave no usable answer in time: 503, worth a retry in a second.
    pub(crate) fn backend_down(busy: bool) -> Self {
        let reason = if busy {
            "backend busy"
        } else {
            "backend unavailable"
        };
        Self::with(503, reason, reason, &[("Retry-After", "1")])
    }

    /// The name the gate gave is held by another connection.
    pub(crate) fn name_taken() -> Self {
        Self::new(409, "id already in use")
    }
}

/// An upgrade that passed the checks that need nothing but the request and the server's state:
/// what `finish` decides the rest from, and what a connect hook is asked about.
pub(crate) struct Checked<R> {
    pub(crate) route: R,
    pub(crate) params: Params,
    pub(crate) head: RequestHead,
    accept: String,
    pub(crate) remote: SocketAddr,
    connections: usize,
    /// Who the token says the client is; a connect hook may replace it.
    pub(crate) identity: Option<Identity>,
}

/// Decides an upgrade: `check`, then `finish` (what the shard does, less the connect hook
/// between them).
#[cfg(test)]
pub(crate) fn decide<R: RouteOffer + Clone>(
    head: RequestHead,
    remote: SocketAddr,
    routes: &Router<R>,
    admission: Admission,
    verifier: Option<&Verifier>,
    gate: Option<&Gate>,
    registry: &Arc<Registry>,
) -> Result<Accepted<R>, Refusal> {
    let checked = check(head, remote, routes, admission, verifier)?;
    finish(checked, gate, registry)
}

/// The first checks, in this order: route (404), RFC 6455 §4.2.1 (426, 400), drain and
/// connection limit (503), the client's token when `verifier` is given (429 when its address
/// used up its refusals, else 401 for a missing or refused token, checked at
/// `admission.unix_now`).
pub(crate) fn check<R: RouteOffer + Clone>(
    head: RequestHead,
    remote: SocketAddr,
    routes: &Router<R>,
    admission: Admission,
    verifier: Option<&Verifier>,
) -> Result<Checked<R>, Refusal> {
    let Some((route, params)) = routes.find(head.path()) else {
        return Err(Refusal::new(404, "not found"));
    };
    let accept = match http::check_upgrade(&head) {
        UpgradeCheck::Accept(a) => a,
        UpgradeCheck::NotUpgrade => {
            return Err(Refusal::with(
                426,
                "not an upgrade",
                "upgrade required",
                &[("Upgrade", "websocket")],
            ))
        }
        UpgradeCheck::BadVersion => {
            return Err(Refusal::with(
                426,
                "unsupported version",
                "unsupported websocket version",
                &[("Sec-WebSocket-Version", "13")],
            ))
        }
        UpgradeCheck::Malformed(why) => return Err(Refusal::new(400, why)),
    };
    if admission.draining {
        return Err(Refusal::new(503, "server is draining"));
    }
    if admission
        .max_connections
        .is_some_and(|max| admission.connections >= max)
    {
        return Err(Refusal::new(503, "too many connections"));
    }
    let identity = match verifier {
        Some(_) if admission.refusals_exhausted => return Err(Refusal::too_many_refusals()),
        Some(verifier) => {
            let token = auth::token_from(
                head.header("authorization"),
                http::offered_protocols(&head),
                head.query("token"),
            )
            .ok_or(AuthRefusal::Missing);
            let identity = token.and_then(|t| verifier.verify(t, admission.unix_now));
            Some(identity.map_err(Refusal::unauthenticated)?)
        }
        None => None,
    };
    Ok(Checked {
        route: route.clone(),
        params,
        head,
        accept,
        remote,
        connections: admission.connections,
        identity,
    })
}

/// `corecast` when the client carries its token in a subprotocol (`auth::TOKEN_PROTOCOL_PREFIX`)
/// and offers `corecast` beside it, for a route that chose no subprotocol of its own: a
/// browser needs one of its offers named in the 101.
fn token_carrier(head: &RequestHead) -> Option<Arc<str>> {
    let offered = || http::offered_protocols(head);
    let carries = offered().any(|p| p.starts_with(auth::TOKEN_PROTOCOL_PREFIX));
    (carries && offered().any(|p| p == auth::TOKEN_CARRIER_PROTOCOL))
        .then(|| Arc::from(auth::TOKEN_CARRIER_PROTOCOL))
}

/// The rest, in this order: subprotocol, the `before_upgrade` gate (its status, or 500 if it
/// panicked), the name it gave (409 if taken), permessage-deflate.
pub(crate) fn finish<R: RouteOffer + Clone>(
    checked: Checked<R>,
    gate: Option<&Gate>,
    registry: &Arc<Registry>,
) -> Result<Accepted<R>, Refusal> {
    let Checked {
        route,
        params,
        head,
        accept,
        remote,
        connections,
        identity,
    } = checked;
    let protocol = http::select_protocol(route.subprotocols(), &head)
        .cloned()
        .or_else(|| token_carrier(&head));
    let mut req = UpgradeRequest {
        protocol,
        head,
        params,
        remote,
        locals: Locals::default(),
        registry: Arc::clone(registry),
        connections,
        uuid: None,
        identity,
    };
    if let Some(gate) = gate {
        match catch_unwind(AssertUnwindSafe(|| gate(&mut req))) {
            Ok(Ok(())) => {}
            Ok(Err(rejection)) => {
                return Err(Refusal {
                    status: rejection.status(),
                    reason: "rejected by before_upgrade",
                    response: rejection.to_response(),
                    auth: None,
                })
            }
            Err(_) => return Err(Refusal::new(500, "before_upgrade panicked")),
        }
    }
    let name: Option<Arc<str>> = req.uuid.take().map(Into::into);
    if name.as_deref().is_some_and(|n| registry.get(n).is_some()) {
        return Err(Refusal::name_taken());
    }
    let deflate = if route.offers_deflate() {
        deflate::negotiate(http::offered_extensions(&req.head))
    } else {
        None
    };
    let extensions = deflate.map(|a| a.response());
    let response =
        http::switching_protocols(&accept, req.protocol.as_deref(), extensions.as_deref());
    let extras =
        (!req.locals.is_empty() || req.protocol.is_some() || req.identity.is_some()).then(|| {
            Box::new(RequestExtras {
                locals: req.locals,
                protocol: req.protocol,
                token: req.identity.map(Token::new),
            })
        });
    let request = RequestData {
        head: req.head,
        params: req.params,
        remote,
        extras,
        deflate,
    };
    Ok(Accepted {
        route,
        request,
        response,
        name,
    })
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
