//! The server builder and the `Server` handle: start the shards, route cross-shard work to
//! their inboxes, drain and stop. Not the per-connection work: that runs on the shards.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::Verifier;
use crate::backend::link::BackendShared;
use crate::backend::Backend;
use crate::cluster::handle::ClusterHandle;
use crate::cluster::{ClusterConfig, ClusterView};
use crate::event::ListenerRegistry;
use crate::history::{self, Epoch, HistoryRules, Retention};
use crate::http::{self, RoutePattern, Router};
use crate::metrics::{ClusterMetrics, MetricsSnapshot, ShardMetrics};
use crate::registry::{Registry, ShardId};
use crate::shard::dispatch::{each_shard, send_to, Dispatch};
use crate::shard::handle::{EventPayload, Websocket};
use crate::shard::link::{ShardLinks, ShardMsg, DEFAULT_INBOX_CAPACITY};
use crate::shard::shared::{Options, Route, RouteCallback, Shared};
use crate::shard::state::on_shard_thread;
use crate::shard::{self, Listener};
use crate::tls::{Tls, TlsConfig};
use crate::topics::{self, PublishReport, SlowConsumerPolicy, TopicRules, TopicTable};
use crate::upgrade::Gate;
use crate::upgrade::{Rejection, UpgradeRequest};
use crate::ws::frame::{self, MessageType};
use crate::{Config, Error};

/// `Builder::write_coalescing`'s default: 1 ms, a fraction of a network round trip, and in
/// the benchmarks a small share of a fan-out's p99.
pub const DEFAULT_WRITE_COALESCING: Duration = Duration::from_millis(1);

/// Configures and starts a server. See `Server::builder`.
pub struct Builder {
    addr: Result<SocketAddr, Error>,
    shards: Option<usize>,
    routes: Vec<(String, Config, RouteCallback)>,
    gate: Option<Gate>,
    history: HistoryRules,
    slow_consumers: TopicRules<SlowConsumerPolicy>,
    auth: Option<Arc<Verifier>>,
    backend: Option<Backend>,
    options: Options,
    cluster: Option<ClusterConfig>,
    tls: Option<TlsConfig>,
}

