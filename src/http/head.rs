//! The HTTP/1.1 request head: parsing the bytes read so far into a [`RequestHead`], and reading
//! its method, target, query pairs, headers and cookies.
//!
//! Not query-string splitting or percent-decoding (that is [`super::query`]), not the WebSocket
//! upgrade rules (that is [`super::upgrade`]), not I/O, and no response writing (that is
//! [`mod@super::response`]).

use std::borrow::Cow;
use std::fmt;

use super::query::{decode_form, query_pieces};
use super::tokens::{split_unquoted, trim_ows};

/// Most header fields a request head may carry; more is [`HttpError::Malformed`].
pub const MAX_HEADERS: usize = 64;

/// Where one string lives: in the head's text, or (`common`) at index `start` of `COMMON`.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
    common: bool,
}

/// Header names and values most WebSocket handshakes carry, as browsers and client libraries
/// send them, and the usual method and path. A head's method, path, header name or value that
/// is one of these is not stored: its index entry names it here, so a browser's handshake
/// keeps its key, host, origin, cookies and user agent but not the names around them, nor
/// `websocket`, `Upgrade` or `13`.
const COMMON: &[&str] = &[
    "GET",
    "/",
    "Host",
    "Upgrade",
    "websocket",
    "Connection",
    "keep-alive, Upgrade",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "13",
    "Sec-WebSocket-Extensions",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate",
    "Sec-WebSocket-Protocol",
    "Origin",
    "User-Agent",
    "Pragma",
    "no-cache",
    "Cache-Control",
    "Accept",
    "*/*",
    "Accept-Encoding",
    "gzip, deflate, br, zstd",
    "gzip, deflate, br",
    "gzip, deflate",
    "Accept-Language",
    "en-US,en;q=0.9",
    "Sec-Fetch-Dest",
    "Sec-Fetch-Mode",
    "Sec-Fetch-Site",
    "same-origin",
    "cross-site",
    "Cookie",
    "Authorization",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "https",
    "http",
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "origin",
    "user-agent",
];

/// The index's first entries: method, path, raw query; the query pairs follow, then the
/// header pairs.
const FIXED_SPANS: usize = 3;

/// A parsed HTTP/1.1 request head, kept for the whole life of the connection. Memory-lean:
/// every string (method, path, query, decoded query pairs, headers) and the index of where
/// each one lies share one allocation, however many headers the head has.
#[derive(Clone)]
pub struct RequestHead {
    /// The strings, then the index: each string's start and length as little-endian
    /// integers of `width` bytes (2, or 4 for a text over 64 KiB).
    data: Box<[u8]>,
    /// Where the index starts: the strings' length. `data[..text_len]` is UTF-8, being the
    /// concatenation of `&str`s (`TextBuilder`).
    text_len: u32,
    /// How many query pairs the index holds; header pairs fill the rest.
    query_pairs: u32,
    width: u8,
    /// The `x` of `HTTP/1.x`, needed for the 1.1 rule of RFC 6455 §4.2.1.
    minor_version: u8,
}

/// Builds the single text buffer of a head and the spans that index it.
#[derive(Default)]
struct TextBuilder {
    text: String,
    spans: Vec<Span>,
}

impl TextBuilder {
    fn push(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span {
            start: start as u32,
            len: s.len() as u32,
            common: false,
        }
    }

    /// `push`, unless `s` is one of `COMMON`.
    fn push_or_share(&mut self, s: &str) -> Span {
        match COMMON.iter().position(|common| *common == s) {
            Some(i) => Span {
                start: i as u32,
                len: s.len() as u32,
                common: true,
            },
            None => self.push(s),
        }
    }

    /// Lays the text and its index out in one buffer. An entry of `COMMON` starts past the
    /// text: at the text's length plus its index in `COMMON`.
    fn finish(self, query_pairs: usize, minor_version: u8) -> RequestHead {
        let text_len = self.text.len();
        let width: u8 = if text_len + COMMON.len() <= usize::from(u16::MAX) {
            2
        } else {
            4
        };
        let mut data = self.text.into_bytes();
        data.reserve_exact(self.spans.len() * 2 * usize::from(width));
        for span in &self.spans {
            let start = span.start + if span.common { text_len as u32 } else { 0 };
            for n in [start, span.len] {
                let bytes = n.to_le_bytes();
                data.extend_from_slice(bytes.get(..usize::from(width)).unwrap_or_default());
            }
        }
        RequestHead {
            data: data.into_boxed_slice(),
            text_len: text_len as u32,
            query_pairs: query_pairs as u32,
            width,
            minor_version,
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
        let method = b.push_or_share(method);
        let path = b.push_or_share(path);
        // Always stored: decoded query pieces point into it.
        let raw_query_span = b.push(raw_query);
        b.spans.extend([method, path, raw_query_span]);
        // A name or value that needs no decoding points into the raw query rather than being
        // stored twice (a subscriber's `?topics=...` is kept for the connection's whole life).
        let mut query_pairs = 0;
        for ((n, n_at), (v, v_at)) in query_pieces(raw_query) {
            for (piece, at) in [(n, n_at), (v, v_at)] {
                let span = match decode_form(piece) {
                    Cow::Borrowed(same) => Span {
                        start: raw_query_span.start + at as u32,
                        len: same.len() as u32,
                        common: false,
                    },
                    Cow::Owned(other) => b.push(&other),
                };
                b.spans.push(span);
            }
            query_pairs += 1;
        }
        for (n, v) in headers {
            let pair = [b.push_or_share(n), b.push_or_share(v)];
            b.spans.extend(pair);
        }
        b.finish(query_pairs, minor_version)
    }

    /// The strings (heads are under 4 GiB: parsing limits them to a few KiB).
    fn text(&self) -> &str {
        let bytes = self.data.get(..self.text_len as usize).unwrap_or_default();
        // SAFETY: `TextBuilder::finish` put exactly the pushed `&str`s, concatenated, before
        // `text_len`, and `data` is never changed afterwards.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The `i`th string of the index.
    fn string(&self, i: usize) -> &str {
        let width = usize::from(self.width);
        let at = self.text_len as usize + i * 2 * width;
        let int = |at: usize| match self.data.get(at..at + width) {
            Some(&[a, b]) => usize::from(u16::from_le_bytes([a, b])),
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
            _ => 0,
        };
        let (start, len) = (int(at), int(at + width));
        if len == 0 {
            // An empty string may start at the text's end, where `COMMON`'s indices begin.
            return "";
        }
        match start.checked_sub(self.text_len as usize) {
            None => self.text().get(start..start + len),
            Some(common) => COMMON.get(common).copied(),
        }
        .unwrap_or_default()
    }

    /// The strings of the index as pairs, from its `first` string up to its end or `count`
    /// pairs.
    fn pairs(&self, first: usize, count: usize) -> impl Iterator<Item = (&str, &str)> + '_ {
        let strings = (self.data.len() - self.text_len as usize) / (2 * usize::from(self.width));
        (first..strings)
            .step_by(2)
            .take(count)
            .map(move |i| (self.string(i), self.string(i + 1)))
    }

    /// The whole text buffer, to check what a head stores.
    #[cfg(test)]
    pub(super) fn stored_text(&self) -> &str {
        self.text()
    }

    /// The request method, case as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub fn method(&self) -> &str {
        self.string(0)
    }

