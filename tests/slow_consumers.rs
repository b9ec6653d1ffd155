//! Slow-consumer policies seen from outside: a subscriber whose queue fills (one that never
//! reads, then reads; one that reads slowly) under drop-oldest and keep-latest stays connected,
//! gets the newest publications (the latest per key), and is told exactly how many it missed,
//! in band, by `error` events and in `/metrics`; another subscriber and the publisher are not
//! slowed; under the default policy a consumer that never reads is torn down alone.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use corecast::{event, ClusterConfig, Config, MessageType, Server, SlowConsumerPolicy};
use futures_lite::future::block_on;
use serde_json::Value;

/// Send queue of every connection: small, so a consumer falls behind quickly.
const QUEUE: usize = 8;
/// Payload size: the kernel's socket buffers fill after a few hundred publications.
const PAYLOAD: usize = 16 * 1024;
/// Most publications a test makes while waiting for a queue to fill.
const MAX_PUBLICATIONS: u64 = 5_000;

/// A server whose topics `feed*` and `quiet` follow `policy`, with `write_timeout`. On `/ws`
/// connections have a small send queue; on `/healthy` one that holds any burst of the tests,
/// for subscribers that must not fall behind. A client's text `sub <topic>` subscribes it and
/// `notices` turns its in-band notices on; each is answered `ok <uuid>`.
fn server(policy: SlowConsumerPolicy, write_timeout: Duration) -> TestServer {
    let builder = Server::builder()
        .shards(1)
        .slow_consumers("feed*", policy)
        .slow_consumers("quiet", policy);
    TestServer::start(routes(builder, write_timeout))
}

/// `/ws` and `/healthy` (see `server`).
fn routes(builder: corecast::Builder, write_timeout: Duration) -> corecast::Builder {
    let config = |send_queue_size| Config {
        send_queue_size,
        write_timeout,
        ..Config::default()
    };
    builder
        .route_with_config("/ws", config(QUEUE), on_request)
        .route_with_config(
            "/healthy",
            config(MAX_PUBLICATIONS as usize + 1_000),
            on_request,
        )
}

fn on_request(kws: &corecast::Websocket) {
    kws.on(event::MESSAGE, |ep| {
        let kws = ep.kws();
        let text = String::from_utf8_lossy(ep.data()).to_string();
        match text.split_once(' ') {
            Some(("sub", topic)) => {
                kws.subscribe(topic).expect("subscribes");
            }
            _ if text == "notices" => kws.set_notices(true),
            _ => return,
        };
        kws.emit(format!("ok {}", kws.uuid()), MessageType::Text);
    });
}

/// A subscriber with a small receive window, which reads only when told to.
struct Slow {
    raw: RawClient,
    uuid: String,
}

impl Slow {
    fn connect(ts: &TestServer, topics: &[&str]) -> Slow {
        let mut raw = RawClient::connect_small_window(ts.addr(), "/ws");
        let mut uuid = String::new();
        let requests = topics.iter().map(|t| format!("sub {t}"));
        for request in requests.chain(["notices".to_string()]) {
            raw.send_frame(0x1, request.as_bytes());
            let (_, answer) = raw.read_message();
            let answer = String::from_utf8(answer).unwrap();
            uuid = answer.strip_prefix("ok ").expect("an ok").to_string();
        }
        Slow { raw, uuid }
    }

    /// Reads until `done` holds for what it has, returning every publication (as text) and
    /// the notices' missed counts by topic.
    fn read_until(&mut self, done: impl Fn(&[String], &HashMap<String, u64>) -> bool) -> Got {
        let mut got = Got::default();
        while !done(&got.publications, &got.missed) {
            let (_, payload) = self.raw.read_message();
            let text = String::from_utf8(payload).unwrap();
            if text.starts_with("{\"topic\"") {
                let notice: Value = serde_json::from_str(&text).unwrap();
                let topic = notice["topic"].as_str().unwrap().to_string();
                *got.missed.entry(topic).or_default() += notice["missed"].as_u64().unwrap();
            } else {
                got.publications.push(text);
            }
        }
        got
    }
}