impl Builder {
    /// The address to listen on (`"127.0.0.1:0"` or a `SocketAddr`); port 0 picks a free port.
    /// Default: `127.0.0.1:0`.
    pub fn bind(mut self, addr: impl ToSocketAddrs) -> Self {
        self.addr = addr
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("bind address: {e}")))
            .and_then(|mut a| {
                a.next()
                    .ok_or_else(|| Error::Config("bind address resolves to nothing".into()))
            });
        self
    }

    /// How many shards (pinned executors) to run. Default: the CPUs this process may run on.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Mounts a route with the default config (Go: `event.New(callback)`).
    pub fn route(
        self,
        pattern: &str,
        callback: impl Fn(&Websocket) + Send + Sync + 'static,
    ) -> Self {
        self.route_with_config(pattern, Config::default(), callback)
    }

    /// Mounts a route with its own config (Go: `event.NewWithConfig(callback, cfg)`).
    pub fn route_with_config(
        mut self,
        pattern: &str,
        config: Config,
        callback: impl Fn(&Websocket) + Send + Sync + 'static,
    ) -> Self {
        self.routes
            .push((pattern.to_string(), config, Arc::new(callback)));
        self
    }

    /// A gate that runs for every upgrade to a matched route, before the 101 response; an
    /// `Err(Rejection)` refuses the client with that status.
    pub fn before_upgrade(
        mut self,
        gate: impl Fn(&mut UpgradeRequest) -> Result<(), Rejection> + Send + Sync + 'static,
    ) -> Self {
        self.gate = Some(Arc::new(gate));
        self
    }

    /// Lets a client in only with a token `verifier` accepts: the `token` query parameter or
    /// an `Authorization: Bearer` header, checked after the route, drain and connection-limit
    /// checks and before the `before_upgrade` gate. A missing or refused token gets 401 with
    /// a short reason, before any WebSocket state is made, and is counted by cause
    /// (`corecast_auth_refusals_total`). The connection carries the token's identity
    /// (`Websocket::user`, `Websocket::identity`, and `UpgradeRequest::user` for the gate).
    /// docs/security.md covers the tokens and the rules.
    pub fn authenticate(mut self, verifier: Verifier) -> Self {
        self.auth = Some(Arc::new(verifier));
        self
    }

    /// The application's backend: which events are forwarded to it (a webhook, NATS), and the
    /// hooks that ask it (connect, subscribe, publish, RPC). The connect hook runs on every
    /// upgrade, after the token (when `authenticate` is set) and before the gate; its answer
    /// may set the connection's identity. docs/backend.md has the JSON and the failure rules.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Topics matching `pattern` (an exact name, or a prefix ending in `*`) keep their last
    /// `size` publications, each for at most `ttl`: every publication gets a position (offset
    /// and epoch), and a subscriber that comes back with the last position it saw gets what it
    /// missed (`Websocket::subscribe_from`). The first matching pattern wins. Topics without
    /// history cost nothing more. In cluster mode the history is kept in JetStream, one
    /// stream per topic shared by every node, so a position from one node is recovered from on
    /// any other (docs/cluster.md, "Topic history"); every node must have the same rules.
    pub fn history(mut self, pattern: &str, size: usize, ttl: Duration) -> Self {
        let retention = Retention {
            size: size.max(1),
            ttl,
        };
        self.history.add(pattern, retention);
        self
    }

    /// What a subscriber's full send queue does with the publications of topics matching
    /// `pattern` (an exact name, or a prefix ending in `*`; the first matching pattern wins):
    /// tear a consumer that falls behind down (`Teardown`, the default for every topic), drop
    /// the oldest queued publication (`DropOldest`), or keep only the latest per key
    /// (`KeepLatest`, with `publish_keyed`). Every drop is counted per topic in the metrics, fires
    /// `error` with `Error::Dropped` on the connection, and is told in band to connections that
    /// asked for notices (`Websocket::set_notices`). docs/behaviour.md, "Slow consumers".
    pub fn slow_consumers(mut self, pattern: &str, policy: SlowConsumerPolicy) -> Self {
        self.slow_consumers.add(pattern, policy);
        self
    }

    /// How long a client has to send its whole upgrade request. Default 5 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.options.handshake_timeout = timeout;
        self
    }

    /// Largest upgrade request head accepted (431 above it). Default 8 KiB.
    pub fn max_handshake_size(mut self, bytes: usize) -> Self {
        self.options.max_handshake_size = bytes;
        self
    }

    /// Refuses upgrades with 503 while this many connections are open (checked at each
    /// upgrade, so concurrent upgrades on several shards may pass it by a few).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.options.max_connections = Some(n);
        self
    }

    /// The kernel's send buffer of each accepted socket (`SO_SNDBUF`; Linux keeps twice the
    /// value, for its own bookkeeping). Unset, Linux grows it with the connection's throughput
    /// up to `net.ipv4.tcp_wmem`'s maximum (4 MiB by default): what a slow reader has not read
    /// then waits there, out of reach of the slow-consumer policies and of the send queue's
    /// bounds. A fixed size (64 KiB is plenty for event traffic) keeps that backlog in the
    /// send queue, where `slow_consumers` and `send_queue_size` apply, and bounds the kernel
    /// memory a slow reader can hold. Default: unset.
    pub fn socket_send_buffer(mut self, bytes: usize) -> Self {
        self.options.socket_send_buffer = Some(bytes);
        self
    }

    /// The most a shard holds its writes so that more frames share each one (default
    /// [`DEFAULT_WRITE_COALESCING`], 1 ms; `Duration::ZERO` turns it off). A shard holds only
    /// while it is writing many sockets a few frames each (at least 64 sockets, under 1.5
    /// frames each) and only while holding gathers more per write; an echo, a small chat or a
    /// lone message after a lull is written at once. A held pass goes as soon as it carries
    /// 1.5 frames per socket, before the bound when they are in by then. A fan-out pass that
    /// would start with fewer frames per socket than the last one (and fewer than eight) also
    /// waits, within the bound, for the rest of the burst. Each write costs a few microseconds
    /// in the kernel whatever it carries, so between idle and saturated this cuts CPU per
    /// delivery, for at most this much added latency (docs/behaviour.md, "Write coalescing").
    pub fn write_coalescing(mut self, bound: Duration) -> Self {
        self.options.write_coalescing = bound;
        self
    }

    /// Messages a shard's inbox holds (work from other threads and shards: emits, broadcasts,
    /// publishes, fires) before it refuses more. A refused emit returns `Error::InboxFull`; a
    /// refused broadcast, publish or fire misses that shard; each refusal is counted in
    /// `MetricsSnapshot::inbox_refusals`. Subscriptions, closes and the stop are never refused.
    /// Default `DEFAULT_INBOX_CAPACITY` (65,536).
    pub fn inbox_capacity(mut self, messages: usize) -> Self {
        self.options.inbox_capacity = messages;
        self
    }

    /// Serves `wss://` only: every connection starts with a TLS handshake (rustls) with the
    /// certificate and key in these PEM files, within the handshake timeout. `start()` fails
    /// with `Error::Config` naming a file that is missing, unreadable or does not match;
    /// `Server::reload_tls` reads them again.
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Makes this server a node of a cluster over NATS: broadcasts, publishes, fires, emits
    /// and closes reach every node, and `set_uuid` is unique across nodes. `start()` fails
    /// with an error naming the URL when NATS cannot be reached (unless
    /// `ClusterConfig::start_without_nats`). See `docs/cluster.md`.
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Starts every shard and returns once all are accepting, or with the error that stopped
    /// one (address in use, memlock limit too low, io_uring unavailable, bad config).
    pub fn start(self) -> Result<Server, Error> {
        let addr = self.addr?;
        let cpus = shard::allowed_cpus();
        let shards = self.shards.unwrap_or(cpus.len());
        if shards == 0 || shards > 4096 {
            return Err(Error::Config(format!(
                "shards must be between 1 and 4096, got {shards}"
            )));
        }
        if self.options.handshake_timeout.is_zero() || self.options.max_handshake_size < 256 {
            return Err(Error::Config(
                "handshake timeout must be above zero and the handshake size at least 256 bytes"
                    .into(),
            ));
        }
        let tls = self.tls.map(Tls::load).transpose()?.map(Arc::new);
        let mut routes = Router::new();
        for (pattern, config, callback) in self.routes {
            if let Some(bad) = config.subprotocols.iter().find(|p| !http::is_token(p)) {
                return Err(Error::Config(format!(
                    "route {pattern:?}: subprotocol {bad:?} is not an HTTP token"
                )));
            }
            let pattern = RoutePattern::parse(&pattern)
                .map_err(|e| Error::Config(format!("route {pattern:?}: {e}")))?;
            let subprotocols = config
                .subprotocols
                .iter()
                .map(|p| Arc::from(p.as_str()))
                .collect();
            let config = Arc::new(config.effective());
            routes.add(
                pattern,
                Arc::new(Route {
                    config,
                    callback,
                    subprotocols,
                }),
            );
        }
        let (links, receivers) = ShardLinks::new(shards, self.options.inbox_capacity);
        let cluster = match &self.cluster {
            Some(cfg) => {
                let (name, node) = cfg.checked()?;
                let (handle, inbox) =
                    ClusterHandle::new(name, node, cfg.heartbeat, cfg.claim_timeout);
                Some((cfg, handle, inbox))
            }
            None => None,
        };
        let (backend, events) = match self.backend {
            Some(b) => {
                let (events, nats) = start_nats_events(&b)?;
                (Some(BackendShared::new(b, nats)), events)
            }
            None => (None, None),
        };
        let history = (!self.history.is_empty()).then(|| Arc::new(self.history));
        let slow_consumers =
            (!self.slow_consumers.is_empty()).then(|| Arc::new(self.slow_consumers));
        let shared = Arc::new(Shared {
            history,
            slow_consumers,
            backend,
            cluster: cluster.as_ref().map(|(_, handle, _)| Arc::clone(handle)),
            routes,
            gate: self.gate,
            auth: self.auth,
            listeners: Arc::new(ListenerRegistry::default()),
            registry: Arc::new(Registry::new(shards * 16)),
            topics: Arc::new(TopicTable::new(shards, shards * 16)),
            links: Arc::new(links),
            draining: AtomicBool::new(false),
            options: self.options,
            tls,
        });
        // An address another server listens on fails here, before this node joins a cluster;
        // shard 0 checks again right before it binds (`Listener::bind`).
        Listener::ensure_free(addr).map_err(|e| shard::listen_error(0, addr, e))?;
        // NATS first: a node that cannot join its cluster does not start serving alone.
        let link = match cluster {
            Some((cfg, handle, inbox)) => {
                Some(Link::start(cfg, Arc::clone(&shared), handle, inbox)?)
            }
            None => None,
        };

        let mut handles = Vec::with_capacity(shards);
        let mut local_addr = addr;
        let mut failure = None;
        for (i, inbox) in receivers.into_iter().enumerate() {
            // Shard 0 claims the address and resolves port 0; the others join it on the same
            // port (SO_REUSEPORT).
            let cpu = cpus[i % cpus.len()];
            match shard::spawn(i, cpu, local_addr, Arc::clone(&shared), inbox) {
                Ok((handle, bound)) => {
                    handles.push(handle);
                    local_addr = bound;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let server = Server {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                handles: Mutex::new(handles),
                link: Mutex::new(link),
                events: Mutex::new(events),
            }),
        };
        if let Some(e) = failure {
            server.stop_now();
            let _ = server.join();
            return Err(e);
        }
        tracing::debug!(%local_addr, shards, "server started");
        Ok(server)
    }
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    handles: Mutex<Vec<shard::ShardHandle>>,
    link: Mutex<Option<Link>>,
    /// The NATS events thread, when `Builder::backend` sends events to NATS.
    events: Mutex<Option<NatsEvents>>,
}

