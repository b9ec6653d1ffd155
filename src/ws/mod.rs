//! The WebSocket layer below events: RFC 6455 framing, permessage-deflate (RFC 7692) and the
//! outbound queue. Pure code, no sockets; the shard's connection task drives it.
//!
//! Public: the frame codec (`frame`) and permessage-deflate (`deflate`, `inflate`), for code
//! that speaks WebSocket to a corecast server from the other side: clients, tests, load
//! generators, benchmarks and fuzz targets (the ones in `loadtest/`, `bench/` and `fuzz/` use
//! them). `MessageType` is re-exported at the root for the server's API. The protocol session
//! and the outbound queue (`session`, `queue`) are the server's engine, crate-private; `stamp`
//! is the 8-byte time they and the shard keep their deadlines in.

pub mod deflate;
pub mod frame;
pub mod inflate;
pub(crate) mod liveness;
pub(crate) mod queue;
pub(crate) mod session;
pub(crate) mod stamp;
