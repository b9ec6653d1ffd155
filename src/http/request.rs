//! HTTP/1.1 request-head parsing and the WebSocket handshake check.
//!
//! Pure functions over bytes already read: not I/O, no sockets, and no
//! response writing (that is [`mod@super::response`]).

use std::borrow::Cow;
use std::fmt;

/// Most header fields a request head may carry; more is [`HttpError::Malformed`].
pub const MAX_HEADERS: usize = 64;

/// Where one string lives in a head's text.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

/// Name/value pairs as spans, boxed so a head kept per connection holds no spare capacity.
type Pairs = Box<[(Span, Span)]>;

/// A parsed HTTP/1.1 request head, kept for the whole life of the connection. Memory-lean:
/// every string (method, path, query, decoded query pairs, headers) lives in one text buffer,
/// so a head costs two or three allocations however many headers it has.
#[derive(Debug, Clone)]
pub struct RequestHead {
    text: Box<str>,
    method: Span,
    path: Span,
    raw_query: Span,
    query: Pairs,
    headers: Pairs,
    /// The `x` of `HTTP/1.x`, needed for the 1.1 rule of RFC 6455 §4.2.1.
    minor_version: u8,
}

/// Builds the single text buffer of a head.
#[derive(Default)]
struct TextBuilder {
    text: String,
}

impl TextBuilder {
    fn push(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span {
            start: start as u32,
            len: s.len() as u32,
        }
    }
}

impl RequestHead {
    /// Builds a head directly (for tests and internal use), as HTTP/1.1.
    ///
    /// `target` is split at the first `?` into path and query, as
    /// [`parse_head`] does; header values are kept as given.
    pub fn new(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHead {
        Self::build(method, target, headers.iter().copied(), 1)
    }

    fn build<'a>(
        method: &str,
        target: &str,
        headers: impl Iterator<Item = (&'a str, &'a str)>,
        minor_version: u8,
    ) -> RequestHead {
        let (path, raw_query) = split_target(target);
        let mut b = TextBuilder::default();
        let method = b.push(method);
        let path = b.push(path);
        let raw_query_span = b.push(raw_query);
        // A name or value that needs no decoding points into the raw query rather than being
        // stored twice (a subscriber's `?topics=...` is kept for the connection's whole life).
        let mut decoded = |piece: &str, at: usize| match decode_form(piece) {
            Cow::Borrowed(same) => Span {
                start: raw_query_span.start + at as u32,
                len: same.len() as u32,
            },
            Cow::Owned(other) => b.push(&other),
        };
        let query = query_pieces(raw_query)
            .map(|((n, n_at), (v, v_at))| (decoded(n, n_at), decoded(v, v_at)))
            .collect();
        let headers = headers.map(|(n, v)| (b.push(n), b.push(v))).collect();
        RequestHead {
            text: b.text.into_boxed_str(),
            method,
            path,
            raw_query: raw_query_span,
            query,
            headers,
            minor_version,
        }
    }

    /// The string a span points at (heads are under 4 GiB: parsing limits them to a few KiB).
    fn get(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.text
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }

