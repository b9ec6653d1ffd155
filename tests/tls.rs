//! wss://: a rustls client over loopback with certificates made here, plain HTTP sent to the TLS
//! port, bad files, and a certificate reload that leaves open connections alone.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use corecast::{event, Config, Error, MessageType, Server, TlsConfig};
use rustls::HandshakeKind;
use tungstenite::{Message, WebSocket};

/// No keep-alive pings: the clients here read message by message, and tungstenite hands
/// pings to the reader too.
fn quiet() -> Config {
    Config {
        ping_interval: Duration::from_secs(60),
        ..Config::default()
    }
}

/// An echo server on `/ws` serving wss with these files.
fn echo_server(cert: &Path, key: &Path) -> TestServer {
    let ts = TestServer::start(
        Server::builder()
            .shards(2)
            .tls(TlsConfig::from_pem_files(cert, key))
            .route_with_config("/ws", quiet(), |_| {}),
    );
    ts.server.on(event::MESSAGE, |ep| {
        ep.kws().emit(ep.data().clone(), ep.message_type());
    });
    ts
}

fn echo(ws: &mut WebSocket<Tls>, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

#[test]
fn a_rustls_client_talks_websocket_over_tls() {
    let dir = temp_dir("tls-echo");
    let (cert, key, root) = certificate(&dir, "a");
    let ts = echo_server(&cert, &key);
    assert!(ts.server.is_tls());
    let (mut a, shown) = wss(ts.addr(), &[&root]);
    assert_eq!(shown, root);
    let (mut b, _) = wss(ts.addr(), &[&root]);
    echo(&mut a, "hello over tls");
    // Big messages span many TLS records, both ways.
    let big = "x".repeat(300_000);
    a.send(Message::text(big.clone())).unwrap();
    assert_eq!(a.read().unwrap(), Message::text(big.clone()));
    // A broadcast reaches every TLS client, on either shard.
    ts.wait_connections(2);
    ts.server.broadcast("to all", MessageType::Text);
    assert_eq!(a.read().unwrap(), Message::text("to all"));
    assert_eq!(b.read().unwrap(), Message::text("to all"));
    a.close(None).unwrap();
    b.close(None).unwrap();
    ts.wait_connections(0);
}

#[test]
fn plain_http_on_the_tls_port_gets_a_clear_400_and_garbage_a_close() {
    let dir = temp_dir("tls-plain");
    let (cert, key, root) = certificate(&dir, "a");
    let ts = echo_server(&cert, &key);
    let mut plain = TcpStream::connect(ts.addr()).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    plain
        .read_to_string(&mut answer)
        .expect("the server closes");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("this port speaks TLS: connect with wss"),
        "{answer}"
    );
    // A keep-alive client reads exactly Content-Length bytes of body.
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let length = format!("\r\nContent-Length: {}\r\n", body.len());
    assert!(head.contains(&length), "{answer}");

    // A TLS record header followed by junk: the handshake fails and the socket is closed.
    let mut junk = TcpStream::connect(ts.addr()).unwrap();
    junk.set_read_timeout(Some(WAIT)).unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    let mut rest = Vec::new();
    let ended = junk.read_to_end(&mut rest);
    let timed_out = ended.is_err_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    });
    assert!(!timed_out, "the server closes the connection");
    // Both are counted: the 400 as a rejection, the junk as a failed TLS handshake.
    wait_until(
        || handshake_failures(&ts.server, "tls") == 1,
        "the failed TLS handshake counted",
    );
    let rejected = ts.server.metrics().rejections;
    assert!(rejected.contains(&("400".to_string(), 1)), "{rejected:?}");
    // Everyone else is still served.
    let (mut ws, _) = wss(ts.addr(), &[&root]);
    echo(&mut ws, "still here");
}

#[test]
fn a_stalled_tls_handshake_holds_up_no_one_and_times_out() {
    let dir = temp_dir("tls-stall");
    let (cert, key, root) = certificate(&dir, "a");
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .handshake_timeout(Duration::from_millis(300))
            .tls(TlsConfig::from_pem_files(&cert, &key))
            .route_with_config("/ws", quiet(), |_| {}),
    );
    ts.server.on(event::MESSAGE, |ep| {
        ep.kws().emit(ep.data().clone(), ep.message_type());
    });
    // Half a TLS record header, then nothing: the handshake waits on it, on the only shard.
    let mut stalled = TcpStream::connect(ts.addr()).unwrap();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    stalled.write_all(&[0x16, 0x03]).unwrap();
    let (mut ws, _) = wss(ts.addr(), &[&root]);
    echo(&mut ws, "not held up");
    // The handshake timeout ends it.
    let ended = stalled.read(&mut [0u8; 16]);
    let timed_out = ended.is_err_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    });
    assert!(!timed_out, "closed by the handshake timeout");
    wait_until(
        || handshake_failures(&ts.server, "timeout") == 1,
        "the timed-out handshake counted",
    );
}

