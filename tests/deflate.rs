//! permessage-deflate (RFC 7692) end to end: negotiation in the 101, compressed messages both
//! ways, clients with and without it on one broadcast, the window limit, and the inflated-size
//! limit against a decompression bomb.

mod common;

use std::io::Write;

use common::*;
use corecast::ws::deflate::inflate;
use corecast::{event, Builder, Config, Deflate, MessageType, Server, TlsConfig};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const AGREED: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                      client_no_context_takeover\r\n";

/// An echo server of `/ws` with this config, on two shards. No keep-alive pings: the raw
/// clients here read frame by frame.
fn echo_server(config: Config) -> TestServer {
    echo_server_on(Server::builder(), config)
}

/// `echo_server` from `builder` (which may add TLS).
fn echo_server_on(builder: Builder, config: Config) -> TestServer {
    let config = Config {
        ping_interval: std::time::Duration::from_secs(60),
        ..config
    };
    let ts = TestServer::start(builder.shards(2).route_with_config("/ws", config, |_| {}));
    ts.server.on(event::MESSAGE, |ep| {
        if &ep.data()[..] == b"deflate?" {
            let answer = if ep.kws().deflate() { "yes" } else { "no" };
            ep.kws().emit(answer, MessageType::Text);
        } else {
            ep.kws().emit(ep.data().clone(), ep.message_type());
        }
    });
    ts
}

fn deflating() -> Config {
    Config {
        deflate: Some(Deflate::default()),
        ..Config::default()
    }
}

/// JSON of `n` bytes.
fn json(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"price\":{}.5,\"side\":\"sell\"}},",
            900 + i % 17
        ));
        i += 1;
    }
    s.truncate(n - 1);
    s.push(']');
    s.into_bytes()
}

/// What a client sends for a compressed message: deflated, sync-flushed, tail removed.
fn client_deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Sends `data` as a compressed text message (FIN, RSV1, text) and checks that the echo comes
/// back compressed the same way; returns the echo's compressed payload.
fn echo_compressed<S: std::io::Read + Write>(c: &mut RawClient<S>, data: &[u8]) -> Vec<u8> {
    c.stream
        .write_all(&masked_frame(0xC1, &client_deflate(data)))
        .unwrap();
    let (b0, payload) = c.read_frame();
    assert_eq!(b0, 0xC1, "FIN, RSV1, text");
    assert_eq!(inflate(&payload, usize::MAX).unwrap(), data);
    payload
}

#[test]
fn compressed_messages_travel_both_ways() {
    let ts = echo_server(deflating());
    let (mut c, head) = RawClient::connect_with(ts.addr(), "/ws", OFFER);
    assert!(head.contains(AGREED), "{head}");

    let data = json(2048);
    let payload = echo_compressed(&mut c, &data);
    assert!(payload.len() < data.len() / 2, "{}", payload.len());

    // Uncompressed in still works; a reply under the threshold goes out plain.
    c.send_frame(0x1, b"hi");
    assert_eq!(c.read_frame(), (0x81, b"hi".to_vec()));

    // A fragmented compressed binary message: RSV1 on the first frame only.
    let data = json(5000);
    let deflated = client_deflate(&data);
    let (a, b) = deflated.split_at(deflated.len() / 2);
    c.stream.write_all(&masked_frame(0x42, a)).unwrap();
    c.stream.write_all(&masked_frame(0x80, b)).unwrap();
    let (b0, payload) = c.read_frame();
    assert_eq!(b0, 0xC2, "FIN, RSV1, binary");
    assert_eq!(inflate(&payload, usize::MAX).unwrap(), data);
}

#[test]
fn compression_works_over_tls_as_browsers_use_it() {
    let (cert, key, root) = certificate(&temp_dir("deflate-tls"), "a");
    let builder = Server::builder().tls(TlsConfig::from_pem_files(&cert, &key));
    let ts = echo_server_on(builder, deflating());
    let (mut c, head) = RawClient::connect_tls(ts.addr(), "/ws", OFFER, &[&root]);
    assert!(head.contains(AGREED), "{head}");
    echo_compressed(&mut c, &json(20_000));
    // A broadcast goes out compressed too.
    ts.server.broadcast(json(1000), MessageType::Text);
    let (b0, payload) = c.read_frame();
    assert_eq!(b0, 0xC1);
    assert_eq!(inflate(&payload, usize::MAX).unwrap(), json(1000));
}

