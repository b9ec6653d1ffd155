//! The real `corecast` binary with `--slow-consumers`: a pubsub client that stops reading a
//! keep-latest topic published to through the HTTP API with `?key=` stays connected, then gets
//! the latest value of every key and the `{"topic":..,"missed":N}` notices that account for the
//! rest, as `/metrics` does.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use serde_json::{json, Value};
use support::*;

const TOPIC: &str = "prices.eu";
const KEYS: [&str; 3] = ["AAPL", "MSFT", "GOOG"];
const PAYLOAD: usize = 8 * 1024;

/// `corecast_topic_dropped_total` for `TOPIC`, 0 before the first drop.
fn dropped(bin: &Bin) -> u64 {
    let (_, text) = bin.api("GET", "/metrics", &[], b"");
    let series =
        format!("corecast_topic_dropped_total{{topic=\"{TOPIC}\",policy=\"keep-latest\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

fn publish(bin: &Bin, seq: u64) {
    let key = KEYS[seq as usize % KEYS.len()];
    let head = format!("{seq:06} {key} ");
    let body = format!("{head}{}", "x".repeat(PAYLOAD - head.len()));
    let path = format!("/api/publish/{TOPIC}?key={key}");
    let (status, answer) = bin.api("POST", &path, &[], body.as_bytes());
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_client_that_fell_behind_gets_the_latest_of_every_key_and_what_it_missed() {
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--slow-consumers",
        "prices.*=keep-latest",
        "--send-queue-size",
        "8",
    ]);
    let mut slow = RawClient::connect_small_window(bin.ws, "/ws");
    let subscribe = json!({ "subscribe": TOPIC }).to_string();
    slow.send_frame(0x1, subscribe.as_bytes());
    let (_, answer) = slow.read_message();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["subscribed"], TOPIC, "{answer}");

    // It reads nothing while the topic is published to, until its queue drops some, and on.
    let mut total = 0;
    while dropped(&bin) == 0 {
        assert!(total < 4_000, "4,000 publications and no drop");
        for _ in 0..32 {
            publish(&bin, total);
            total += 1;
        }
    }
    for _ in 0..40 {
        publish(&bin, total);
        total += 1;
    }

    let mut seqs: Vec<(u64, String)> = Vec::new();
    let mut missed = 0;
    while seqs.last().map(|s| s.0) != Some(total - 1) || seqs.len() as u64 + missed < total {
        let (_, frame) = slow.read_message();
        let text = String::from_utf8(frame).unwrap();
        if text.starts_with('{') {
            let notice: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(notice["topic"], TOPIC, "{notice}");
            missed += notice["missed"].as_u64().expect("a count");
        } else {
            let seq = text[..6].parse().unwrap();
            seqs.push((seq, text[7..].split(' ').next().unwrap().to_string()));
        }
    }
    assert!(seqs.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    assert_eq!(
        seqs.len() as u64 + missed,
        total,
        "received + missed = published"
    );
    assert_eq!(
        dropped(&bin),
        missed,
        "/metrics counts what the notices told"
    );
    for (i, key) in KEYS.iter().enumerate() {
        let last_published = (0..total).rev().find(|s| *s as usize % KEYS.len() == i);
        let last_received = seqs.iter().rev().find(|(_, k)| k == key).map(|s| s.0);
        assert_eq!(last_received, last_published, "latest of {key}");
    }
    let (_, connections) = bin.api("GET", "/api/connections", &[], b"");
    assert!(connections.contains("\"total\":1"), "{connections}");
}
