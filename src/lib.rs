//! corecast: a thread-per-core io_uring WebSocket event server, a port of Fiber's
//! `websocket/event` helper (the event bus over plain WebSocket clients, not Socket.IO).
//!
//! ```no_run
//! use corecast::{event, MessageType, Server};
//!
//! let server = Server::builder()
//!     .bind("127.0.0.1:8080")
//!     .route("/ws/:id", |kws| {
//!         kws.set_attribute("user_id", kws.param("id").unwrap_or("").to_string());
//!     })
//!     .start()?;
//! server.on(event::MESSAGE, |ep| {
//!     let mut reply = b"echo: ".to_vec();
//!     reply.extend_from_slice(ep.data());
//!     ep.kws().emit(reply, MessageType::Text);
//! });
//! server.join()?;
//! # Ok::<(), corecast::Error>(())
//! ```
//!
//! # Map of the crate
//!
//! Top to bottom, one row a layer: a file imports only files of the rows below it (the one
//! exception says why). `tests/layering.rs` holds the same order and fails on an import
//! against it; `docs/architecture.md` draws it.
//!
//! | module | what it is |
//! |---|---|
//! | `server` | `Server::builder()`, the `Server` handle: start the shards, hand them work, drain, stop |
//! | `cluster::link`, `backend::nats` | cluster mode's NATS link: one thread per node, cross-node work in and out, UUID claims, heartbeats; the thread that publishes forwarded events to NATS |
//! | `cluster::streams` | cluster mode's topic history in JetStream: a stream per topic, publishing to it, a consumer per node and topic handing it to the shards with positions, recovery and the window |
//! | `shard` | one pinned glommio executor: its tasks (inbox, readiness reads and accepts, timers, flush pass) |
//! | `shard::io` | the connection task: TLS and upgrade I/O, writes that wait for room, the final linger |
//! | `shard::transport` | a connection's socket as its task holds it: bare, fresh (plain calls until it must wait), in glommio's stream, or TLS |
//! | `websocket` | the methods of the `Websocket` handle users hold |
//! | `shard::dispatch` | where work for connections goes: the caller's shard inline, other shards' bounded inboxes, other nodes |
//! | `shard::state` | one shard's state and lifecycle, and what each inbox message does |
//! | `shard::shared` | what every shard shares: routes, gate, listeners, UUID registry, topic table, links |
//! | `tls` | `TlsConfig`: certificate and key files, the rustls acceptor the shards share, reload |
//! | `shard::conn`, `shard::connections`, `shard::handle` | one layer, as their types refer to each other: a connection's glue; the slab and what a shard's connections share; `Websocket` and `EventPayload` |
//! | `handshake` | the upgrade decision: request head and server state in, the 101 or a refusal out (pure) |
//! | `upgrade` | `UpgradeRequest` / `Rejection`: what the `before_upgrade` gate sees |
//! | `backend::link` | what one shard holds of the backend: the webhook outbox and its delivery task, the NATS events queue, hook clients, calls in flight |
//! | [`runtime`] | glommio plumbing the shards and the binary's HTTP API share: ready-reporting executors, request-head reading, draining close |
//! | [`backend`] | `Backend`: where the application's backend listens, which events it gets, its hooks, and the bounds on talking to it |
//! | `backend::client` | a minimal HTTP/1.1 client on glommio: POST a JSON body to the backend, keep-alive, bounded by a timeout |
//! | `cluster::handle` | what shards and `Server` hold of the NATS link: bounded queues, claims, the node view |
//! | `shard::link` | what other threads hold of a shard: bounded inbox, live count, counters |
//! | `shard::readiness`, `shard::timers`, `shard::socket` | the epoll set of connections with bytes to read; the timer heap; `sendmsg` (short frames gathered first) and `recv` |
//! | `shard::notify`, `shard::coalescing` | a wake-up signal for one thread; when the flush pass writes: at once, or held briefly on a fan-out shard (pure) |
//! | [`topics`] | the topic-name rule (public); one shard's subscription index and the table of which shards hold each topic (the server's) |
//! | [`history`] | topic history: positions (offset, epoch), what a topic keeps, and the seam that joins a recovery to the live stream (pure) |
//! | `metrics` | per-shard counters and their Prometheus text |
//! | `backend::outbox`, `backend::wire` | one shard's webhook outbox: batches, one delivery in flight, retries with backoff; the backend's JSON: events, hook requests, verdicts (pure) |
//! | [`auth`] | client tokens (JWT) verified into an `Identity`, and the topic rules its grants follow (pure) |
//! | [`cluster`], `cluster::wire` | cluster mode's config and view; the subjects and bodies that travel (pure) |
//! | `config` | `Config`, a route's settings |
//! | `error` | `Error`, the library's one error type |
//! | [`event`], `registry`, [`units`], [`limits`] | event names and the listener registry; the UUID map; human units; the open-file limit |
//! | [`ws`] | RFC 6455 and RFC 7692 without I/O or a clock (public: the frame codec and deflate): |
//! | `ws::session` | one connection's protocol state: decoder, outbound queue, close, deadlines (the server's) |
//! | `ws::deflate` | permessage-deflate offers, and the thread's shared compressor |
//! | `ws::frame`, `ws::queue`, `ws::liveness` | the frame codec; the server's outbound queue policy; the keep-alive and liveness rules |
//! | `ws::inflate`, `ws::stamp` | the thread's shared inflater, bounded; deadlines in 8 bytes |
//! | [`http`] | the opening handshake's HTTP (pure): |
//! | `http::upgrade` | RFC 6455 §4.2.1 checks, offered subprotocols and extensions |
//! | `http::head` | request-head parsing and header access |
//! | `http::query`, `http::tokens`, `http::response`, `http::route` | query strings; token lists; response bytes; the server's routes with `:params` and `*` |
//!
//! The `corecast` binary is its own package (`bin/`, `corecast-bin`): settings, the modes, the
//! HTTP API, logging and signals, on top of this library's public API. Its dependencies (clap,
//! anyhow, toml, tracing-subscriber) are not this library's.
//!
//! # Public modules
//!
//! The server's API is at the root: [`Server`], [`Builder`], [`Websocket`], [`EventPayload`],
//! [`Config`], [`Error`] and the rest. Beside it, each public module says in its own page who it
//! is for:
//!
//! * [`event`]: event names (`event::MESSAGE`, ...) and [`Attributes`], for listeners.
//! * [`auth`]: client tokens: the [`Verifier`] a server takes (`Builder::authenticate`), the
//!   [`Identity`] a connection carries and the topic rules of its grants.
//! * [`backend`]: the application's backend: [`backend::Backend`] says where events are
//!   forwarded (a webhook, NATS) and which hooks are asked (connect, subscribe, publish,
//!   RPC); a server takes it with `Builder::backend`.
//! * [`cluster`]: cluster mode's [`ClusterConfig`] and [`ClusterView`].
//! * [`history`]: topic history's positions and recovery results (`Builder::history`,
//!   `Websocket::subscribe_from`).
//! * [`topics`]: the topic-name rule, to check a name before `subscribe` or `publish`.
//! * [`units`]: human durations and sizes (`5s`, `64KiB`), for `Config` values read from text.
//! * [`limits`]: raising the open-file limit, which a server with many connections needs.
//! * [`ws`]: the frame codec and permessage-deflate, for clients, tests and tools that talk to
//!   a server.
//! * [`http`]: the handshake's pure HTTP parsers and response bytes, for gates, proxies, fuzz
//!   targets and front ends that serve their own endpoints beside the server.
//! * [`runtime`]: the glommio plumbing of such a front end (an executor that reports ready,
//!   reading a request head, closing without losing the last answer), which the `corecast`
//!   binary's HTTP API uses.
//!
//! Everything else (shards, dispatch, the protocol session, routing) is crate-private: its
//! shapes change with the server.
//!
//! Listeners run on the shard that owns the connection: a slow listener holds up that whole
//! shard, so send long work to a task (`glommio::spawn_local`) or another thread.
#![deny(missing_docs)]

pub mod auth;
pub mod backend;
pub mod cluster;
mod config;
mod error;
pub mod event;
mod handshake;
pub mod history;
pub mod http;
pub mod limits;
mod metrics;
mod registry;
pub mod runtime;
mod server;
mod shard;
mod tls;
pub mod topics;
pub mod units;
mod upgrade;
mod websocket;
pub mod ws;

// The README's and the library guide's examples compile as written.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
struct LibraryGuideDoctests;

pub use auth::{AuthRefusal, Identity, Verifier};
pub use bytes::Bytes;
pub use cluster::{ClusterConfig, ClusterView, NodeInfo};
pub use config::{Config, Deflate, RecoverHandler};
pub use error::Error;
pub use event::Attributes;
pub use metrics::{ClusterMetrics, MetricsSnapshot};
pub use server::{Builder, Server, DEFAULT_WRITE_COALESCING};
pub use shard::handle::{EventPayload, Websocket};
pub use tls::TlsConfig;
pub use topics::{PublishReport, SlowConsumerPolicy};
pub use upgrade::{Rejection, UpgradeRequest};
pub use websocket::Catchup;
pub use ws::frame::MessageType;
