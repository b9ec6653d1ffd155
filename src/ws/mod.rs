//! The WebSocket layer below events: RFC 6455 framing, permessage-deflate (RFC 7692) and the
//! outbound queue. Pure code, no sockets; the shard's connection task drives it.

pub mod deflate;
pub mod frame;
pub mod inflate;
pub mod queue;
pub mod session;