#[test]
fn a_tls_client_that_never_reads_is_dropped_at_the_write_timeout_and_others_are_served() {
    let dir = temp_dir("tls-slow");
    let (cert, key, root) = certificate(&dir, "a");
    let config = Config {
        write_timeout: Duration::from_millis(500),
        ..quiet()
    };
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .tls(TlsConfig::from_pem_files(&cert, &key))
            .route_with_config("/ws", config, report),
    );
    ts.server.on(event::MESSAGE, |ep| {
        ep.kws().emit(ep.data().clone(), ep.message_type());
    });
    let rec = Recorder::attach(&ts.server, &[event::DISCONNECT]);
    let (_stuck, _) = wss(ts.addr(), &[&root]); // never reads
    let (slow, _) = next_uuid(&uuids);
    let (mut fast, _) = wss(ts.addr(), &[&root]);
    next_uuid(&uuids);

    // 256 KiB at a time for the one that never reads, until it is gone: its socket, the TLS
    // session's buffer and its queue fill, its writes stall.
    let pusher = {
        let (server, slow) = (ts.server.clone(), slow.clone());
        std::thread::spawn(move || {
            let big = vec![b's'; 256 << 10];
            let end = std::time::Instant::now() + WAIT;
            while std::time::Instant::now() < end {
                if server
                    .emit_to(&slow, big.clone(), MessageType::Binary)
                    .is_err()
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        })
    };
    // The other client on the same shard is served meanwhile.
    for i in 0..50 {
        echo(&mut fast, &format!("{i}"));
    }
    let gone = rec.wait_event(event::DISCONNECT, &slow);
    assert!(gone.is_timeout, "{gone:?}");
    assert!(
        gone.error
            .as_deref()
            .is_some_and(|e| e.contains("WriteTimeout")),
        "{gone:?}"
    );
    assert!(pusher.join().unwrap(), "emit_to fails once it is gone");
    echo(&mut fast, "still here");
}

#[test]
fn every_client_coming_back_resumes_its_session() {
    let dir = temp_dir("tls-resume");
    let (cert, key, root) = certificate(&dir, "a");
    let ts = echo_server(&cert, &key);
    // More clients than a server-side session cache of 256 entries could remember (two
    // sessions each): with tickets the server remembers none, and every one comes back.
    let clients: Vec<_> = (0..200).map(|_| tls_config(&[&root])).collect();
    let visit = |config| {
        let tls = tls_connect(ts.addr(), config);
        let kind = tls.conn.handshake_kind();
        let mut ws = wss_over(tls, ts.addr());
        // Reading the echo also takes in the tickets the server sent after the handshake.
        echo(&mut ws, "visit");
        ws.close(None).unwrap();
        kind
    };
    for config in &clients {
        assert_eq!(visit(config), Some(HandshakeKind::Full));
    }
    let resumed = clients
        .iter()
        .filter(|config| visit(config) == Some(HandshakeKind::Resumed))
        .count();
    assert_eq!(resumed, clients.len());
}

#[test]
fn missing_or_mismatched_files_are_start_errors_naming_them() {
    let dir = temp_dir("tls-bad");
    let (cert, key, _) = certificate(&dir, "a");
    let (_, other_key, _) = certificate(&dir, "b");
    let start = |cert: &Path, key: &Path| {
        Server::builder()
            .tls(TlsConfig::from_pem_files(cert, key))
            .route("/ws", |_| {})
            .start()
            .map(|_| ())
    };
    let missing = dir.join("missing.crt");
    match start(&missing, &key) {
        Err(Error::Config(e)) => assert!(e.contains("missing.crt"), "{e}"),
        other => panic!("{other:?}"),
    }
    match start(&cert, &other_key) {
        Err(Error::Config(e)) => assert!(e.contains("does not match"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A key file where the certificate belongs holds no certificate.
    match start(&key, &key) {
        Err(Error::Config(e)) => assert!(e.contains("a.key"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let dir = temp_dir("tls-reload");
    let (cert, key, first) = certificate(&dir, "live");
    let ts = echo_server(&cert, &key);
    let (mut old, shown) = wss(ts.addr(), &[&first]);
    assert_eq!(shown, first);

    // New files in place, then the reload.
    let (new_cert, new_key, second) = certificate(&dir, "next");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    ts.server.reload_tls().expect("reloads");
    let (mut new, shown) = wss(ts.addr(), &[&second]);
    assert_eq!(shown, second);
    echo(&mut new, "new certificate");
    echo(&mut old, "old connection lives on");

    // A broken file: the reload fails and the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(matches!(ts.server.reload_tls(), Err(Error::Config(_))));
    let (mut again, shown) = wss(ts.addr(), &[&second]);
    assert_eq!(shown, second);
    echo(&mut again, "unchanged");

    let plain = TestServer::start(Server::builder().route("/ws", |_| {}));
    assert!(matches!(plain.server.reload_tls(), Err(Error::Config(_))));
}