#[derive(Default)]
struct Got {
    publications: Vec<String>,
    missed: HashMap<String, u64>,
}

/// Whether `p` (publications) and `missed` (the notices' counts) account for all `total`
/// publications of `topic`, the newest last.
fn all_told(p: &[String], missed: &HashMap<String, u64>, topic: &str, total: u64) -> bool {
    let told = p.len() as u64 + missed.get(topic).copied().unwrap_or(0);
    p.last().is_some_and(|l| seq_of(l) == total - 1) && told >= total
}

/// Reads `slow` on a thread of its own, one message a millisecond, until what it got accounts
/// for every publication of `topic` (their count comes on the channel once known); joined, it
/// hands back what it got and the count.
fn read_slowly(
    mut slow: Slow,
    topic: &'static str,
) -> (mpsc::Sender<u64>, thread::JoinHandle<(Got, u64)>) {
    let (total_tx, total_rx) = mpsc::channel::<u64>();
    let reader = thread::spawn(move || {
        let mut got = Got::default();
        let mut total = None;
        loop {
            if let Ok(t) = total_rx.try_recv() {
                total = Some(t);
            }
            if let Some(t) = total.filter(|t| all_told(&got.publications, &got.missed, topic, *t)) {
                return (got, t);
            }
            let one = slow.read_until(|p, m| !p.is_empty() || !m.is_empty());
            got.publications.extend(one.publications);
            for (t, n) in one.missed {
                *got.missed.entry(t).or_default() += n;
            }
            thread::sleep(Duration::from_millis(1));
        }
    });
    (total_tx, reader)
}

/// The last publication `got` holds of each key is the last published of it (keys in turn).
fn assert_latest_of_every_key(got: &Got, keys: &[&str], total: u64) {
    for (i, key) in keys.iter().enumerate() {
        let last_published = (0..total).rev().find(|s| *s as usize % keys.len() == i);
        let last_received = got.publications.iter().rev().find(|p| key_of(p) == *key);
        assert_eq!(
            last_received.map(|p| seq_of(p)),
            last_published,
            "latest value of {key}"
        );
    }
}

/// The publication numbered `seq` of `key`: its number first, padded to `PAYLOAD` bytes.
fn payload(seq: u64, key: &str) -> String {
    let head = format!("{seq:06} {key} ");
    format!("{head}{}", "x".repeat(PAYLOAD - head.len()))
}

fn seq_of(publication: &str) -> u64 {
    publication[..6].parse().unwrap()
}

fn key_of(publication: &str) -> &str {
    publication[7..].split(' ').next().unwrap()
}

/// Drops counted in `/metrics` for `topic`.
fn topic_drops(server: &Server, topic: &str) -> u64 {
    server
        .metrics()
        .topic_drops
        .iter()
        .filter(|(t, _, _)| t == topic)
        .map(|(_, _, n)| n)
        .sum()
}

/// A well-behaved subscriber of `topic` on its own thread: reads `n` publications and hands
/// back their numbers.
fn healthy(ts: &TestServer, topic: &str, n: u64) -> mpsc::Receiver<Vec<u64>> {
    let mut client = ts.client("/healthy");
    client.send_text(&format!("sub {topic}"));
    assert!(client.recv_text().starts_with("ok "));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let seqs: Vec<u64> = (0..n).map(|_| seq_of(&client.recv_text())).collect();
        let _ = tx.send(seqs);
    });
    rx
}

/// Publishes to `topic` (with `keys` in turn) until the server counts a drop for it, then
/// `extra` more; returns how many it published. Bounded by `MAX_PUBLICATIONS`.
fn publish_past_full(ts: &TestServer, topic: &str, keys: &[&str], extra: u64) -> u64 {
    publish_until_dropped(&ts.server, &ts.server, topic, keys, extra)
}

