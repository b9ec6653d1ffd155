//! The real `corecast` binary with `--history`: positions in `--mode pubsub` (the fresh answer,
//! the envelope), a client that comes back with `since` and gets exactly what it missed then
//! the live stream (publications made through the HTTP API and by clients, and while it comes
//! back), the answers when a position cannot be recovered from (too old, unknown, another
//! epoch after a restart), topics without history, plain subscribers left raw, the grants and
//! the subscribe hook asked first, and `GET /api/topics/{topic}`.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

#[path = "../../tests/common/backend.rs"]
mod test_backend;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use support::*;
use test_backend::{Answer, TestBackend};

fn recv_json(c: &mut Client) -> Value {
    serde_json::from_str(&c.recv_text()).expect("a JSON frame")
}

/// Publishes `data` to `topic` through the HTTP API.
fn publish(bin: &Bin, topic: &str, data: &str) {
    let path = format!("/api/publish/{topic}");
    let (status, body) = bin.api("POST", &path, &[], data.as_bytes());
    assert_eq!(status, 200, "{body}");
}

/// Waits until `topic`'s history holds offset `last` (`GET /api/topics/{topic}`): the API
/// answers a publish once the topic's home shard has it to record, and a subscriber whose
/// shard asks before that is answered with the position before it.
fn wait_recorded(bin: &Bin, topic: &str, last: u64) {
    wait_until(
        || {
            let (_, body) = bin.api("GET", &format!("/api/topics/{topic}"), &[], b"");
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v["history"]["last"] == last)
        },
        &format!("{topic} to record offset {last}"),
    );
}

/// A client subscribed to `topic` with positions; the answer it got.
fn subscribe_with_positions(bin: &Bin, topic: &str) -> (Client, Value) {
    let mut c = bin.client("/ws");
    c.send_text(&json!({ "subscribe": topic, "positions": true }).to_string());
    let answer = recv_json(&mut c);
    (c, answer)
}

/// A client subscribed to `topic` from `since` (`{"offset":..,"epoch":..}`); the answer it got.
fn subscribe_since(bin: &Bin, topic: &str, since: Value) -> (Client, Value) {
    let mut c = bin.client("/ws");
    c.send_text(&json!({ "subscribe": topic, "since": since }).to_string());
    let answer = recv_json(&mut c);
    (c, answer)
}

/// The next envelope: its offset, and its data.
fn envelope(c: &mut Client, topic: &str, epoch: &str) -> (u64, String) {
    let v = recv_json(c);
    assert_eq!(v["topic"], topic, "{v}");
    assert_eq!(v["epoch"], epoch, "{v}");
    let data = v["data"].as_str().unwrap_or_else(|| panic!("text: {v}"));
    (v["offset"].as_u64().unwrap(), data.to_string())
}

/// Reads envelopes until the one at `offset`; their data, in order (every wait bounded by the
/// client's `WAIT`).
fn read_to(c: &mut Client, topic: &str, epoch: &str, offset: u64) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    loop {
        let (at, data) = envelope(c, topic, epoch);
        seen.push((at, data));
        if at >= offset {
            return seen;
        }
    }
}

fn numbered(from: u64, to: u64) -> Vec<(u64, String)> {
    (from..=to).map(|i| (i, format!("p{i}"))).collect()
}

