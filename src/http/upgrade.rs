//! The WebSocket opening-handshake checks of RFC 6455 §4.2.1 on a parsed request head, and the
//! subprotocols and extensions a client offers.
//!
//! Not head parsing (that is [`super::head`]), not the 101 response (that is
//! [`mod@super::response`]), and not extension negotiation (that is the permessage-deflate code).

use super::head::RequestHead;

/// What the WebSocket handshake check decided (RFC 6455 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeCheck {
    /// Valid: carries the Sec-WebSocket-Accept value (tungstenite::handshake::derive_accept_key of the key).
    Accept(String),
    /// No `Upgrade: websocket` at all: a plain HTTP request -> 426.
    NotUpgrade,
    /// Sec-WebSocket-Version missing or not 13 -> 426 with `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2).
    BadVersion,
    /// Upgrade attempted but malformed (method not GET, HTTP version below 1.1, Connection header lacking the "upgrade" token (comma-separated, case-insensitive), Sec-WebSocket-Key missing or not base64 of exactly 16 bytes) -> 400 with this reason.
    Malformed(&'static str),
}

/// The subprotocols a client offers, in its order: every `Sec-WebSocket-Protocol` value, split
/// at commas (RFC 6455 §4.1, §11.3.4).
pub fn offered_protocols(head: &RequestHead) -> impl Iterator<Item = &str> {
    head.list_items("sec-websocket-protocol")
}

/// The extensions a client offers, in its order of preference: every `Sec-WebSocket-Extensions`
/// value, split at commas outside quoted strings (RFC 6455 §9.1). Each item is one offer:
/// a name with its `;`-separated parameters.
pub fn offered_extensions(head: &RequestHead) -> impl Iterator<Item = &str> {
    head.list_items("sec-websocket-extensions")
}

/// The subprotocol to answer with: the first of `ours` (the server's order of preference)
/// that the client offered, compared exactly (RFC 6455 §4.2.2 step 5.4: the server selects
/// one of the client's values or none).
pub fn select_protocol<'a, S: AsRef<str>>(ours: &'a [S], head: &RequestHead) -> Option<&'a S> {
    if ours.is_empty() {
        return None;
    }
    ours.iter()
        .find(|p| offered_protocols(head).any(|o| o == p.as_ref()))
}

