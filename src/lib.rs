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
//! | `shard::conn` | one connection's state: events, queue, deadlines, the one teardown |
//! | `shard::io` | the connection task: handshake, vectored writes, reads into a shared buffer |
//! | `websocket` | the `Websocket` handle users hold |
//! | `event` | event names, `EventPayload`, attributes, the server-wide listener registry |
//! | `registry` | the UUID → connection map shared by the shards |
//! | [`limits`] | raising the open-file limit |
//! | [`units`] | durations and sizes in human units (`5s`, `64KiB`) for settings |
//! | `metrics` | per-shard traffic counters and their Prometheus rendering |
//! | [`service`] | the standalone server's modes: echo, relay, shootout, push |
//! | [`api`] | the HTTP API backends push through, `/metrics`, `/healthz` |
//! | [`http`] | upgrade parsing, routes with `:params` and `*`, responses (pure) |
//! | [`ws`] | RFC 6455 framing and the outbound queue policy (pure) |
//! | `config`, `error`, `upgrade` | `Config`, `Error`, `UpgradeRequest` / `Rejection` |
//!
//! The `corecast` binary (`src/main.rs`, settings in `src/cli/`) only reads settings, sets up
//! logging and signals, and starts these.
//!
//! Listeners run on the shard that owns the connection: a slow listener holds up that whole
//! shard, so send long work to a task (`glommio::spawn_local`) or another thread.
#![deny(missing_docs)]

pub mod api;
mod config;
mod error;
pub mod event;
pub mod http;
pub mod limits;
mod metrics;
mod registry;
mod server;
pub mod service;
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
