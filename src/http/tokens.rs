//! HTTP token-list helpers shared by head parsing, the upgrade checks and extension
//! negotiation: tokens (RFC 9110 §5.6.2), optional whitespace and splitting outside quotes.
//!
//! Not header access or parsing (that is [`super::head`]).

/// Splits `s` at each `sep` that is not inside a quoted string (RFC 9110 §5.6.4).
pub fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in s.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == sep && !quoted => {
                    rest = s.get(i + 1..);
                    return s.get(..i);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// Optional whitespace is only SP and HTAB (RFC 9110 §5.6.3).
pub(super) fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2), as a subprotocol name must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{offered_extensions, RequestHead};

    #[test]
    fn lists_split_outside_quotes_only() {
        let items: Vec<&str> = split_unquoted("a, b=\"x,y\\\"z\", c", b',').collect();
        assert_eq!(items, ["a", " b=\"x,y\\\"z\"", " c"]);
        let items: Vec<&str> = split_unquoted("", b',').collect();
        assert_eq!(items, [""]);
        let head = RequestHead::new(
            "GET",
            "/",
            &[
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; x=\"1,2\", foo",
                ),
                ("sec-websocket-extensions", "bar"),
            ],
        );
        let offers: Vec<&str> = offered_extensions(&head).collect();
        assert_eq!(offers, ["permessage-deflate; x=\"1,2\"", "foo", "bar"]);
    }

    #[test]
    fn subprotocol_names_are_tokens() {
        assert!(is_token("chat.v2") && is_token("mqtt") && is_token("a_b-c~1"));
        for bad in ["", "a b", "a,b", "a;b", "é", "a\r\n"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
