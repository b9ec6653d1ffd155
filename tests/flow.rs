//! Liveness, queue policy and shutdown: pings, slow consumers, close_all, emitting from the
//! route callback.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use corecast::{event, Config, MessageType, Server};

#[test]
fn pings_arrive_and_data_alone_keeps_a_client_alive() {
    let cfg = Config {
        ping_interval: Duration::from_millis(100),
        read_idle_timeout: Duration::from_millis(400),
        ..Config::default()
    };
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .route_with_config("/ws", cfg, report),
    );
    let rec = Recorder::attach(&ts.server, &[event::MESSAGE, event::DISCONNECT]);
    let mut raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    // The client sends data but never a pong, one message per ping received, for three times
    // the idle timeout: it stays connected, and the pings keep coming at the interval.
    let start = Instant::now();
    for i in 0..12 {
        raw.send_frame(0x1, format!("m{i}").as_bytes());
        rec.wait("message", |s| s.data == format!("m{i}").as_bytes());
        let (b0, payload) = raw.read_frame();
        assert_eq!(b0, 0x89, "a ping with FIN");
        assert!(payload.is_empty());
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000),
        "12 pings came in {elapsed:?}"
    );
    assert_eq!(ts.server.connections(), 1);
    assert!(!rec
        .names_for(&uuid)
        .contains(&event::DISCONNECT.to_string()));
}

#[test]
fn slow_consumer_is_dropped_and_others_keep_receiving() {
    let cfg = Config {
        send_queue_size: 8,
        write_timeout: Duration::from_millis(800),
        ..Config::default()
    };
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(
        Server::builder()
            .shards(2)
            .route_with_config("/ws", cfg, report),
    );
    let rec = Recorder::attach(&ts.server, &[event::ERROR, event::DISCONNECT]);
    let _slow = RawClient::connect(ts.addr(), "/ws"); // never reads
    let (slow, _) = next_uuid(&uuids);
    let mut fast = ts.client("/ws");
    let (fast_uuid, _) = next_uuid(&uuids);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(0usize));
    let pusher = {
        let (server, stop, sent, slow, fast_uuid) = (
            ts.server.clone(),
            Arc::clone(&stop),
            Arc::clone(&sent),
            slow.clone(),
            fast_uuid.clone(),
        );
        std::thread::spawn(move || {
            let big = vec![b's'; 256 << 10];
            let mut i = 0;
            let end = Instant::now() + WAIT;
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                let _ = server.emit_to(&slow, big.clone(), MessageType::Binary);
                if i < 200 {
                    server
                        .emit_to(&fast_uuid, format!("{i}"), MessageType::Text)
                        .unwrap();
                    i += 1;
                    *sent.lock().unwrap() = i;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // The fast client gets everything, in order, while the slow one is stuck.
    for i in 0..200 {
        assert_eq!(fast.recv_text(), format!("{i}"));
    }
    let full = rec.wait("QueueFull", |s| {
        s.uuid == slow && s.error.as_deref().is_some_and(|e| e.contains("QueueFull"))
    });
    assert_eq!(
        full.data.len(),
        256 << 10,
        "the dropped message is the data"
    );
    let gone = rec.wait_event(event::DISCONNECT, &slow);
    assert!(gone.is_timeout, "{gone:?}");
    assert!(gone.error.as_deref().unwrap().contains("WriteTimeout"));
    stop.store(true, Ordering::SeqCst);
    pusher.join().unwrap();
    assert_eq!(*sent.lock().unwrap(), 200);
    // The fast client is still served.
    ts.server
        .emit_to(&fast_uuid, "still here", MessageType::Text)
        .unwrap();
    assert_eq!(fast.recv_text(), "still here");
}

#[test]
fn close_all_sends_1001_and_disconnect_listeners_see_request_data() {
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", |_| {}));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    ts.server.on(event::DISCONNECT, move |ep| {
        s.lock()
            .unwrap()
            .push(ep.kws().query("n").unwrap_or("missing").to_string());
    });
    let rec = Recorder::attach(&ts.server, &[event::CLOSE, event::DISCONNECT]);
    let n = 20;
    let mut clients: Vec<Client> = (0..n).map(|i| ts.client(&format!("/ws?n={i}"))).collect();
    ts.wait_connections(n);
    let server = ts.server.clone();
    let closer = std::thread::spawn(move || server.close_all(1001, "bye", Duration::from_secs(5)));
    for c in clients.iter_mut() {
        assert_eq!(c.recv_close(), (1001, "bye".to_string()));
    }
    closer.join().unwrap().expect("every close written in time");
    assert_eq!(ts.server.connections(), 0);
    let mut got = seen.lock().unwrap().clone();
    got.sort_by_key(|s| s.parse::<usize>().unwrap_or(usize::MAX));
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    // close fired before disconnect for each connection.
    let d = rec.wait(event::DISCONNECT, |s| s.name == event::DISCONNECT);
    assert_eq!(rec.names_for(&d.uuid), [event::CLOSE, event::DISCONNECT]);
}

#[test]
fn close_all_sanitises_reserved_codes_and_long_reasons() {
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", |_| {}));
    let mut a = ts.client("/ws");
    ts.wait_connections(1);
    let reason = "é".repeat(100); // 200 bytes: cut to 122 at a character boundary
    ts.server
        .close_all(1006, &reason, Duration::from_secs(5))
        .unwrap();
    let (code, got) = a.recv_close();
    assert_eq!(code, 1000, "1006 may not go on the wire");
    assert_eq!(got, "é".repeat(61));
}

#[test]
fn a_thousand_emits_from_the_route_callback_all_arrive() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", move |kws| {
        for i in 0..1000 {
            kws.emit(format!("{i}"), MessageType::Text);
        }
        report(kws);
    }));
    let rec = Recorder::attach(&ts.server, &[event::ERROR]);
    let mut c = ts.client("/ws");
    let (uuid, _) = next_uuid(&uuids);
    // 900 of them wait for room in the 100-slot queue; the first flush after the callback
    // makes that room long before the 100 ms retry window ends, so nothing is dropped.
    for i in 0..1000 {
        assert_eq!(c.recv_text(), format!("{i}"));
    }
    ts.server.emit_to(&uuid, "end", MessageType::Text).unwrap();
    assert_eq!(c.recv_text(), "end");
    assert!(rec.names_for(&uuid).is_empty(), "no message was dropped");
}