/// `publish_past_full` through `publisher`, watching the drops on `subscribers`, the server
/// (or, in cluster mode, the node) that holds the subscribers.
fn publish_until_dropped(
    publisher: &Server,
    subscribers: &Server,
    topic: &str,
    keys: &[&str],
    extra: u64,
) -> u64 {
    let handled = || subscribers.metrics().publishes.iter().sum::<u64>();
    let before = handled();
    let mut seq = 0;
    let publish = |seq: u64| {
        let key = keys[seq as usize % keys.len()];
        let data = payload(seq, key);
        if key.is_empty() {
            publisher.publish(topic, data, MessageType::Text);
        } else {
            publisher.publish_keyed(topic, key, data, MessageType::Text);
        }
    };
    while seq < MAX_PUBLICATIONS {
        publish(seq);
        seq += 1;
        if seq % 32 == 0 && topic_drops(subscribers, topic) > 0 {
            break;
        }
        if seq % 32 == 0 {
            // The shard queues what it is handed; let it catch up with the publisher.
            wait_until(
                || handled() >= before + seq,
                "the shard to take the publications",
            );
        }
    }
    assert!(
        topic_drops(subscribers, topic) > 0,
        "{MAX_PUBLICATIONS} publications and no drop"
    );
    for _ in 0..extra {
        publish(seq);
        seq += 1;
    }
    seq
}

/// Waits until `n` `error` events with `Error::Dropped` fired for `uuid`.
fn wait_dropped_errors(errors: &Recorder, uuid: &str, n: u64) {
    errors.wait(&format!("{n} dropped errors on {uuid}"), |_| {
        let seen = errors.seen.lock().unwrap();
        let count = seen
            .iter()
            .filter(|s| s.uuid == uuid && s.error.as_deref().is_some_and(|e| e.contains("Dropped")))
            .count() as u64;
        count >= n
    });
    let seen = errors.seen.lock().unwrap();
    let count = seen
        .iter()
        .filter(|s| s.uuid == uuid && s.error.as_deref().is_some_and(|e| e.contains("Dropped")))
        .count() as u64;
    assert_eq!(count, n, "dropped errors on {uuid}");
}

/// Every publication `got` holds, in increasing order, ending with the last published; and
/// with the notices they account for all `total`.
fn assert_accounted(got: &Got, topic: &str, total: u64) {
    let seqs: Vec<u64> = got.publications.iter().map(|p| seq_of(p)).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    assert_eq!(
        seqs.last(),
        Some(&(total - 1)),
        "the newest publication arrives"
    );
    let missed = got.missed.get(topic).copied().unwrap_or(0);
    assert!(missed > 0, "some were missed");
    assert_eq!(
        seqs.len() as u64 + missed,
        total,
        "received + missed = published"
    );
}

#[test]
fn drop_oldest_keeps_a_consumer_that_stopped_reading_and_tells_it_what_it_missed() {
    let ts = server(SlowConsumerPolicy::DropOldest, Duration::from_secs(60));
    let errors = Recorder::attach(&ts.server, &[event::ERROR]);
    let mut slow = Slow::connect(&ts, &["feed"]);
    // Not reading: its queue and socket buffers fill.
    let total = publish_past_full(&ts, "feed", &[""], 64);
    // Still there.
    assert_eq!(ts.server.connections(), 1);
    let got = slow.read_until(|p, missed| all_told(p, missed, "feed", total));
    assert_accounted(&got, "feed", total);
    let missed = got.missed["feed"];
    assert_eq!(topic_drops(&ts.server, "feed"), missed);
    wait_dropped_errors(&errors, &slow.uuid, missed);
    let text = ts.server.metrics().to_prometheus();
    assert!(text.contains(&format!(
        "corecast_topic_dropped_total{{topic=\"feed\",policy=\"drop-oldest\"}} {missed}\n"
    )));
    assert!(text.contains(&format!(
        "corecast_dropped_messages_total{{cause=\"slow_consumer\"}} {missed}\n"
    )));
}

