//! The upgrade path: status codes for bad requests, draining, slow handshakes, start errors.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use corecast::{Error, Server};

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

fn server() -> TestServer {
    TestServer::start(Server::builder().shards(2).route("/ws/:id", |_| {}))
}

#[test]
fn status_codes_for_each_kind_of_request() {
    let ts = server();
    let a = ts.addr();
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    assert_eq!(http_status(a, &get("/nope", UPGRADE)), 404);
    assert_eq!(
        http_status(a, &get("/ws/1/2", UPGRADE)),
        404,
        ":id is one segment"
    );
    assert_eq!(
        http_status(a, &get("/ws/1", "")),
        426,
        "plain HTTP to a route"
    );
    assert_eq!(
        http_status(
            a,
            &get(
                "/ws/1",
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            )
        ),
        400,
        "no key"
    );
    assert_eq!(
        http_status(a, &get("/ws/1", &UPGRADE.replace("13", "8"))),
        426,
        "unsupported version"
    );
    assert_eq!(http_status(a, "NOT HTTP AT ALL\r\n\r\n"), 400);
    let huge = format!("X-Big: {}\r\n", "a".repeat(9000));
    assert_eq!(
        http_status(a, &get("/ws/1", &format!("{UPGRADE}{huge}"))),
        431
    );
    // After all that, the server still serves.
    let mut c = ts.client("/ws/1");
    c.send_text("still fine");
}

#[test]
fn draining_refuses_new_upgrades_with_503_and_keeps_the_rest() {
    let ts = server();
    let mut c = ts.client("/ws/1");
    ts.wait_connections(1);
    ts.server.drain();
    assert!(ts.server.is_draining());
    let status = http_status(
        ts.addr(),
        &format!("GET /ws/2 HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n"),
    );
    assert_eq!(status, 503);
    ts.server
        .broadcast("still here", corecast::MessageType::Text);
    assert_eq!(c.recv_text(), "still here");
}