#[test]
fn shutdown_sends_1001_and_join_returns() {
    let server = Server::builder()
        .shards(2)
        .route("/ws", |_| {})
        .start()
        .unwrap();
    let mut c = Client::connect(server.local_addr(), "/ws");
    wait_until(|| server.connections() == 1, "connection");
    server.shutdown();
    assert!(server.is_draining());
    assert_eq!(c.recv_close(), (1001, "server shutting down".to_string()));
    server.join().expect("shards stop cleanly");
    assert!(
        std::net::TcpStream::connect(server.local_addr()).is_err(),
        "no longer listening"
    );
}

#[test]
fn a_producer_that_outruns_a_shard_is_refused_counted_and_loses_nothing_accepted() {
    let ts = TestServer::start(Server::builder().shards(1).inbox_capacity(16).route(
        "/ws/:id",
        |kws| {
            let id = kws.param("id").unwrap_or_default().to_string();
            kws.set_uuid(id).unwrap();
        },
    ));
    // A listener holds the shard's thread until told to go on: its inbox fills meanwhile.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    ts.server.on(event::MESSAGE, move |ep| {
        if ep.data() == "hold" {
            let _ = wait.lock().unwrap().recv_timeout(WAIT);
        }
    });
    let mut c = ts.client("/ws/c");
    wait_until(|| ts.server.is_connected("c"), "c");
    c.send_text("hold");
    wait_until(|| ts.server.metrics().messages_in == [1], "the shard held");

    let (mut accepted, mut refused) = (0, 0);
    for i in 0..100 {
        match ts.server.emit_to("c", format!("{i}"), MessageType::Text) {
            Ok(()) => accepted += 1,
            Err(corecast::Error::InboxFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((accepted, refused), (16, 84));
    // A broadcast has no result to refuse with: it misses the shard and is counted.
    ts.server.broadcast("missed", MessageType::Text);
    assert_eq!(ts.server.metrics().inbox_refusals, [85]);

    go.send(()).unwrap();
    for i in 0..16 {
        assert_eq!(
            c.recv_text(),
            format!("{i}"),
            "accepted messages arrive in order"
        );
    }
    ts.server.emit_to("c", "after", MessageType::Text).unwrap();
    assert_eq!(c.recv_text(), "after");
}
