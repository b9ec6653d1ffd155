//! The floor's wire work, pure: the upgrade's head and answer, client frame boundaries and
//! masks, server frame headers, and the few message shapes the benchmark scenarios send.
//! Not a WebSocket implementation: no UTF-8 checks, no fragments, no extensions, no JSON
//! parser; it reads what `corecast-load` writes and nothing more.

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

/// RFC 6455's GUID, appended to the client's key for the accept hash.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest client payload taken, as the other peers are started (16 MiB).
pub const MAX_PAYLOAD: u64 = 16 << 20;

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Where a request head ends: the index just past its blank line.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// What the floor reads of an upgrade request: its target and its key.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade<'a> {
    pub path: &'a [u8],
    pub key: &'a [u8],
}

/// The target and `Sec-WebSocket-Key` of a `GET` head; `None` when either is missing.
pub fn parse_upgrade(head: &[u8]) -> Option<Upgrade<'_>> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let path = lines
        .next()?
        .strip_prefix(b"GET ")?
        .split(|&b| b == b' ')
        .next()?;
    let key = lines.find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        name.eq_ignore_ascii_case(b"sec-websocket-key")
            .then(|| value[1..].trim_ascii())
    })?;
    (!key.is_empty()).then_some(Upgrade { path, key })
}

/// The 101 for `key`.
pub fn switching_protocols(key: &[u8]) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
}

/// The topics of a target's `topics=a,b` query parameter (taken as written: no percent
/// decoding, the generator's names need none).
pub fn query_topics(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let query = path
        .iter()
        .position(|&b| b == b'?')
        .map_or(&[][..], |q| &path[q + 1..]);
    query
        .split(|&b| b == b'&')
        .find_map(|kv| kv.strip_prefix(b"topics="))
        .unwrap_or(&[])
        .split(|&b| b == b',')
        .filter(|t| !t.is_empty())
}

/// One client frame's boundaries, as far as a header says.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// A frame the floor does not take; the connection is closed.
    Refused(&'static str),
    /// A whole frame: `payload` starts at `at` and is `len` long, masked with `mask`.
    Whole {
        opcode: u8,
        mask: [u8; 4],
        at: usize,
        len: usize,
    },
}