#[test]
fn a_client_that_comes_back_gets_exactly_what_it_missed_then_the_live_stream() {
    let bin = Bin::start(&["--mode", "pubsub", "--history", "scores.*=100/60s"]);
    let topic = "scores.a";
    // A watcher sees every publication recorded, so each step waits on it, never on time.
    let (mut watcher, answer) = subscribe_with_positions(&bin, topic);
    assert_eq!(
        answer,
        json!({ "subscribed": topic, "offset": 0, "epoch": null })
    );
    let (mut sub, _) = subscribe_with_positions(&bin, topic);
    let mut publisher = bin.client("/ws");
    let client_publish = |c: &mut Client, data: &str| {
        c.send_text(&json!({ "publish": topic, "data": data }).to_string());
    };
    // Through the API, then through a client: one sequence of offsets from 1.
    for i in 1..=3 {
        publish(&bin, topic, &format!("p{i}"));
    }
    let v = recv_json(&mut watcher);
    let epoch = v["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(epoch.len(), 8, "{v}");
    assert_eq!(
        v,
        json!({ "topic": topic, "offset": 1, "epoch": epoch, "data": "p1" })
    );
    assert_eq!(read_to(&mut watcher, topic, &epoch, 3), numbered(2, 3));
    client_publish(&mut publisher, "p4");
    client_publish(&mut publisher, "p5");
    assert_eq!(read_to(&mut watcher, topic, &epoch, 5), numbered(4, 5));
    assert_eq!(read_to(&mut sub, topic, &epoch, 5), numbered(1, 5));

    // Gone; five more are published meanwhile.
    sub.close(1000, "bye");
    drop(sub);
    for i in 6..=8 {
        publish(&bin, topic, &format!("p{i}"));
    }
    // Offsets follow the order publications reach the topic's home shard, which for two
    // publishers is not the order they were made: one made on that shard is numbered at once,
    // ahead of the API's still in its inbox. So each source's are seen before the next.
    assert_eq!(read_to(&mut watcher, topic, &epoch, 8), numbered(6, 8));
    client_publish(&mut publisher, "p9");
    client_publish(&mut publisher, "p10");
    assert_eq!(read_to(&mut watcher, topic, &epoch, 10), numbered(9, 10));

    // Back with the last position it saw: the answer, then exactly the missed ones, in order.
    let (mut back, answer) = subscribe_since(&bin, topic, json!({ "offset": 5, "epoch": epoch }));
    assert_eq!(
        answer,
        json!({ "subscribed": topic, "recovered": true, "missed": 5,
                "offset": 10, "epoch": epoch })
    );
    let missed: Vec<(u64, String)> = (0..5).map(|_| envelope(&mut back, topic, &epoch)).collect();
    assert_eq!(missed, numbered(6, 10));
    // Then the live stream, from both kinds of publisher.
    publish(&bin, topic, "p11");
    assert_eq!(envelope(&mut back, topic, &epoch), (11, "p11".into()));
    client_publish(&mut publisher, "p12");
    assert_eq!(envelope(&mut back, topic, &epoch), (12, "p12".into()));
    // A binary publication comes in the envelope too, base64 under "binary".
    let (status, _) = bin.api(
        "POST",
        &format!("/api/publish/{topic}"),
        &["Content-Type: application/octet-stream"],
        &[0, 1, 2, 255],
    );
    assert_eq!(status, 200);
    assert_eq!(
        recv_json(&mut back),
        json!({ "topic": topic, "offset": 13, "epoch": epoch, "binary": "AAEC/w==" })
    );
    // Nothing was sent twice: the next frame is the next publication.
    publish(&bin, topic, "p14");
    assert_eq!(envelope(&mut back, topic, &epoch), (14, "p14".into()));
}

#[test]
fn the_seam_holds_while_publishing_goes_on() {
    let bin = Arc::new(Bin::start(&[
        "--mode",
        "pubsub",
        "--history",
        "live=100000/60s",
        "--send-queue-size",
        "100000",
    ]));
    let (mut watcher, _) = subscribe_with_positions(&bin, "live");
    let (mut sub, _) = subscribe_with_positions(&bin, "live");
    // The publisher numbers its publications as their offsets: it is the topic's only one.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (bin, stop) = (Arc::clone(&bin), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 50_000 {
                n += 1;
                publish(&bin, "live", &format!("p{n}"));
            }
            n
        })
    };
    let first = recv_json(&mut sub);
    let epoch = first["epoch"].as_str().unwrap().to_string();
    assert_eq!(first["offset"], 1);
    assert_eq!(read_to(&mut sub, "live", &epoch, 20), numbered(2, 20));
    drop(sub);
    // Back once at least ten more were recorded, while the publisher goes on.
    read_to(&mut watcher, "live", &epoch, 30);
    let (mut back, answer) = subscribe_since(&bin, "live", json!({ "offset": 20, "epoch": epoch }));
    assert_eq!(answer["recovered"], true, "{answer}");
    let missed = answer["missed"].as_u64().unwrap();
    assert!(missed >= 10, "{answer}");
    assert_eq!(answer["offset"].as_u64().unwrap(), 20 + missed, "{answer}");
    // What it missed, then what was published while it was answered, then the live stream:
    // one run of offsets, no gap, no duplicate.
    let upto = 20 + missed + 100;
    assert_eq!(read_to(&mut back, "live", &epoch, upto), numbered(21, upto));
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert!(published >= upto, "{published} published");
}

