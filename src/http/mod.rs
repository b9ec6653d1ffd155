//! HTTP/1.1 for the WebSocket opening handshake: request-head parsing, upgrade validation
//! (RFC 6455 §4.2), token lists, query segments and response bytes.
//!
//! Pure code over byte slices: not I/O and not a general HTTP server (no bodies, no
//! keep-alive); the connection layer reads and writes the bytes.
//!
//! Public for code that handles the same requests outside the server: an upgrade gate or a
//! proxy in front of it that wants the server's own reading of a head, a fuzz target (the
//! ones in `fuzz/` drive `parse_head` and `check_upgrade`), or a front end serving its own
//! small HTTP endpoints beside the server (the `corecast` binary's HTTP API reads its requests
//! with `parse_head` and answers with `response`). Route matching (`/ws/:id`) is the server's
//! own: routes are given to `Builder::route` as strings.

mod head;
mod query;
mod response;
mod route;
mod tokens;
mod upgrade;

pub use head::{parse_head, HeadParse, HttpError, RequestHead, MAX_HEADERS};
pub use query::decode_segment;
pub use response::{error_response, reason_phrase, response, switching_protocols};
pub use tokens::is_token;
pub use upgrade::{
    check_upgrade, offered_extensions, offered_protocols, select_protocol, UpgradeCheck,
};

pub(crate) use route::{Params, RoutePattern, Router};
pub(crate) use tokens::split_unquoted;