/// The NATS events thread, where the library is built with cluster mode (NATS).
#[cfg(feature = "cluster")]
use crate::backend::nats::NatsEventsThread as NatsEvents;

#[cfg(not(feature = "cluster"))]
struct NatsEvents;

#[cfg(not(feature = "cluster"))]
impl NatsEvents {
    fn stop(&mut self) {}
}

type NatsQueue = flume::Sender<crate::backend::link::NatsEvent>;

/// Starts the NATS events thread when `backend` sends events to NATS.
fn start_nats_events(backend: &Backend) -> Result<(Option<NatsEvents>, Option<NatsQueue>), Error> {
    let Some(cfg) = &backend.nats else {
        return Ok((None, None));
    };
    #[cfg(feature = "cluster")]
    {
        let (thread, queue) = NatsEvents::start(cfg, backend.queue_capacity)?;
        Ok((Some(thread), Some(queue)))
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = cfg;
        Err(Error::Config(
            "events to NATS need the \"cluster\" feature, which this build of corecast lacks"
                .into(),
        ))
    }
}

/// This node's NATS link, where the library is built with cluster mode.
#[cfg(feature = "cluster")]
use crate::cluster::link::NatsLink as Link;

#[cfg(not(feature = "cluster"))]
struct Link;

#[cfg(not(feature = "cluster"))]
impl Link {
    fn start(
        _: &ClusterConfig,
        _: Arc<Shared>,
        _: Arc<ClusterHandle>,
        _: crate::cluster::handle::LinkInbox,
    ) -> Result<Link, Error> {
        Err(Error::Config(
            "this build of corecast has no cluster mode (the \"cluster\" feature is off)".into(),
        ))
    }

