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
//! Top to bottom; each file imports only files below it (`docs/architecture.md`).
//!
//! | module | what it is |
//! |---|---|
//! | `server` | `Server::builder()`, the `Server` handle: start the shards, hand them work, drain, stop |
//! | `nats` | cluster mode's NATS link: one thread per node, cross-node work in and out, UUID claims, heartbeats |
//! | `shard` | one pinned glommio executor: its tasks (inbox, acceptor, timers, flush pass) |
//! | `shard::io` | the connection task: handshake, writes that wait for room, the final linger |
//! | `shard::readiness` | one epoll set per shard: which open connections have bytes to read |
//! | `websocket` | the methods of the `Websocket` handle users hold |
//! | `shard::state` | one shard's state and lifecycle, and what each inbox message does |
//! | `shard::mesh` | what every shard shares: routes, gate, listeners, UUID registry, links |
//! | `shard::conn` | the connections: their glue, the slab and shared services, `Websocket` and `EventPayload` |
//! | `upgrade` | `UpgradeRequest` / `Rejection`: what the `before_upgrade` gate sees |
//! | `tls` | `TlsConfig`: certificate and key files, the rustls acceptor the shards share, reload |
//! | `shard::link` | what other threads hold of a shard: inbox, live count, counters |
//! | `shard::{timers, notify, socket}` | the timer heap, a wake-up signal, the one raw `sendmsg` |
//! | [`ws`] | RFC 6455 framing, permessage-deflate (RFC 7692), the outbound queue policy and the per-connection protocol `Session` (pure: no sockets, no clock) |
//! | [`http`] | upgrade parsing, routes with `:params` and `*`, responses (pure) |
//! | [`cluster`] | cluster mode's config and view; what shards hand the NATS link (`handle`) and what travels (`wire`) |
//! | [`topics`] | topic names, one shard's subscription index, the table of which shards hold each topic |
//! | [`event`], `registry`, `metrics` | event names and listener registry, the UUID map, per-shard counters |
//! | [`runtime`] | glommio plumbing the shards and the binary's HTTP API share: ready-reporting executors, request-head reading, draining close |
//! | `config`, `error`, [`units`], [`limits`] | `Config`, `Error`, human units, the open-file limit |
//!
//! The `corecast` binary is its own package (`bin/`, `corecast-bin`): settings, the modes, the
//! HTTP API, logging and signals, on top of this library's public API. Its dependencies (clap,
//! anyhow, toml, tracing-subscriber) are not this library's.
//!
//! Listeners run on the shard that owns the connection: a slow listener holds up that whole
//! shard, so send long work to a task (`glommio::spawn_local`) or another thread.
#![deny(missing_docs)]

pub mod cluster;
mod config;
mod error;
pub mod event;
mod handshake;
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

pub use bytes::Bytes;
pub use cluster::{ClusterConfig, ClusterView, NodeInfo};
pub use config::{Config, Deflate, RecoverHandler};
pub use error::Error;
pub use event::Attributes;
pub use metrics::{ClusterMetrics, MetricsSnapshot};
pub use server::{Builder, Server};
pub use shard::conn::{EventPayload, Websocket};
pub use tls::TlsConfig;
pub use upgrade::{Rejection, UpgradeRequest};
pub use ws::frame::MessageType;
