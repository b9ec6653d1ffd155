use super::*;
use crate::ws::frame::{encode, MessageType};

fn agreed(offers: &[&str]) -> Option<String> {
    negotiate(offers.iter().copied()).map(|a| a.response())
}

const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[test]
fn a_plain_offer_is_answered_without_context_takeover_either_way() {
    assert_eq!(agreed(&["permessage-deflate"]).as_deref(), Some(BOTH));
    // What browsers send.
    assert_eq!(
        agreed(&["permessage-deflate; client_max_window_bits"]).as_deref(),
        Some(BOTH)
    );
    assert_eq!(agreed(&["PerMessage-Deflate"]).as_deref(), Some(BOTH));
    assert_eq!(
        agreed(&[
            "permessage-deflate;server_no_context_takeover;client_no_context_takeover;client_max_window_bits=10"
        ])
        .as_deref(),
        Some(BOTH)
    );
}

#[test]
fn a_server_window_limit_is_answered_with_the_same_value() {
    let a = negotiate(["permessage-deflate; server_max_window_bits=10"]).unwrap();
    assert_eq!(a.window_bits(), 10);
    assert_eq!(a.response(), format!("{BOTH}; server_max_window_bits=10"));
    let a = negotiate(["permessage-deflate; server_max_window_bits=\"9\""]).unwrap();
    assert_eq!(a.window_bits(), 9);
    assert_eq!(negotiate(["permessage-deflate"]).unwrap().window_bits(), 15);
}

#[test]
fn offers_the_server_cannot_honour_are_declined() {
    for bad in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=1a",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
        "permessage-deflate; mystery",
        "permessage-deflate; server_max_window_bits=\"10",
        "x-webkit-deflate-frame",
        "",
    ] {
        assert_eq!(agreed(&[bad]), None, "{bad}");
    }
}

#[test]
fn the_first_acceptable_offer_wins() {
    let offers = [
        "permessage-deflate; server_max_window_bits=16",
        "foo; bar=\"a,b\"",
        "permessage-deflate; server_max_window_bits=12",
        "permessage-deflate",
    ];
    let a = negotiate(offers).unwrap();
    assert_eq!(a.window_bits(), 12);
}

/// JSON of about `n` bytes, as a feed would send.
fn json(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0u32;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"symbol\":\"SYM{}\",\"price\":{}.25,\"side\":\"buy\"}},",
            i % 7,
            100 + i % 13
        ));
        i += 1;
    }
    s.truncate(n - 1);
    s.push(']');
    s.into_bytes()
}

fn payload_after_header(frame: &[u8]) -> &[u8] {
    let header = match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[header..]
}

#[test]
fn rfc7692_examples_inflate() {
    // §7.2.3.1: "Hello" compressed; §7.2.3.2: "Hello" in a stored block.
    assert_eq!(
        inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
        b"Hello"
    );
    assert_eq!(
        inflate(
            &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00],
            100
        )
        .unwrap(),
        b"Hello"
    );
    // §7.2.3.4: a final (BFINAL) block is also accepted.
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(64);
    c.compress_vec(b"Hello", &mut out, FlushCompress::Finish)
        .unwrap();
    assert_eq!(inflate(&out, 100).unwrap(), b"Hello");
}

#[test]
fn a_compressed_frame_has_rsv1_and_inflates_to_the_message() {
    for (len, op, b0) in [
        (1024, MessageType::Text, 0xC1),
        (300, MessageType::Binary, 0xC2),
        (70_000, MessageType::Text, 0xC1),
    ] {
        let data = json(len);
        let plain = op.frame(&data);
        let sent = compress_frame(&plain, &Deflate::default(), 15);
        assert_eq!(sent[0], b0, "FIN, RSV1 and the opcode");
        let payload = payload_after_header(&sent);
        assert!(payload.len() < data.len() / 2, "{len}: {}", payload.len());
        assert_eq!(
            usize::from(sent[1] & 0x7F),
            match payload.len() {
                n @ 0..=125 => n,
                126..=65535 => 126,
                _ => 127,
            }
        );
        assert_eq!(inflate(payload, len).unwrap(), data);
    }
}

