//! HTTP/1.1 for the WebSocket opening handshake: request-head parsing,
//! upgrade validation (RFC 6455 §4.2), route patterns and response bytes.
//!
//! Pure code over byte slices: not I/O and not a general HTTP server (no
//! bodies, no keep-alive); the connection layer reads and writes the bytes.

mod head;
mod query;
pub mod response;
pub mod route;
mod tokens;
mod upgrade;

pub use head::{parse_head, HeadParse, HttpError, RequestHead};
pub use query::decode_segment;
pub use response::{error_response, reason_phrase, response, switching_protocols};
pub use route::{Params, PatternError, RoutePattern, Router};
pub use tokens::is_token;
pub use upgrade::{
    check_upgrade, offered_extensions, offered_protocols, select_protocol, UpgradeCheck,
};

/// The request-head, query, token-list and upgrade items together under one path,
/// `http::request::...`.
pub mod request {
    pub use super::head::{parse_head, HeadParse, HttpError, RequestHead, MAX_HEADERS};
    pub use super::query::decode_segment;
    pub use super::tokens::{is_token, split_unquoted};
    pub use super::upgrade::{
        check_upgrade, offered_extensions, offered_protocols, select_protocol, UpgradeCheck,
    };
}
