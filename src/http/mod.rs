//! HTTP/1.1 for the WebSocket opening handshake: request-head parsing,
//! upgrade validation (RFC 6455 §4.2), route patterns and response bytes.
//!
//! Pure code over byte slices: not I/O and not a general HTTP server (no
//! bodies, no keep-alive); the connection layer reads and writes the bytes.

pub mod request;
pub mod response;
pub mod route;

pub use request::{
    check_upgrade, decode_segment, is_token, offered_extensions, offered_protocols, parse_head,
    select_protocol, HeadParse, HttpError, RequestHead, UpgradeCheck,
};
pub use response::{error_response, reason_phrase, response, switching_protocols};
pub use route::{Params, PatternError, RoutePattern, Router};