/// Reads the client frame at the start of `buf`.
pub fn client_frame(buf: &[u8]) -> Frame {
    if buf.len() < 2 {
        return Frame::Incomplete;
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x80 == 0 || b0 & 0x0F == 0 {
        return Frame::Refused("fragmented message");
    }
    if b1 & 0x80 == 0 {
        return Frame::Refused("unmasked client frame");
    }
    let (len, mut at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Frame::Incomplete,
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD {
        return Frame::Refused("message too large");
    }
    if buf.len() < at + 4 {
        return Frame::Incomplete;
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    // `len` is at most MAX_PAYLOAD, so it fits a usize.
    let len = len as usize;
    if buf.len() < at + len {
        return Frame::Incomplete;
    }
    Frame::Whole {
        opcode: b0 & 0x0F,
        mask,
        at,
        len,
    }
}

/// Appends a server frame's header (final, unmasked) for `len` bytes of `opcode`.
pub fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a server frame of `payload`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a server frame of a client's `masked` payload, unmasked on the way.
pub fn push_unmasked_frame(out: &mut Vec<u8>, opcode: u8, masked: &[u8], mask: [u8; 4]) {
    push_header(out, opcode, masked.len());
    let start = out.len();
    out.extend_from_slice(masked);
    unmask(&mut out[start..], mask);
}

/// Undoes a client mask in place, eight bytes at a time.
pub fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let m = u32::from_ne_bytes(mask);
    let wide = u64::from(m) | (u64::from(m) << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // Eight is a multiple of four: the remainder starts at mask byte 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// A pubsub request, read by its leading bytes as `corecast-load` writes them.
#[derive(Debug, PartialEq, Eq)]
pub enum Pubsub<'a> {
    /// `{"publish":"<topic>","data":<data>}`: a string's contents, or the value as written.
    Publish {
        topic: &'a [u8],
        data: &'a [u8],
    },
    Subscribe(&'a [u8]),
    Unsubscribe(&'a [u8]),
    Other,
}

/// The string after `prefix` up to its closing quote, and what follows it.
fn quoted<'a>(msg: &'a [u8], prefix: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let rest = msg.strip_prefix(prefix)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some((&rest[..end], &rest[end + 1..]))
}

pub fn pubsub(msg: &[u8]) -> Pubsub<'_> {
    if let Some((topic, rest)) = quoted(msg, br#"{"publish":""#) {
        let Some(value) = rest.strip_prefix(br#","data":"#) else {
            return Pubsub::Other;
        };
        let Some(value) = value.strip_suffix(b"}") else {
            return Pubsub::Other;
        };
        let data = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        return Pubsub::Publish { topic, data };
    }
    if let Some((topic, b"}")) = quoted(msg, br#"{"subscribe":""#) {
        return Pubsub::Subscribe(topic);
    }
    if let Some((topic, b"}")) = quoted(msg, br#"{"unsubscribe":""#) {
        return Pubsub::Unsubscribe(topic);
    }
    Pubsub::Other
}

/// `{"<key>":"<topic>"}`: a subscription's acknowledgement.
pub fn ack(key: &str, topic: &[u8]) -> Vec<u8> {
    let mut out = format!(r#"{{"{key}":""#).into_bytes();
    out.extend_from_slice(topic);
    out.extend_from_slice(b"\"}");
    out
}

/// A websocket-shootout message, by its leading bytes as `corecast-load` writes them.
#[derive(Debug, PartialEq, Eq)]
pub enum Shootout<'a> {
    Echo,
    /// `{"type":"broadcast","payload":<rest>`: the result repeats `<rest>`.
    Broadcast {
        rest: &'a [u8],
    },
    Other,
}

pub fn shootout(msg: &[u8]) -> Shootout<'_> {
    if msg.starts_with(br#"{"type":"echo""#) {
        Shootout::Echo
    } else if let Some(rest) = msg.strip_prefix(br#"{"type":"broadcast","payload":"#) {
        Shootout::Broadcast { rest }
    } else {
        Shootout::Other
    }
}

/// The answer to a broadcast's sender: `{"type":"broadcastResult","payload":<rest>`.
pub fn broadcast_result(rest: &[u8]) -> Vec<u8> {
    let mut out = br#"{"type":"broadcastResult","payload":"#.to_vec();
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_head_gives_target_key_and_topics() {
        let head =
            b"GET /ws?topics=t3,t53&x=1 HTTP/1.1\r\nHost: a\r\nsec-WebSocket-KEY:  abc== \r\n\r\n";
        assert_eq!(head_end(head), Some(head.len()));
        let up = parse_upgrade(head).unwrap();
        assert_eq!(up.key, b"abc==");
        let topics: Vec<&[u8]> = query_topics(up.path).collect();
        assert_eq!(topics, [&b"t3"[..], b"t53"]);
        assert_eq!(query_topics(b"/ws").count(), 0);
        assert!(parse_upgrade(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_none());
        assert!(parse_upgrade(b"POST / HTTP/1.1\r\nSec-WebSocket-Key: a\r\n\r\n").is_none());
    }

    fn masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        push_header(&mut out, opcode, payload.len());
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        unmask(&mut out[start..], mask);
        out
    }

    #[test]
    fn client_frames_are_found_unmasked_and_reframed() {
        let mask = [1, 2, 3, 4];
        for len in [0, 5, 64, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire = masked(OP_TEXT, &payload, mask);
            assert_eq!(client_frame(&wire[..wire.len() - 1]), Frame::Incomplete);
            let Frame::Whole {
                opcode,
                mask: m,
                at,
                len: n,
            } = client_frame(&wire)
            else {
                panic!("a whole frame of {len}");
            };
            assert_eq!((opcode, m, at + n), (OP_TEXT, mask, wire.len()));
            let mut out = Vec::new();
            push_unmasked_frame(&mut out, opcode, &wire[at..at + n], m);
            let mut want = Vec::new();
            push_frame(&mut want, OP_TEXT, &payload);
            assert_eq!(out, want, "length {len}");
        }
        assert_eq!(
            client_frame(&[0x81, 0x05, 0, 0]),
            Frame::Refused("unmasked client frame")
        );
        assert_eq!(
            client_frame(&[0x01, 0x85]),
            Frame::Refused("fragmented message")
        );
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        assert_eq!(client_frame(&huge), Frame::Refused("message too large"));
    }

    #[test]
    fn pubsub_requests_by_their_shape() {
        assert_eq!(
            pubsub(br#"{"publish":"t4","data":"cc:1:2:3:xx"}"#),
            Pubsub::Publish {
                topic: b"t4",
                data: b"cc:1:2:3:xx"
            }
        );
        assert_eq!(
            pubsub(br#"{"publish":"t4","data":{"a":1}}"#),
            Pubsub::Publish {
                topic: b"t4",
                data: br#"{"a":1}"#
            }
        );
        assert_eq!(pubsub(br#"{"subscribe":"t9"}"#), Pubsub::Subscribe(b"t9"));
        assert_eq!(
            pubsub(br#"{"unsubscribe":"t9"}"#),
            Pubsub::Unsubscribe(b"t9")
        );
        assert_eq!(pubsub(b"hello"), Pubsub::Other);
        assert_eq!(ack("subscribed", b"t9"), br#"{"subscribed":"t9"}"#);
    }

    #[test]
    fn shootout_messages_by_their_shape() {
        let b = br#"{"type":"broadcast","payload":{"s":1,"q":2,"t":3}}"#;
        let Shootout::Broadcast { rest } = shootout(b) else {
            panic!("a broadcast");
        };
        assert_eq!(
            broadcast_result(rest),
            br#"{"type":"broadcastResult","payload":{"s":1,"q":2,"t":3}}"#
        );
        assert_eq!(
            shootout(br#"{"type":"echo","payload":{"s":1}}"#),
            Shootout::Echo
        );
        assert_eq!(shootout(b"x"), Shootout::Other);
    }
}