    /// The target path without `?query` (or fragment), not percent-decoded.
    ///
    /// An absolute-form target (`http://host/p`, RFC 9112 §3.2.2) yields its
    /// path part; an empty path reads as `/`.
    pub fn path(&self) -> &str {
        self.string(1)
    }

    /// The query string as sent, without the `?`; empty when there is none.
    pub fn raw_query(&self) -> &str {
        self.string(2)
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
        self.pairs(FIXED_SPANS, self.query_pairs as usize)
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
        self.pairs(FIXED_SPANS + 2 * self.query_pairs as usize, usize::MAX)
    }

    /// Trimmed values of every header called `name`, in order.
    pub(super) fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| trim_ows(v))
    }

    /// The items of every header called `name` read as a comma-separated list, trimmed, empty
    /// ones skipped (repeated fields combine, RFC 9110 §5.3 and §5.6.1).
    pub(super) fn list_items<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values(name)
            .flat_map(|v| split_unquoted(v, b','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
    }

    /// Whether any header called `name` lists `token`, case-insensitively.
    pub(super) fn has_token(&self, name: &str, token: &str) -> bool {
        self.list_items(name).any(|t| t.eq_ignore_ascii_case(token))
    }
}

impl fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", &self.method())
            .field("path", &self.path())
            .field("query", &self.raw_query())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("minor_version", &self.minor_version)
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (RequestHead, usize) {
        match parse_head(buf, 8192) {
            Ok(HeadParse::Complete { head, consumed }) => (head, consumed),
            other => panic!("expected a complete head, got {other:?}"),
        }
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
    fn a_head_is_one_allocation_with_a_narrow_index() {
        let (h, _) =
            complete(b"GET /ws?a=%41&b=2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n");
        // The strings not in COMMON, then 2-byte starts and lengths: method, path, query, 2
        // query pairs, 2 headers: 11 strings.
        assert_eq!(h.stored_text(), "/wsa=%41&b=2Ax");
        assert_eq!(h.data.len(), h.stored_text().len() + 11 * 4);
        assert_eq!(std::mem::size_of::<RequestHead>(), 32);
        let pairs: Vec<_> = h.query_pairs().collect();
        assert_eq!(pairs, [("a", "A"), ("b", "2")]);
    }

    #[test]
    fn a_browser_handshake_stores_only_what_is_its_own() {
        let buf = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n\
            Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11)\r\n\
            Upgrade: websocket\r\nOrigin: https://example.com\r\nSec-WebSocket-Version: 13\r\n\
            Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
        let (h, _) = complete(buf);
        assert_eq!(
            h.stored_text(),
            "/chatexample.comMozilla/5.0 (X11)https://example.comdGhlIHNhbXBsZSBub25jZQ=="
        );
        // Read back whole, wherever each string lives.
        assert_eq!(h.method(), "GET");
        assert_eq!(h.header("pragma"), Some("no-cache"));
        assert_eq!(h.header("sec-websocket-version"), Some("13"));
        assert_eq!(h.header("accept-encoding"), Some("gzip, deflate, br"));
        assert_eq!(
            h.header("sec-websocket-key"),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        let names: Vec<_> = h.headers().map(|(n, _)| n).collect();
        assert_eq!(names[..3], ["Host", "Connection", "Pragma"]);
        assert_eq!(names.len(), 12);
    }

    #[test]
    fn a_head_over_64_kib_has_a_wide_index() {
        let long = "v".repeat(70_000);
        let h = RequestHead::new("GET", "/p?q=1", &[("X-Long", &long), ("X-After", "z")]);
        assert_eq!(h.width, 4);
        assert_eq!(h.header("x-long"), Some(&*long));
        assert_eq!(h.header("x-after"), Some("z"));
        assert_eq!(h.query("q"), Some("1"));
        assert_eq!(h.headers().count(), 2);
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
    fn error_display() {
        assert_eq!(
            HttpError::Malformed("x".into()).to_string(),
            "malformed request: x"
        );
        assert_eq!(HttpError::TooLarge.to_string(), "request head too large");
    }
}