    fn pairs<'a>(&'a self, pairs: &'a Pairs) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        pairs.iter().map(|(n, v)| (self.get(*n), self.get(*v)))
    }

    /// The request method, case as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub fn method(&self) -> &str {
        self.get(self.method)
    }

    /// The target path without `?query` (or fragment), not percent-decoded.
    ///
    /// An absolute-form target (`http://host/p`, RFC 9112 §3.2.2) yields its
    /// path part; an empty path reads as `/`.
    pub fn path(&self) -> &str {
        self.get(self.path)
    }

    /// The query string as sent, without the `?`; empty when there is none.
    pub fn raw_query(&self) -> &str {
        self.get(self.raw_query)
    }

    /// The minor HTTP version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub fn http_minor_version(&self) -> u8 {
        self.minor_version
    }

    /// The first query parameter called `name`, decoded as
    /// application/x-www-form-urlencoded (`+` is a space, `%XX` a byte;
    /// invalid escapes are kept literally).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query_pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// All decoded query pairs, in the order sent.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs(&self.query)
    }

    /// The first header called `name` (case-insensitive, RFC 9110 §5.1),
    /// its value trimmed of spaces and tabs (RFC 9110 §5.5).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| trim_ows(v))
    }

    /// The first cookie called `name` (case-sensitive) from all `Cookie`
    /// headers, read as `a=b; c=d` (RFC 6265 §5.4), with surrounding double
    /// quotes removed (RFC 6265 §4.1.1 allows a quoted cookie-value).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header_values("cookie")
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (n, v) = pair.split_once('=')?;
                if trim_ows(n) != name {
                    return None;
                }
                let v = trim_ows(v);
                Some(
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v),
                )
            })
    }

    /// All headers as sent: names in their original case, values untrimmed.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs(&self.headers)
    }

    /// Trimmed values of every header called `name`, in order.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| trim_ows(v))
    }

    /// The items of every header called `name` read as a comma-separated list, trimmed, empty
    /// ones skipped (repeated fields combine, RFC 9110 §5.3 and §5.6.1).
    fn list_items<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values(name)
            .flat_map(|v| split_unquoted(v, b','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
    }

    /// Whether any header called `name` lists `token`, case-insensitively.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.list_items(name).any(|t| t.eq_ignore_ascii_case(token))
    }
}

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
fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Splits a request target into (path, raw query).
fn split_target(target: &str) -> (&str, &str) {
    let target = origin_part(target);
    // A fragment is not part of what the server routes on (RFC 9110 §7.1).
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (if path.is_empty() { "/" } else { path }, query)
}

/// Drops `scheme://authority` from an absolute-form target, which servers
/// must accept (RFC 9112 §3.2.2), so routing sees only the path.
fn origin_part(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    match target.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            rest.find(['/', '?', '#']).map_or("", |i| &rest[i..])
        }
        _ => target,
    }
}

/// Splits a query string into raw (name, value) pieces, each with its byte offset in `query`;
/// a piece without `=` has an empty value.
fn query_pieces(query: &str) -> impl Iterator<Item = ((&str, usize), (&str, usize))> + '_ {
    let mut at = 0;
    query.split('&').filter_map(move |p| {
        let start = at;
        at += p.len() + 1;
        if p.is_empty() {
            return None;
        }
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        let v_at = if v.is_empty() {
            start + p.len()
        } else {
            start + n.len() + 1
        };
        Some(((n, start), (v, v_at)))
    })
}

/// application/x-www-form-urlencoded decoding; bytes that are not UTF-8
/// become U+FFFD rather than failing the whole request. Borrowed when nothing changes.
fn decode_form(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(decode(s, true).into())
}

/// Percent-decoding of one path segment (RFC 3986 §2.1; `+` stays `+`), for names carried in
/// a path such as a topic. Bytes that are not UTF-8 become U+FFFD.
pub fn decode_segment(s: &str) -> Box<str> {
    if !s.contains('%') {
        return s.into();
    }
    decode(s, false)
}

fn decode(s: &str, plus_is_space: bool) -> Box<str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
                let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s.into_boxed_str(),
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into(),
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Result of trying to parse a request head from the bytes read so far.
#[derive(Debug)]
pub enum HeadParse {
    /// A whole head was read; the bytes after `consumed` belong to the next layer.
    Complete {
        /// The parsed head.
        head: RequestHead,
        /// Length of the head in bytes, up to and including the blank line.
        consumed: usize,
    },
    /// The head is not complete yet: read more and call again with all bytes.
    Partial,
}

/// Why a request could not be parsed or upgraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Not a valid HTTP/1.x request head; answer 400.
    Malformed(String),
    /// The head is longer than the limit; answer 431 (RFC 6585 §5).
    TooLarge,
}

