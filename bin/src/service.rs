//! What the standalone server does with client messages: the `--mode` behaviours (echo, relay,
//! shootout, pubsub, push), as listeners on a `Server`. Not the pubsub protocol itself
//! (`pubsub.rs`), the transport, or the HTTP API.

use std::fmt;
use std::str::FromStr;

use corecast::{event, EventPayload, MessageType, Server};

use crate::pubsub;

/// How client messages are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send each message back unchanged, same type (the Autobahn testee).
    Echo,
    /// Send each message to every connection, the sender included.
    Relay,
    /// The hashrocket websocket-shootout JSON protocol.
    Shootout,
    /// Topics: `?topics=a,b` at upgrade, then `{"subscribe":..}` (with `"since"` or
    /// `"positions"` on a topic with history), `{"unsubscribe":..}`,
    /// `{"publish":..,"data":..}` and `{"rpc":..}` text frames (see `pubsub.rs`); with
    /// tokens, also `{"refresh":"<jwt>"}`, and the `{"expiring":<seconds>}` notice. The
    /// backend's subscribe, publish and RPC hooks are asked on the way.
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
            Mode::Pubsub => pubsub::install(server),
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