#[test]
fn every_window_the_client_may_ask_for_is_kept() {
    let data = json(4096);
    let plain = MessageType::Text.frame(&data);
    for bits in 9..=15 {
        let sent = compress_frame(&plain, &Deflate::default(), bits);
        assert_eq!(sent[0], 0xC1, "{bits}");
        assert_eq!(inflate(payload_after_header(&sent), 4096).unwrap(), data);
    }
    // 8 bits is below what the compressor can keep to: such a client gets plain frames.
    assert_eq!(compress_frame(&plain, &Deflate::default(), 8), plain);
}

#[test]
fn what_would_not_pay_goes_out_as_it_is() {
    let settings = Deflate::default();
    // Under the threshold.
    let small = MessageType::Text.frame(&json(100));
    let sent = compress_frame(&small, &settings, 15);
    assert_eq!(sent.as_ptr(), small.as_ptr());
    // Incompressible: it would grow.
    let mut x = 0x1234_5678u32;
    let noise: Vec<u8> = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let frame = MessageType::Binary.frame(&noise);
    assert_eq!(compress_frame(&frame, &settings, 15), frame);
    // Control frames and frames already extended are never touched.
    let ping = encode(OpCode::Ping, &json(125));
    assert_eq!(compress_frame(&ping, &settings, 15), ping);
    let lowered = Deflate {
        min_size: 0,
        ..settings
    };
    let tiny = MessageType::Text.frame(b"");
    assert_eq!(compress_frame(&tiny, &lowered, 15), tiny);
}

#[test]
fn one_message_is_compressed_once_for_all_its_recipients() {
    let settings = Deflate::default();
    let plain = MessageType::Text.frame(&json(2048));
    let first = compress_frame(&plain, &settings, 15);
    let second = compress_frame(&plain.clone(), &settings, 15);
    assert_eq!(first.as_ptr(), second.as_ptr(), "the same bytes, shared");
    // Equal bytes in another allocation are another message: compressed again, same result.
    let other = MessageType::Text.frame(&json(2048));
    let third = compress_frame(&other, &settings, 15);
    assert_ne!(third.as_ptr(), first.as_ptr());
    assert_eq!(third, first);
    // Another window is another frame.
    let narrow = compress_frame(&plain, &settings, 10);
    assert_ne!(narrow.as_ptr(), first.as_ptr());
}

#[test]
fn messages_do_not_depend_on_each_other() {
    // No context takeover: each message inflates on its own, in any order.
    let settings = Deflate::default();
    let a = compress_frame(&MessageType::Text.frame(&json(3000)), &settings, 15);
    let b = compress_frame(&MessageType::Text.frame(&json(3000)[..2000]), &settings, 15);
    assert_eq!(
        inflate(payload_after_header(&b), 1 << 20).unwrap(),
        &json(3000)[..2000]
    );
    assert_eq!(
        inflate(payload_after_header(&a), 1 << 20).unwrap(),
        json(3000)
    );
}

#[test]
fn inflating_stops_at_the_limit() {
    // 4 MiB of zeros deflate to about 4 KiB: a bomb for a 1 MiB limit.
    let zeros = vec![0u8; 4 << 20];
    let bomb = compress_frame(&MessageType::Binary.frame(&zeros), &Deflate::default(), 15);
    let payload = payload_after_header(&bomb);
    assert!(payload.len() < 64 << 10);
    assert_eq!(inflate(payload, 1 << 20), Err(InflateError::TooLarge));
    assert_eq!(inflate(payload, 4 << 20).unwrap().len(), 4 << 20);
    assert_eq!(inflate(payload, (4 << 20) - 1), Err(InflateError::TooLarge));
}

#[test]
fn corrupt_data_is_a_protocol_error() {
    // BTYPE 11 is reserved (RFC 1951 §3.2.3).
    assert_eq!(
        inflate(&[0xff, 0xff, 0xff], 100),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn incompressible_messages_leave_the_compressor_sound() {
    // Noise that outgrows its input, then ordinary messages: each compresses and inflates.
    let mut x = 0x9e37_79b9u32;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    let settings = Deflate::default();
    for round in 0..200 {
        let size = 64 << (round % 9);
        let frame = MessageType::Binary.frame(&noise(size));
        assert_eq!(
            compress_frame(&frame, &settings, 15),
            frame,
            "noise goes out plain"
        );
        let data = json(size.max(settings.min_size));
        let sent = compress_frame(&MessageType::Text.frame(&data), &settings, 15);
        assert_eq!(sent[0], 0xC1);
        assert_eq!(
            inflate(payload_after_header(&sent), usize::MAX).unwrap(),
            data
        );
    }
}