#[test]
fn one_broadcast_reaches_compressing_and_plain_clients() {
    let ts = echo_server(deflating());
    let (mut zipped, _) = RawClient::connect_with(ts.addr(), "/ws", OFFER);
    let (mut zipped_too, _) = RawClient::connect_with(ts.addr(), "/ws", OFFER);
    let (mut plain, head) = RawClient::connect_with(ts.addr(), "/ws", "");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    ts.wait_connections(3);
    zipped.send_frame(0x1, b"deflate?");
    assert_eq!(zipped.read_frame(), (0x81, b"yes".to_vec()));
    plain.send_frame(0x1, b"deflate?");
    assert_eq!(plain.read_frame(), (0x81, b"no".to_vec()));

    let data = json(4096);
    ts.server.broadcast(data.clone(), MessageType::Text);
    let (b0, first) = zipped.read_frame();
    assert_eq!(b0, 0xC1);
    assert_eq!(inflate(&first, usize::MAX).unwrap(), data);
    assert_eq!(zipped_too.read_frame(), (0xC1, first));
    assert_eq!(plain.read_frame(), (0x81, data));
}

#[test]
fn a_route_without_deflate_declines_and_refuses_rsv1() {
    let ts = echo_server(Config::default());
    let (mut c, head) = RawClient::connect_with(ts.addr(), "/ws", OFFER);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    c.stream
        .write_all(&masked_frame(0xC1, &client_deflate(b"hello")))
        .unwrap();
    assert_eq!(c.read_close_code(), 1002);
}

#[test]
fn offers_it_cannot_honour_are_declined_and_the_next_taken() {
    let ts = echo_server(deflating());
    let (_, head) = RawClient::connect_with(
        ts.addr(),
        "/ws",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16\r\n",
    );
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let (_, head) = RawClient::connect_with(
        ts.addr(),
        "/ws",
        "Sec-WebSocket-Extensions: permessage-deflate; mystery=1, permessage-deflate\r\n",
    );
    assert!(head.contains(AGREED), "{head}");
}

#[test]
fn the_window_the_client_allows_is_kept() {
    let ts = echo_server(deflating());
    let (mut c, head) = RawClient::connect_with(
        ts.addr(),
        "/ws",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n",
    );
    assert!(
        head.contains("client_no_context_takeover; server_max_window_bits=9\r\n"),
        "{head}"
    );
    // Repeats further apart than 512 bytes: a bigger window would reach back to them.
    let data: Vec<u8> = json(16_384);
    c.send_frame(0x1, &data);
    let (b0, payload) = c.read_frame();
    assert_eq!(b0, 0xC1);
    // Inflating with a 9-bit window fails on any distance past 512 bytes.
    let mut d = Decompress::new_with_window_bits(false, 9);
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut input = payload.clone();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflates within a 512-byte window");
    assert_eq!(out, data);
}

#[test]
fn a_decompression_bomb_gets_1009_and_others_are_served() {
    let ts = echo_server(Config {
        max_message_size: 64 << 10,
        ..deflating()
    });
    let (mut bomber, _) = RawClient::connect_with(ts.addr(), "/ws", OFFER);
    let (mut other, _) = RawClient::connect_with(ts.addr(), "/ws", OFFER);
    // 16 MiB of zeros in about 16 KiB.
    let bomb = client_deflate(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 64 << 10);
    bomber.stream.write_all(&masked_frame(0xC2, &bomb)).unwrap();
    assert_eq!(bomber.read_close_code(), 1009);
    other.send_frame(0x1, b"still here");
    assert_eq!(other.read_frame(), (0x81, b"still here".to_vec()));
}
