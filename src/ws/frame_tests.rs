//! Byte-for-byte tests of the RFC 6455 framing in `frame.rs`.

use super::*;

/// The RFC 6455 §5.7 masking key.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Builds a masked client frame with the shortest length form.
fn client_frame(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut v = vec![b0];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

fn decode_all(max: usize, input: &[u8]) -> Result<Vec<Inbound>, ProtocolError> {
    let mut d = Decoder::new(max);
    let mut out = Vec::new();
    d.feed(input, &mut out)?;
    Ok(out)
}

fn text(s: &str) -> Inbound {
    Inbound::Message {
        binary: false,
        data: Bytes::copy_from_slice(s.as_bytes()),
    }
}

fn protocol_err(input: &[u8]) -> &'static str {
    match decode_all(usize::MAX, input) {
        Err(ProtocolError::Protocol(what)) => what,
        other => panic!("expected protocol error, got {other:?}"),
    }
}

// ---- RFC 6455 §5.7 examples ----

#[test]
fn rfc_masked_hello_bytes() {
    let frame = client_frame(0x81, b"Hello", KEY);
    assert_eq!(
        frame,
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );
}

#[test]
fn decode_rfc_masked_hello() {
    let input = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    assert_eq!(d.feed(&input, &mut out), Ok(()));
    assert_eq!(out, vec![text("Hello")]);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn encode_rfc_unmasked_hello() {
    let frame = encode(OpCode::Text, b"Hello");
    assert_eq!(&frame[..], [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
}

#[test]
fn decode_rejects_rfc_unmasked_hello() {
    let input = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(protocol_err(&input), "client frame not masked");
}

#[test]
fn decode_rfc_fragmented_hel_lo() {
    let first = client_frame(0x01, b"Hel", KEY);
    let second = client_frame(0x80, b"lo", KEY);
    // The unmasked shapes are exactly the RFC's `01 03 48 65 6c` and `80 02 6c 6f`.
    assert_eq!(first[..2], [0x01, 0x83]);
    assert_eq!(second[..2], [0x80, 0x82]);
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    d.feed(&first, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(d.buffered(), 3);
    d.feed(&second, &mut out).unwrap();
    assert_eq!(out, vec![text("Hello")]);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn encode_rfc_ping_hello() {
    let frame = encode(OpCode::Ping, b"Hello");
    assert_eq!(&frame[..], [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
}

#[test]
fn decode_rfc_masked_pong_hello_and_ping() {
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let ping = client_frame(0x89, b"Hello", KEY);
    let mut input = pong.to_vec();
    input.extend_from_slice(&ping);
    let out = decode_all(usize::MAX, &input).unwrap();
    assert_eq!(
        out,
        vec![
            Inbound::Pong(Bytes::from_static(b"Hello")),
            Inbound::Ping(Bytes::from_static(b"Hello")),
        ]
    );
}

#[test]
fn encode_rfc_256_byte_binary() {
    let payload = vec![0xAB; 256];
    let frame = encode(OpCode::Binary, &payload);
    assert_eq!(frame.len(), 260);
    assert_eq!(frame[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(&frame[4..], &payload[..]);
    let mut header = [0u8; 10];
    assert_eq!(encode_header(OpCode::Binary, 256, &mut header), 4);
    assert_eq!(header[..4], [0x82, 0x7E, 0x01, 0x00]);
}

#[test]
fn encode_rfc_64k_binary() {
    let payload = vec![0x5A; 65536];
    let frame = encode(OpCode::Binary, &payload);
    assert_eq!(frame.len(), 65546);
    assert_eq!(
        frame[..10],
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(&frame[10..], &payload[..]);
    let mut header = [0u8; 10];
    assert_eq!(encode_header(OpCode::Binary, 65536, &mut header), 10);
    assert_eq!(
        header,
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
}

#[test]
fn encode_header_length_boundaries() {
    let mut h = [0u8; 10];
    assert_eq!(encode_header(OpCode::Text, 0, &mut h), 2);
    assert_eq!(h[..2], [0x81, 0x00]);
    assert_eq!(encode_header(OpCode::Pong, 125, &mut h), 2);
    assert_eq!(h[..2], [0x8A, 125]);
    assert_eq!(encode_header(OpCode::Text, 126, &mut h), 4);
    assert_eq!(h[..4], [0x81, 0x7E, 0x00, 0x7E]);
    assert_eq!(encode_header(OpCode::Close, 65535, &mut h), 4);
    assert_eq!(h[..4], [0x88, 0x7E, 0xFF, 0xFF]);
    assert_eq!(encode_header(OpCode::Continuation, 1, &mut h), 2);
    assert_eq!(h[..2], [0x80, 0x01]);
}

#[test]
fn decode_256_and_64k_binary() {
    for len in [256usize, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let frame = client_frame(0x82, &payload, KEY);
        let expected_header: &[u8] = if len == 256 {
            &[0x82, 0xFE, 0x01, 0x00]
        } else {
            &[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]
        };
        assert_eq!(&frame[..expected_header.len()], expected_header);
        let out = decode_all(usize::MAX, &frame).unwrap();
        assert_eq!(
            out,
            vec![Inbound::Message {
                binary: true,
                data: Bytes::from(payload)
            }]
        );
    }
}

// ---- incremental feeding ----

#[test]
fn split_at_every_offset_decodes_identically() {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let frames: Vec<(Vec<u8>, usize)> = vec![
        (client_frame(0x81, b"Hello", KEY), 1),
        (client_frame(0x81, "h\u{e9}llo \u{20ac}".as_bytes(), KEY), 1),
        (client_frame(0x82, &[7u8; 300], [1, 2, 3, 4]), 1),
        // Every offset within the 14-byte header, then a stride through the payload.
        (client_frame(0x82, &big, [5, 6, 7, 8]), 997),
    ];
    for (frame, stride) in frames {
        let whole = decode_all(usize::MAX, &frame).unwrap();
        assert_eq!(whole.len(), 1);
        let len = frame.len();
        let cuts = (0..=16)
            .chain((16..=len).step_by(stride))
            .chain([len - 1, len]);
        for cut in cuts.filter(|&c| c <= len) {
            let mut d = Decoder::new(usize::MAX);
            let mut out = Vec::new();
            d.feed(&frame[..cut], &mut out).unwrap();
            if cut < frame.len() {
                assert!(out.is_empty(), "cut {cut}");
            }
            d.feed(&frame[cut..], &mut out).unwrap();
            assert_eq!(out, whole, "cut {cut}");
            assert_eq!(d.buffered(), 0);
        }
    }
}

#[test]
fn byte_at_a_time_keeps_only_partial_bytes() {
    let frame = client_frame(0x81, b"Hello", KEY);
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    for (i, b) in frame.iter().enumerate() {
        d.feed(std::slice::from_ref(b), &mut out).unwrap();
        let expected = match i {
            0..=4 => i + 1, // header bytes
            5 => 0,         // header complete, no payload yet
            10 => 0,        // message delivered
            _ => i - 5,     // payload bytes
        };
        assert_eq!(d.buffered(), expected, "after byte {i}");
    }
    assert_eq!(out, vec![text("Hello")]);
}

#[test]
fn large_frame_in_many_chunks() {
    let payload: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    let frame = client_frame(0x82, &payload, [0xde, 0xad, 0xbe, 0xef]);
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    for chunk in frame.chunks(997) {
        d.feed(chunk, &mut out).unwrap();
    }
    assert_eq!(
        out,
        vec![Inbound::Message {
            binary: true,
            data: Bytes::from(payload)
        }]
    );
    assert_eq!(d.buffered(), 0);
}

#[test]
fn several_frames_in_one_feed() {
    let mut input = client_frame(0x81, b"one", KEY);
    input.extend(client_frame(0x82, &[1, 2, 3], [9, 8, 7, 6]));
    input.extend(client_frame(0x89, b"", KEY));
    input.extend(client_frame(0x81, b"", KEY));
    input.extend(client_frame(0x8A, b"p", KEY));
    input.extend(client_frame(0x81, b"two", KEY));
    // A trailing partial header stays buffered.
    input.extend_from_slice(&[0x81, 0x85, 0x37]);
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    d.feed(&input, &mut out).unwrap();
    assert_eq!(
        out,
        vec![
            text("one"),
            Inbound::Message {
                binary: true,
                data: Bytes::from_static(&[1, 2, 3])
            },
            Inbound::Ping(Bytes::new()),
            text(""),
            Inbound::Pong(Bytes::from_static(b"p")),
            text("two"),
        ]
    );
    assert_eq!(d.buffered(), 3);
}

#[test]
fn fragmentation_with_interleaved_ping() {
    let mut input = client_frame(0x01, b"Hel", KEY);
    input.extend(client_frame(0x89, b"ping", [1, 1, 1, 1]));
    input.extend(client_frame(0x00, b"l", KEY));
    input.extend(client_frame(0x8A, b"", KEY));
    input.extend(client_frame(0x80, b"o", KEY));
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    // "Hel" (9 bytes), the ping (10 bytes) and the next header's first byte.
    d.feed(&input[..20], &mut out).unwrap();
    // The ping is delivered at once, while "Hel" is still held.
    assert_eq!(out, vec![Inbound::Ping(Bytes::from_static(b"ping"))]);
    assert_eq!(d.buffered(), 3 + 1);
    d.feed(&input[20..], &mut out).unwrap();
    assert_eq!(
        out,
        vec![
            Inbound::Ping(Bytes::from_static(b"ping")),
            Inbound::Pong(Bytes::new()),
            text("Hello"),
        ]
    );
    assert_eq!(d.buffered(), 0);
}

#[test]
fn fragmented_binary_with_empty_fragments() {
    let mut input = client_frame(0x02, b"", KEY);
    input.extend(client_frame(0x00, &[1, 2], KEY));
    input.extend(client_frame(0x00, b"", KEY));
    input.extend(client_frame(0x80, &[3], KEY));
    let out = decode_all(usize::MAX, &input).unwrap();
    assert_eq!(
        out,
        vec![Inbound::Message {
            binary: true,
            data: Bytes::from_static(&[1, 2, 3])
        }]
    );
}

#[test]
fn non_minimal_length_encoding_is_accepted() {
    // "Hello" with a 16-bit length, then with a 64-bit length.
    let masked = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
    let mut a = vec![0x81, 0xFE, 0x00, 0x05];
    a.extend_from_slice(&KEY);
    a.extend_from_slice(&masked);
    let mut b = vec![0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5];
    b.extend_from_slice(&KEY);
    b.extend_from_slice(&masked);
    assert_eq!(decode_all(usize::MAX, &a).unwrap(), vec![text("Hello")]);
    assert_eq!(decode_all(usize::MAX, &b).unwrap(), vec![text("Hello")]);
}

#[test]
fn server_frames_decode_in_the_client_role() {
    let mut d = Decoder::for_server_frames(1 << 20);
    let mut out = Vec::new();
    let mut input = encode(OpCode::Text, b"Hello").to_vec();
    input.extend_from_slice(&encode(OpCode::Binary, &[7u8; 300]));
    d.feed(&input, &mut out).unwrap();
    assert_eq!(
        out,
        vec![
            Inbound::Message {
                binary: false,
                data: Bytes::from_static(b"Hello")
            },
            Inbound::Message {
                binary: true,
                data: Bytes::from(vec![7u8; 300])
            },
        ]
    );
    // A masked frame from a server is a violation (RFC 6455 §5.1).
    let mut d = Decoder::for_server_frames(1 << 20);
    let masked = encode_masked(OpCode::Text, b"Hello", KEY);
    assert_eq!(
        d.feed(&masked, &mut out),
        Err(ProtocolError::Protocol("server frame masked"))
    );
}

#[test]
fn encode_masked_is_the_rfc_example() {
    assert_eq!(
        encode_masked(OpCode::Text, b"Hello", KEY),
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );
}

#[test]
fn unmask_matches_naive_at_every_phase() {
    let mask = [0x11, 0x22, 0x44, 0x88];
    for offset in 0..8 {
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, mask, offset);
            let naive: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(i + offset) % 4])
                .collect();
            assert_eq!(fast, naive, "offset {offset} len {len}");
        }
    }
}

// ---- protocol violations (RFC 6455 §5) ----

#[test]
fn violation_reserved_bits() {
    for rsv in [0x40u8, 0x20, 0x10] {
        let frame = client_frame(0x81 | rsv, b"x", KEY);
        assert_eq!(protocol_err(&frame), "reserved bits set");
    }
}

// ---- permessage-deflate (RFC 7692) ----

/// A decoder with permessage-deflate agreed.
fn decode_deflated(max: usize, input: &[u8]) -> Result<Vec<Inbound>, ProtocolError> {
    let mut d = Decoder::new(max);
    d.accept_deflate();
    let mut out = Vec::new();
    d.feed(input, &mut out)?;
    Ok(out)
}

/// RFC 7692 §7.2.3.1: "Hello" compressed, trailing 00 00 ff ff removed.
const HELLO_DEFLATED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

#[test]
fn deflate_rfc7692_single_frame_hello() {
    // §7.2.3.1's frame, masked as a client sends it: 0xc1 = FIN, RSV1, text.
    let frame = client_frame(0xc1, &HELLO_DEFLATED, KEY);
    assert_eq!(decode_deflated(100, &frame), Ok(vec![text("Hello")]));
    // Byte by byte too.
    let mut d = Decoder::new(100);
    d.accept_deflate();
    let mut out = Vec::new();
    for b in &frame {
        d.feed(std::slice::from_ref(b), &mut out).unwrap();
    }
    assert_eq!(out, [text("Hello")]);
}

#[test]
fn deflate_rfc7692_fragmented_hello() {
    // §7.2.3.1: the compressed bytes split over two frames; RSV1 only on the first.
    let mut input = client_frame(0x41, &HELLO_DEFLATED[..3], KEY);
    input.extend(client_frame(0x80, &HELLO_DEFLATED[3..], KEY));
    assert_eq!(decode_deflated(100, &input), Ok(vec![text("Hello")]));
}

#[test]
fn deflate_uncompressed_messages_still_pass() {
    let mut input = client_frame(0x81, b"plain", KEY);
    input.extend(client_frame(0xc2, &HELLO_DEFLATED, KEY));
    assert_eq!(
        decode_deflated(100, &input),
        Ok(vec![
            text("plain"),
            Inbound::Message {
                binary: true,
                data: Bytes::from_static(b"Hello")
            }
        ])
    );
}

#[test]
fn deflate_rsv1_only_where_the_extension_puts_it() {
    // Not agreed: RSV1 is still a violation.
    assert_eq!(
        protocol_err(&client_frame(0xc1, &HELLO_DEFLATED, KEY)),
        "reserved bits set"
    );
    let violation = |input: &[u8]| match decode_deflated(100, input) {
        Err(ProtocolError::Protocol(what)) => what,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    // §6.1: never on a continuation frame or a control frame; RSV2 and RSV3 stay reserved.
    let mut input = client_frame(0x01, b"He", KEY);
    input.extend(client_frame(0xc0, b"llo", KEY));
    assert_eq!(violation(&input), "reserved bits set");
    assert_eq!(
        violation(&client_frame(0xc9, b"", KEY)),
        "reserved bits set"
    );
    assert_eq!(
        violation(&client_frame(0xa1, b"x", KEY)),
        "reserved bits set"
    );
    assert_eq!(
        violation(&client_frame(0x91, b"x", KEY)),
        "reserved bits set"
    );
}

#[test]
fn deflate_text_is_validated_after_inflating() {
    let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
    let mut bad = Vec::with_capacity(64);
    c.compress_vec(b"ok \xff", &mut bad, flate2::FlushCompress::Sync)
        .unwrap();
    bad.truncate(bad.len() - 4);
    let frame = client_frame(0xc1, &bad, KEY);
    assert_eq!(
        decode_deflated(100, &frame),
        Err(ProtocolError::InvalidUtf8)
    );
    // The same bytes as a binary message are fine.
    let frame = client_frame(0xc2, &bad, KEY);
    assert!(decode_deflated(100, &frame).is_ok());
}

#[test]
fn deflate_bomb_gets_1009_at_the_inflated_size() {
    let mut c = flate2::Compress::new(flate2::Compression::new(9), false);
    let mut bomb = Vec::with_capacity(64 << 10);
    c.compress_vec(&vec![b'a'; 1 << 20], &mut bomb, flate2::FlushCompress::Sync)
        .unwrap();
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() < 2048, "{}", bomb.len());
    let frame = client_frame(0xc1, &bomb, KEY);
    let err = decode_deflated(64 << 10, &frame).unwrap_err();
    assert_eq!(err, ProtocolError::TooLarge { limit: 64 << 10 });
    assert_eq!(err.close_code(), 1009);
    match decode_deflated(1 << 20, &frame).unwrap().as_slice() {
        [Inbound::Message { data, .. }] => assert_eq!(data.len(), 1 << 20),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deflate_corrupt_data_is_1002() {
    let frame = client_frame(0xc2, &[0xff, 0xff, 0xff], KEY);
    let err = decode_deflated(100, &frame).unwrap_err();
    assert_eq!(err, ProtocolError::Protocol("invalid compressed data"));
    assert_eq!(err.close_code(), 1002);
}

#[test]
fn violation_reserved_opcodes() {
    for op in (0x3u8..=0x7).chain(0xB..=0xF) {
        let frame = client_frame(0x80 | op, b"x", KEY);
        assert_eq!(protocol_err(&frame), "reserved opcode", "opcode {op:#x}");
    }
}

#[test]
fn violation_detected_from_first_two_bytes() {
    // Fail fast: the mask bit is checked before the mask key arrives.
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    assert_eq!(
        d.feed(&[0x81, 0x05], &mut out),
        Err(ProtocolError::Protocol("client frame not masked"))
    );
}

#[test]
fn violation_fragmented_control_frames() {
    for op in [0x08u8, 0x09, 0x0A] {
        let frame = client_frame(op, b"", KEY);
        assert_eq!(protocol_err(&frame), "fragmented control frame");
    }
}

#[test]
fn violation_control_payload_over_125() {
    let ok = client_frame(0x89, &[0u8; 125], KEY);
    assert_eq!(
        decode_all(usize::MAX, &ok).unwrap(),
        vec![Inbound::Ping(Bytes::from(vec![0u8; 125]))]
    );
    let frame = client_frame(0x89, &[0u8; 126], KEY);
    assert_eq!(protocol_err(&frame), "control frame payload over 125 bytes");
    // Even a short payload with an extended length marker is over the limit.
    let mut frame = vec![0x8A, 0xFE, 0x00, 0x01];
    frame.extend_from_slice(&KEY);
    frame.push(0);
    assert_eq!(protocol_err(&frame), "control frame payload over 125 bytes");
}

#[test]
fn violation_continuation_without_message() {
    let frame = client_frame(0x80, b"lo", KEY);
    assert_eq!(
        protocol_err(&frame),
        "continuation frame without a message in progress"
    );
    // Also right after a complete message.
    let mut input = client_frame(0x81, b"a", KEY);
    input.extend(client_frame(0x00, b"b", KEY));
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    assert_eq!(
        d.feed(&input, &mut out),
        Err(ProtocolError::Protocol(
            "continuation frame without a message in progress"
        ))
    );
    // Items decoded before the violation stay in `out`.
    assert_eq!(out, vec![text("a")]);
}

#[test]
fn violation_new_message_during_fragmented_message() {
    for op in [0x81u8, 0x01, 0x82, 0x02] {
        let mut input = client_frame(0x01, b"Hel", KEY);
        input.extend(client_frame(op, b"x", KEY));
        assert_eq!(
            protocol_err(&input),
            "new data frame while a fragmented message is in progress"
        );
    }
}

#[test]
fn violation_64_bit_length_top_bit() {
    let mut frame = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
    frame.extend_from_slice(&KEY);
    assert_eq!(
        protocol_err(&frame),
        "64-bit payload length with top bit set"
    );
}

#[test]
fn error_is_sticky() {
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    let err = ProtocolError::Protocol("client frame not masked");
    assert_eq!(d.feed(&[0x81, 0x00], &mut out), Err(err.clone()));
    let good = client_frame(0x81, b"Hello", KEY);
    assert_eq!(d.feed(&good, &mut out), Err(err));
    assert!(out.is_empty());
    assert_eq!(d.buffered(), 0);
}

// ---- size limits ----

#[test]
fn too_large_on_header_alone() {
    // A 64-bit length of 2^32 with the mask key but no payload bytes.
    let mut frame = vec![0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0];
    frame.extend_from_slice(&KEY);
    let mut d = Decoder::new(1 << 20);
    let mut out = Vec::new();
    let err = d.feed(&frame, &mut out).unwrap_err();
    assert_eq!(err, ProtocolError::TooLarge { limit: 1 << 20 });
    assert_eq!(err.close_code(), 1009);
    assert_eq!(err.to_string(), "message larger than 1048576 bytes");
    assert_eq!(d.buffered(), 0);
    // 16-bit form, just one byte over a small limit.
    let mut frame = vec![0x81, 0xFE, 0x00, 0x65];
    frame.extend_from_slice(&KEY);
    assert_eq!(
        decode_all(100, &frame),
        Err(ProtocolError::TooLarge { limit: 100 })
    );
}

#[test]
fn limit_is_inclusive() {
    let frame = client_frame(0x82, &[1u8; 100], KEY);
    assert_eq!(decode_all(100, &frame).unwrap().len(), 1);
    let frame = client_frame(0x82, &[1u8; 101], KEY);
    assert_eq!(
        decode_all(100, &frame),
        Err(ProtocolError::TooLarge { limit: 100 })
    );
}

#[test]
fn too_large_on_fragments_summing_over_limit() {
    let mut d = Decoder::new(10);
    let mut out = Vec::new();
    d.feed(&client_frame(0x02, &[0u8; 6], KEY), &mut out)
        .unwrap();
    d.feed(&client_frame(0x00, &[0u8; 4], KEY), &mut out)
        .unwrap();
    assert_eq!(d.buffered(), 10);
    // Header only: rejected before any payload byte of this fragment arrives.
    let header = &client_frame(0x80, &[0u8; 1], KEY)[..6];
    assert_eq!(
        d.feed(header, &mut out),
        Err(ProtocolError::TooLarge { limit: 10 })
    );
    assert!(out.is_empty());
}

#[test]
fn control_frames_do_not_count_toward_message_size() {
    let mut input = client_frame(0x02, &[0u8; 8], KEY);
    input.extend(client_frame(0x89, &[0u8; 8], KEY));
    input.extend(client_frame(0x80, &[0u8; 2], KEY));
    let out = decode_all(10, &input).unwrap();
    assert_eq!(out.len(), 2);
}

// ---- UTF-8 (RFC 6455 §5.6, §8.1) ----

#[test]
fn utf8_split_across_fragments_is_valid() {
    // "€" is e2 82 ac; split after the first byte, and "😀" (f0 9f 98 80) after two.
    let mut input = client_frame(0x01, &[b'a', 0xe2], KEY);
    input.extend(client_frame(0x00, &[0x82, 0xac, 0xf0, 0x9f], KEY));
    input.extend(client_frame(0x80, &[0x98, 0x80], KEY));
    let out = decode_all(usize::MAX, &input).unwrap();
    assert_eq!(out, vec![text("a€😀")]);
}

#[test]
fn utf8_split_inside_one_frame_across_feeds() {
    let frame = client_frame(0x81, "€€".as_bytes(), KEY);
    for cut in 0..=frame.len() {
        let mut d = Decoder::new(usize::MAX);
        let mut out = Vec::new();
        d.feed(&frame[..cut], &mut out).unwrap();
        d.feed(&frame[cut..], &mut out).unwrap();
        assert_eq!(out, vec![text("€€")], "cut {cut}");
    }
}

#[test]
fn invalid_utf8_fails_before_final_fragment() {
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    d.feed(&client_frame(0x01, b"ok", KEY), &mut out).unwrap();
    // 0xff can never appear in UTF-8: rejected on this non-final fragment.
    assert_eq!(
        d.feed(&client_frame(0x00, &[b'x', 0xff], KEY), &mut out),
        Err(ProtocolError::InvalidUtf8)
    );
    assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
}

#[test]
fn invalid_utf8_fails_mid_frame() {
    // Only the header and the first payload bytes have arrived.
    let frame = client_frame(0x81, &[b'a', 0xc0, 0x80, b'b', b'c'], KEY);
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    assert_eq!(
        d.feed(&frame[..9], &mut out),
        Err(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn incomplete_utf8_at_end_of_message_is_invalid() {
    let mut input = client_frame(0x01, b"a", KEY);
    input.extend(client_frame(0x80, &[0xe2, 0x82], KEY));
    assert_eq!(
        decode_all(usize::MAX, &input),
        Err(ProtocolError::InvalidUtf8)
    );
    let single = client_frame(0x81, &[0xf0], KEY);
    assert_eq!(
        decode_all(usize::MAX, &single),
        Err(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn binary_is_not_utf8_checked() {
    let frame = client_frame(0x82, &[0xff, 0xfe], KEY);
    assert_eq!(
        decode_all(usize::MAX, &frame).unwrap(),
        vec![Inbound::Message {
            binary: true,
            data: Bytes::from_static(&[0xff, 0xfe])
        }]
    );
}

// ---- close frames (RFC 6455 §5.5.1, §7) ----

#[test]
fn close_with_empty_payload() {
    let out = decode_all(usize::MAX, &client_frame(0x88, b"", KEY)).unwrap();
    assert_eq!(
        out,
        vec![Inbound::Close {
            code: None,
            reason: String::new()
        }]
    );
}

#[test]
fn close_with_one_byte_payload() {
    let frame = client_frame(0x88, &[0x03], KEY);
    assert_eq!(protocol_err(&frame), "close payload of 1 byte");
}

#[test]
fn close_with_invalid_codes() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let frame = client_frame(0x88, &code.to_be_bytes(), KEY);
        assert_eq!(protocol_err(&frame), "invalid close code", "code {code}");
    }
}

#[test]
fn close_1000_with_reason() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bye ✓".as_bytes());
    let out = decode_all(usize::MAX, &client_frame(0x88, &payload, KEY)).unwrap();
    assert_eq!(
        out,
        vec![Inbound::Close {
            code: Some(1000),
            reason: "bye ✓".to_owned()
        }]
    );
}

#[test]
fn close_with_invalid_utf8_reason() {
    let frame = client_frame(0x88, &[0x03, 0xe8, 0xff], KEY);
    assert_eq!(
        decode_all(usize::MAX, &frame),
        Err(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn input_after_close_is_ignored() {
    let mut input = client_frame(0x81, b"a", KEY);
    input.extend(client_frame(0x88, &[0x03, 0xe9], KEY));
    input.extend(client_frame(0x81, b"b", KEY));
    // Garbage that would be a violation if parsed.
    input.extend_from_slice(&[0x81, 0x05, 0xff]);
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    d.feed(&input, &mut out).unwrap();
    let close = Inbound::Close {
        code: Some(1001),
        reason: String::new(),
    };
    assert_eq!(out, vec![text("a"), close.clone()]);
    assert!(d.is_closed());
    d.feed(&[0x00, 0x00], &mut out).unwrap();
    assert_eq!(out, vec![text("a"), close]);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn close_during_fragmented_message_drops_partial_message() {
    let mut input = client_frame(0x01, b"Hel", KEY);
    input.extend(client_frame(0x88, b"", KEY));
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    d.feed(&input, &mut out).unwrap();
    assert_eq!(
        out,
        vec![Inbound::Close {
            code: None,
            reason: String::new()
        }]
    );
    assert_eq!(d.buffered(), 0);
}

#[test]
fn wire_close_code_table() {
    let table: [(u16, Option<u16>); 14] = [
        (0, Some(1000)),
        (999, Some(1000)),
        (1000, Some(1000)),
        (1001, Some(1001)),
        (1004, Some(1000)),
        (1005, None),
        (1006, Some(1000)),
        (1012, Some(1012)),
        (1015, Some(1000)),
        (1016, Some(1000)),
        (2999, Some(1000)),
        (3000, Some(3000)),
        (4999, Some(4999)),
        (5000, Some(1000)),
    ];
    for (code, wire) in table {
        assert_eq!(wire_close_code(code), wire, "code {code}");
    }
}

#[test]
fn received_close_code_ranges() {
    let valid: Vec<u16> = (0..=u16::MAX)
        .filter(|&c| is_valid_received_close_code(c))
        .collect();
    assert_eq!(valid.len(), 4 + 8 + 2000);
    assert_eq!(valid[..4], [1000, 1001, 1002, 1003]);
    assert_eq!(
        valid[4..12],
        [1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]
    );
    assert_eq!(valid[12], 3000);
    assert_eq!(valid.last(), Some(&4999));
}

#[test]
fn truncate_reason_at_char_boundaries() {
    let ascii = "a".repeat(200);
    assert_eq!(truncate_reason(&ascii).len(), 123);
    let euro = "€".repeat(50);
    let cut = truncate_reason(&euro);
    assert_eq!(cut.len(), 123);
    assert_eq!(cut.chars().count(), 41);
    let emoji = "😀".repeat(40);
    let cut = truncate_reason(&emoji);
    assert_eq!(cut.len(), 120);
    assert_eq!(cut.chars().count(), 30);
    assert_eq!(truncate_reason("short"), "short");
    let exact = "b".repeat(123);
    assert_eq!(truncate_reason(&exact), exact);
}

#[test]
fn encode_close_frames() {
    assert_eq!(&encode_close(1005, "x")[..], [0x88, 0x00]);
    assert_eq!(
        &encode_close(1001, "bye")[..],
        [0x88, 0x05, 0x03, 0xe9, 0x62, 0x79, 0x65]
    );
    // A forbidden code becomes 1000 (03 e8).
    assert_eq!(&encode_close(1006, "")[..], [0x88, 0x02, 0x03, 0xe8]);
    // A long reason is cut so the control payload stays at 125 bytes.
    let frame = encode_close(4000, &"€".repeat(50));
    assert_eq!(frame.len(), 2 + 2 + 123);
    assert_eq!(frame[..4], [0x88, 125, 0x0f, 0xa0]);
    assert_eq!(&frame[4..], "€".repeat(41).as_bytes());
}

#[test]
fn encoded_close_round_trips_through_decoder() {
    // Re-mask a server frame as a client would send it.
    let frame = encode_close(3001, "done");
    let out = decode_all(usize::MAX, &client_frame(frame[0], &frame[2..], KEY)).unwrap();
    assert_eq!(
        out,
        vec![Inbound::Close {
            code: Some(3001),
            reason: "done".to_owned()
        }]
    );
}

// ---- errors, opcodes, memory ----

#[test]
fn error_close_codes_and_display() {
    let p = ProtocolError::Protocol("client frame not masked");
    assert_eq!(p.close_code(), 1002);
    assert_eq!(p.to_string(), "protocol error: client frame not masked");
    assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
    assert_eq!(
        ProtocolError::InvalidUtf8.to_string(),
        "invalid UTF-8 in text message or close reason"
    );
    let t = ProtocolError::TooLarge { limit: 5 };
    assert_eq!(t.close_code(), 1009);
    assert_eq!(t.to_string(), "message larger than 5 bytes");
}

#[test]
fn opcode_wire_values() {
    let all = [
        (OpCode::Continuation, 0x0),
        (OpCode::Text, 0x1),
        (OpCode::Binary, 0x2),
        (OpCode::Close, 0x8),
        (OpCode::Ping, 0x9),
        (OpCode::Pong, 0xA),
    ];
    for (op, value) in all {
        assert_eq!(op.as_u8(), value);
        assert_eq!(OpCode::from_u8(value), Some(op));
        assert_eq!(op.is_control(), value >= 0x8);
    }
    assert_eq!(OpCode::from_u8(0x3), None);
    assert_eq!(OpCode::from_u8(0xB), None);
}

#[test]
fn idle_decoder_holds_no_heap() {
    let mut d = Decoder::new(usize::MAX);
    let mut out = Vec::new();
    let mut input = client_frame(0x02, &[1u8; 10_000], KEY);
    input.extend(client_frame(0x80, &[2u8; 10_000], KEY));
    // Leave the second fragment's payload short by one feed.
    let (a, b) = input.split_at(input.len() - 100);
    d.feed(a, &mut out).unwrap();
    assert_eq!(d.buffered(), 20_000 - 100);
    assert!(d.partial.as_ref().unwrap().message_buf.capacity() >= 19_900);
    d.feed(b, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(d.buffered(), 0);
    assert!(
        d.partial.is_none(),
        "the partial state is dropped once complete"
    );
    // Same for a control frame split across feeds.
    let ping = client_frame(0x89, b"abc", KEY);
    d.feed(&ping[..7], &mut out).unwrap();
    assert_eq!(d.buffered(), 1);
    assert!(d.partial.is_some());
    d.feed(&ping[7..], &mut out).unwrap();
    assert_eq!(d.buffered(), 0);
    assert!(d.partial.is_none());
    // What every open connection holds for its decoder.
    assert_eq!(std::mem::size_of::<Decoder>(), 32);
}

#[test]
fn whole_frame_payload_has_exact_capacity() {
    // Exact capacity lets `Bytes::from(Vec)` reuse the allocation (no second one).
    let frame = client_frame(0x81, b"Hello", KEY);
    let mut buf = Vec::new();
    append_unmasked(&mut buf, &frame[6..], KEY, 0);
    assert_eq!(buf, b"Hello");
    assert_eq!(buf.capacity(), 5);
}

/// Random bytes, and random corruptions of valid frames, fed in random pieces: the decoder
/// never panics, never yields anything after an error, and repeats the error once failed.
#[test]
fn random_input_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3000 {
        let mut input = Vec::new();
        if round % 2 == 0 {
            for _ in 0..(next() % 200) {
                input.push(next() as u8);
            }
        } else {
            for _ in 0..(1 + next() % 4) {
                let len = (next() % 300) as usize;
                let payload: Vec<u8> = (0..len).map(|_| b'a' + (next() % 26) as u8).collect();
                let op = [OpCode::Text, OpCode::Binary, OpCode::Ping][(next() % 3) as usize];
                let payload = if op == OpCode::Ping {
                    &payload[..len.min(125)]
                } else {
                    &payload[..]
                };
                input.extend(encode_masked(op, payload, (next() as u32).to_ne_bytes()));
            }
            for _ in 0..(next() % 3) {
                if !input.is_empty() {
                    let at = (next() as usize) % input.len();
                    input[at] ^= 1 << (next() % 8);
                }
            }
        }
        let mut d = Decoder::new(256);
        let mut out = Vec::new();
        let mut rest = &input[..];
        let mut failed = None;
        while !rest.is_empty() {
            let take = 1 + (next() as usize) % rest.len();
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let before = out.len();
            match d.feed(chunk, &mut out) {
                Ok(()) => assert!(failed.is_none(), "recovered after an error"),
                Err(e) => {
                    if let Some(prev) = &failed {
                        assert_eq!(&e, prev, "a failed decoder repeats its error");
                        assert_eq!(out.len(), before, "nothing after an error");
                    }
                    failed = Some(e);
                }
            }
        }
        for item in &out {
            if let Inbound::Message {
                binary: false,
                data,
            } = item
            {
                assert!(std::str::from_utf8(data).is_ok(), "text is always UTF-8");
            }
        }
    }
}

#[test]
fn payload_skips_every_header_size() {
    for len in [0usize, 5, 125, 126, 300, 70_000] {
        let data = vec![7u8; len];
        let framed = encode(OpCode::Binary, &data);
        assert_eq!(payload(&framed), Bytes::from(data));
    }
    assert!(payload(&Bytes::new()).is_empty());
}