/// Checks a head against the opening-handshake rules of RFC 6455 §4.2.1.
///
/// Order: `Upgrade`, method, HTTP version, `Connection`, version, key. The
/// version is checked before the key so that clients of older drafts, which
/// send other key headers, learn the version this server speaks (§4.2.2).
/// `Host` is not checked: routing does not use it.
pub fn check_upgrade(head: &RequestHead) -> UpgradeCheck {
    if !head.has_token("upgrade", "websocket") {
        return UpgradeCheck::NotUpgrade;
    }
    if head.method() != "GET" {
        return UpgradeCheck::Malformed("method must be GET");
    }
    if head.http_minor_version() < 1 {
        return UpgradeCheck::Malformed("HTTP/1.1 or later required");
    }
    if !head.has_token("connection", "upgrade") {
        return UpgradeCheck::Malformed("Connection header lacks the upgrade token");
    }
    if head.header("sec-websocket-version") != Some("13") {
        return UpgradeCheck::BadVersion;
    }
    let mut keys = head.header_values("sec-websocket-key");
    let Some(key) = keys.next() else {
        return UpgradeCheck::Malformed("missing Sec-WebSocket-Key");
    };
    // RFC 6455 §11.3.1: the key field must not appear more than once.
    if keys.next().is_some() {
        return UpgradeCheck::Malformed("repeated Sec-WebSocket-Key");
    }
    if decode_key(key).is_none() {
        return UpgradeCheck::Malformed("Sec-WebSocket-Key is not base64 of 16 bytes");
    }
    UpgradeCheck::Accept(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Decodes a Sec-WebSocket-Key: base64 (RFC 4648 §4) of exactly 16 bytes,
/// which is 22 symbols and `==` (RFC 6455 §4.1, item 7).
fn decode_key(key: &str) -> Option<[u8; 16]> {
    let data = key.as_bytes().strip_suffix(b"==")?;
    if data.len() != 22 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in data {
        acc = acc << 6 | u32::from(base64_value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // 132 bits carry 128: the 4 left over must be zero in canonical base64
    // (RFC 4648 §3.5), so each key has one spelling.
    (n == 16 && acc == 0).then_some(out)
}

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, HeadParse};

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn complete(buf: &[u8]) -> (RequestHead, usize) {
        match parse_head(buf, 8192) {
            Ok(HeadParse::Complete { head, consumed }) => (head, consumed),
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn upgrade_head(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = vec![
            ("Host".into(), "example.com".into()),
            ("Upgrade".into(), "websocket".into()),
            ("Connection".into(), "Upgrade".into()),
            ("Sec-WebSocket-Key".into(), RFC_KEY.into()),
            ("Sec-WebSocket-Version".into(), "13".into()),
        ];
        for &(n, v) in extra {
            h.retain(|(hn, _)| !hn.eq_ignore_ascii_case(n));
            if !v.is_empty() {
                h.push((n.into(), v.into()));
            }
        }
        h
    }

    /// Builds a GET upgrade head; an empty value in `extra` removes that header.
    fn check(method: &str, extra: &[(&str, &str)]) -> UpgradeCheck {
        let h = upgrade_head(extra);
        let refs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (&**n, &**v)).collect();
        check_upgrade(&RequestHead::new(method, "/chat", &refs))
    }

    #[test]
    fn key_decoder() {
        assert_eq!(decode_key(RFC_KEY), Some(*b"the sample nonce"));
        assert_eq!(decode_key("AAAAAAAAAAAAAAAAAAAAAA=="), Some([0; 16]));
        assert_eq!(decode_key("/////////////////////w=="), Some([0xff; 16]));
        // Non-zero leftover bits: not the canonical encoding of 16 bytes.
        assert_eq!(decode_key("AAAAAAAAAAAAAAAAAAAAAB=="), None);
        assert_eq!(decode_key("dGhlIHNhbXBsZSBub25jZQ="), None);
        assert_eq!(decode_key("dGhlIHNhbXBsZSBub25jZQ"), None);
        assert_eq!(decode_key("dGhlIHNhbXBsZSBub25jZQ=A"), None);
        assert_eq!(decode_key("dGhlIHNhbXBsZSBub25j*Q=="), None);
        assert_eq!(decode_key("dGhlIHNhbXBsZSBub25jZSE="), None);
        assert_eq!(decode_key(""), None);
    }

    #[test]
    fn upgrade_accepts_rfc_example() {
        assert_eq!(check("GET", &[]), UpgradeCheck::Accept(RFC_ACCEPT.into()));
        // Token lists and case differences are allowed.
        assert_eq!(
            check(
                "GET",
                &[
                    ("Upgrade", "WebSocket, foo"),
                    ("Connection", "keep-alive, UPGRADE")
                ]
            ),
            UpgradeCheck::Accept(RFC_ACCEPT.into())
        );
        let buf = format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        let (h, _) = complete(buf.as_bytes());
        assert_eq!(check_upgrade(&h), UpgradeCheck::Accept(RFC_ACCEPT.into()));
    }

    #[test]
    fn upgrade_not_attempted() {
        assert_eq!(check("GET", &[("Upgrade", "")]), UpgradeCheck::NotUpgrade);
        assert_eq!(
            check("GET", &[("Upgrade", "h2c")]),
            UpgradeCheck::NotUpgrade
        );
        assert_eq!(
            check_upgrade(&RequestHead::new("GET", "/", &[])),
            UpgradeCheck::NotUpgrade
        );
    }

    #[test]
    fn upgrade_bad_version() {
        assert_eq!(
            check("GET", &[("Sec-WebSocket-Version", "")]),
            UpgradeCheck::BadVersion
        );
        assert_eq!(
            check("GET", &[("Sec-WebSocket-Version", "8")]),
            UpgradeCheck::BadVersion
        );
    }

    #[test]
    fn upgrade_malformed() {
        assert_eq!(
            check("POST", &[]),
            UpgradeCheck::Malformed("method must be GET")
        );
        assert_eq!(
            check("get", &[]),
            UpgradeCheck::Malformed("method must be GET")
        );
        assert_eq!(
            check("GET", &[("Connection", "")]),
            UpgradeCheck::Malformed("Connection header lacks the upgrade token")
        );
        assert_eq!(
            check("GET", &[("Connection", "keep-alive, upgrades")]),
            UpgradeCheck::Malformed("Connection header lacks the upgrade token")
        );
        assert_eq!(
            check("GET", &[("Sec-WebSocket-Key", "")]),
            UpgradeCheck::Malformed("missing Sec-WebSocket-Key")
        );
        assert_eq!(
            check("GET", &[("Sec-WebSocket-Key", "aGVsbG8=")]),
            UpgradeCheck::Malformed("Sec-WebSocket-Key is not base64 of 16 bytes")
        );
        let (old, _) = complete(
            b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(old.http_minor_version(), 0);
        assert_eq!(
            check_upgrade(&old),
            UpgradeCheck::Malformed("HTTP/1.1 or later required")
        );
        let twice = RequestHead::new(
            "GET",
            "/",
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", RFC_KEY),
                ("Sec-WebSocket-Key", RFC_KEY),
            ],
        );
        assert_eq!(
            check_upgrade(&twice),
            UpgradeCheck::Malformed("repeated Sec-WebSocket-Key")
        );
    }

    #[test]
    fn the_server_picks_its_own_first_choice_among_the_offered_subprotocols() {
        let head = |offers: &[&str]| {
            let headers: Vec<(&str, &str)> = offers
                .iter()
                .map(|o| ("Sec-WebSocket-Protocol", *o))
                .collect();
            RequestHead::new("GET", "/ws", &headers)
        };
        let ours = ["chat.v2", "chat"];
        let offered = head(&["chat, chat.v2", " x "]);
        assert_eq!(
            offered_protocols(&offered).collect::<Vec<_>>(),
            ["chat", "chat.v2", "x"]
        );
        assert_eq!(select_protocol(&ours, &offered), Some(&"chat.v2"));
        assert_eq!(select_protocol(&ours, &head(&["chat"])), Some(&"chat"));
        // Exact match only, and nothing when nothing matches or nothing is offered.
        assert_eq!(select_protocol(&ours, &head(&["Chat"])), None);
        assert_eq!(select_protocol(&ours, &head(&[])), None);
        assert_eq!(select_protocol::<&str>(&[], &offered), None);
    }
}
