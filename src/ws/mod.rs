//! The WebSocket layer below events: RFC 6455 framing and the outbound queue. Pure code, no
//! sockets; the shard's connection task drives it.

pub mod frame;
pub mod queue;
pub mod session;
