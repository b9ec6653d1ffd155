//! Contract points that need a real socket: the automatic pong, closes that must finish
//! whatever the peer does, ping floods, broadcasts meeting a closing connection, upgrades during
//! `close_all`, and per-connection listeners staying per connection.

mod common;

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use corecast::{event, Config, Error, MessageType, Server, Websocket};

const ALL: &[&str] = &[
    event::CONNECT,
    event::DISCONNECT,
    event::ERROR,
    event::CLOSE,
    event::PING,
];

/// A connection's callback that fills the kernel's socket buffers and its own queue, so its
/// client (which never reads) keeps it stuck: 40 messages of 1 MiB.
fn stuff(kws: &Websocket) {
    let chunk = corecast::Bytes::from(vec![b'x'; 1 << 20]);
    for _ in 0..40 {
        kws.emit(chunk.clone(), MessageType::Binary);
    }
}

/// Settings under which a stuck connection lasts about a second: its waiting messages are not
/// dropped before then and a close gives up after it.
fn stuck_config() -> Config {
    Config {
        send_queue_size: 4,
        retry_send_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(1),
        ..Config::default()
    }
}

/// A one-shard server with `/ws` (reports its UUIDs on the first channel) and `/stuck` (stuffed
/// connections, reported on the second).
/// Where a route's callback reports the UUID and shard of each new connection.
type Uuids = mpsc::Receiver<(String, usize)>;

fn with_stuck_route() -> (TestServer, Uuids, Uuids) {
    let (report, uuids) = uuid_reporter();
    let (report_stuck, stuck) = uuid_reporter();
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .route("/ws", report)
            .route_with_config("/stuck", stuck_config(), move |kws| {
                report_stuck(kws);
                stuff(kws);
            }),
    );
    (ts, uuids, stuck)
}

fn echo(server: &Server) {
    server.on(event::MESSAGE, |ep| {
        ep.kws().emit(ep.data().clone(), MessageType::Text);
    });
}

#[test]
fn a_ping_fires_the_ping_event_and_gets_a_pong_with_its_payload() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", report));
    let rec = Recorder::attach(&ts.server, ALL);
    let mut c = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    c.send_frame(0x9, b"hi");
    let (b0, payload) = c.read_frame();
    assert_eq!(
        (b0, &payload[..]),
        (0x8a, &b"hi"[..]),
        "pong with the ping's payload"
    );
    let ping = rec.wait_event(event::PING, &uuid);
    assert_eq!(ping.data, b"hi");
}

#[test]
fn close_twice_fires_close_and_disconnect_once_and_the_connection_is_dead_at_once() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", report));
    let rec = Recorder::attach(&ts.server, ALL);
    let (tx, alive) = mpsc::channel();
    let tx = Mutex::new(tx);
    ts.server.on(event::MESSAGE, move |ep| {
        ep.kws().close();
        let after_first = ep.kws().is_alive();
        ep.kws().close();
        let _ = tx.lock().unwrap().send(after_first);
    });
    let mut c = ts.client("/ws");
    let (uuid, _) = next_uuid(&uuids);
    c.send_text("close please");
    assert_eq!(c.recv_close().0, 1000);
    assert!(
        !alive.recv_timeout(WAIT).unwrap(),
        "is_alive() after close()"
    );
    rec.expect_sequence(&uuid, &[event::CONNECT, event::CLOSE, event::DISCONNECT]);
}

#[test]
fn a_close_fires_close_then_disconnect_even_when_the_peer_never_reads() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(1).route_with_config(
        "/ws",
        stuck_config(),
        move |kws| {
            report(kws);
            stuff(kws);
        },
    ));
    let rec = Recorder::attach(&ts.server, ALL);
    // Connected and never read from.
    let _c = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    rec.wait_event(event::CONNECT, &uuid);
    ts.server.close(&uuid).expect("close a live connection");
    let d = rec.expect_sequence(&uuid, &[event::CONNECT, event::CLOSE, event::DISCONNECT]);
    assert_eq!(d.error, None, "a server close ends cleanly");
    ts.wait_connections(0);
}