#[test]
fn a_position_too_old_or_unknown_is_not_recovered_and_the_live_stream_follows() {
    let bin = Bin::start(&["--mode", "pubsub", "--history", "t*=5/60s"]);
    let (mut sub, _) = subscribe_with_positions(&bin, "t1");
    for i in 1..=10 {
        publish(&bin, "t1", &format!("p{i}"));
    }
    let first = recv_json(&mut sub);
    let epoch = first["epoch"].as_str().unwrap().to_string();
    assert_eq!(read_to(&mut sub, "t1", &epoch, 10), numbered(2, 10));
    // Five kept, 6 to 10: after 4 is too old.
    let (mut old, answer) = subscribe_since(&bin, "t1", json!({ "offset": 4, "epoch": epoch }));
    assert_eq!(
        answer,
        json!({ "subscribed": "t1", "recovered": false, "reason": "position too old",
                "offset": 10, "epoch": epoch })
    );
    // After 5, all five are still there.
    let (mut recent, answer) = subscribe_since(&bin, "t1", json!({ "offset": 5, "epoch": epoch }));
    assert_eq!(
        answer,
        json!({ "subscribed": "t1", "recovered": true, "missed": 5,
                "offset": 10, "epoch": epoch })
    );
    assert_eq!(read_to(&mut recent, "t1", &epoch, 10), numbered(6, 10));
    // A position the server never gave.
    let (mut ahead, answer) = subscribe_since(&bin, "t1", json!({ "offset": 99, "epoch": epoch }));
    assert_eq!(
        answer,
        json!({ "subscribed": "t1", "recovered": false, "reason": "unknown position",
                "offset": 10, "epoch": epoch })
    );
    // Not recovered, each is subscribed all the same: the next it gets is the next published.
    publish(&bin, "t1", "p11");
    for c in [&mut old, &mut recent, &mut ahead, &mut sub] {
        assert_eq!(envelope(c, "t1", &epoch), (11, "p11".into()));
    }
}

#[test]
fn a_restarted_binary_answers_epoch_changed() {
    let args = ["--mode", "pubsub", "--history", "t*=5/60s"];
    let bin = Bin::start(&args);
    let (mut sub, _) = subscribe_with_positions(&bin, "t1");
    publish(&bin, "t1", "before");
    let v = recv_json(&mut sub);
    let old_epoch = v["epoch"].as_str().unwrap().to_string();
    assert_eq!(v["offset"], 1);
    drop(sub);
    drop(bin);

    let bin = Bin::start(&args);
    let since = json!({ "offset": 1, "epoch": old_epoch });
    // Nothing published yet since the restart.
    let (_, answer) = subscribe_since(&bin, "t1", since.clone());
    assert_eq!(
        answer,
        json!({ "subscribed": "t1", "recovered": false, "reason": "epoch changed",
                "offset": 0, "epoch": null })
    );
    publish(&bin, "t1", "after");
    wait_recorded(&bin, "t1", 1);
    let (mut c, answer) = subscribe_since(&bin, "t1", since);
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["reason"], "epoch changed", "{answer}");
    assert_eq!(answer["offset"], 1, "{answer}");
    let epoch = answer["epoch"].as_str().unwrap().to_string();
    assert_ne!(epoch, old_epoch);
    publish(&bin, "t1", "next");
    assert_eq!(envelope(&mut c, "t1", &epoch), (2, "next".into()));
}

