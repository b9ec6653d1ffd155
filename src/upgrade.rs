//! What the `before_upgrade` gate sees and how it refuses: the request of a matched route,
//! before the 101 response. Not the handshake itself (see `http`).

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;

use std::sync::Arc;

use crate::auth::Identity;
use crate::http::{Params, RequestHead};
use crate::registry::Registry;

/// Values a gate hands to the connection (read back with `Websocket::local`).
pub(crate) type Locals = HashMap<String, Box<dyn Any>>;

/// The `before_upgrade` gate.
pub(crate) type Gate = Arc<dyn Fn(&mut UpgradeRequest) -> Result<(), Rejection> + Send + Sync>;

/// Everything the client sent with its upgrade, plus the route parameters.
pub struct UpgradeRequest {
    pub(crate) head: RequestHead,
    pub(crate) params: Params,
    pub(crate) remote: SocketAddr,
    pub(crate) locals: Locals,
    pub(crate) registry: Arc<Registry>,
    /// Live connections on all shards when the upgrade arrived.
    pub(crate) connections: usize,
    /// The UUID the gate asked the connection to have, if any.
    pub(crate) uuid: Option<String>,
    /// The subprotocol the 101 will name: the route's first choice among those offered.
    pub(crate) protocol: Option<Arc<str>>,
    /// Who the token said the client is, when the server authenticates (`Builder::authenticate`).
    pub(crate) identity: Option<Identity>,
}

impl UpgradeRequest {
    /// The subprotocols the client offered (`Sec-WebSocket-Protocol`), in its order. A gate
    /// may refuse a client for what it offers.
    pub fn offered_protocols(&self) -> Vec<&str> {
        crate::http::offered_protocols(&self.head).collect()
    }

    /// The subprotocol the connection will have if the gate lets it in: the route's first
    /// choice among those offered, or `None`.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The request path, without the query string.
    pub fn path(&self) -> &str {
        self.head.path()
    }

    /// The user the client's token names (its `sub`), when the server authenticates
    /// (`Builder::authenticate`): the gate runs after the token was verified, and may refuse
    /// further. `None` on a server without authentication.
    pub fn user(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.user.as_str())
    }

    /// The verified token's identity: user, expiry and topic grants.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// A route parameter (`:name`, or `*` for the wildcard).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// A query parameter, decoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.head.query(name)
    }

    /// A request header; the name is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// A cookie from the `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.head.cookie(name)
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Names the connection: it is registered with this UUID instead of a random one, before
    /// the route callback runs. If another connection holds it the client gets 409. In
    /// cluster mode the name is claimed across every node during the upgrade, without
    /// holding up the shard (a claim that times out gets 503).
    pub fn set_uuid(&mut self, uuid: impl Into<String>) {
        self.uuid = Some(uuid.into());
    }

    /// Whether a live connection (on any shard) holds `uuid`: lets a gate refuse an id that
    /// the route callback would fail to take with `set_uuid`.
    pub fn is_uuid_taken(&self, uuid: &str) -> bool {
        self.registry.get(uuid).is_some()
    }

    /// Live connections on all shards when the upgrade arrived.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Stores a value for the connection's whole life (`Websocket::local`).
    pub fn set_local<V: Any>(&mut self, key: impl Into<String>, value: V) {
        self.locals.insert(key.into(), Box::new(value));
    }
}

impl std::fmt::Debug for UpgradeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradeRequest")
            .field("path", &self.head.path())
            .field("remote", &self.remote)
            .finish()
    }
}

/// A refusal from the gate: the client gets this status and body instead of the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Rejection {
    /// Refuses with `status` (an HTTP error status: 400–599; anything else becomes 403) and `body`.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Rejection {
            status: if (400..600).contains(&status) {
                status
            } else {
                403
            },
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header (for example `WWW-Authenticate`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The response bytes.
    pub(crate) fn to_response(&self) -> Vec<u8> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        crate::http::error_response(self.status, &self.body, &headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_keeps_error_statuses_only() {
        assert_eq!(Rejection::new(401, "no").status(), 401);
        assert_eq!(Rejection::new(200, "no").status(), 403);
        assert_eq!(Rejection::new(99, "no").status(), 403);
    }
}
