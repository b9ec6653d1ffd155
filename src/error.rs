//! The one error type of the library. Not a logging facility: errors are values, handed to
//! callers and to `error` listeners.

use std::io;

use crate::ws::frame::ProtocolError;
use crate::ws::session::SessionError;

/// Everything that can go wrong in corecast.
///
/// The variants named in the public API contract (`InvalidConnection`, `UuidDuplication`,
/// `QueueFull`, `CallbackPanic`, `Timeout`, `MessageTooLarge`, `Io`) are stable; more may be
/// added, so match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The UUID names no live connection.
    #[error("no live connection with that UUID")]
    InvalidConnection,
    /// `set_uuid` asked for a UUID that another live connection already holds.
    #[error("UUID already in use by another connection")]
    UuidDuplication,
    /// A message waited for room in a full send queue longer than the retry window and was dropped.
    #[error("send queue full: message dropped")]
    QueueFull,
    /// The shard owning the connection has a full inbox (`Builder::inbox_capacity`): it is this
    /// far behind, and the message was refused rather than queued without bound.
    #[error("the connection's shard is too far behind: message refused")]
    InboxFull,
    /// The route callback panicked; the connection was closed (the panic message is logged).
    #[error("route callback panicked")]
    CallbackPanic,
    /// `close_all` reached its deadline and force-closed the connections left.
    #[error("deadline passed: connections were force-closed")]
    Timeout,
    /// The peer sent a frame or message above `max_message_size` (closed with 1009).
    #[error("message larger than max_message_size")]
    MessageTooLarge,
    /// Nothing was read from the peer for `read_idle_timeout` (not even a pong).
    #[error("no frame from the peer for {0:?}")]
    IdleTimeout(std::time::Duration),
    /// A write made no progress, or the send queue stayed full, for `write_timeout`.
    #[error("peer not reading: write stalled for {0:?}")]
    WriteTimeout(std::time::Duration),
    /// The peer broke RFC 6455: closed with 1002, or 1007 for text that is not UTF-8. (A frame
    /// or message over the limit is `MessageTooLarge`.)
    #[error("{0}")]
    Protocol(ProtocolError),
    /// The peer kept pinging without reading the pongs (more than
    /// `ws::session::MAX_UNANSWERED_PINGS` unanswered); its socket was dropped.
    #[error("peer sent pings faster than it read the pongs")]
    PingFlood,
    /// The peer closed with a code other than 1000 or 1001, or with no code.
    #[error("peer closed the connection with code {code:?}: {reason}")]
    PeerClosed {
        /// The close code the peer sent; `None` for an empty close frame (1005).
        code: Option<u16>,
        /// The close reason the peer sent.
        reason: String,
    },
    /// A socket error, including end of stream without a close frame.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A builder or config value that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A shard could not start (io_uring unavailable, memlock limit too low, address in use, ...).
    #[error("shard {shard} failed to start: {reason}")]
    Start {
        /// The shard number.
        shard: usize,
        /// What went wrong, with a hint on how to fix it.
        reason: String,
    },
    /// An executor (a glommio thread) could not start, or did not report ready in time.
    #[error("executor failed to start: {0}")]
    Executor(String),
    /// A topic name that is empty or longer than `topics::MAX_TOPIC_LEN` (256) bytes.
    #[error("invalid topic name: empty or over 256 bytes")]
    InvalidTopic,
    /// The connection already holds `Config::max_topics` subscriptions.
    #[error("too many topics: the connection is at its subscription limit")]
    TooManyTopics,
    /// Cluster mode: NATS could not be reached, or a cross-node request failed.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A token presented on an open connection (`Websocket::refresh_token`) was refused: the
    /// reason is `AuthRefusal::reason`'s (`token expired`, `bad token signature`, ...), or
    /// `the token is for another user` (the connection is then closed with 1008).
    #[error("{0}")]
    Token(&'static str),
    /// The peer sent a message past its route's `Config::client_message_rate`: it was not
    /// delivered (the `error` event carries it). One refusal too many closes the connection
    /// with 1008 "rate limit".
    #[error("rate limit: message not delivered")]
    RateLimited,
    /// A blocking call was made on a shard thread, where it would stall every connection of that
    /// shard; use the `async` twin instead.
    #[error("blocking call on a shard thread: use the async variant")]
    OnShardThread,
    /// A hook was not asked: this shard already has `Backend::max_in_flight` calls waiting for
    /// the backend. Try again later.
    #[error("backend busy")]
    BackendBusy,
    /// A hook call failed: the backend could not be reached, did not answer within
    /// `Backend::timeout`, answered with a status other than 200, or with a body that is not
    /// the hook's JSON. The reason is for logs; clients are told "backend unavailable".
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// Publications of `topic` meant for this connection were dropped by the topic's
    /// slow-consumer policy (`Builder::slow_consumers`): its send queue was full. The
    /// connection stays open; fired as an `error` event with the topic as data.
    #[error("{dropped} publication(s) of topic {topic:?} dropped: the send queue was full")]
    Dropped {
        /// The topic.
        topic: String,
        /// How many were dropped.
        dropped: u64,
    },
    /// `Websocket::subscribe_from` on a topic that keeps no history (`Builder::history`).
    #[error("this topic keeps no history")]
    NoHistory,
    /// The hook asked is not configured (`Backend::hook`).
    #[error("no {0} hook is configured")]
    NoHook(&'static str),
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::TooLarge { .. } => Error::MessageTooLarge,
            e => Error::Protocol(e),
        }
    }
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::PeerClosed { code, reason } => Error::PeerClosed { code, reason },
            SessionError::Io(e) => Error::Io(e),
            SessionError::IdleTimeout(d) => Error::IdleTimeout(d),
            SessionError::WriteTimeout(d) => Error::WriteTimeout(d),
            SessionError::Protocol(e) => e.into(),
            SessionError::PingFlood => Error::PingFlood,
            // The one failure of the server's side that ends a session: its route callback
            // panicked.
            SessionError::Failed => Error::CallbackPanic,
            // Forced at the deadline of `close_all` or a shutdown.
            SessionError::Forced => Error::Timeout,
        }
    }
}

impl Error {
    /// True for an idle read timeout, a write timeout and a `close_all` deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Timeout | Error::IdleTimeout(_) | Error::WriteTimeout(_)
        )
    }
}