#[test]
fn a_shutdown_waiting_on_a_stuck_client_answers_new_upgrades_503_until_it_stops() {
    let server = Server::builder()
        .shards(1)
        .route("/ws/:id", |kws| {
            let id = kws.param("id").unwrap_or_default().to_string();
            kws.set_uuid(id).unwrap();
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    // Never reads: once its socket is full, its close frame waits behind 16 MiB and the
    // shutdown waits for its deadline.
    let _stuck = RawClient::connect(addr, "/ws/stuck");
    let mut good = Client::connect(addr, "/ws/good");
    wait_until(|| server.connections() == 2, "connections");
    for _ in 0..32 {
        server
            .emit_to("stuck", vec![0u8; 512 << 10], corecast::MessageType::Binary)
            .unwrap();
    }
    server.shutdown_within(Duration::from_secs(2));
    // The shard has started closing its clients...
    assert_eq!(good.recv_close().0, 1001);
    // ...and while it waits on the stuck one, the port stays open and answers.
    assert_eq!(upgrade_status(addr, "/ws/new"), 503);
    server.join().expect("shards stop cleanly");
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn a_stalled_handshake_is_dropped_without_hurting_others() {
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .handshake_timeout(Duration::from_millis(200))
            .route("/ws/:id", |_| {}),
    );
    let mut stalled = TcpStream::connect(ts.addr()).unwrap();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    stalled
        .write_all(b"GET /ws/1 HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Meanwhile another client upgrades and talks.
    let mut c = ts.client("/ws/2");
    ts.wait_connections(1);
    ts.server.broadcast("hi", corecast::MessageType::Text);
    assert_eq!(c.recv_text(), "hi");
    // One that connects and goes without a request.
    drop(TcpStream::connect(ts.addr()).unwrap());
    // The stalled one is cut off after the timeout: EOF, no response.
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut stalled, &mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    // Both are counted by cause, neither as an HTTP rejection.
    wait_until(
        || handshake_failures(&ts.server, "timeout") == 1,
        "the stalled handshake counted",
    );
    wait_until(
        || handshake_failures(&ts.server, "closed") == 1,
        "the client gone before its request counted",
    );
    let rejected = ts.server.metrics().rejections;
    assert!(rejected.iter().all(|(_, n)| *n == 0), "{rejected:?}");
}

#[test]
fn start_errors_are_clear() {
    // SO_REUSEPORT lets shards share a port, but not with a plain listener.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = Server::builder()
        .shards(1)
        .bind(plain.local_addr().unwrap())
        .start();
    assert!(matches!(busy, Err(Error::Start { .. })), "{busy:?}");
    let msg = busy.unwrap_err().to_string();
    assert!(msg.contains("cannot listen"), "{msg}");

    let zero = Server::builder().shards(0).start();
    assert!(matches!(zero, Err(Error::Config(_))), "{zero:?}");
    let bad = Server::builder().route("no-slash", |_| {}).start();
    assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
    let bad = Server::builder().bind("not an address").start();
    assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
}

#[test]
fn blocking_calls_refuse_to_run_on_a_shard_thread() {
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", |_| {}));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = ts.server.clone();
    ts.server.on(corecast::event::MESSAGE, move |_| {
        let r = server.close_all(1000, "", Duration::from_secs(1));
        let j = server.join();
        let _ = tx
            .lock()
            .unwrap()
            .send((format!("{r:?}"), format!("{j:?}")));
    });
    let mut c = ts.client("/ws");
    c.send_text("x");
    let (r, j) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(r, "Err(OnShardThread)");
    assert_eq!(j, "Err(OnShardThread)");
}

#[test]
fn close_all_async_works_on_a_shard_thread() {
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", |_| {}));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = ts.server.clone();
    ts.server.on(corecast::event::MESSAGE, move |_| {
        let (server, tx) = (server.clone(), tx.lock().unwrap().clone());
        glommio::spawn_local(async move {
            let r = server
                .close_all_async(1000, "async", Duration::from_secs(5))
                .await;
            let _ = tx.send(format!("{r:?}"));
        })
        .detach();
    });
    let mut a = ts.client("/ws");
    let mut b = ts.client("/ws");
    ts.wait_connections(2);
    a.send_text("close everyone");
    assert_eq!(a.recv_close(), (1000, "async".to_string()));
    assert_eq!(b.recv_close(), (1000, "async".to_string()));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "Ok(())");
    ts.wait_connections(0);
}

/// Upgrades to `/chat` offering `offer` (one `Sec-WebSocket-Protocol` header, the names
/// comma-separated); the protocol the 101 names, if any. Raw, because a client library may
/// refuse a 101 that names no protocol, which RFC 6455 §4.2.2 allows.
fn offer(addr: std::net::SocketAddr, offer: Option<&str>) -> Option<String> {
    let header = offer.map_or(String::new(), |o| {
        format!("Sec-WebSocket-Protocol: {o}\r\n")
    });
    let mut stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!("GET /chat HTTP/1.1\r\nHost: x\r\n{UPGRADE}{header}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
        .map(String::from)
}

#[test]
fn a_route_answers_its_first_choice_among_the_offered_subprotocols() {
    let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
    let tx = std::sync::Mutex::new(tx);
    let config = corecast::Config {
        subprotocols: vec!["chat.v2".into(), "chat".into()],
        ..corecast::Config::default()
    };
    let ts = TestServer::start(
        Server::builder().route_with_config("/chat", config, move |kws| {
            let _ = tx.lock().unwrap().send(kws.protocol().map(String::from));
        }),
    );
    let seen = || rx.recv_timeout(WAIT).expect("the route callback ran");
    // The server's order decides, not the client's.
    assert_eq!(
        offer(ts.addr(), Some("chat, chat.v2")).as_deref(),
        Some("chat.v2")
    );
    assert_eq!(seen().as_deref(), Some("chat.v2"));
    assert_eq!(
        offer(ts.addr(), Some("mqtt, chat")).as_deref(),
        Some("chat")
    );
    assert_eq!(seen().as_deref(), Some("chat"));
    // Offering none of ours, or nothing: accepted, and no protocol is named.
    assert_eq!(offer(ts.addr(), Some("mqtt, Chat")), None);
    assert_eq!(seen(), None);
    assert_eq!(offer(ts.addr(), None), None);
    assert_eq!(seen(), None);
}

#[test]
fn a_gate_reads_the_offer_and_may_refuse_it() {
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<String>, Option<String>)>();
    let tx = std::sync::Mutex::new(tx);
    let config = corecast::Config {
        subprotocols: vec!["chat".into()],
        ..corecast::Config::default()
    };
    let builder = Server::builder()
        .route_with_config("/chat", config, |_| {})
        .before_upgrade(move |req| {
            let offered: Vec<String> = req
                .offered_protocols()
                .into_iter()
                .map(String::from)
                .collect();
            let refuse = offered.iter().any(|p| p == "legacy");
            let _ = tx
                .lock()
                .unwrap()
                .send((offered, req.protocol().map(String::from)));
            if refuse {
                return Err(corecast::Rejection::new(
                    400,
                    "legacy clients are not served",
                ));
            }
            Ok(())
        });
    let ts = TestServer::start(builder);
    assert_eq!(offer(ts.addr(), Some("x, chat")).as_deref(), Some("chat"));
    let (offered, chosen) = rx.recv_timeout(WAIT).expect("the gate ran");
    assert_eq!(
        (offered, chosen.as_deref()),
        (vec!["x".to_string(), "chat".into()], Some("chat"))
    );

    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Protocol: legacy\r\n\
         Sec-WebSocket-Protocol: chat\r\n\r\n"
    );
    assert_eq!(http_status(ts.addr(), &request), 400);
    let (offered, chosen) = rx.recv_timeout(WAIT).expect("the gate ran");
    assert_eq!(
        (offered, chosen.as_deref()),
        (vec!["legacy".to_string(), "chat".into()], Some("chat"))
    );
}

#[test]
fn a_subprotocol_that_is_not_a_token_is_a_start_error() {
    let config = corecast::Config {
        subprotocols: vec!["chat v2".into()],
        ..corecast::Config::default()
    };
    let result = Server::builder()
        .bind("127.0.0.1:0")
        .route_with_config("/chat", config, |_| {})
        .start();
    match result {
        Err(Error::Config(why)) => {
            assert!(why.contains("\"chat v2\" is not an HTTP token"), "{why}")
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("a bad subprotocol name started"),
    }
}

#[test]
fn a_second_server_on_a_taken_address_fails_and_the_first_keeps_every_connection() {
    let first = server();
    let addr = first.addr();
    for shards in [2, 1] {
        // Routeless: were it in the SO_REUSEPORT group, its share of upgrades would get 404.
        let second = Server::builder().shards(shards).bind(addr).start();
        let err = match second {
            Err(e) => e,
            Ok(s) => {
                s.shutdown_within(Duration::ZERO);
                let _ = s.join();
                panic!("a second server started on {addr}, sharing its connections");
            }
        };
        assert!(matches!(err, Error::Start { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("in use"), "{msg}");
        assert!(msg.contains(&addr.to_string()), "{msg}");
    }
    for i in 0..32 {
        assert_eq!(upgrade_status(addr, &format!("/ws/{i}")), 101);
    }
}

#[test]
fn a_stopped_servers_address_is_free_again_at_once() {
    let builder = || Server::builder().shards(2).route("/ws/:id", |_| {});
    let first = builder()
        .bind("127.0.0.1:0")
        .start()
        .expect("server starts");
    let addr = first.local_addr();
    // The server closes first, so its side of the connection stays in TIME_WAIT: that must not
    // count as the address being in use.
    let mut c = Client::connect(addr, "/ws/1");
    let closing = std::thread::spawn({
        let server = first.clone();
        move || server.close_all(1000, "restart", WAIT)
    });
    assert_eq!(c.recv_close().0, 1000);
    closing.join().unwrap().unwrap();
    drop(c);
    first.shutdown_within(Duration::ZERO);
    first.join().unwrap();

    let again = builder()
        .bind(addr)
        .start()
        .expect("a restart on the same address");
    assert_eq!(upgrade_status(addr, "/ws/2"), 101);
    again.shutdown_within(Duration::ZERO);
    let _ = again.join();
}

/// More connections at once than one round accepts (64): the listener stays ready for the
/// rest, and every one of them upgrades.
#[test]
fn a_burst_of_connects_larger_than_one_accept_round_all_upgrade() {
    let ts = TestServer::start(Server::builder().shards(1).route("/ws/:id", |_| {}));
    let request = |i: usize| format!("GET /ws/{i} HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n");
    // Every request is sent before any answer is read, so the backlog holds them together.
    let mut streams: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(ts.addr()).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.write_all(request(i).as_bytes()).unwrap();
            s
        })
        .collect();
    for s in &mut streams {
        let head = read_head(s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    }
    ts.wait_connections(200);
}

/// A request that arrives in two parts: the first read finds only part of it, the handshake
/// waits for the rest and answers it whole, whenever it comes.
#[test]
fn a_request_in_two_parts_upgrades() {
    let ts = TestServer::start(Server::builder().shards(1).route("/ws/:id", |_| {}));
    let request = format!("GET /ws/1 HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n");
    let (first, rest) = request.split_at(20);
    let mut s = TcpStream::connect(ts.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(first.as_bytes()).unwrap();
    // The pause only makes two segments likely; the test holds whatever the timing.
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(rest.as_bytes()).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ts.wait_connections(1);
    ts.server
        .broadcast("after two parts", corecast::MessageType::Text);
    let mut frame = [0u8; 17];
    std::io::Read::read_exact(&mut s, &mut frame).unwrap();
    assert_eq!(&frame[..2], &[0x81, 15]);
    assert_eq!(&frame[2..], b"after two parts");
}