#[test]
fn drop_oldest_slows_neither_the_publisher_nor_a_healthy_subscriber() {
    let ts = server(SlowConsumerPolicy::DropOldest, Duration::from_secs(60));
    // A healthy subscriber reads everything while the slow one reads one message a
    // millisecond on a thread of its own.
    let (total_tx, reader) = read_slowly(Slow::connect(&ts, &["feed"]), "feed");
    let mut healthy_client = ts.client("/healthy");
    healthy_client.send_text("sub feed");
    assert!(healthy_client.recv_text().starts_with("ok "));
    let total = publish_past_full(&ts, "feed", &[""], 200);
    total_tx.send(total).unwrap();
    let healthy_seqs: Vec<u64> = (0..total)
        .map(|_| seq_of(&healthy_client.recv_text()))
        .collect();
    assert_eq!(healthy_seqs, (0..total).collect::<Vec<_>>());
    let (got, total) = reader.join().unwrap();
    assert_accounted(&got, "feed", total);
    assert_eq!(topic_drops(&ts.server, "feed"), got.missed["feed"]);
}

#[test]
fn keep_latest_hands_a_consumer_that_fell_behind_the_latest_value_of_every_key() {
    let ts = server(SlowConsumerPolicy::KeepLatest, Duration::from_secs(60));
    let mut slow = Slow::connect(&ts, &["feed.prices"]);
    let keys = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA"];
    assert!(keys.len() < QUEUE, "the queue holds a place for every key");
    let total = publish_past_full(&ts, "feed.prices", &keys, 97);
    let got = slow.read_until(|p, missed| all_told(p, missed, "feed.prices", total));
    assert_accounted(&got, "feed.prices", total);
    assert_latest_of_every_key(&got, &keys, total);
    assert_eq!(ts.server.connections(), 1);
}

#[test]
fn keep_latest_under_a_slow_reader_ends_with_the_latest_value_of_every_key() {
    let ts = server(SlowConsumerPolicy::KeepLatest, Duration::from_secs(60));
    let keys = ["A", "B", "C"];
    let (total_tx, reader) = read_slowly(Slow::connect(&ts, &["feed.prices"]), "feed.prices");
    let total = publish_past_full(&ts, "feed.prices", &keys, 150);
    total_tx.send(total).unwrap();
    let (got, total) = reader.join().unwrap();
    assert_accounted(&got, "feed.prices", total);
    assert_latest_of_every_key(&got, &keys, total);
}

#[test]
fn the_conflation_key_crosses_nodes() {
    let nats = Nats::start();
    let node = |id: &str| {
        let builder = Server::builder()
            .shards(1)
            .slow_consumers("feed*", SlowConsumerPolicy::KeepLatest)
            .cluster(
                ClusterConfig::nats(nats.url())
                    .name("keys")
                    .node_id(id)
                    .heartbeat(Duration::from_millis(200)),
            );
        TestServer::start(routes(builder, Duration::from_secs(60)))
    };
    let (a, b) = (node("a"), node("b"));
    // A subscriber on b sees a probe from a once b has taken the topic's subject.
    let mut probe = b.client("/healthy");
    probe.send_text("sub feed.prices");
    assert!(probe.recv_text().starts_with("ok "));
    let (stop, stopped) = mpsc::channel::<()>();
    let prober = {
        let a = a.server.clone();
        thread::spawn(move || {
            for _ in 0..200 {
                a.publish("feed.prices", "probe", MessageType::Text);
                if stopped.recv_timeout(Duration::from_millis(50)).is_ok() {
                    return;
                }
            }
        })
    };
    assert_eq!(probe.recv_text(), "probe");
    stop.send(()).unwrap();
    prober.join().unwrap();
    // Subscribed after the probes, so all it gets is numbered; the topic stays held.
    let mut slow = Slow::connect(&b, &["feed.prices"]);
    drop(probe);
    let keys = ["AAPL", "MSFT", "GOOG"];
    let total = publish_until_dropped(&a.server, &b.server, "feed.prices", &keys, 60);
    let got = slow.read_until(|p, _| p.last().is_some_and(|l| seq_of(l) == total - 1));
    assert_latest_of_every_key(&got, &keys, total);
}

