//! What the recovery scenario's clients and publisher send and read, in the two protocols it
//! speaks: corecast's `--mode pubsub` JSON (subscribe with positions or `since`, the answers,
//! the position envelope) and Socket.IO's (Engine.IO v4 packets, events, the connect packet
//! that carries a session id and offset for connection-state recovery). Pure parsing and
//! formatting; no sockets, no accounting.

use serde::Deserialize;

/// The name of topic `k`: `rec.<k>` (start corecast with `--history 'rec.*=SIZE/TTL'`).
pub fn topic_name(k: usize) -> String {
    format!("rec.{k}")
}

/// The index of a topic named by `topic_name`.
pub fn topic_index(name: &str) -> Option<usize> {
    name.strip_prefix("rec.")?.parse().ok()
}

/// A position in a topic's history, as corecast gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    /// 8 hex digits; `None` before the topic's first publication.
    pub epoch: Option<String>,
}

/// corecast: `{"subscribe":"<topic>","positions":true}`.
pub fn subscribe_fresh(topic: &str) -> Vec<u8> {
    format!(r#"{{"subscribe":"{topic}","positions":true}}"#).into_bytes()
}

/// corecast: `{"subscribe":"<topic>","since":{"offset":N,"epoch":"e"}}` (`null` epoch before
/// any publication, which the server answers "epoch changed").
pub fn subscribe_since(topic: &str, since: &Position) -> Vec<u8> {
    let epoch = match &since.epoch {
        Some(e) => format!(r#""{e}""#),
        None => "null".into(),
    };
    format!(
        r#"{{"subscribe":"{topic}","since":{{"offset":{},"epoch":{epoch}}}}}"#,
        since.offset
    )
    .into_bytes()
}

/// corecast: `{"publish":"<topic>","data":"<data>"}`; `data` is a stamp, which needs no
/// escaping.
pub fn publish(topic: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!(r#"{{"publish":"{topic}","data":""#).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\"}");
    out
}

/// What a corecast pubsub server sends a recovery client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pubsub<'a> {
    /// `{"topic":..,"offset":..,"epoch":..,"data":..}`: a publication with its position.
    Envelope {
        topic: &'a str,
        offset: u64,
        epoch: &'a str,
        data: &'a str,
    },
    /// `{"subscribed":..,"offset":..,"epoch":..}`, with `"recovered"` (and `"missed"` or
    /// `"reason"`) when the request had `"since"`.
    Answer {
        topic: &'a str,
        recovered: Option<bool>,
        missed: u64,
        reason: Option<&'a str>,
        position: Position,
    },
    /// Anything with `"error"`, or not one of the above: the text, for the fault.
    Other(String),
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    topic: Option<&'a str>,
    #[serde(borrow)]
    subscribed: Option<&'a str>,
    offset: Option<u64>,
    #[serde(borrow)]
    epoch: Option<&'a str>,
    #[serde(borrow)]
    data: Option<&'a str>,
    recovered: Option<bool>,
    missed: Option<u64>,
    #[serde(borrow)]
    reason: Option<&'a str>,
    #[serde(borrow)]
    error: Option<&'a str>,
}

/// Reads one corecast pubsub frame.
pub fn parse_pubsub(frame: &[u8]) -> Pubsub<'_> {
    let other = || Pubsub::Other(String::from_utf8_lossy(&frame[..frame.len().min(160)]).into());
    let Ok(f) = serde_json::from_slice::<Fields>(frame) else {
        return other();
    };
    if f.error.is_some() {
        return other();
    }
    match (f.topic, f.subscribed, f.offset, f.epoch, f.data) {
        (Some(topic), None, Some(offset), Some(epoch), Some(data)) => Pubsub::Envelope {
            topic,
            offset,
            epoch,
            data,
        },
        (None, Some(topic), Some(offset), epoch, None) => Pubsub::Answer {
            topic,
            recovered: f.recovered,
            missed: f.missed.unwrap_or(0),
            reason: f.reason,
            position: Position {
                offset,
                epoch: epoch.map(str::to_string),
            },
        },
        _ => other(),
    }
}

/// Socket.IO (Engine.IO v4 over WebSocket): the connect packet of the default namespace, fresh
/// (`40`) or asking to recover a session from an offset (`40{"pid":..,"offset":..}`).
pub fn sio_connect(recover: Option<(&str, &str)>) -> Vec<u8> {
    match recover {
        None => b"40".to_vec(),
        Some((pid, offset)) => format!(r#"40{{"pid":"{pid}","offset":"{offset}"}}"#).into_bytes(),
    }
}

/// Socket.IO: an event whose arguments are strings needing no escaping (topic names, stamps):
/// `42["<name>","<arg>",...]`.
pub fn sio_event(name: &str, args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!(r#"42["{name}""#).into_bytes();
    for a in args {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(a);
        out.push(b'"');
    }
    out.push(b']');
    out
}

/// Socket.IO: the answer to an Engine.IO ping.
pub const SIO_PONG: &[u8] = b"3";

/// What a Socket.IO server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sio<'a> {
    /// `0{...}`: the Engine.IO handshake.
    Open,
    /// `2`: an Engine.IO ping, to answer with `3`.
    Ping,
    /// `40{"sid":..,"pid":..}`: the namespace joined; `pid` is the session to recover later.
    Connected { sid: &'a str, pid: Option<&'a str> },
    /// `42[...]`: an event with string arguments; with connection-state recovery the last is
    /// the packet's offset.
    Event { name: &'a str, args: Vec<&'a str> },
    /// Anything else (`44` connect error, `41` disconnect, ...): the text, for the fault.
    Other(String),
}

#[derive(Deserialize)]
struct Connected<'a> {
    #[serde(borrow)]
    sid: &'a str,
    #[serde(borrow)]
    pid: Option<&'a str>,
}

/// Reads one Socket.IO text frame.
pub fn parse_sio(frame: &[u8]) -> Sio<'_> {
    let other = || Sio::Other(String::from_utf8_lossy(&frame[..frame.len().min(160)]).into());
    match frame {
        [b'0', b'{', ..] => Sio::Open,
        b"2" => Sio::Ping,
        [b'4', b'0', rest @ ..] => match serde_json::from_slice::<Connected>(rest) {
            Ok(c) => Sio::Connected {
                sid: c.sid,
                pid: c.pid,
            },
            Err(_) => other(),
        },
        [b'4', b'2', rest @ ..] => match serde_json::from_slice::<Vec<&str>>(rest) {
            Ok(v) if !v.is_empty() => Sio::Event {
                name: v[0],
                args: v[1..].to_vec(),
            },
            _ => other(),
        },
        _ => other(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corecast_requests() {
        assert_eq!(
            subscribe_fresh("rec.3"),
            br#"{"subscribe":"rec.3","positions":true}"#
        );
        let at = Position {
            offset: 12,
            epoch: Some("9f2c01ab".into()),
        };
        assert_eq!(
            subscribe_since("rec.3", &at),
            br#"{"subscribe":"rec.3","since":{"offset":12,"epoch":"9f2c01ab"}}"#
        );
        let none = Position {
            offset: 0,
            epoch: None,
        };
        assert_eq!(
            subscribe_since("rec.0", &none),
            br#"{"subscribe":"rec.0","since":{"offset":0,"epoch":null}}"#
        );
        assert_eq!(
            publish("rec.1", b"cc:1:2:3:x"),
            br#"{"publish":"rec.1","data":"cc:1:2:3:x"}"#
        );
        assert_eq!(topic_index(&topic_name(42)), Some(42));
        assert_eq!(topic_index("t42"), None);
    }

    #[test]
    fn corecast_answers_and_envelopes() {
        assert_eq!(
            parse_pubsub(br#"{"topic":"rec.0","offset":5,"epoch":"abcd0001","data":"cc:0:4:9:x"}"#),
            Pubsub::Envelope {
                topic: "rec.0",
                offset: 5,
                epoch: "abcd0001",
                data: "cc:0:4:9:x"
            }
        );
        assert_eq!(
            parse_pubsub(br#"{"subscribed":"rec.0","offset":0,"epoch":null}"#),
            Pubsub::Answer {
                topic: "rec.0",
                recovered: None,
                missed: 0,
                reason: None,
                position: Position {
                    offset: 0,
                    epoch: None
                }
            }
        );
        assert_eq!(
            parse_pubsub(
                br#"{"subscribed":"rec.0","recovered":true,"missed":3,"offset":15,"epoch":"9f2c01ab"}"#
            ),
            Pubsub::Answer {
                topic: "rec.0",
                recovered: Some(true),
                missed: 3,
                reason: None,
                position: Position {
                    offset: 15,
                    epoch: Some("9f2c01ab".into())
                }
            }
        );
        let stale = parse_pubsub(
            br#"{"subscribed":"rec.0","recovered":false,"reason":"position too old","offset":15,"epoch":"9f2c01ab"}"#,
        );
        assert!(matches!(
            stale,
            Pubsub::Answer {
                recovered: Some(false),
                reason: Some("position too old"),
                ..
            }
        ));
        for bad in [
            &br#"{"subscribe":"rec.0","error":"this topic keeps no history"}"#[..],
            br#"{"error":"rate limit"}"#,
            b"cc:0:1:2:x",
            br#"{"subscribed":"rec.0"}"#,
        ] {
            assert!(matches!(parse_pubsub(bad), Pubsub::Other(_)), "{bad:?}");
        }
    }

    #[test]
    fn socket_io_packets() {
        assert_eq!(sio_connect(None), b"40");
        assert_eq!(
            sio_connect(Some(("p1", "o-9"))),
            br#"40{"pid":"p1","offset":"o-9"}"#
        );
        assert_eq!(
            sio_event("publish", &[b"rec.0", b"cc:0:1:2:x"]),
            br#"42["publish","rec.0","cc:0:1:2:x"]"#
        );
        assert_eq!(
            parse_sio(br#"0{"sid":"a","upgrades":[],"pingInterval":10000}"#),
            Sio::Open
        );
        assert_eq!(parse_sio(b"2"), Sio::Ping);
        assert_eq!(
            parse_sio(br#"40{"sid":"s1","pid":"p1"}"#),
            Sio::Connected {
                sid: "s1",
                pid: Some("p1")
            }
        );
        assert_eq!(
            parse_sio(br#"42["m","cc:0:1:2:x","MzX-9a"]"#),
            Sio::Event {
                name: "m",
                args: vec!["cc:0:1:2:x", "MzX-9a"]
            }
        );
        assert!(matches!(
            parse_sio(br#"44{"message":"nope"}"#),
            Sio::Other(_)
        ));
        assert!(matches!(parse_sio(b"42[1,2]"), Sio::Other(_)));
    }
}
