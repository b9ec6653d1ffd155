//! Query strings and percent-decoding: splitting `a=1&b=2` into pairs, decoding
//! application/x-www-form-urlencoded pieces, and decoding path segments.
//!
//! Not request-head parsing (that is [`super::head`], which stores the decoded pairs), and not
//! percent-encoding.

use std::borrow::Cow;

/// Splits a query string into raw (name, value) pieces, each with its byte offset in `query`;
/// a piece without `=` has an empty value.
pub(super) fn query_pieces(
    query: &str,
) -> impl Iterator<Item = ((&str, usize), (&str, usize))> + '_ {
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
pub(super) fn decode_form(s: &str) -> Cow<'_, str> {
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

#[cfg(test)]
mod tests {
    use crate::http::RequestHead;

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
        assert_eq!(plain.stored_text(), "/wstopics=t1,t2&x=1&flag");
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
}
