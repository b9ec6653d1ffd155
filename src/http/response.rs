//! HTTP/1.1 response bytes for the handshake: the 101 and plain-text errors.
//!
//! Builds byte vectors only: not I/O; the caller writes them to the socket.

/// The 101 response completing the handshake (RFC 6455 §4.2.2): "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n" exactly, with "Sec-WebSocket-Protocol: {protocol}\r\n" when a subprotocol was selected and then "Sec-WebSocket-Extensions: {extensions}\r\n" when an extension was agreed, before the blank line.
///
/// CR and LF are removed from every argument (a real accept key never has them),
/// so a bad argument cannot split the response.
pub fn switching_protocols(
    accept: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Vec<u8> {
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\n";
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(HEAD);
    let fields = [
        ("Sec-WebSocket-Accept", Some(accept)),
        ("Sec-WebSocket-Protocol", protocol.filter(|p| !p.is_empty())),
        (
            "Sec-WebSocket-Extensions",
            extensions.filter(|e| !e.is_empty()),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend(value.bytes().filter(|b| !matches!(b, b'\r' | b'\n')));
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// An error response that closes the connection: status line with the standard reason phrase (400 Bad Request, 401 Unauthorized, 403 Forbidden, 404 Not Found, 405 Method Not Allowed, 409 Conflict, 413 Payload Too Large, 426 Upgrade Required, 429 Too Many Requests, 431 Request Header Fields Too Large, 500 Internal Server Error, 503 Service Unavailable, others "Unknown"), then the extra headers, then "Content-Type: text/plain; charset=utf-8", "Content-Length: N", "Connection: close", blank line, body. Header names/values containing CR or LF are dropped (no response splitting).
///
/// Also dropped: names that are not tokens (RFC 9110 §5.1), values holding
/// NUL (RFC 9110 §5.5), and extra `Content-Type`, `Content-Length`,
/// `Transfer-Encoding` or `Connection` headers, which would contradict the
/// ones written here (RFC 9112 §6.3). A status outside 100..=599 (RFC 9110
/// §15) is sent as 500.
pub fn error_response(status: u16, body: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        extra_headers,
    )
}

/// A complete response that closes the connection, with any content type: the same rules as
/// [`error_response`] for the status and the extra headers.
pub fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for &(name, value) in extra_headers {
        if is_token(name) && is_safe_value(value) && !is_reserved(name) {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
    }
    if is_safe_value(content_type) {
        head.push_str("Content-Type: ");
        head.push_str(content_type);
        head.push_str("\r\n");
    }
    head.push_str("Content-Length: ");
    head.push_str(&body.len().to_string());
    head.push_str("\r\nConnection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The standard reason phrase for a status code.
///
/// Covers the error codes listed for [`error_response`] plus 101 and 200;
/// any other code reads "Unknown".
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// field-name = token (RFC 9110 §5.1, tchar in §5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// CR, LF and NUL are never allowed in a field value (RFC 9110 §5.5).
fn is_safe_value(value: &str) -> bool {
    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Headers this module writes itself.
fn is_reserved(name: &str) -> bool {
    [
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
    ]
    .iter()
    .any(|r| name.eq_ignore_ascii_case(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_example_101() {
        // RFC 6455 §1.3: the key and accept value of the sample handshake.
        let accept = tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            switching_protocols(&accept, None, None),
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn switching_protocols_names_the_selected_subprotocol() {
        assert_eq!(
            switching_protocols("abc=", Some("chat.v2"), None),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\
              Sec-WebSocket-Protocol: chat.v2\r\n\r\n"
        );
        assert_eq!(
            switching_protocols("abc=", Some(""), Some("")),
            switching_protocols("abc=", None, None)
        );
    }

    #[test]
    fn switching_protocols_strips_line_breaks() {
        assert_eq!(
            switching_protocols("a\r\nX: y", None, Some("x\r\ny")),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: aX: y\r\n\
              Sec-WebSocket-Extensions: xy\r\n\r\n"
        );
    }

    #[test]
    fn switching_protocols_names_the_agreed_extension_after_the_subprotocol() {
        assert_eq!(
            switching_protocols("abc=", Some("chat"), Some("permessage-deflate")),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\
              Sec-WebSocket-Protocol: chat\r\n\
              Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        );
    }

    #[test]
    fn error_426_with_version() {
        assert_eq!(
            error_response(426, "upgrade required", &[("Sec-WebSocket-Version", "13")]),
            b"HTTP/1.1 426 Upgrade Required\r\n\
              Sec-WebSocket-Version: 13\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 16\r\n\
              Connection: close\r\n\r\n\
              upgrade required"
        );
    }

    #[test]
    fn error_body_length_is_bytes() {
        assert_eq!(
            error_response(404, "n\u{e9}", &[]),
            "HTTP/1.1 404 Not Found\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\n\
             Connection: close\r\n\r\n\
             n\u{e9}"
                .as_bytes()
        );
        assert_eq!(
            error_response(400, "", &[]),
            b"HTTP/1.1 400 Bad Request\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 0\r\n\
              Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn unsafe_headers_dropped() {
        let extra = [
            ("X-Ok", "1"),
            ("X-Bad\r\nSet-Cookie", "a=b"),
            ("X-Split", "v\r\nSet-Cookie: a=b"),
            ("X-Lf", "v\nw"),
            ("X-Nul", "v\0"),
            ("Bad Name", "v"),
            ("", "v"),
            ("content-length", "99"),
            ("Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "text/html"),
            ("Retry-After", "5"),
        ];
        assert_eq!(
            error_response(503, "busy", &extra),
            b"HTTP/1.1 503 Service Unavailable\r\n\
              X-Ok: 1\r\n\
              Retry-After: 5\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 4\r\n\
              Connection: close\r\n\r\n\
              busy"
        );
    }

    #[test]
    fn odd_status_codes() {
        assert_eq!(
            error_response(418, "", &[]),
            b"HTTP/1.1 418 Unknown\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 0\r\n\
              Connection: close\r\n\r\n"
        );
        let out = error_response(7, "", &[]);
        assert!(out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
        let out = error_response(1000, "", &[]);
        assert!(out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
    }

    #[test]
    fn reason_phrases() {
        let table = [
            (101, "Switching Protocols"),
            (200, "OK"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (409, "Conflict"),
            (413, "Payload Too Large"),
            (426, "Upgrade Required"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
            (402, "Unknown"),
            (0, "Unknown"),
        ];
        for (code, phrase) in table {
            assert_eq!(reason_phrase(code), phrase, "{code}");
        }
    }
}
