//! Cluster mode: `ClusterConfig` (how a node joins), `ClusterView` (who is in the cluster).
//! Several nodes act as one server by carrying cross-node work over NATS. The NATS link
//! itself, one thread per node, is `link` (built with the `cluster` feature only), and topic
//! history's JetStream streams are `streams`; what a shard hands to it is `handle`, what
//! travels is `wire`.
// Built without the `cluster` feature there is no NATS link to read what shards hand it.
#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

pub(crate) mod handle;
#[cfg(feature = "cluster")]
pub(crate) mod link;
#[cfg(feature = "cluster")]
pub(crate) mod streams;
pub(crate) mod wire;

use std::time::Duration;

/// How this node joins a cluster: the NATS server, the cluster's name and this node's id.
///
/// ```no_run
/// use corecast::{ClusterConfig, Server};
/// let server = Server::builder()
///     .bind("0.0.0.0:8080")
///     .cluster(ClusterConfig::nats("nats://127.0.0.1:4222").name("prod").node_id("node-a"))
///     .start()?;
/// # Ok::<(), corecast::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) node_id: Option<String>,
    pub(crate) start_without_nats: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) claim_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) interest_grace: Duration,
    pub(crate) history_timeout: Duration,
}

impl ClusterConfig {
    /// Default time to reach NATS at start.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default bound on one UUID claim (a JetStream round trip).
    pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default heartbeat period; a node silent for three periods leaves the view and its
    /// UUID claims may be taken over.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
    /// Default bound on one read of a topic's history from JetStream (a recovery, a window).
    pub const DEFAULT_HISTORY_TIMEOUT: Duration = Duration::from_secs(5);

    /// A node of the cluster named `corecast` on the NATS server at `url`
    /// (`nats://host:port`), with an id made of the host name and the process id.
    pub fn nats(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            name: "corecast".into(),
            node_id: None,
            start_without_nats: false,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            claim_timeout: Self::DEFAULT_CLAIM_TIMEOUT,
            heartbeat: Self::DEFAULT_HEARTBEAT,
            interest_grace: Duration::from_secs(1),
            history_timeout: Self::DEFAULT_HISTORY_TIMEOUT,
        }
    }

    /// The cluster's name: the prefix of its NATS subjects and of its key-value bucket, so
    /// two clusters on one NATS server never see each other. Letters, digits, `-` and `_`.
    pub fn name(mut self, name: impl Into<String>) -> ClusterConfig {
        self.name = name.into();
        self
    }

    /// This node's id, unique in the cluster (letters, digits, `-`, `_`, `.` and `:`).
    pub fn node_id(mut self, id: impl Into<String>) -> ClusterConfig {
        self.node_id = Some(id.into());
        self
    }

    /// Start even when NATS cannot be reached (cross-node work is counted as dropped until it
    /// can); by default `start()` fails with an error naming the URL.
    pub fn start_without_nats(mut self, yes: bool) -> ClusterConfig {
        self.start_without_nats = yes;
        self
    }

    /// How long `start()` tries to reach NATS. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> ClusterConfig {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on a cluster-wide UUID claim (`set_uuid`, `UpgradeRequest::set_uuid`); past it
    /// the call fails with `Error::Timeout`. Default 2 s.
    pub fn claim_timeout(mut self, timeout: Duration) -> ClusterConfig {
        self.claim_timeout = timeout;
        self
    }

    /// Heartbeat period. Default 1 s; a node is dropped from the view after three missed.
    pub fn heartbeat(mut self, period: Duration) -> ClusterConfig {
        self.heartbeat = period;
        self
    }

    /// Bound on reading a topic's history from JetStream (`Builder::history` in cluster mode):
    /// a recovery (`Websocket::subscribe_from`) not answered within it is answered
    /// `NotRecovered::Unavailable`, a window (`Server::history_window`) `None`. Each request
    /// to JetStream that publishing makes is bounded by it too. Default 5 s.
    pub fn history_timeout(mut self, timeout: Duration) -> ClusterConfig {
        self.history_timeout = timeout;
        self
    }

    /// The cluster's name and node id, checked; the node id defaults to host name and pid.
    pub(crate) fn checked(&self) -> Result<(String, String), crate::Error> {
        let ok = |s: &str, extra: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c) || extra.contains(c))
        };
        if !ok(&self.name, "") {
            return Err(crate::Error::Config(format!(
                "cluster name {:?}: use 1-64 letters, digits, '-' or '_'",
                self.name
            )));
        }
        let node = match &self.node_id {
            Some(id) => id.clone(),
            None => format!("{}-{}", host_name(), std::process::id()),
        };
        if !ok(&node, ".:") {
            return Err(crate::Error::Config(format!(
                "node id {node:?}: use 1-64 letters, digits, '-', '_', '.' or ':'"
            )));
        }
        if self.heartbeat.is_zero()
            || self.claim_timeout.is_zero()
            || self.history_timeout.is_zero()
        {
            return Err(crate::Error::Config(
                "cluster heartbeat, claim timeout and history timeout must be above zero".into(),
            ));
        }
        Ok((self.name.clone(), node))
    }
}

/// This machine's host name, or `node` when it has none.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the local buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ok && !name.is_empty() {
        name
    } else {
        "node".into()
    }
}

/// One node as this node last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Its live connections, as of its last heartbeat.
    pub connections: usize,
    /// Time since its last heartbeat (zero for this node).
    pub last_heartbeat: Duration,
    /// Whether this is the node answering.
    pub this_node: bool,
}

/// The cluster as this node sees it: the nodes whose heartbeats it hears, and its NATS link.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) connected: bool,
    pub(crate) name: String,
}

impl ClusterView {
    /// Every live node, this one included, sorted by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.clone()
    }

    /// Whether this node's link to NATS is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections on every live node.
    pub fn connections(&self) -> usize {
        self.nodes.iter().map(|n| n.connections).sum()
    }
}
