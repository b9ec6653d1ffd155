//! `Builder::backend` seen from outside, against a real HTTP backend started by each test:
//! what the webhook receives and in which order, what a retried, refused or down backend costs,
//! the connect hook's answers on the wire, and that a backend that never answers holds up no
//! shard.

mod common;

#[path = "common/backend.rs"]
mod backend;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backend::{Answer, TestBackend};
use common::*;
use corecast::backend::{Backend, EventSet, Verdict};
use corecast::{event, MessageType, Server};
use serde_json::Value;

fn all_events(backend: &TestBackend) -> Backend {
    Backend::new()
        .webhook(&backend.url("/events"), EventSet::ALL)
        .unwrap()
        .retries(5, Duration::from_millis(10), Duration::from_millis(50))
        .authorization("Bearer test-secret")
}

fn events_total(server: &Server, outcome: &str) -> u64 {
    let snap = server.metrics();
    snap.backend_events
        .iter()
        .find(|(o, _)| *o == outcome)
        .map_or(0, |(_, n)| *n)
}

#[test]
fn every_event_reaches_the_webhook_once_in_order_through_failures() {
    // The first two deliveries fail with 500 and are retried.
    let failures = AtomicUsize::new(0);
    let backend = TestBackend::start(move |r| {
        if r.path == "/events" && failures.fetch_add(1, Ordering::Relaxed) < 2 {
            return Answer::Json(500, "{}".into());
        }
        Answer::ok("{}")
    });
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .backend(all_events(&backend))
            .route("/ws", |kws| {
                kws.subscribe("room").unwrap();
            }),
    );
    let mut c = ts.client("/ws");
    for i in 0..20 {
        c.send_text(&format!("m{i}"));
    }
    c.send_binary(&[0, 255]);
    c.close(1000, "done");
    let events = backend.wait_events(WAIT, "/events", |e| {
        e.iter().any(|e| e["type"] == "disconnect")
    });
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let mut expected = vec!["subscribe", "connect"];
    expected.extend(std::iter::repeat("message").take(21));
    expected.push("disconnect");
    assert_eq!(kinds, expected, "{events:?}");
    let texts: Vec<&str> = events[2..22]
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, sent);
    assert_eq!(events[22]["binary"], "AP8=");
    assert_eq!(events[23]["code"], 1000);
    assert_eq!(events[23]["cause"], "clean");
    assert_eq!(events[0]["topic"], "room");
    // One connection, one path, no user; every id once.
    let uuid = &events[0]["uuid"];
    assert!(events
        .iter()
        .all(|e| &e["uuid"] == uuid && e["path"] == "/ws"));
    assert!(events.iter().all(|e| e["user"] == Value::Null));
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "an event arrived twice");
    // The failed tries were retried, and carried the server's authorization.
    let posts = backend.requests();
    assert!(posts.len() >= 3);
    assert!(posts
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer test-secret")));
    wait_until(
        || events_total(&ts.server, "webhook_delivered") == events.len() as u64,
        "the delivered count",
    );
    assert_eq!(events_total(&ts.server, "webhook_failed"), 0);
}

#[test]
fn a_refused_delivery_is_dropped_and_counted_and_a_full_outbox_drops_at_once() {
    // 400: not worth a retry.
    let backend = TestBackend::start(|_| Answer::Json(400, "{}".into()));
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .backend(
                Backend::new()
                    .webhook(&backend.url("/events"), EventSet::parse("message").unwrap())
                    .unwrap(),
            )
            .route("/ws", |_| {}),
    );
    let mut c = ts.client("/ws");
    c.send_text("one");
    backend.wait(WAIT, "the first delivery", |r| !r.is_empty());
    wait_until(
        || events_total(&ts.server, "webhook_failed") == 1,
        "the refused event counted",
    );
    drop(c);

    // An outbox of 2 behind a backend that never answers: one event in flight and one waiting
    // fill it, the rest are dropped at once, and the shard goes on serving.
    let stuck = TestBackend::start(|_| Answer::Hang);
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .backend(
                Backend::new()
                    .webhook(&stuck.url("/events"), EventSet::parse("message").unwrap())
                    .unwrap()
                    .queue_capacity(2)
                    .batch_max(1)
                    .timeout(Duration::from_secs(2)),
            )
            .route("/ws", |kws| {
                kws.on(event::MESSAGE, |ep| {
                    ep.kws().emit(ep.data().clone(), MessageType::Text);
                });
            }),
    );
    let mut c = ts.client("/ws");
    for i in 0..10 {
        c.send_text(&i.to_string());
        assert_eq!(c.recv_text(), i.to_string(), "the shard kept echoing");
    }
    stuck.wait(WAIT, "the stuck delivery", |r| r.len() == 1);
    wait_until(
        || events_total(&ts.server, "webhook_queue_full") == 8,
        "8 of 10 events dropped",
    );
}

