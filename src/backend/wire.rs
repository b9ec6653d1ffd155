//! The JSON the backend receives and answers (pure): forwarded events, the bodies of hook calls
//! and what their answers mean. Not the transport (`backend::client`) nor who waits for the
//! answers (`backend::hooks`). docs/backend.md is the schema, with examples.

use std::fmt;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::Identity;

/// The kinds of event the server can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A connection opened (after its route callback).
    Connect,
    /// A connection was torn down.
    Disconnect,
    /// A client sent a data message.
    Message,
    /// A connection joined a topic.
    Subscribe,
    /// A connection left a topic (not the implicit leaving at teardown).
    Unsubscribe,
}

impl EventKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [EventKind; 5] = [
        EventKind::Connect,
        EventKind::Disconnect,
        EventKind::Message,
        EventKind::Subscribe,
        EventKind::Unsubscribe,
    ];

    /// The event's `type`, and its NATS subject's last token.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Disconnect => "disconnect",
            EventKind::Message => "message",
            EventKind::Subscribe => "subscribe",
            EventKind::Unsubscribe => "unsubscribe",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of event kinds: which ones go to a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    /// No events.
    pub const NONE: EventSet = EventSet(0);
    /// Every kind.
    pub const ALL: EventSet = EventSet(0b1_1111);

    /// Reads a comma-separated list of kinds (`message,connect`), or `all`.
    pub fn parse(list: &str) -> Result<EventSet, String> {
        let mut set = EventSet::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                return Ok(EventSet::ALL);
            }
            let kind = EventKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown event {name:?}: expected connect, disconnect, message, \
                         subscribe, unsubscribe or all"
                    )
                })?;
            set = set.with(kind);
        }
        Ok(set)
    }

    /// The kinds in either set.
    pub fn union(self, other: EventSet) -> EventSet {
        EventSet(self.0 | other.0)
    }

    /// This set and `kind`.
    pub fn with(self, kind: EventKind) -> EventSet {
        EventSet(self.0 | kind.bit())
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for EventSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = EventKind::ALL
            .into_iter()
            .filter(|k| self.contains(*k))
            .map(EventKind::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Which connection an event or a hook call is about.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub uuid: &'a str,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The request path of the upgrade.
    pub path: &'a str,
}

/// A JSON object written field by field, in the order the docs show them (serde_json's `Map`
/// would sort the keys), without building a `Value` first: one of these is written per
/// forwarded message.
struct Object(Vec<u8>);

impl Object {
    fn new() -> Object {
        Object(b"{".to_vec())
    }

    fn field(mut self, key: &str, value: impl serde::Serialize) -> Object {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        // Strings, numbers, options and `Value`s always serialise into a `Vec`.
        let _ = serde_json::to_writer(&mut self.0, key);
        self.0.push(b':');
        let _ = serde_json::to_writer(&mut self.0, &value);
        self
    }

    fn origin(self, origin: Origin<'_>) -> Object {
        self.field("uuid", origin.uuid)
            .field("user", origin.user)
            .field("path", origin.path)
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

/// What one event says beyond its origin.
#[derive(Debug, Clone, Copy)]
pub enum EventBody<'a> {
    Connect {
        remote: &'a str,
    },
    Disconnect {
        /// The close code the connection ended with, when there was a close frame.
        code: Option<u16>,
        /// `clean`, or what ended it (`idle_timeout`, `write_timeout`, `peer_closed`, ...).
        cause: &'a str,
    },
    Message {
        data: &'a [u8],
        binary: bool,
    },
    Subscribe {
        topic: &'a str,
    },
    Unsubscribe {
        topic: &'a str,
    },
}

impl EventBody<'_> {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Connect { .. } => EventKind::Connect,
            EventBody::Disconnect { .. } => EventKind::Disconnect,
            EventBody::Message { .. } => EventKind::Message,
            EventBody::Subscribe { .. } => EventKind::Subscribe,
            EventBody::Unsubscribe { .. } => EventKind::Unsubscribe,
        }
    }
}

/// One event as the backend receives it: a JSON object with a unique `id` (for the backend
/// to drop a retried delivery it already has), its `type`, the time in milliseconds since the
/// epoch, the connection, and the kind's own fields. A text message's payload travels as
/// `text`, a binary one (or text that is not UTF-8) as `binary`, base64.
pub fn event_json(id: &str, time_ms: u64, origin: Origin<'_>, body: EventBody<'_>) -> Vec<u8> {
    let o = Object::new()
        .field("id", id)
        .field("type", body.kind().name())
        .field("time", time_ms)
        .origin(origin);
    match body {
        EventBody::Connect { remote } => o.field("remote", remote),
        EventBody::Disconnect { code, cause } => o.field("code", code).field("cause", cause),
        EventBody::Message { data, binary } => match (binary, std::str::from_utf8(data)) {
            (false, Ok(text)) => o.field("text", text),
            _ => o.field(
                "binary",
                base64::engine::general_purpose::STANDARD.encode(data),
            ),
        },
        EventBody::Subscribe { topic } | EventBody::Unsubscribe { topic } => {
            o.field("topic", topic)
        }
    }
    .finish()
}

