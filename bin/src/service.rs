//! What the standalone server does with client messages: the `--mode` behaviours (echo, relay,
//! shootout, pubsub, push), as listeners on a `Server`. Not the transport, and not the HTTP API.

use std::fmt;
use std::str::FromStr;

use corecast::{event, Error, EventPayload, MessageType, Server, Websocket};

/// How client messages are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send each message back unchanged, same type (the Autobahn testee).
    Echo,
    /// Send each message to every connection, the sender included.
    Relay,
    /// The hashrocket websocket-shootout JSON protocol.
    Shootout,
    /// Topics: `?topics=a,b` at upgrade, then `{"subscribe":..}`, `{"unsubscribe":..}` and
    /// `{"publish":..,"data":..}` text frames (see `pubsub_request`); with tokens, also
    /// `{"refresh":"<jwt>"}`, and the `{"expiring":<seconds>}` notice.
    Pubsub,
    /// Ignore client messages: only the server's API sends.
    Push,
}

impl Mode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Mode; 5] = [
        Mode::Echo,
        Mode::Relay,
        Mode::Shootout,
        Mode::Pubsub,
        Mode::Push,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Relay => "relay",
            Mode::Shootout => "shootout",
            Mode::Pubsub => "pubsub",
            Mode::Push => "push",
        }
    }

    /// Registers the `message` listener that implements the mode.
    pub fn install(self, server: &Server) {
        match self {
            Mode::Echo => server.on(event::MESSAGE, |ep| {
                ep.kws().emit(ep.data().clone(), ep.message_type());
            }),
            Mode::Relay => server.on(event::MESSAGE, |ep| {
                ep.kws()
                    .broadcast(ep.data().clone(), false, ep.message_type());
            }),
            Mode::Shootout => server.on(event::MESSAGE, shootout),
            Mode::Pubsub => {
                server.on(event::CONNECT, subscribe_from_query);
                server.on(event::MESSAGE, pubsub);
                server.on(event::TOKEN_EXPIRING, tell_expiring);
                server.on(event::ERROR, answer_rate_limited);
            }
            Mode::Push => {}
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("unknown mode {s:?}: expected echo, relay, shootout, pubsub or push")
            })
    }
}

/// What a shootout message asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum ShootoutReply {
    /// Send the message back as it came.
    Echo,
    /// Send the message to everyone, then this result to the sender.
    Broadcast { result: Vec<u8> },
    /// Not a shootout message: ignored.
    Ignore,
}

/// Decides a shootout message: `{"type":"echo",..}` or `{"type":"broadcast","payload":..}`.
pub(crate) fn shootout_reply(data: &[u8]) -> ShootoutReply {
    let Ok(serde_json::Value::Object(mut msg)) = serde_json::from_slice(data) else {
        return ShootoutReply::Ignore;
    };
    match msg.get("type").and_then(|t| t.as_str()) {
        Some("echo") => ShootoutReply::Echo,
        Some("broadcast") => {
            let payload = msg.remove("payload").unwrap_or(serde_json::Value::Null);
            let result = serde_json::json!({ "type": "broadcastResult", "payload": payload });
            ShootoutReply::Broadcast {
                result: result.to_string().into_bytes(),
            }
        }
        _ => ShootoutReply::Ignore,
    }
}

fn shootout(ep: &EventPayload) {
    match shootout_reply(ep.data()) {
        ShootoutReply::Echo => ep.kws().emit(ep.data().clone(), MessageType::Text),
        // The request already has the broadcast's exact shape, so its bytes go out unchanged.
        ShootoutReply::Broadcast { result } => {
            ep.kws()
                .broadcast(ep.data().clone(), false, MessageType::Text);
            ep.kws().emit(result, MessageType::Text);
        }
        ShootoutReply::Ignore => {}
    }
}

/// What a pubsub client frame asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum PubsubRequest {
    Subscribe(String),
    Unsubscribe(String),
    /// Publish `data` to the topic's other subscribers: a JSON string goes out as its text, any
    /// other JSON value as its JSON text.
    Publish {
        topic: String,
        data: String,
    },
    /// A fresh token for this connection (docs/security.md, "Expiry and refresh").
    Refresh(String),
}

