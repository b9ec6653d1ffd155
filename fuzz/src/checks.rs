//! The properties the fuzz targets hold corecast's parsers to, beyond "does not panic". Pure
//! functions over one input; shared by the libFuzzer targets and the stable randomized test.

use corecast::http::{self, HeadParse};
use corecast::ws::frame::{self, Decoder, Inbound, OpCode, ProtocolError};

/// Frame decoding: the first byte picks the direction and the size limit, the second how the
/// rest is cut into reads. Decoding the rest in one read and in many must give the same items
/// and the same error; every item must respect the limit and RFC 6455; and the decoder never
/// holds more than one message's worth of bytes.
pub fn frames(data: &[u8]) {
    let [mode, cut, input @ ..] = data else {
        return;
    };
    let limit = [125, 1024, 64 * 1024][usize::from(*mode % 3)];
    let server_frames = mode & 0x80 != 0;
    let new = || {
        if server_frames {
            Decoder::for_server_frames(limit)
        } else {
            Decoder::new(limit)
        }
    };

    let mut whole = new();
    let mut once = Vec::new();
    let once_result = whole.feed(input, &mut once);

    let mut pieces = new();
    let mut many = Vec::new();
    let mut many_result = Ok(());
    let mut rest = input;
    let mut step = usize::from(*cut % 17) + 1;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        many_result = pieces.feed(chunk, &mut many);
        // A decoder never holds more than a frame header, one control payload and one
        // message below the limit.
        assert!(
            pieces.buffered() <= limit + 14 + 125,
            "holds {} bytes",
            pieces.buffered()
        );
        if many_result.is_err() {
            break;
        }
        step = step % 13 + 1;
    }
    assert_eq!(once, many, "items differ between one read and many");
    assert_eq!(
        once_result, many_result,
        "outcome differs between one read and many"
    );

    for item in &once {
        match item {
            Inbound::Message { binary, data } => {
                assert!(
                    data.len() <= limit,
                    "a {} B message passed a {limit} B limit",
                    data.len()
                );
                assert!(
                    *binary || std::str::from_utf8(data).is_ok(),
                    "invalid UTF-8 text passed"
                );
            }
            Inbound::Ping(p) | Inbound::Pong(p) => assert!(p.len() <= 125),
            Inbound::Close { code, reason } => {
                assert!(code.map_or(reason.is_empty(), frame::is_valid_received_close_code));
                assert!(reason.len() <= 123);
            }
        }
    }
    if let Err(e) = &once_result {
        assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
    }
}

/// Request heads: any bytes, any limit. A complete head fits the limit and its fields read
/// without panicking; an incomplete one is below the limit; an error answers 400 or 431.
pub fn request_head(data: &[u8]) {
    let [scale, input @ ..] = data else { return };
    let limit = 64 + usize::from(*scale) * 32;
    match http::parse_head(input, limit) {
        Ok(HeadParse::Complete { head, consumed }) => {
            assert!(
                consumed <= input.len() && consumed <= limit,
                "consumed {consumed}"
            );
            let _ = (head.method(), head.raw_query(), head.http_minor_version());
            let _ = (
                head.header("host"),
                head.cookie("sid"),
                head.query("topics"),
            );
            for (name, value) in head.headers() {
                assert!(!name.is_empty());
                assert!(!value.contains(['\r', '\n']));
            }
            for segment in head.path().split('/') {
                let _ = http::decode_segment(segment);
            }
            let _ = http::check_upgrade(&head);
        }
        Ok(HeadParse::Partial) => assert!(
            input.len() < limit,
            "{} B pending past a {limit} B limit",
            input.len()
        ),
        Err(e) => assert!(matches!(e.status(), 400 | 431)),
    }
}

/// Close frames: the input (cut to 125 bytes) is a close frame's payload. The decoder must
/// agree with RFC 6455 §5.5.1 and §7.4: empty is "no code", one byte is a protocol error, a
/// code must be one a peer may send, and the reason must be UTF-8 (else 1007).
pub fn close_frame(data: &[u8]) {
    let payload = &data[..data.len().min(125)];
    let bytes = frame::encode_masked(OpCode::Close, payload, [0x37, 0xfa, 0x21, 0x3d]);
    let mut items = Vec::new();
    let result = Decoder::new(usize::MAX).feed(&bytes, &mut items);
    match payload {
        [] => assert_eq!(
            items,
            [Inbound::Close {
                code: None,
                reason: String::new()
            }]
        ),
        [_] => assert_eq!(result.map_err(|e| e.close_code()), Err(1002)),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            match (
                frame::is_valid_received_close_code(code),
                std::str::from_utf8(reason),
            ) {
                (false, _) => assert_eq!(result.map_err(|e| e.close_code()), Err(1002)),
                (true, Err(_)) => assert_eq!(result, Err(ProtocolError::InvalidUtf8)),
                (true, Ok(text)) => {
                    assert_eq!(
                        items,
                        [Inbound::Close {
                            code: Some(code),
                            reason: text.into()
                        }]
                    );
                }
            }
        }
    }
}