/// A webhook delivery: `{"events":[...]}`, the events as they were serialised.
pub fn batch_json<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = b"{\"events\":[".to_vec();
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    body
}

// ---- hooks -------------------------------------------------------------------------------

/// The connect hook's request: the upgrade as the client sent it (every header, names in
/// lower case; the token's user when a token was verified first).
pub fn connect_request(
    path: &str,
    query: &str,
    remote: &str,
    headers: &[(&str, &str)],
    user: Option<&str>,
) -> Vec<u8> {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), Value::from(*v)))
        .collect();
    Object::new()
        .field("path", path)
        .field("query", query)
        .field("remote", remote)
        .field("headers", headers)
        .field("user", user)
        .finish()
}

/// A subscribe hook's request.
pub fn subscribe_request(origin: Origin<'_>, topic: &str) -> Vec<u8> {
    Object::new().origin(origin).field("topic", topic).finish()
}

/// A publish hook's request: the data as the client sent it.
pub fn publish_request(origin: Origin<'_>, topic: &str, data: &str) -> Vec<u8> {
    Object::new()
        .origin(origin)
        .field("topic", topic)
        .field("data", data)
        .finish()
}

/// An RPC hook's request: the method and the client's data, any JSON.
pub fn rpc_request(origin: Origin<'_>, method: &str, data: &Value) -> Vec<u8> {
    Object::new()
        .origin(origin)
        .field("method", method)
        .field("data", data)
        .finish()
}

/// The backend's verdict on a connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectVerdict {
    /// Let it in: as this identity, or (`None`) as the token said, or anonymous.
    Allow(Option<Identity>),
    /// Refuse the upgrade with this status (400–599) and reason.
    Refuse { status: u16, reason: String },
}

/// The backend's verdict on a subscribe, publish or RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; for a publish, `Some` replaces the data; for an RPC, it is the answer.
    Allow(Option<Value>),
    /// Refuse, with the reason the client is told.
    Refuse(String),
}

/// Why an answer could not be read: the backend is treated as failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAnswer(pub String);

impl fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable answer from the backend: {}", self.0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectAnswer {
    user: Option<String>,
    expires: Option<u64>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    error: Option<String>,
    status: Option<u16>,
}

/// Reads the connect hook's answer: `{"error":"...","status":403}` refuses (status 403 when
/// not given or not an error status); `{"user":"alice","subscribe":[..],"publish":[..],
/// "expires":<unix s>}` lets the client in as that user; `{}` lets it in as it came.
pub fn connect_verdict(body: &[u8]) -> Result<ConnectVerdict, BadAnswer> {
    let answer: ConnectAnswer =
        serde_json::from_slice(body).map_err(|e| BadAnswer(e.to_string()))?;
    if let Some(reason) = answer.error {
        let status = answer
            .status
            .filter(|s| (400..600).contains(s))
            .unwrap_or(403);
        return Ok(ConnectVerdict::Refuse { status, reason });
    }
    let identity = match answer.user {
        Some(user) if user.is_empty() => {
            return Err(BadAnswer("\"user\" must not be empty".into()))
        }
        Some(user) => Some(Identity {
            user,
            expires: answer.expires,
            subscribe: answer.subscribe,
            publish: answer.publish,
        }),
        None => None,
    };
    Ok(ConnectVerdict::Allow(identity))
}

/// Reads a subscribe, publish or RPC answer: `{"error":"reason"}` refuses; otherwise the
/// answer's `data` (absent: `None`) goes with the allowance.
pub fn verdict(body: &[u8]) -> Result<Verdict, BadAnswer> {
    let Value::Object(mut answer) =
        serde_json::from_slice(body).map_err(|e| BadAnswer(e.to_string()))?
    else {
        return Err(BadAnswer("expected a JSON object".into()));
    };
    match answer.remove("error") {
        Some(Value::String(reason)) => return Ok(Verdict::Refuse(reason)),
        Some(Value::Null) | None => {}
        Some(_) => return Err(BadAnswer("\"error\" must be a string".into())),
    }
    Ok(Verdict::Allow(answer.remove("data")))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
