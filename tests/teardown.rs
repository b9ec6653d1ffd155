//! Every row of the teardown table in docs/behaviour.md: which events fire, in which order, once.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use corecast::{event, Config, MessageType, Server};

const ALL: &[&str] = &[
    event::CONNECT,
    event::DISCONNECT,
    event::ERROR,
    event::CLOSE,
];

fn setup(
    config: Config,
) -> (
    TestServer,
    std::sync::Arc<Recorder>,
    std::sync::mpsc::Receiver<(String, usize)>,
) {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(
        Server::builder()
            .shards(2)
            .route_with_config("/ws", config, report),
    );
    let rec = Recorder::attach(&ts.server, ALL);
    (ts, rec, uuids)
}

#[test]
fn client_close_1000_and_1001_are_clean() {
    let (ts, rec, uuids) = setup(Config::default());
    for code in [1000u16, 1001] {
        let mut c = ts.client("/ws");
        let (uuid, _) = next_uuid(&uuids);
        rec.wait_event(event::CONNECT, &uuid);
        c.close(code, "bye");
        // The server answers the close with the same code (RFC 6455 §5.5.1).
        assert_eq!(c.recv_close().0, code);
        let d = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT]);
        assert!(d.error.is_none());
    }
    ts.wait_connections(0);
}

#[test]
fn client_close_with_other_code_or_none_is_an_error() {
    let (ts, rec, uuids) = setup(Config::default());
    let mut c = ts.client("/ws");
    let (uuid, _) = next_uuid(&uuids);
    c.close(4000, "custom");
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(e.error.as_deref().unwrap().contains("4000"), "{e:?}");

    let mut raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    raw.send_frame(0x8, b"");
    assert_eq!(
        raw.read_close_code(),
        1005,
        "an empty close is answered empty"
    );
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(e.error.as_deref().unwrap().contains("None"), "{e:?}");
}

#[test]
fn eof_without_close_is_an_error() {
    let (ts, rec, uuids) = setup(Config::default());
    let raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    rec.wait_event(event::CONNECT, &uuid);
    drop(raw);
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(e.error.as_deref().unwrap().contains("Io"), "{e:?}");
}

#[test]
fn read_idle_timeout_tears_down_with_a_timeout() {
    let cfg = Config {
        ping_interval: Duration::from_millis(100),
        read_idle_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let (ts, rec, uuids) = setup(cfg);
    // A raw client never answers pings.
    let _raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(e.is_timeout, "{e:?}");
    assert!(e.error.as_deref().unwrap().contains("IdleTimeout"));
    ts.wait_connections(0);
}

#[test]
fn oversized_message_gets_1009() {
    let cfg = Config {
        max_message_size: 1000,
        ..Config::default()
    };
    let (ts, rec, uuids) = setup(cfg);
    let mut raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    raw.send_frame(0x2, &[0u8; 1001]);
    assert_eq!(raw.read_close_code(), 1009);
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(
        e.error.as_deref().unwrap().contains("MessageTooLarge"),
        "{e:?}"
    );

    // Exactly at the limit is fine.
    let mut c = ts.client("/ws");
    let _ = next_uuid(&uuids);
    c.send_binary(&[1u8; 1000]);
    c.close(1000, "");
    assert_eq!(c.recv_close().0, 1000);
}

#[test]
fn invalid_frames_get_1002_and_bad_utf8_1007() {
    let (ts, rec, uuids) = setup(Config::default());
    // An unmasked client frame breaks RFC 6455 §5.1.
    let mut raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    raw.stream.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(raw.read_close_code(), 1002);
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(e.error.as_deref().unwrap().contains("Protocol"), "{e:?}");

    let mut raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    raw.send_frame(0x1, &[0xff, 0xfe]);
    assert_eq!(raw.read_close_code(), 1007);
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(e.error.as_deref().unwrap().contains("InvalidUtf8"), "{e:?}");
}

#[test]
fn panicking_route_callback_is_cleaned_up() {
    let ts = TestServer::start(
        Server::builder()
            .shards(2)
            .route("/boom", |_kws| panic!("callback failed"))
            .route("/ok", |_kws| {}),
    );
    let rec = Recorder::attach(&ts.server, ALL);
    let mut c = ts.client("/boom");
    assert!(c.wait_closed(), "the socket is closed");
    let e = rec.wait(event::ERROR, |s| s.name == event::ERROR);
    assert!(
        e.error.as_deref().unwrap().contains("CallbackPanic"),
        "{e:?}"
    );
    assert_eq!(rec.names_for(&e.uuid), [event::DISCONNECT, event::ERROR]);
    assert!(
        ts.server.emit_to(&e.uuid, "x", MessageType::Text).is_err(),
        "nothing stays registered"
    );
    ts.wait_connections(0);

    // Later broadcasts reach everyone else at once.
    let mut ok = ts.client("/ok");
    ts.wait_connections(1);
    ts.server.broadcast("after", MessageType::Text);
    assert_eq!(ok.recv_text(), "after");
}

#[test]
fn kws_close_fires_close_then_disconnect() {
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", |kws| {
        kws.emit("last words", MessageType::Text);
        kws.close();
    }));
    let rec = Recorder::attach(&ts.server, ALL);
    let mut c = ts.client("/ws");
    // What was queued goes out before the close frame.
    assert_eq!(c.recv_text(), "last words");
    assert_eq!(c.recv_close(), (1000, "Connection closed".to_string()));
    let d = rec.wait(event::DISCONNECT, |s| s.name == event::DISCONNECT);
    assert!(d.error.is_none());
    assert_eq!(
        rec.names_for(&d.uuid),
        [event::CONNECT, event::CLOSE, event::DISCONNECT]
    );
}

#[test]
fn close_all_deadline_force_closes_with_timeout() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(1).route_with_config(
        "/ws",
        Config {
            send_queue_size: 10_000,
            ..Config::default()
        },
        report,
    ));
    let rec = Recorder::attach(&ts.server, ALL);
    // This client never reads: a few MiB queued for it fill both socket buffers, so the close
    // frame behind them cannot be written before the deadline.
    let _stuck = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..32 {
        ts.server
            .emit_to(&uuid, chunk.clone(), MessageType::Binary)
            .unwrap();
    }
    let result = ts.server.close_all(1000, "bye", Duration::from_millis(300));
    assert!(
        matches!(result, Err(corecast::Error::Timeout)),
        "{result:?}"
    );
    let e = rec.expect_sequence(&uuid, &[event::CONNECT, event::DISCONNECT, event::ERROR]);
    assert!(e.is_timeout);
    assert_eq!(ts.server.connections(), 0);
}

/// A close the client begins: the server answers with its close frame and then ends the
/// stream itself (RFC 6455 §7.1.1: the server closes the TCP connection first), cleanly, with
/// a FIN after the frame and never a reset, while the client is still open.
#[test]
fn a_client_close_gets_the_answer_then_a_clean_end_of_stream() {
    use std::io::Read;
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", |_| {}));
    let mut s = std::net::TcpStream::connect(ts.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 101"));
    ts.wait_connections(1);
    // Close 1000, masked with a zero key.
    s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]).unwrap();
    let mut answer = [0u8; 4];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [0x88, 0x02, 0x03, 0xe8]);
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest).expect("an end of stream, not a reset"), 0);
    ts.wait_connections(0);
}