impl HttpError {
    /// The status code to answer with: 400 or 431.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::TooLarge => 431,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed request: {why}"),
            HttpError::TooLarge => f.write_str("request head too large"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Parses with httparse (up to 64 headers; more is Malformed). Non-UTF-8 header values are Malformed.
/// `max_head_bytes`: if the buffer has no complete head and is already >= this, TooLarge; if a complete head is longer than this, TooLarge.
pub fn parse_head(buf: &[u8], max_head_bytes: usize) -> Result<HeadParse, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head_bytes => {
            return Err(HttpError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(HeadParse::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::Malformed(format!(
                "more than {MAX_HEADERS} headers"
            )))
        }
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if consumed > max_head_bytes {
        return Err(HttpError::TooLarge);
    }
    // httparse fills all three on Complete; checked anyway rather than unwrapped.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed("incomplete request line".into()));
    };
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed(format!("header {} is not UTF-8", h.name)))?;
        headers.push((h.name, value));
    }
    Ok(HeadParse::Complete {
        head: RequestHead::build(method, target, headers.into_iter(), minor),
        consumed,
    })
}

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

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2), as a subprotocol name must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
    if head.minor_version < 1 {
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
    fn complete_head_leaves_following_bytes() {
        let head = b"GET /chat?room=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"\x81\x05hello");
        let (h, consumed) = complete(&buf);
        assert_eq!(consumed, head.len());
        assert_eq!(&buf[consumed..], b"\x81\x05hello");
        assert_eq!(h.method(), "GET");
        assert_eq!(h.path(), "/chat");
        assert_eq!(h.raw_query(), "room=a");
        assert_eq!(h.query("room"), Some("a"));
        assert_eq!(h.http_minor_version(), 1);
        let all: Vec<_> = h.headers().collect();
        assert_eq!(all, [("Host", "x"), ("Upgrade", "websocket")]);
    }

    #[test]
    fn partial_head() {
        let buf = b"GET /chat HTTP/1.1\r\nHost: x\r\n";
        assert!(matches!(parse_head(buf, 8192), Ok(HeadParse::Partial)));
        assert!(matches!(parse_head(b"", 8192), Ok(HeadParse::Partial)));
    }

    #[test]
    fn too_large_partial_and_complete() {
        let partial = b"GET /chat HTTP/1.1\r\nHost: x\r\n";
        assert_eq!(
            parse_head(partial, partial.len()).unwrap_err(),
            HttpError::TooLarge
        );
        assert!(matches!(
            parse_head(partial, partial.len() + 1),
            Ok(HeadParse::Partial)
        ));
        let full = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_head(full, full.len() - 1).unwrap_err(),
            HttpError::TooLarge
        );
        assert!(matches!(
            parse_head(full, full.len()),
            Ok(HeadParse::Complete { consumed, .. }) if consumed == full.len()
        ));
        assert_eq!(HttpError::TooLarge.status(), 431);
    }

    #[test]
    fn garbage_is_malformed() {
        for buf in [
            &b"\x00\x01\x02 garbage\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let err = parse_head(buf, 8192).unwrap_err();
            assert!(matches!(err, HttpError::Malformed(_)), "{buf:?}: {err:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn header_limit() {
        let build = |n: usize| {
            let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            buf
        };
        let (h, _) = complete(&build(64));
        assert_eq!(h.headers().count(), 64);
        assert_eq!(
            parse_head(&build(65), 8192).unwrap_err(),
            HttpError::Malformed("more than 64 headers".into())
        );
    }

    #[test]
    fn non_utf8_header_value_is_malformed() {
        let buf = b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n";
        assert_eq!(
            parse_head(buf, 8192).unwrap_err(),
            HttpError::Malformed("header X-Name is not UTF-8".into())
        );
    }

    #[test]
    fn query_decoding() {
        let h = RequestHead::new("GET", "/q?a=1&b=x+y&c=%41%zz&a=2", &[]);
        assert_eq!(h.path(), "/q");
        assert_eq!(h.raw_query(), "a=1&b=x+y&c=%41%zz&a=2");
        assert_eq!(h.query("a"), Some("1"));
        assert_eq!(h.query("b"), Some("x y"));
        assert_eq!(h.query("c"), Some("A%zz"));
        assert_eq!(h.query("d"), None);
        let pairs: Vec<_> = h.query_pairs().collect();
        assert_eq!(pairs, [("a", "1"), ("b", "x y"), ("c", "A%zz"), ("a", "2")]);
        // Pieces that need no decoding point into the raw query: nothing is stored twice.
        let plain = RequestHead::new("GET", "/ws?topics=t1,t2&x=1&flag", &[]);
        assert_eq!(&*plain.text, "GET/wstopics=t1,t2&x=1&flag");
        let pairs: Vec<_> = plain.query_pairs().collect();
        assert_eq!(pairs, [("topics", "t1,t2"), ("x", "1"), ("flag", "")]);
    }

    #[test]
    fn query_edge_cases() {
        let h = RequestHead::new("GET", "/q?flag&&e=&n%20m=%E2%82%AC&t=%4&u=%ff", &[]);
        assert_eq!(h.query("flag"), Some(""));
        assert_eq!(h.query("e"), Some(""));
        assert_eq!(h.query("n m"), Some("\u{20ac}"));
        assert_eq!(h.query("t"), Some("%4"));
        assert_eq!(h.query("u"), Some("\u{fffd}"));
        let none = RequestHead::new("GET", "/q", &[]);
        assert_eq!(none.raw_query(), "");
        assert_eq!(none.query_pairs().count(), 0);
    }

    #[test]
    fn target_forms() {
        let abs = RequestHead::new("GET", "http://example.com:80/ws/1?x=2", &[]);
        assert_eq!((abs.path(), abs.query("x")), ("/ws/1", Some("2")));
        let bare = RequestHead::new("GET", "http://example.com?x=2", &[]);
        assert_eq!((bare.path(), bare.raw_query()), ("/", "x=2"));
        let frag = RequestHead::new("GET", "/p?a=1#frag", &[]);
        assert_eq!((frag.path(), frag.query("a")), ("/p", Some("1")));
        // Percent escapes in the path stay as sent.
        let esc = RequestHead::new("GET", "/a%2Fb", &[]);
        assert_eq!(esc.path(), "/a%2Fb");
    }

    #[test]
    fn headers_case_insensitive_first_match_trimmed() {
        let (h, _) = complete(b"GET / HTTP/1.1\r\nX-Thing: one \t\r\nx-thing: two\r\n\r\n");
        assert_eq!(h.header("x-thing"), Some("one"));
        assert_eq!(h.header("X-THING"), Some("one"));
        assert_eq!(h.header("x-other"), None);
        let direct = RequestHead::new("GET", "/", &[("Origin", "  https://a.example ")]);
        assert_eq!(direct.header("origin"), Some("https://a.example"));
        assert_eq!(
            direct.headers().collect::<Vec<_>>(),
            [("Origin", "  https://a.example ")]
        );
    }

    #[test]
    fn cookies_across_headers_and_quoted() {
        let (h, _) = complete(
            b"GET / HTTP/1.1\r\nCookie: a=1; sid=\"abc\"\r\nX: y\r\ncookie: b=2;c = 3 ; a=9\r\n\r\n",
        );
        assert_eq!(h.cookie("a"), Some("1"));
        assert_eq!(h.cookie("sid"), Some("abc"));
        assert_eq!(h.cookie("b"), Some("2"));
        assert_eq!(h.cookie("c"), Some("3"));
        assert_eq!(h.cookie("A"), None);
        assert_eq!(h.cookie("d"), None);
        let odd = RequestHead::new("GET", "/", &[("Cookie", "lone; q=\"; e=; t=a=b")]);
        assert_eq!(odd.cookie("lone"), None);
        assert_eq!(odd.cookie("q"), Some("\""));
        assert_eq!(odd.cookie("e"), Some(""));
        assert_eq!(odd.cookie("t"), Some("a=b"));
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
    fn error_display() {
        assert_eq!(
            HttpError::Malformed("x".into()).to_string(),
            "malformed request: x"
        );
        assert_eq!(HttpError::TooLarge.to_string(), "request head too large");
    }

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

    #[test]
    fn subprotocol_names_are_tokens() {
        assert!(is_token("chat.v2") && is_token("mqtt") && is_token("a_b-c~1"));
        for bad in ["", "a b", "a,b", "a;b", "é", "a\r\n"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