#[test]
fn the_connect_hook_refuses_names_or_lets_in_and_a_down_backend_gets_503() {
    let backend = TestBackend::start(|r| match r.body["query"].as_str() {
        Some("who=eve") => Answer::ok(r#"{"error":"banned","status":451}"#),
        Some("who=bob") => Answer::ok(r#"{"user":"bob","subscribe":["a.*"]}"#),
        Some("who=bad") => Answer::ok("not json"),
        Some("who=500") => Answer::Json(500, "{}".into()),
        _ => Answer::ok("{}"),
    });
    let (tx, users) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let ts = TestServer::start(
        Server::builder()
            .backend(
                Backend::new()
                    .connect_hook(&backend.url("/connect"))
                    .unwrap(),
            )
            .route("/ws", move |kws| {
                let grants = kws.identity().map(|i| i.subscribe.clone());
                let _ = tx
                    .lock()
                    .unwrap()
                    .send((kws.user().map(str::to_string), grants));
            }),
    );
    let (status, body) = http_exchange(ts.addr(), "/ws?who=eve");
    assert_eq!((status, body.as_str()), (451, "banned"));
    for who in ["bad", "500"] {
        let (status, body) = http_exchange(ts.addr(), &format!("/ws?who={who}"));
        assert_eq!(
            (status, body.as_str()),
            (503, "backend unavailable"),
            "{who}"
        );
    }
    let _bob = ts.client("/ws?who=bob");
    let got = users.recv_timeout(WAIT).unwrap();
    assert_eq!(got, (Some("bob".into()), Some(vec!["a.*".to_string()])));
    let _anon = ts.client("/ws?who=anyone");
    assert_eq!(users.recv_timeout(WAIT).unwrap(), (None, None));
    // The hook saw the request as the client sent it.
    let asked = backend.requests();
    let bob = asked.iter().find(|r| r.body["query"] == "who=bob").unwrap();
    assert_eq!(bob.path, "/connect");
    assert_eq!(bob.body["path"], "/ws");
    assert_eq!(bob.body["headers"]["upgrade"], "websocket");
    drop(backend);

    // Nobody listens there any more.
    let (status, body) = http_exchange(ts.addr(), "/ws?who=bob");
    assert_eq!((status, body.as_str()), (503, "backend unavailable"));
}

#[test]
fn a_backend_that_never_answers_holds_up_no_shard_and_busy_calls_are_refused_at_once() {
    let backend = TestBackend::start(|_| Answer::Hang);
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .backend(
                Backend::new()
                    .subscribe_hook(&backend.url("/subscribe"))
                    .unwrap()
                    .timeout(Duration::from_millis(500))
                    .max_in_flight(1),
            )
            .route("/ws", |kws| {
                kws.on(event::MESSAGE, |ep| {
                    let kws = ep.kws().clone();
                    let text = String::from_utf8_lossy(ep.data()).to_string();
                    if let Some(topic) = text.strip_prefix("ask ") {
                        let topic = topic.to_string();
                        glommio::spawn_local(async move {
                            let answer = match kws.ask_subscribe(&topic).await {
                                Ok(Verdict::Allow(_)) => "allowed".to_string(),
                                Ok(Verdict::Refuse(r)) => format!("refused {r}"),
                                Err(e) => e.to_string(),
                            };
                            kws.emit(answer, MessageType::Text);
                        })
                        .detach();
                    } else {
                        ep.kws().emit(ep.data().clone(), MessageType::Text);
                    }
                });
            }),
    );
    let mut asker = ts.client("/ws");
    let mut other = ts.client("/ws");
    asker.send_text("ask a");
    backend.wait(WAIT, "the hook call", |r| r.len() == 1);
    // One call in flight is this shard's limit: the next is refused at once.
    asker.send_text("ask b");
    assert_eq!(asker.recv_text(), "backend busy");
    // The shard serves the other connection while the call waits.
    for i in 0..5 {
        other.send_text(&format!("echo {i}"));
        assert_eq!(other.recv_text(), format!("echo {i}"));
    }
    let answer = asker.recv_text();
    assert!(answer.starts_with("backend unavailable"), "{answer}");
    let snap = ts.server.metrics();
    let count = |outcome: &str| {
        snap.hook_calls
            .iter()
            .find(|(h, o, _)| *h == "subscribe" && *o == outcome)
            .map_or(0, |(_, _, n)| *n)
    };
    assert_eq!((count("busy"), count("failed")), (1, 1));
}

/// Sends a plain upgrade request for `path`; the answer's status and body.
fn http_exchange(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn events_go_to_nats_subjects_in_order() {
    let nats = Nats::start();
    let mut watcher = backend::NatsWatcher::subscribe(nats.port, "app.events.>");
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .backend(
                Backend::new()
                    .nats_events(
                        &nats.url(),
                        "app.events",
                        EventSet::parse("connect,message").unwrap(),
                    )
                    .unwrap(),
            )
            .route("/ws", |_| {}),
    );
    let mut c = ts.client("/ws?x=1");
    for i in 0..10 {
        c.send_text(&format!("n{i}"));
    }
    let (subject, connect) = watcher.next();
    assert_eq!(subject, "app.events.connect");
    assert_eq!(connect["path"], "/ws");
    for i in 0..10 {
        let (subject, event) = watcher.next();
        assert_eq!(subject, "app.events.message");
        assert_eq!(event["text"], format!("n{i}"));
        assert_eq!(event["uuid"], connect["uuid"]);
    }
    wait_until(
        || events_total(&ts.server, "nats_sent") == 11,
        "the NATS events counted",
    );
    // A prefix with a wildcard is refused when configured.
    let err = Backend::new()
        .nats_events(&nats.url(), "app.*", EventSet::ALL)
        .expect_err("a wildcard prefix is refused");
    assert!(
        err.to_string().contains("invalid NATS subject prefix"),
        "{err}"
    );
}

#[test]
fn in_cluster_mode_every_node_forwards_its_own_connections_events_once() {
    let nats = Nats::start();
    let mut watcher = backend::NatsWatcher::subscribe(nats.port, "corecast.events.message");
    let node = |id: &str| {
        TestServer::start(
            Server::builder()
                .shards(2)
                .cluster(corecast::ClusterConfig::nats(nats.url()).node_id(id))
                .backend(
                    Backend::new()
                        .nats_events(
                            &nats.url(),
                            "corecast.events",
                            EventSet::parse("message").unwrap(),
                        )
                        .unwrap(),
                )
                .route("/ws", |kws| {
                    kws.on(event::MESSAGE, |ep| {
                        // Relayed to every node's clients: none of that is a client message.
                        ep.kws()
                            .broadcast(ep.data().clone(), true, MessageType::Text);
                    });
                }),
        )
    };
    let (a, b) = (node("a"), node("b"));
    let mut on_a = a.client("/ws");
    let mut on_b = b.client("/ws");
    on_a.send_text("from a");
    on_b.send_text("from b");
    let mut seen: Vec<String> = (0..2)
        .map(|_| watcher.next().1["text"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, ["from a", "from b"]);
    // Each node counted only its own, though both delivered both messages.
    wait_until(
        || events_total(&a.server, "nats_sent") == 1 && events_total(&b.server, "nats_sent") == 1,
        "one event per node",
    );
    on_a.send_text("last");
    assert_eq!(
        watcher.next().1["text"],
        "last",
        "no duplicate came between"
    );
}

#[test]
fn a_shutdown_delivers_the_last_events_first() {
    // Slow enough that the disconnects are still waiting when the shard stops.
    let backend =
        TestBackend::start(|_| Answer::Slow(Duration::from_millis(100), 200, "{}".into()));
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .backend(
                Backend::new()
                    .webhook(
                        &backend.url("/events"),
                        EventSet::parse("disconnect").unwrap(),
                    )
                    .unwrap()
                    .batch_max(1),
            )
            .route("/ws", |_| {}),
    );
    let clients: Vec<Client> = (0..3).map(|_| ts.client("/ws")).collect();
    ts.wait_connections(3);
    ts.server.shutdown_within(Duration::from_secs(2));
    ts.server.join().unwrap();
    // join returned: every disconnect was delivered before the shard ended.
    let events = backend.events("/events");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e["code"] == 1001), "{events:?}");
    drop(clients);
}

#[test]
fn a_connect_hook_call_cut_off_by_the_handshake_timeout_frees_its_slot() {
    // The first call hangs; every later one answers at once.
    let calls = AtomicUsize::new(0);
    let backend = TestBackend::start(move |_| {
        if calls.fetch_add(1, Ordering::Relaxed) == 0 {
            Answer::Hang
        } else {
            Answer::ok("{}")
        }
    });
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .handshake_timeout(Duration::from_millis(300))
            .backend(
                Backend::new()
                    .connect_hook(&backend.url("/connect"))
                    .unwrap()
                    .timeout(Duration::from_secs(5))
                    .max_in_flight(1),
            )
            .route("/ws", |_| {}),
    );
    // Dropped at the handshake timeout, while its hook call still hangs.
    let (status, _) = http_exchange(ts.addr(), "/ws");
    assert_eq!(status, 0, "no answer past the handshake timeout");
    // The one slot is free again: the next upgrade is asked about and let in.
    let _c = ts.client("/ws");
    assert_eq!(backend.requests().len(), 2);
}