/// Reads one pubsub client frame; the error is the message of the error frame sent back.
pub(crate) fn pubsub_request(data: &[u8]) -> Result<PubsubRequest, String> {
    let Ok(serde_json::Value::Object(mut msg)) = serde_json::from_slice(data) else {
        return Err("expected a JSON object".into());
    };
    let mut topic = |key: &str| match msg.remove(key) {
        Some(serde_json::Value::String(t)) => Ok(Some(t)),
        Some(_) => Err(format!("\"{key}\" must be a string")),
        None => Ok(None),
    };
    if let Some(t) = topic("subscribe")? {
        return Ok(PubsubRequest::Subscribe(t));
    }
    if let Some(t) = topic("unsubscribe")? {
        return Ok(PubsubRequest::Unsubscribe(t));
    }
    if let Some(t) = topic("publish")? {
        let data = match msg.remove("data") {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => return Err("\"publish\" needs \"data\"".into()),
        };
        return Ok(PubsubRequest::Publish { topic: t, data });
    }
    if let Some(jwt) = topic("refresh")? {
        return Ok(PubsubRequest::Refresh(jwt));
    }
    Err("expected \"subscribe\", \"unsubscribe\", \"publish\" or \"refresh\"".into())
}

/// A JSON text frame: `{"<key>":"<topic>"}`, plus `"error"` when there is one.
fn pubsub_reply(key: &str, topic: &str, error: Option<&str>) -> String {
    // Written directly: one of these goes out per subscription, often thousands at once.
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match error {
        None => format!(r#"{{"{key}":{}}}"#, quoted(topic)),
        Some(e) => format!(r#"{{"error":{},"{key}":{}}}"#, quoted(e), quoted(topic)),
    }
}

/// The answer to a client that asks for a topic outside its token's grants.
const NOT_PERMITTED: &str = "not permitted";

/// With authentication, every connection of a user joins the user-limited topic
/// `user#<user>` when it opens, so a backend reaches all of them with one publish
/// (docs/security.md, "Users and connections").
pub fn join_user_topic(server: &Server) {
    server.on(event::CONNECT, |ep| {
        let kws = ep.kws();
        if let Some(user) = kws.user() {
            if let Err(e) = kws.subscribe(format!("user#{user}")) {
                tracing::debug!(error = %e, "connection not subscribed to its user topic");
            }
        }
    });
}

/// Subscribes to `topic` and says so, or says why not. A client with a token may subscribe
/// only where its grants let it (`Identity::may_subscribe`).
fn subscribe_and_answer(kws: &Websocket, topic: &str) {
    if kws.identity().is_some_and(|id| !id.may_subscribe(topic)) {
        let reply = pubsub_reply("subscribe", topic, Some(NOT_PERMITTED));
        kws.emit(reply, MessageType::Text);
        return;
    }
    let reply = match kws.subscribe(topic) {
        Ok(_) => pubsub_reply("subscribed", topic, None),
        Err(e) => pubsub_reply("subscribe", topic, Some(&e.to_string())),
    };
    kws.emit(reply, MessageType::Text);
}

/// `?topics=a,b` on the upgrade: one subscription per name, each answered like a frame's.
fn subscribe_from_query(ep: &EventPayload) {
    let kws = ep.kws();
    if let Some(list) = kws.query("topics") {
        for topic in list.split(',').filter(|t| !t.is_empty()) {
            subscribe_and_answer(kws, topic);
        }
    }
}

/// The answer to `{"refresh":"<jwt>"}`: `{"refreshed":true}`, or `{"refresh":null,"error":..}`
/// (the token is not sent back). A token for another user closes the connection with 1008
/// instead.
fn refresh_and_answer(kws: &Websocket, jwt: &str) {
    let result = match kws.user() {
        None => Err("tokens are not in use".to_string()),
        Some(_) => kws.refresh_token(jwt).map_err(|e| e.to_string()),
    };
    let reply = match result {
        Ok(()) => serde_json::json!({ "refreshed": true }),
        Err(e) => serde_json::json!({ "refresh": null, "error": e }),
    };
    kws.emit(reply.to_string(), MessageType::Text);
}

/// The connection's token expired: `{"expiring":<seconds left>}`, the time the client has to
/// send `{"refresh":"<jwt>"}` before it is closed with 1008.
fn tell_expiring(ep: &EventPayload) {
    let left: u64 = std::str::from_utf8(ep.data())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let notice = serde_json::json!({ "expiring": left });
    ep.kws().emit(notice.to_string(), MessageType::Text);
}

/// The answer to a request past the client's `--client-message-rate`, which was not acted on:
/// `{"publish":"t","error":"rate limit"}` for a publish, and the same form for a subscribe or
/// an unsubscribe; `{"error":"rate limit"}` for anything else. (A client refused once too often
/// is being closed with 1008, and gets no answer.)
fn answer_rate_limited(ep: &EventPayload) {
    // Not alive: refused once too often, and already closing.
    if !matches!(ep.error(), Some(Error::RateLimited)) || !ep.kws().is_alive() {
        return;
    }
    let reply = match pubsub_request(ep.data()) {
        Ok(PubsubRequest::Publish { topic, .. }) => {
            pubsub_reply("publish", &topic, Some(RATE_LIMIT))
        }
        Ok(PubsubRequest::Subscribe(topic)) => pubsub_reply("subscribe", &topic, Some(RATE_LIMIT)),
        Ok(PubsubRequest::Unsubscribe(topic)) => {
            pubsub_reply("unsubscribe", &topic, Some(RATE_LIMIT))
        }
        _ => serde_json::json!({ "error": RATE_LIMIT }).to_string(),
    };
    ep.kws().emit(reply, MessageType::Text);
}

/// The error of a request refused by the rate limit.
const RATE_LIMIT: &str = "rate limit";

fn pubsub(ep: &EventPayload) {
    let kws = ep.kws();
    let request = if ep.message_type() == MessageType::Text {
        pubsub_request(ep.data())
    } else {
        Err("expected a JSON text frame".into())
    };
    match request {
        Ok(PubsubRequest::Subscribe(topic)) => subscribe_and_answer(kws, &topic),
        Ok(PubsubRequest::Unsubscribe(topic)) => {
            let was = kws.unsubscribe(&topic);
            let error = (!was).then_some("not subscribed");
            kws.emit(
                pubsub_reply("unsubscribed", &topic, error),
                MessageType::Text,
            );
        }
        Ok(PubsubRequest::Publish { topic, .. })
            if kws.identity().is_some_and(|id| !id.may_publish(&topic)) =>
        {
            kws.emit(
                pubsub_reply("publish", &topic, Some(NOT_PERMITTED)),
                MessageType::Text,
            )
        }
        Ok(PubsubRequest::Publish { topic, data }) => kws.publish(&topic, data, MessageType::Text),
        Ok(PubsubRequest::Refresh(jwt)) => refresh_and_answer(kws, &jwt),
        Err(e) => kws.emit(
            serde_json::json!({ "error": e }).to_string(),
            MessageType::Text,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
        }
        assert!("chat"
            .parse::<Mode>()
            .unwrap_err()
            .contains("unknown mode \"chat\""));
    }

    #[test]
    fn pubsub_frames() {
        use PubsubRequest::*;
        assert_eq!(
            pubsub_request(br#"{"subscribe":"a"}"#),
            Ok(Subscribe("a".into()))
        );
        assert_eq!(
            pubsub_request(br#"{"unsubscribe":"b"}"#),
            Ok(Unsubscribe("b".into()))
        );
        assert_eq!(
            pubsub_request(br#"{"publish":"a","data":"hi"}"#),
            Ok(Publish {
                topic: "a".into(),
                data: "hi".into()
            })
        );
        assert_eq!(
            pubsub_request(br#"{"publish":"a","data":{"x":[1,2]}}"#),
            Ok(Publish {
                topic: "a".into(),
                data: r#"{"x":[1,2]}"#.into()
            })
        );
        assert!(pubsub_request(br#"{"publish":"a"}"#)
            .unwrap_err()
            .contains("data"));
        assert_eq!(
            pubsub_request(br#"{"refresh":"a.b.c"}"#),
            Ok(Refresh("a.b.c".into()))
        );
        assert!(pubsub_request(br#"{"refresh":null}"#)
            .unwrap_err()
            .contains("string"));
        assert!(pubsub_request(br#"{"subscribe":3}"#)
            .unwrap_err()
            .contains("string"));
        assert!(pubsub_request(b"{").unwrap_err().contains("JSON object"));
        assert!(pubsub_request(br#"{"other":1}"#)
            .unwrap_err()
            .contains("expected"));
        assert_eq!(
            pubsub_reply("subscribe", "a\"b", Some("too many topics")),
            r#"{"error":"too many topics","subscribe":"a\"b"}"#
        );
    }

    #[test]
    fn shootout_messages() {
        assert_eq!(
            shootout_reply(br#"{"type":"echo","payload":{"t":1}}"#),
            ShootoutReply::Echo
        );
        assert_eq!(
            shootout_reply(br#"{"type":"broadcast","payload":{"sendTime":"x"}}"#),
            ShootoutReply::Broadcast {
                result: br#"{"payload":{"sendTime":"x"},"type":"broadcastResult"}"#.to_vec()
            }
        );
        assert_eq!(shootout_reply(b"not json"), ShootoutReply::Ignore);
        assert_eq!(
            shootout_reply(br#"{"type":"other"}"#),
            ShootoutReply::Ignore
        );
        assert_eq!(shootout_reply(br#"[1,2]"#), ShootoutReply::Ignore);
    }
}