#[test]
fn a_busy_topic_does_not_starve_a_quiet_one() {
    let ts = server(SlowConsumerPolicy::DropOldest, Duration::from_secs(60));
    let mut slow = Slow::connect(&ts, &["feed", "quiet"]);
    let before = publish_past_full(&ts, "feed", &[""], 16);
    ts.server
        .publish("quiet", payload(0, "quiet"), MessageType::Text);
    // The feed goes on flooding after the quiet topic's one publication.
    for seq in before..before + 200 {
        ts.server
            .publish("feed", payload(seq, ""), MessageType::Text);
    }
    let total = before + 200;
    let got = slow.read_until(|p, _| {
        p.iter().any(|p| key_of(p) == "quiet")
            && p.last()
                .is_some_and(|l| key_of(l) != "quiet" && seq_of(l) == total - 1)
    });
    let feed: Vec<&String> = got
        .publications
        .iter()
        .filter(|p| key_of(p) != "quiet")
        .collect();
    assert!(feed.windows(2).all(|w| seq_of(w[0]) < seq_of(w[1])));
    assert_eq!(
        topic_drops(&ts.server, "quiet"),
        0,
        "the quiet topic lost nothing"
    );
}

#[test]
fn a_report_counts_the_subscribers_whose_full_queue_dropped_a_publication() {
    let ts = server(SlowConsumerPolicy::DropOldest, Duration::from_secs(60));
    let _slow = Slow::connect(&ts, &["feed"]);
    let mut healthy_client = ts.client("/healthy");
    healthy_client.send_text("sub feed");
    assert!(healthy_client.recv_text().starts_with("ok "));
    let reader = thread::spawn(move || {
        // Keeps the healthy subscriber's queue empty.
        while healthy_client.recv_text().len() == PAYLOAD {}
    });
    let published = publish_past_full(&ts, "feed", &[""], 0);
    // The first drop may come while the slow one's socket still takes bytes; once its
    // buffers are full every publication finds its queue full.
    let mut dropping = false;
    for seq in published..published + 1_000 {
        let data = payload(seq, "");
        let report = block_on(ts.server.publish_reported("feed", data, MessageType::Text));
        assert_eq!((report.subscribers, report.queued), (2, 2), "{report:?}");
        assert!(report.dropped <= 1 && !report.partial, "{report:?}");
        if report.dropped == 1 {
            dropping = true;
            break;
        }
    }
    assert!(dropping, "no report counted the slow subscriber's drop");
    ts.server.publish("feed", "end", MessageType::Text);
    reader.join().unwrap();
}

#[test]
fn under_the_default_policy_a_consumer_that_never_reads_is_torn_down_alone() {
    let builder = Server::builder().shards(1);
    let ts = TestServer::start(routes(builder, Duration::from_secs(1)));
    let teardowns = Recorder::attach(&ts.server, &[event::DISCONNECT]);
    let slow = Slow::connect(&ts, &["feed"]);
    let total = 1_000;
    let healthy = healthy(&ts, "feed", total);
    for seq in 0..total {
        ts.server
            .publish("feed", payload(seq, ""), MessageType::Text);
    }
    assert_eq!(
        healthy
            .recv_timeout(WAIT)
            .expect("the healthy subscriber got all"),
        (0..total).collect::<Vec<_>>()
    );
    let gone = teardowns.wait_event(event::DISCONNECT, &slow.uuid);
    assert!(
        gone.error
            .as_deref()
            .is_some_and(|e| e.contains("WriteTimeout")),
        "{gone:?}"
    );
    assert_eq!(topic_drops(&ts.server, "feed"), 0);
}
