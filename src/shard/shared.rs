//! The state every shard and every `Server` clone shares: routes, the gate, the server-wide
//! listeners, the UUID registry, the topic table, the shard links, the drain flag and the limits. Read-mostly:
//! the hot paths read atomics and per-bucket locks only. Not any one shard's state.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::handle::{EventPayload, Websocket};
use super::link::ShardLinks;
use crate::auth::Verifier;
use crate::backend::link::BackendShared;
use crate::cluster::handle::ClusterHandle;
use crate::event::ListenerRegistry;
use crate::handshake::RouteOffer;
use crate::history::HistoryRules;
use crate::http::Router;
use crate::registry::Registry;
use crate::tls::Tls;
use crate::topics::{SlowConsumerPolicy, TopicRules, TopicTable};
use crate::upgrade::Gate;
use crate::Config;

/// A route's callback (Go: the handler passed to `event.New`).
pub(crate) type RouteCallback = Arc<dyn Fn(&Websocket) + Send + Sync>;

/// A mounted route: its effective config and its callback.
pub(crate) struct Route {
    pub(crate) config: Arc<Config>,
    pub(crate) callback: RouteCallback,
    /// `config.subprotocols`, shared: the selected one is kept by each connection without a
    /// copy.
    pub(crate) subprotocols: Box<[Arc<str>]>,
}

impl RouteOffer for Arc<Route> {
    fn subprotocols(&self) -> &[Arc<str>] {
        &self.subprotocols
    }

    fn offers_deflate(&self) -> bool {
        self.config.deflate.is_some()
    }
}

/// Server-wide limits that are not per route.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_handshake_size: usize,
    pub(crate) max_connections: Option<usize>,
    pub(crate) inbox_capacity: usize,
    /// `Builder::socket_send_buffer`: `SO_SNDBUF` of accepted sockets; `None`: the kernel's.
    pub(crate) socket_send_buffer: Option<usize>,
    /// `Builder::write_coalescing`: the most a fan-out shard holds a flush pass.
    pub(crate) write_coalescing: Duration,
}

pub(crate) struct Shared {
    pub(crate) routes: Router<Arc<Route>>,
    pub(crate) gate: Option<Gate>,
    /// `Builder::authenticate`: every upgrade's token is verified with it, before the gate.
    pub(crate) auth: Option<Arc<Verifier>>,
    /// `Builder::history`: which topics keep history; `None` when none does.
    pub(crate) history: Option<Arc<HistoryRules>>,
    /// `Builder::slow_consumers`: topics whose full queues drop publications; `None` when
    /// every topic has the default.
    pub(crate) slow_consumers: Option<Arc<TopicRules<SlowConsumerPolicy>>>,
    /// `Builder::backend`: what each shard's `BackendLink` is made of.
    pub(crate) backend: Option<BackendShared>,
    pub(crate) listeners: Arc<ListenerRegistry<EventPayload>>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) topics: Arc<TopicTable>,
    /// This node's NATS link, in cluster mode.
    pub(crate) cluster: Option<Arc<ClusterHandle>>,
    pub(crate) links: Arc<ShardLinks>,
    pub(crate) draining: AtomicBool,
    pub(crate) options: Options,
    /// `wss://`: the acceptor every connection's handshake goes through.
    pub(crate) tls: Option<Arc<Tls>>,
}