    fn stop(&mut self) {}
}

/// A running server. Cheap to clone; `Send + Sync`: hand it to any thread or runtime.
///
/// The shards run until `shutdown`: dropping every handle does not stop them (a server that
/// vanished with its last handle would cut its clients off silently). Call `shutdown`, then
/// `join`.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl Server {
    /// A builder with the defaults: `127.0.0.1:0`, one shard per allowed CPU, no routes.
    pub fn builder() -> Builder {
        Builder {
            addr: Ok(SocketAddr::from(([127, 0, 0, 1], 0))),
            shards: None,
            routes: Vec::new(),
            gate: None,
            history: HistoryRules::default(),
            slow_consumers: TopicRules::default(),
            auth: None,
            backend: None,
            cluster: None,
            tls: None,
            options: Options {
                handshake_timeout: Duration::from_secs(5),
                max_handshake_size: 8 << 10,
                max_connections: None,
                inbox_capacity: DEFAULT_INBOX_CAPACITY,
                socket_send_buffer: None,
                write_coalescing: DEFAULT_WRITE_COALESCING,
            },
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    fn links(&self) -> &Arc<ShardLinks> {
        &self.shared().links
    }

    /// The address the shards listen on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.links().len()
    }

    /// Adds a server-wide listener for `name`; it applies to every event fired after this
    /// returns, on every connection.
    pub fn on(&self, name: &str, listener: impl Fn(&EventPayload) + Send + Sync + 'static) {
        self.shared().listeners.on(name, Arc::new(listener));
    }

    /// Removes every server-wide listener of `name`.
    pub fn off(&self, name: &str) {
        self.shared().listeners.off(name);
    }

    /// Sends to one connection. The UUID is checked now (`Error::InvalidConnection` if unknown
    /// or dead, with no `error` event); delivery happens on the owning shard. In cluster mode
    /// a UUID this node does not hold goes to the other nodes, and the answer is `Ok`: this
    /// node cannot know without waiting whether another holds it. `Error::InboxFull` when the
    /// owning shard's inbox is full (`Builder::inbox_capacity`).
    pub fn emit_to(
        &self,
        uuid: &str,
        data: impl Into<Bytes>,
        ty: MessageType,
    ) -> Result<(), Error> {
        let data = data.into();
        self.dispatch().to_uuid(uuid, ty.frame(&data))
    }

    /// Sends to each UUID; unknown ones are skipped. In cluster mode the UUIDs this node does
    /// not hold go to the other nodes in one message.
    pub fn emit_to_list(&self, uuids: &[&str], data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        self.dispatch().to_uuids(uuids, &ty.frame(&data), |_, _| {});
    }

    /// Sends to every connection on every shard (and node), framed once.
    pub fn broadcast(&self, data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        self.dispatch().to_all(&ty.frame(&data), None);
    }

    /// Runs the listeners of `name` once per live connection, on every node; nothing goes on
    /// the wire.
    pub fn fire(&self, name: &str, data: impl Into<Bytes>) {
        self.dispatch().fire(name, &data.into());
    }

    /// Closes one connection (1000) after what is queued for it. In cluster mode a UUID this
    /// node does not hold is closed wherever it is, and the answer is `Ok`.
    pub fn close(&self, uuid: &str) -> Result<(), Error> {
        self.dispatch().close(uuid, 1000, "Connection closed")
    }

    fn dispatch(&self) -> Dispatch<'_> {
        Dispatch::of(self.shared())
    }

    fn cluster_link(&self) -> Option<&Arc<ClusterHandle>> {
        self.shared().cluster.as_ref()
    }

    /// The cluster as this node sees it (nodes, their connections, heartbeats, the NATS link);
    /// `None` without cluster mode.
    pub fn cluster(&self) -> Option<ClusterView> {
        self.cluster_link().map(|c| c.view(self.connections()))
    }

    /// Reads the TLS certificate and key files again (the binary does on SIGHUP): new
    /// handshakes use them, open connections keep going. On an error the old ones stay in use;
    /// `Error::Config` without TLS.
    pub fn reload_tls(&self) -> Result<(), Error> {
        match &self.shared().tls {
            Some(tls) => tls.reload(),
            None => Err(Error::Config("TLS is not configured".into())),
        }
    }

    /// Whether this server serves `wss://` (`Builder::tls`).
    pub fn is_tls(&self) -> bool {
        self.shared().tls.is_some()
    }

    /// Refuses new upgrades with 503 from now on; open connections stay.
    pub fn drain(&self) {
        self.shared().draining.store(true, Ordering::Release);
    }

    /// Whether `drain` (or `shutdown`) was called.
    pub fn is_draining(&self) -> bool {
        self.shared().draining.load(Ordering::Acquire)
    }

    /// Live connections on all shards.
    pub fn connections(&self) -> usize {
        self.links().connections()
    }

    /// Sends to every subscriber of `topic` on every shard, framed once; only shards that hold
    /// a subscriber get the message. A topic nobody subscribes to (or an invalid name) reaches
    /// nobody, and that is not an error.
    pub fn publish(&self, topic: &str, data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        self.dispatch().to_topic(topic, &ty.frame(&data), 0, None);
    }

    /// `publish` with a conflation key (a symbol, a user id): where `topic`'s slow-consumer
    /// policy is `KeepLatest`, a subscriber's full queue keeps only the latest publication
    /// per key (`Builder::slow_consumers`). Elsewhere the key changes nothing.
    pub fn publish_keyed(&self, topic: &str, key: &str, data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        let key = topics::key_hash(key);
        self.dispatch().to_topic(topic, &ty.frame(&data), key, None);
    }

    /// `publish`, then what it reached on this node: subscribers offered it, how many queued
    /// it, how many were skipped as closing or gone, summed over the shards that answered
    /// within 2 s. `partial` when a shard's inbox refused it, a shard did not answer in time,
    /// or (cluster mode) it also went to other nodes, which are not counted. Sent at the call;
    /// the future only waits for the answers. Works on any thread, shard threads included,
    /// and never blocks one (docs/behaviour.md, "Publish reports").
    pub fn publish_reported(
        &self,
        topic: &str,
        data: impl Into<Bytes>,
        ty: MessageType,
    ) -> impl Future<Output = PublishReport> + Send + 'static {
        self.publish_keyed_reported(topic, None, data, ty)
    }

    /// `publish_reported`, with a conflation key when `key` is given (`publish_keyed`).
    pub fn publish_keyed_reported(
        &self,
        topic: &str,
        key: Option<&str>,
        data: impl Into<Bytes>,
        ty: MessageType,
    ) -> impl Future<Output = PublishReport> + Send + 'static {
        let data = data.into();
        let key = key.map_or(0, topics::key_hash);
        self.dispatch()
            .to_topic_reported(topic, &ty.frame(&data), key, None)
    }

    /// What `topic` keeps of its history on this node (`Builder::history`): the first and last
    /// offsets kept and their epoch; `None` for a topic without history or with nothing kept
    /// now. Asks the topic's home shard; works on any thread, shard threads included. In
    /// cluster mode, the window of the topic's JetStream stream, read within the cluster's
    /// history timeout (`None` past it, or with NATS down).
    pub async fn history_window(&self, topic: &str) -> Option<(u64, u64, Epoch)> {
        self.shared().history.as_ref()?.retention(topic)?;
        let (done, answer) = flume::bounded(1);
        let home = ShardId(history::home_shard(topic, self.links().len()));
        let ask = ShardMsg::Window {
            topic: topic.into(),
            done,
        };
        send_to(self.links(), home, ask).ok()?;
        answer.recv_async().await.ok().flatten()
    }

    /// Subscribers of `topic` on this server, all shards.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.shared().topics.count(topic)
    }

    /// Every topic with a subscriber on this server, with its subscriber count, by name.
    pub fn topics(&self) -> Vec<(String, usize)> {
        self.shared().topics.list()
    }

    /// Subscribes the connection holding `uuid` to `topic`, on its shard (for backends, as the
    /// binary's `POST /api/subscriptions/{uuid}/{topic}`): `Ok(false)` if it already was.
    /// `Error::InvalidConnection` for an unknown UUID, `InvalidTopic` / `TooManyTopics` as for
    /// `kws.subscribe`. Blocks until the shard answered; refused on a shard thread.
    pub fn subscribe(&self, uuid: &str, topic: &str) -> Result<bool, Error> {
        self.subscription_blocking(uuid, topic, true)
    }

    /// `subscribe` for async code, shard threads included.
    pub async fn subscribe_async(&self, uuid: &str, topic: &str) -> Result<bool, Error> {
        self.subscription_async(uuid, topic, true).await
    }

    /// Unsubscribes the connection holding `uuid` from `topic`: `Ok(false)` if it was not
    /// subscribed, `Error::InvalidConnection` for an unknown UUID. Refused on a shard thread.
    pub fn unsubscribe(&self, uuid: &str, topic: &str) -> Result<bool, Error> {
        self.subscription_blocking(uuid, topic, false)
    }

    /// `unsubscribe` for async code, shard threads included.
    pub async fn unsubscribe_async(&self, uuid: &str, topic: &str) -> Result<bool, Error> {
        self.subscription_async(uuid, topic, false).await
    }

    fn subscription_blocking(&self, uuid: &str, topic: &str, on: bool) -> Result<bool, Error> {
        if on_shard_thread() {
            return Err(Error::OnShardThread);
        }
        // The shard drops the answer only when it stops: the connection is gone with it.
        self.ask_subscription(uuid, topic, on)?
            .recv()
            .unwrap_or(Err(Error::InvalidConnection))
    }

    async fn subscription_async(&self, uuid: &str, topic: &str, on: bool) -> Result<bool, Error> {
        self.ask_subscription(uuid, topic, on)?
            .recv_async()
            .await
            .unwrap_or(Err(Error::InvalidConnection))
    }

    fn ask_subscription(
        &self,
        uuid: &str,
        topic: &str,
        subscribe: bool,
    ) -> Result<flume::Receiver<Result<bool, Error>>, Error> {
        topics::check_name(topic)?;
        let id = self
            .shared()
            .registry
            .get(uuid)
            .ok_or(Error::InvalidConnection)?;
        let (done, answer) = flume::bounded(1);
        let msg = ShardMsg::Subscription {
            to: id,
            topic: topic.into(),
            subscribe,
            done,
        };
        send_to(self.links(), id.shard, msg)?;
        Ok(answer)
    }

    /// Whether a live connection holds `uuid`.
    pub fn is_connected(&self, uuid: &str) -> bool {
        self.shared().registry.get(uuid).is_some()
    }

    /// A copy of the traffic counters of every shard.
    pub fn metrics(&self) -> MetricsSnapshot {
        let live: Vec<u64> = self
            .connections_per_shard()
            .into_iter()
            .map(|n| n as u64)
            .collect();
        let shards: Vec<&ShardMetrics> = self.links().iter().map(|s| &s.metrics).collect();
        let mut snapshot = MetricsSnapshot::collect(&shards, &live);
        snapshot.cluster = self.cluster_link().map(|c| {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            ClusterMetrics {
                messages_out: load(&c.stats.out),
                messages_in: load(&c.stats.received),
                dropped: load(&c.stats.dropped),
                nats_rtt: Duration::from_nanos(load(&c.stats.rtt_nanos)),
                nodes: c.view(0).nodes.len(),
                connected: c.stats.connected.load(Ordering::Acquire),
                history_lost: load(&c.stats.history_lost),
            }
        });
        snapshot
    }

    /// Live connections per shard.
    pub fn connections_per_shard(&self) -> Vec<usize> {
        self.links()
            .iter()
            .map(|s| s.live.load(Ordering::Relaxed))
            .collect()
    }

    /// Closes every connection with `code` and `reason` (sanitised as RFC 6455 §7.4 requires),
    /// after what is queued for each. Returns once every close frame is written and every
    /// `close` and `disconnect` listener has run, or `Error::Timeout` after force-closing the
    /// rest at the deadline. Blocks: on a shard thread it returns `Error::OnShardThread`; use
    /// `close_all_async` there.
    pub fn close_all(&self, code: u16, reason: &str, timeout: Duration) -> Result<(), Error> {
        if on_shard_thread() {
            return Err(Error::OnShardThread);
        }
        let done = self.start_close_all(code, reason, timeout);
        // The shards force-close at the deadline; the margin covers their last teardowns.
        let give_up = Instant::now() + timeout + Duration::from_secs(5);
        let mut forced = false;
        for _ in 0..self.shard_count() {
            match done.recv_deadline(give_up) {
                Ok(f) => forced |= f,
                Err(flume::RecvTimeoutError::Disconnected) => break,
                Err(flume::RecvTimeoutError::Timeout) => return Err(Error::Timeout),
            }
        }
        close_all_result(forced)
    }

    /// `close_all` for async code, shard threads included.
    pub async fn close_all_async(
        &self,
        code: u16,
        reason: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        let done = self.start_close_all(code, reason, timeout);
        let mut forced = false;
        for _ in 0..self.shard_count() {
            match done.recv_async().await {
                Ok(f) => forced |= f,
                Err(_) => break,
            }
        }
        close_all_result(forced)
    }

    fn start_close_all(&self, code: u16, reason: &str, timeout: Duration) -> flume::Receiver<bool> {
        let frame = frame::encode_close(code, reason);
        let deadline = Instant::now() + timeout;
        let (tx, rx) = flume::unbounded();
        each_shard(self.links(), |_| ShardMsg::CloseAll {
            frame: frame.clone(),
            deadline,
            done: tx.clone(),
        });
        rx
    }

    /// Drains (new upgrades get 503, the port stays open), closes every connection with 1001
    /// "server shutting down" (force-closing after 10 s), then stops listening and stops the
    /// shards. Returns at once; `join` waits.
    pub fn shutdown(&self) {
        self.shutdown_within(Duration::from_secs(10));
    }

    /// `shutdown` with another deadline for the closes.
    pub fn shutdown_within(&self, timeout: Duration) {
        self.drain();
        let deadline = Instant::now() + timeout;
        each_shard(self.links(), |_| ShardMsg::Stop { deadline });
    }

    fn stop_now(&self) {
        self.shutdown_within(Duration::ZERO);
    }

    /// Waits until every shard has stopped (after `shutdown`). Blocks: on a shard thread it
    /// returns `Error::OnShardThread`.
    pub fn join(&self) -> Result<(), Error> {
        if on_shard_thread() {
            return Err(Error::OnShardThread);
        }
        let mut handles = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
        let mut result = Ok(());
        for (i, h) in handles.drain(..).enumerate() {
            if let Err(e) = h.join() {
                result = Err(Error::Start {
                    shard: i,
                    reason: format!("shard ended with an error: {e}"),
                });
            }
        }
        // The link goes last: the shards' final closes may still have released UUID claims.
        let link = self
            .inner
            .link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut link) = link {
            link.stop();
        }
        let events = self
            .inner
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut events) = events {
            events.stop();
        }
        result
    }
}

/// `close_all`'s answer: `Timeout` when some connection had to be force-closed.
fn close_all_result(forced: bool) -> Result<(), Error> {
    if forced {
        Err(Error::Timeout)
    } else {
        Ok(())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.inner.local_addr)
            .field("shards", &self.shard_count())
            .finish()
    }
}
