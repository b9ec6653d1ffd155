//! The real `corecast` binary with an application backend: the `--webhook`, `--nats-events`,
//! `--hook-*` and `--backend-*` flags against an HTTP backend each test starts on
//! 127.0.0.1:0, what clients get in `--mode pubsub` from the subscribe, publish and RPC hooks,
//! the order of one connection's requests while a hook decides, and a backend that never
//! answers holding up no shard.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

#[path = "../../tests/common/backend.rs"]
mod test_backend;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use support::*;
use test_backend::{Answer, NatsWatcher, Request, TestBackend};

const SECRET: &str = "backend test secret";

/// A secret file for `--backend-secret-file`, with the trailing newline an editor leaves.
fn secret_file(test: &str) -> PathBuf {
    let path = temp_dir(test).join("backend.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

fn recv_json(c: &mut Client) -> Value {
    serde_json::from_str(&c.recv_text()).expect("a JSON frame")
}

/// A `http://` URL where nothing listens.
fn nobody_url(path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", free_port())
}

/// `name{label="value"} N` of the binary's `/metrics`; 0 when absent.
fn metric(bin: &Bin, name: &str, label: &str) -> u64 {
    let (status, body) = bin.api("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let prefix = format!("{name}{{{label}}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_webhook_gets_every_event_once_in_order_through_500s() {
    // The first three deliveries fail with 500; the retries carry the same events.
    let failures = AtomicUsize::new(0);
    let backend = TestBackend::start(move |r| {
        if r.path == "/events" && failures.fetch_add(1, Ordering::Relaxed) < 3 {
            return Answer::Json(500, "{}".into());
        }
        Answer::ok("{}")
    });
    let secret = secret_file("bin-webhook");
    // The URL from the environment, the rest from flags.
    let bin = Bin::start_with_env(
        &[
            "--mode",
            "echo",
            "--backend-secret-file",
            secret.to_str().unwrap(),
        ],
        &[("CORECAST_WEBHOOK", &backend.url("/events"))],
    );
    let mut c = bin.client("/ws/w1");
    for i in 0..20 {
        c.send_text(&format!("m{i}"));
        assert_eq!(c.recv_text(), format!("m{i}"));
    }
    c.close(1000, "bye");
    let events = backend.wait_events(WAIT, "/events", |e| {
        e.iter().any(|e| e["type"] == "disconnect")
    });
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let mut expected = vec!["connect"];
    expected.extend(std::iter::repeat("message").take(20));
    expected.push("disconnect");
    assert_eq!(kinds, expected, "{events:#?}");
    let texts: Vec<&str> = events[1..21]
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, sent);
    assert!(events
        .iter()
        .all(|e| e["uuid"] == "w1" && e["path"] == "/ws/w1" && e["user"] == Value::Null));
    assert_eq!(events[21]["code"], 1000);
    assert_eq!(events[21]["cause"], "clean");
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "an event arrived twice");
    // Every try, the failed ones too, carried the secret.
    let posts = backend.requests();
    assert!(posts.len() >= 4, "{posts:?}");
    let bearer = format!("Bearer {SECRET}");
    assert!(posts
        .iter()
        .all(|r| r.authorization.as_deref() == Some(bearer.as_str())));
    let counted = r#"outcome="webhook_delivered""#;
    wait_until(
        || metric(&bin, "corecast_backend_events_total", counted) == 22,
        "22 events counted delivered",
    );
    assert_eq!(
        metric(
            &bin,
            "corecast_backend_events_total",
            r#"outcome="webhook_failed""#
        ),
        0
    );
}

#[test]
fn webhook_events_picks_the_kinds() {
    let backend = TestBackend::start(|_| Answer::ok("{}"));
    let url = backend.url("/events");
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--webhook",
        &url,
        "--webhook-events",
        "subscribe,unsubscribe",
    ]);
    let mut c = bin.client("/ws/k1");
    c.send_text(r#"{"subscribe":"a"}"#);
    assert_eq!(recv_json(&mut c), json!({ "subscribed": "a" }));
    c.send_text(r#"{"publish":"a","data":"x"}"#);
    c.send_text(r#"{"unsubscribe":"a"}"#);
    assert_eq!(recv_json(&mut c), json!({ "unsubscribed": "a" }));
    let events = backend.wait_events(WAIT, "/events", |e| e.len() >= 2);
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["topic"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("subscribe", "a"), ("unsubscribe", "a")]);
}

/// The connect hook's answers: by the upgrade's `?who=`.
fn connect_answer(r: &Request) -> Answer {
    match r.body["query"].as_str().unwrap_or("") {
        q if q.contains("who=eve") => Answer::ok(r#"{"error":"banned","status":451}"#),
        q if q.contains("who=bob") => Answer::ok(r#"{"user":"bob","subscribe":["a.*"]}"#),
        _ => Answer::ok("{}"),
    }
}

#[test]
fn the_connect_hook_refuses_or_names_the_client_and_a_down_backend_is_503() {
    let backend = TestBackend::start(connect_answer);
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--hook-connect",
        &backend.url("/connect"),
    ]);
    // Tokens are off, but the backend decides who connects: no warning that anyone may.
    assert!(
        !bin.log.iter().any(|l| l.contains("not authenticated")),
        "{:#?}",
        bin.log
    );
    assert_eq!(upgrade(bin.ws, "/ws?who=eve"), (451, "banned".into()));
    // Bob, with the grants the backend gave.
    let mut bob = bin.client("/ws?who=bob");
    bob.send_text(r#"{"subscribe":"a.x"}"#);
    assert_eq!(recv_json(&mut bob), json!({ "subscribed": "a.x" }));
    bob.send_text(r#"{"subscribe":"b"}"#);
    assert_eq!(
        recv_json(&mut bob),
        json!({ "subscribe": "b", "error": "not permitted" })
    );
    // Without an RPC hook an RPC is answered at once.
    bob.send_text(r#"{"rpc":"time","id":3}"#);
    assert_eq!(
        recv_json(&mut bob),
        json!({ "rpc": "time", "id": 3, "error": "no rpc hook" })
    );
    // Bob is on user#bob, and /ws/<id> is his id only.
    let (_, topics) = bin.api("GET", "/api/topics", &[], b"");
    assert!(topics.contains("\"user#bob\""), "{topics}");
    assert_eq!(upgrade(bin.ws, "/ws/alice?who=bob").0, 403);
    assert_eq!(upgrade(bin.ws, "/ws/bob?who=bob").0, 101);
    // A client the backend names nobody is anonymous, and may take any id.
    assert_eq!(upgrade(bin.ws, "/ws/anyone?who=x").0, 101);
    let asked = backend.requests();
    let bob_asked = asked
        .iter()
        .find(|r| r.body["query"] == "who=bob")
        .expect("the hook was asked about bob");
    assert_eq!(bob_asked.path, "/connect");
    assert_eq!(bob_asked.body["path"], "/ws");
    assert_eq!(bob_asked.body["headers"]["upgrade"], "websocket");
    drop(bin);

    let bin = Bin::start(&["--hook-connect", &nobody_url("/connect")]);
    assert_eq!(upgrade(bin.ws, "/ws"), (503, "backend unavailable".into()));
}

/// A backend with every hook: subscribe refuses `secret`; publish refuses `censored`,
/// replaces the data on `shout` (upper case) and `obj` (a JSON object); RPC `add` adds,
/// `deny` refuses; connect names `?who=bob`.
fn full_backend() -> TestBackend {
    TestBackend::start(|r| match r.path.as_str() {
        "/connect" => connect_answer(r),
        "/subscribe" if r.body["topic"] == "secret" => Answer::ok(r#"{"error":"members only"}"#),
        "/publish" => match r.body["topic"].as_str().unwrap_or("") {
            "censored" => Answer::ok(r#"{"error":"no swearing"}"#),
            "shout" => {
                let data = r.body["data"].as_str().unwrap_or("").to_uppercase();
                Answer::ok(&json!({ "data": data }).to_string())
            }
            "obj" => Answer::ok(r#"{"data":{"n":1}}"#),
            _ => Answer::ok("{}"),
        },
        "/rpc" => match r.body["method"].as_str().unwrap_or("") {
            "add" => {
                let sum: i64 = r.body["data"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter_map(Value::as_i64).sum());
                Answer::ok(&json!({ "data": sum }).to_string())
            }
            _ => Answer::ok(r#"{"error":"nope"}"#),
        },
        _ => Answer::ok("{}"),
    })
}

fn with_every_hook(backend: &TestBackend, secret: &std::path::Path) -> Bin {
    Bin::start(&[
        "--mode",
        "pubsub",
        "--hook-connect",
        &backend.url("/connect"),
        "--hook-subscribe",
        &backend.url("/subscribe"),
        "--hook-publish",
        &backend.url("/publish"),
        "--hook-rpc",
        &backend.url("/rpc"),
        "--backend-secret-file",
        secret.to_str().unwrap(),
    ])
}

#[test]
fn pubsub_asks_the_subscribe_hook() {
    let backend = full_backend();
    let bin = with_every_hook(&backend, &secret_file("bin-subscribe-hook"));
    let mut a = bin.client("/ws/sa?topics=news,secret");
    assert_eq!(recv_json(&mut a), json!({ "subscribed": "news" }));
    assert_eq!(
        recv_json(&mut a),
        json!({ "subscribe": "secret", "error": "members only" })
    );
    a.send_text(r#"{"subscribe":"sport"}"#);
    assert_eq!(recv_json(&mut a), json!({ "subscribed": "sport" }));
    a.send_text(r#"{"subscribe":"secret"}"#);
    assert_eq!(
        recv_json(&mut a),
        json!({ "subscribe": "secret", "error": "members only" })
    );
    let asked: Vec<Request> = backend
        .requests()
        .into_iter()
        .filter(|r| r.path == "/subscribe")
        .collect();
    let topics: Vec<&str> = asked
        .iter()
        .map(|r| r.body["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["news", "secret", "sport", "secret"]);
    assert!(asked
        .iter()
        .all(|r| r.body["uuid"] == "sa" && r.body["path"] == "/ws/sa"));
    let bearer = format!("Bearer {SECRET}");
    assert!(asked
        .iter()
        .all(|r| r.authorization.as_deref() == Some(bearer.as_str())));
    // The grants are checked first: a topic outside them is refused without asking.
    let mut bob = bin.client("/ws?who=bob");
    bob.send_text(r#"{"subscribe":"b.1"}"#);
    assert_eq!(
        recv_json(&mut bob),
        json!({ "subscribe": "b.1", "error": "not permitted" })
    );
    bob.send_text(r#"{"subscribe":"a.1"}"#);
    assert_eq!(recv_json(&mut bob), json!({ "subscribed": "a.1" }));
    let asked_for_bob: Vec<String> = backend
        .requests()
        .iter()
        .filter(|r| r.path == "/subscribe" && r.body["user"] == "bob")
        .map(|r| r.body["topic"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(asked_for_bob, ["a.1"]);
}

#[test]
fn pubsub_asks_the_publish_hook() {
    let backend = full_backend();
    let bin = with_every_hook(&backend, &secret_file("bin-publish-hook"));
    let mut sub = bin.client("/ws?topics=shout,obj,censored,plain");
    for topic in ["shout", "obj", "censored", "plain"] {
        assert_eq!(recv_json(&mut sub), json!({ "subscribed": topic }));
    }
    let mut publisher = bin.client("/ws/pub");
    publisher.send_text(r#"{"publish":"shout","data":"hello"}"#);
    assert_eq!(sub.recv_text(), "HELLO");
    publisher.send_text(r#"{"publish":"obj","data":"anything"}"#);
    assert_eq!(recv_json(&mut sub), json!({ "n": 1 }));
    publisher.send_text(r#"{"publish":"censored","data":"!"}"#);
    assert_eq!(
        recv_json(&mut publisher),
        json!({ "publish": "censored", "error": "no swearing" })
    );
    // Allowed as it is: the data goes out unchanged, and nothing of the refused one did.
    publisher.send_text(r#"{"publish":"plain","data":{"k":[1]}}"#);
    assert_eq!(recv_json(&mut sub), json!({ "k": [1] }));
    let asked: Vec<Request> = backend
        .requests()
        .into_iter()
        .filter(|r| r.path == "/publish")
        .collect();
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[0].body["data"], "hello");
    assert_eq!(asked[3].body["data"], r#"{"k":[1]}"#);
    assert!(asked.iter().all(|r| r.body["uuid"] == "pub"));
}

#[test]
fn pubsub_rpc_round_trips() {
    let backend = full_backend();
    let bin = with_every_hook(&backend, &secret_file("bin-rpc-hook"));
    let mut c = bin.client("/ws/r1");
    c.send_text(r#"{"rpc":"add","id":1,"data":[2,3]}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "rpc": "add", "id": 1, "data": 5 })
    );
    c.send_text(r#"{"rpc":"deny","id":"x"}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "rpc": "deny", "id": "x", "error": "nope" })
    );
    // No id: none comes back.
    c.send_text(r#"{"rpc":"add","data":[40,2]}"#);
    assert_eq!(recv_json(&mut c), json!({ "rpc": "add", "data": 42 }));
    c.send_text(r#"{"rpc":7}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "error": "\"rpc\" must be a string" })
    );
    let asked: Vec<Request> = backend
        .requests()
        .into_iter()
        .filter(|r| r.path == "/rpc")
        .collect();
    assert_eq!(asked.len(), 3);
    assert_eq!(asked[0].body["method"], "add");
    assert_eq!(asked[0].body["data"], json!([2, 3]));
    assert_eq!(asked[1].body["data"], Value::Null);
    assert_eq!(asked[0].body["uuid"], "r1");
}

#[test]
fn a_connections_requests_keep_their_order_behind_a_slow_hook() {
    let backend =
        TestBackend::start(|_| Answer::Slow(Duration::from_millis(300), 200, "{}".into()));
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--hook-subscribe",
        &backend.url("/subscribe"),
    ]);
    let mut c = bin.client("/ws/o1");
    c.send_text(r#"{"subscribe":"t"}"#);
    c.send_text(r#"{"unsubscribe":"t"}"#);
    c.send_text(r#"{"publish":"t","data":"x"}"#);
    c.send_text(r#"{"subscribe":"u"}"#);
    c.send_text("not json");
    assert_eq!(recv_json(&mut c), json!({ "subscribed": "t" }));
    assert_eq!(recv_json(&mut c), json!({ "unsubscribed": "t" }));
    assert_eq!(recv_json(&mut c), json!({ "subscribed": "u" }));
    assert_eq!(
        recv_json(&mut c),
        json!({ "error": "expected a JSON object" })
    );
    // It ended unsubscribed from t.
    c.send_text(r#"{"unsubscribe":"t"}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "unsubscribed": "t", "error": "not subscribed" })
    );
    let (_, topics) = bin.api("GET", "/api/topics", &[], b"");
    assert!(!topics.contains("\"t\""), "{topics}");
    assert!(topics.contains("\"u\""), "{topics}");
}

#[test]
fn a_backend_that_never_answers_holds_up_no_one_else() {
    let backend = TestBackend::start(|_| Answer::Hang);
    let bin = Bin::start_on_shards(
        1,
        &[
            "--mode",
            "pubsub",
            "--hook-subscribe",
            &backend.url("/subscribe"),
            "--backend-timeout",
            "1500ms",
            "--backend-max-in-flight",
            "1",
        ],
        &[],
    );
    let mut a = bin.client("/ws/a");
    let mut b = bin.client("/ws/b");
    let mut c = bin.client("/ws/c");
    let asked_at = Instant::now();
    a.send_text(r#"{"subscribe":"x"}"#);
    backend.wait(WAIT, "the subscribe hook asked", |r| r.len() == 1);
    // A's later requests wait behind it, up to 64; one more is refused at once.
    for _ in 0..64 {
        a.send_text(r#"{"unsubscribe":"u"}"#);
    }
    a.send_text(r#"{"publish":"p","data":"1"}"#);
    assert_eq!(
        recv_json(&mut a),
        json!({ "publish": "p", "error": "too many requests waiting" })
    );
    // Meanwhile the one shard serves everyone else: answers, a publish to a subscriber...
    b.send_text(r#"{"unsubscribe":"zz"}"#);
    assert_eq!(
        recv_json(&mut b),
        json!({ "unsubscribed": "zz", "error": "not subscribed" })
    );
    assert_eq!(
        bin.api("POST", "/api/subscriptions/b/room", &[], b"").0,
        200
    );
    c.send_text(r#"{"publish":"room","data":"hello"}"#);
    assert_eq!(b.recv_text(), "hello");
    // ... and a second hook call past --backend-max-in-flight is refused as busy.
    b.send_text(r#"{"subscribe":"y"}"#);
    assert_eq!(
        recv_json(&mut b),
        json!({ "subscribe": "y", "error": "backend busy" })
    );
    let served_within = asked_at.elapsed();
    assert!(
        served_within < Duration::from_millis(1500),
        "the others were served only after {served_within:?}"
    );
    // A gets its answer at the timeout, then the requests that waited, in order.
    assert_eq!(
        recv_json(&mut a),
        json!({ "subscribe": "x", "error": "backend unavailable" })
    );
    assert!(asked_at.elapsed() >= Duration::from_millis(1400));
    for _ in 0..64 {
        assert_eq!(
            recv_json(&mut a),
            json!({ "unsubscribed": "u", "error": "not subscribed" })
        );
    }
    let failed = r#"hook="subscribe",outcome="failed""#;
    assert_eq!(metric(&bin, "corecast_backend_hook_calls_total", failed), 1);
}

#[test]
fn a_subscribe_hook_that_is_down_is_unavailable() {
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--hook-subscribe",
        &nobody_url("/subscribe"),
    ]);
    let mut c = bin.client("/ws");
    c.send_text(r#"{"subscribe":"x"}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "subscribe": "x", "error": "backend unavailable" })
    );
}

/// Whether `nats-server` runs here (`tests/run` installs it).
fn nats_server_available() -> bool {
    std::process::Command::new("nats-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn nats_events_publishes_each_message_in_order() {
    if !nats_server_available() {
        eprintln!("skipped: nats-server is not installed (tests/run installs it)");
        return;
    }
    let nats = Nats::start();
    let mut watcher = NatsWatcher::subscribe(nats.port, "corecast.events.>");
    let bin = Bin::start(&[
        "--mode",
        "echo",
        "--nats-events",
        "message",
        "--nats-events-url",
        &nats.url(),
    ]);
    let mut c = bin.client("/ws/n1");
    for i in 0..10 {
        c.send_text(&format!("n{i}"));
        assert_eq!(c.recv_text(), format!("n{i}"));
    }
    for i in 0..10 {
        let (subject, event) = watcher.next();
        assert_eq!(subject, "corecast.events.message");
        assert_eq!(event["type"], "message");
        assert_eq!(event["uuid"], "n1");
        assert_eq!(event["text"], format!("n{i}"));
    }
    wait_until(
        || {
            metric(
                &bin,
                "corecast_backend_events_total",
                r#"outcome="nats_sent""#,
            ) == 10
        },
        "10 events counted sent to NATS",
    );
}