#[test]
fn topics_without_history_plain_subscribers_and_malformed_positions() {
    let bin = Bin::start(&["--mode", "pubsub", "--history", "t*=5/60s"]);
    let mut c = bin.client("/ws");
    // A topic that keeps no history, either way of asking.
    c.send_text(r#"{"subscribe":"news","positions":true}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "subscribe": "news", "error": "this topic keeps no history" })
    );
    c.send_text(r#"{"subscribe":"news","since":{"offset":1,"epoch":"abcd0001"}}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "subscribe": "news", "error": "this topic keeps no history" })
    );
    // A position that is not one: the error form of any malformed request.
    c.send_text(r#"{"subscribe":"t1","since":{"offset":"1","epoch":"abcd0001"}}"#);
    let error = recv_json(&mut c);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("\"since\" must be"),
        "{error}"
    );
    assert_eq!(error.as_object().unwrap().len(), 1, "{error}");
    // A plain subscriber of a topic with history, on this open connection, gets raw payloads,
    // as before; one with positions gets the same publication in the envelope.
    c.send_text(r#"{"subscribe":"t1"}"#);
    assert_eq!(recv_json(&mut c), json!({ "subscribed": "t1" }));
    let (mut positions, _) = subscribe_with_positions(&bin, "t1");
    publish(&bin, "t1", "raw text");
    assert_eq!(c.recv_text(), "raw text");
    let v = recv_json(&mut positions);
    assert_eq!(v["offset"], 1);
    assert_eq!(v["data"], "raw text");
    // And the plain subscriber never asked for a topic without history: unchanged too.
    c.send_text(r#"{"subscribe":"news"}"#);
    assert_eq!(recv_json(&mut c), json!({ "subscribed": "news" }));
    publish(&bin, "news", "n1");
    assert_eq!(c.recv_text(), "n1");
}

#[test]
fn the_grants_and_the_subscribe_hook_are_asked_first() {
    let backend = TestBackend::start(|r| match r.path.as_str() {
        "/connect" => Answer::ok(r#"{"user":"bob","subscribe":["t.*"]}"#),
        "/subscribe" if r.body["topic"] == "t.secret" => Answer::ok(r#"{"error":"members only"}"#),
        _ => Answer::ok("{}"),
    });
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--history",
        "*=10/60s",
        "--hook-connect",
        &backend.url("/connect"),
        "--hook-subscribe",
        &backend.url("/subscribe"),
    ]);
    let mut bob = bin.client("/ws");
    // Outside bob's grants: refused without asking the hook.
    bob.send_text(r#"{"subscribe":"u.x","positions":true}"#);
    assert_eq!(
        recv_json(&mut bob),
        json!({ "subscribe": "u.x", "error": "not permitted" })
    );
    // The hook refuses.
    bob.send_text(r#"{"subscribe":"t.secret","since":{"offset":0,"epoch":null}}"#);
    assert_eq!(
        recv_json(&mut bob),
        json!({ "subscribe": "t.secret", "error": "members only" })
    );
    // The hook allows; the requests are answered in the order sent.
    bob.send_text(r#"{"subscribe":"t.open","positions":true}"#);
    bob.send_text(r#"{"unsubscribe":"t.open"}"#);
    assert_eq!(
        recv_json(&mut bob),
        json!({ "subscribed": "t.open", "offset": 0, "epoch": null })
    );
    assert_eq!(recv_json(&mut bob), json!({ "unsubscribed": "t.open" }));
    let asked: Vec<String> = backend
        .requests()
        .iter()
        .filter(|r| r.path == "/subscribe")
        .map(|r| r.body["topic"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(asked, ["t.secret", "t.open"]);
}

#[test]
fn the_topic_endpoint_reports_subscribers() {
    let bin = Bin::start(&["--mode", "pubsub", "--history", "t*=5/60s"]);
    let get = |path: &str| {
        let (status, body) = bin.api("GET", path, &[], b"");
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    assert_eq!(
        get("/api/topics/news"),
        (
            200,
            json!({ "topic": "news", "subscribers": 0, "history": null })
        )
    );
    let mut c = bin.client("/ws");
    c.send_text(r#"{"subscribe":"weather/eu"}"#);
    recv_json(&mut c);
    assert_eq!(
        get("/api/topics/weather%2Feu"),
        (
            200,
            json!({ "topic": "weather/eu", "subscribers": 1, "history": null })
        )
    );
    // A topic with history and nothing kept yet.
    assert_eq!(get("/api/topics/t1").1["history"], Value::Null);
    let long = format!("/api/topics/{}", "x".repeat(257));
    assert_eq!(get(&long).0, 400);
    let (status, _) = bin.api("POST", "/api/topics/news", &[], b"");
    assert_eq!(status, 405);
}

#[test]
fn the_topic_endpoint_reports_the_kept_window() {
    let bin = Bin::start(&["--mode", "pubsub", "--history", "t*=5/60s"]);
    let (mut sub, _) = subscribe_with_positions(&bin, "t1");
    for i in 1..=8 {
        publish(&bin, "t1", &format!("p{i}"));
    }
    let epoch = recv_json(&mut sub)["epoch"].as_str().unwrap().to_string();
    read_to(&mut sub, "t1", &epoch, 8);
    let (status, body) = bin.api("GET", "/api/topics/t1", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "topic": "t1", "subscribers": 1,
                "history": { "first": 4, "last": 8, "epoch": epoch } })
    );
}