#[test]
fn a_client_that_pings_and_never_reads_is_torn_down() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", report));
    let rec = Recorder::attach(&ts.server, &[event::DISCONNECT]);
    let mut c = RawClient::connect_small_window(ts.addr(), "/ws");
    c.stream.set_write_timeout(Some(WAIT)).unwrap();
    let (uuid, _) = next_uuid(&uuids);
    // 125-byte pings in bursts of 500 (one 64 KiB read each). The server answers each burst
    // with at most 16 pongs (it coalesces the rest), so it takes ~2,000 bursts before those
    // fill its send buffer (4 MiB); from then on pings go unanswered and it gives up, resetting
    // the socket, which ends the loop.
    let ping = masked_frame(0x89, &[b'p'; 125]);
    let burst: Vec<u8> = ping.repeat(500);
    for _ in 0..8000 {
        if c.stream.write_all(&burst).is_err() {
            break;
        }
    }
    let d = rec.wait_event(event::DISCONNECT, &uuid);
    assert_eq!(d.error.as_deref(), Some("PingFlood"));
    let m = ts.server.metrics();
    assert!(
        m.teardowns
            .iter()
            .any(|(cause, n)| *cause == "ping_flood" && *n == 1),
        "{:?}",
        m.teardowns
    );
}

#[test]
fn a_broadcast_skips_a_closing_connection_and_reports_no_error() {
    let (ts, uuids, stuck) = with_stuck_route();
    let rec = Recorder::attach(&ts.server, ALL);
    ts.server.on(event::MESSAGE, |ep| {
        ep.kws().broadcast("to all", true, MessageType::Text);
        ep.kws().emit("done", MessageType::Text);
    });
    let mut a = ts.client("/ws");
    let (a_uuid, _) = next_uuid(&uuids);
    let _b = RawClient::connect(ts.addr(), "/stuck");
    let (b_uuid, _) = next_uuid(&stuck);
    rec.wait_event(event::CONNECT, &b_uuid);
    ts.server.close(&b_uuid).unwrap();
    // Closing unregisters at once; the close itself waits for its deadline.
    wait_until(|| !ts.server.is_connected(&b_uuid), "b closing");
    a.send_text("go");
    assert_eq!(a.recv_text(), "done");
    rec.expect_sequence(&b_uuid, &[event::CONNECT, event::CLOSE, event::DISCONNECT]);
    assert_eq!(
        rec.names_for(&a_uuid),
        [event::CONNECT],
        "no error on the sender"
    );
}

#[test]
fn upgrades_during_close_all_are_served_and_stay_open() {
    let (ts, uuids, stuck) = with_stuck_route();
    echo(&ts.server);
    let _b = RawClient::connect(ts.addr(), "/stuck");
    let (b_uuid, _) = next_uuid(&stuck);
    wait_until(|| ts.server.is_connected(&b_uuid), "b registered");
    let server = ts.server.clone();
    let closing = std::thread::spawn(move || server.close_all(1000, "", Duration::from_secs(2)));
    wait_until(|| !ts.server.is_connected(&b_uuid), "close_all begun");
    let mut c = ts.client("/ws");
    let (c_uuid, _) = next_uuid(&uuids);
    c.send_text("hi");
    assert_eq!(c.recv_text(), "hi");
    let result = closing.join().unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(
        ts.server.is_connected(&c_uuid),
        "a later upgrade is not closed"
    );
    c.send_text("still here");
    assert_eq!(c.recv_text(), "still here");
}

#[test]
fn a_connections_own_listener_never_fires_for_another() {
    let (tx, own) = mpsc::channel::<(String, String)>();
    let tx = Arc::new(Mutex::new(tx));
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", move |kws| {
        report(kws);
        if kws.query("own").is_some() {
            let me = kws.uuid();
            let tx = Arc::clone(&tx);
            kws.on(event::MESSAGE, move |ep| {
                let _ = tx
                    .lock()
                    .unwrap()
                    .send((me.clone(), ep.socket_uuid().to_string()));
            });
        }
    }));
    echo(&ts.server);
    let mut a = ts.client("/ws?own=1");
    let (a_uuid, _) = next_uuid(&uuids);
    let mut b = ts.client("/ws");
    next_uuid(&uuids);
    for i in 0..5 {
        b.send_text(&format!("b{i}"));
        assert_eq!(b.recv_text(), format!("b{i}"));
    }
    a.send_text("a");
    assert_eq!(a.recv_text(), "a");
    let seen: Vec<_> = own.try_iter().collect();
    assert_eq!(seen, [(a_uuid.clone(), a_uuid)]);
}
