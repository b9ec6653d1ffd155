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
//! | module | what it is |
//! |---|---|
//! | `server` | `Server::builder()`, the `Server` handle, cross-shard routing of work |
//! | `shard` | one pinned glommio executor: acceptor, slab of connections, timer heap, inbox |
//! | `shard::conn` | one connection's glue: events, listeners, registry, timers, the one teardown |
//! | `shard::io` | the connection task: handshake, then bytes between the socket and the session |
//! | `shard::socket` | the one raw socket call: a vectored, non-blocking `sendmsg` |
//! | `websocket` | the `Websocket` handle users hold |
//! | `event` | event names, `EventPayload`, attributes, the server-wide listener registry |
//! | `registry` | the UUID → connection map shared by the shards |
//! | [`limits`] | raising the open-file limit |
//! | [`units`] | durations and sizes in human units (`5s`, `64KiB`) for settings |
//! | `metrics` | per-shard traffic counters and their Prometheus rendering |
//! | [`http`] | upgrade parsing, routes with `:params` and `*`, responses (pure) |
//! | [`ws`] | RFC 6455 framing, the outbound queue policy and the per-connection protocol `Session` (pure: no sockets, no clock) |
//! | `config`, `error`, `upgrade` | `Config`, `Error`, `UpgradeRequest` / `Rejection` |
//!
//! The `corecast` binary is its own package (`bin/`, `corecast-bin`): settings, the modes, the
//! HTTP API, logging and signals, on top of this library's public API. Its dependencies (clap,
//! anyhow, toml, tracing-subscriber) are not this library's.
//!
//! Listeners run on the shard that owns the connection: a slow listener holds up that whole
//! shard, so send long work to a task (`glommio::spawn_local`) or another thread.
#![deny(missing_docs)]

mod config;
mod error;
pub mod event;
pub mod http;
pub mod limits;
mod metrics;
mod registry;
mod server;
mod shard;
pub mod units;
mod upgrade;
mod websocket;
pub mod ws;

pub use bytes::Bytes;
pub use config::{Config, RecoverHandler};
pub use error::Error;
pub use event::{Attributes, EventPayload};
pub use metrics::MetricsSnapshot;
pub use server::{Builder, Server};
pub use upgrade::{Rejection, UpgradeRequest};
pub use websocket::{MessageType, Websocket};
