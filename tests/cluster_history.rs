//! Topic history in cluster mode, against a real nats-server: publications from every node
//! ordered in one sequence per topic (the topic's JetStream stream), a subscriber whose node is
//! stopped while publishing goes on coming back on another node with its last position and
//! getting exactly what it missed, then the live stream; and the answers when a position cannot
//! be recovered from: too old or unknown on another node, another epoch once the stream is
//! deleted or NATS restarts without it, and history unavailable while NATS is down.
// Cluster mode, and the NATS client that deletes a stream, come with the `cluster` feature.
#![cfg(feature = "cluster")]

mod common;
#[path = "common/history.rs"]
mod history_route;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use corecast::{ClusterConfig, MessageType, Server};
use history_route::{json_of, queue_for_catchups, sub_and_pub};
use serde_json::{json, Value};

/// A node of `cluster` whose topics `t*` keep `size` publications for a minute. A client's
/// text `sub <topic> [<offset> <epoch>]` subscribes with `subscribe_from` and is answered with
/// the result as JSON, then gets the catch-up; `pub <topic> <data>` publishes.
fn node(nats: &Nats, cluster: &str, id: &str, size: usize) -> TestServer {
    TestServer::start(
        Server::builder()
            .shards(2)
            .history("t*", size, Duration::from_secs(60))
            .cluster(
                ClusterConfig::nats(nats.url())
                    .name(cluster)
                    .node_id(id)
                    .heartbeat(Duration::from_millis(200)),
            )
            .route_with_config("/ws", queue_for_catchups(), sub_and_pub),
    )
}

/// One publication as a subscriber got it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    offset: u64,
    epoch: String,
    data: String,
}

fn envelope(c: &mut Client, topic: &str) -> Got {
    let v = json_of(c);
    assert_eq!(v["topic"], topic, "{v}");
    Got {
        offset: v["offset"].as_u64().unwrap_or_else(|| panic!("{v}")),
        epoch: v["epoch"].as_str().unwrap().to_string(),
        data: v["data"].as_str().unwrap().to_string(),
    }
}

/// A client subscribed to `topic` from `since` (or fresh); the answer it got.
fn subscribe(ts: &TestServer, topic: &str, since: Option<(u64, &str)>) -> (Client, Value) {
    let mut c = ts.client("/ws");
    match since {
        Some((offset, epoch)) => c.send_text(&format!("sub {topic} {offset} {epoch}")),
        None => c.send_text(&format!("sub {topic}")),
    }
    let answer = json_of(&mut c);
    (c, answer)
}

/// Publishes `<prefix><n>` for n = 1, 2, … through `server` until told to stop, about one a
/// millisecond; returns how many it published.
fn publisher(server: &Server, topic: &str, prefix: &str) -> (Arc<AtomicBool>, JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (server, topic, prefix) = (server.clone(), topic.to_string(), prefix.to_string());
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut n = 0u64;
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            server.publish(&topic, format!("{prefix}{n}"), MessageType::Text);
            std::thread::sleep(Duration::from_millis(1));
        }
        n
    });
    (stop, thread)
}

fn stop(publisher: (Arc<AtomicBool>, JoinHandle<u64>)) -> u64 {
    publisher.0.store(true, Ordering::Relaxed);
    publisher.1.join().unwrap()
}

/// The numbers of the payloads with `prefix`, in the order seen.
fn numbers(seen: &[Got], prefix: &str) -> Vec<u64> {
    seen.iter()
        .filter_map(|g| g.data.strip_prefix(prefix)?.parse().ok())
        .collect()
}

#[test]
fn a_subscriber_whose_node_stops_recovers_on_another_node_without_gap_or_duplicate() {
    let nats = Nats::start();
    let a = node(&nats, "kill", "node-a", 100_000);
    let b = node(&nats, "kill", "node-b", 100_000);
    let topic = "t.kill";
    // A reference subscriber on B sees the whole sequence; the subscriber under test is on A.
    let (mut reference, answer) = subscribe(&b, topic, None);
    assert_eq!(answer["fresh"]["offset"], 0, "{answer}");
    let epoch = answer["fresh"]["epoch"].as_str().unwrap().to_string();
    let (mut sub, answer) = subscribe(&a, topic, None);
    assert_eq!(answer, json!({ "fresh": { "offset": 0, "epoch": epoch } }));

    // Publishing from both nodes, into one sequence.
    let from_a = publisher(&a.server, topic, "a");
    let from_b = publisher(&b.server, topic, "b");
    let mut first: Vec<Got> = (0..300).map(|_| envelope(&mut sub, topic)).collect();
    // Its last position, then node A stops while B goes on publishing.
    let published_a = stop(from_a);
    first.extend((0..20).map(|_| envelope(&mut sub, topic)));
    let last = first.last().unwrap().clone();
    drop(a);
    let (close, _) = sub.recv_close();
    assert_eq!(close, 1001);

    // Back on B with the last position seen: the answer, the missed ones, then the live ones.
    let (mut back, answer) = subscribe(&b, topic, Some((last.offset, &epoch)));
    let missed = answer["recovered"]
        .as_u64()
        .unwrap_or_else(|| panic!("{answer}"));
    let now = answer["position"]["offset"].as_u64().unwrap();
    assert_eq!(answer["position"]["epoch"], epoch.as_str(), "{answer}");
    assert_eq!(now, last.offset + missed, "{answer}");
    let mut second: Vec<Got> = (0..missed + 200)
        .map(|_| envelope(&mut back, topic))
        .collect();
    let published_b = stop(from_b);

    // The reference has every publication kept; the subscriber's two connections together
    // got exactly the same, offset by offset, payload by payload.
    let mut all = Vec::new();
    loop {
        let got = envelope(&mut reference, topic);
        let done = got.data == format!("b{published_b}");
        all.push(got);
        if done {
            break;
        }
    }
    let end = all.last().unwrap().offset;
    while second.last().unwrap().offset < end {
        second.push(envelope(&mut back, topic));
    }
    let mut seen = first.clone();
    seen.extend(second);
    assert_eq!(seen.len(), all.len(), "as many as the reference");
    for (i, (got, want)) in seen.iter().zip(&all).enumerate() {
        assert_eq!(got, want, "publication {i}");
        assert_eq!(got.offset, i as u64 + 1, "offsets from 1, one by one");
        assert_eq!(got.epoch, epoch);
    }
    // Each node's publications once each, in the order made: all of B's, and A's up to the
    // last one its link handed to NATS before it stopped.
    assert_eq!(numbers(&all, "b"), (1..=published_b).collect::<Vec<_>>());
    let kept_a = numbers(&all, "a");
    assert_eq!(kept_a, (1..=kept_a.len() as u64).collect::<Vec<_>>());
    assert!(kept_a.len() as u64 <= published_a);
    assert!(kept_a.len() >= 100, "A published before it stopped");
    assert!(
        missed > 0,
        "publishing went on while the subscriber was away"
    );

    // The kept window, as B reads it from the stream.
    let window = futures_lite::future::block_on(b.server.history_window(topic));
    let (first_kept, last_kept, window_epoch) = window.expect("a window");
    assert_eq!((first_kept, last_kept), (1, end));
    assert_eq!(window_epoch.to_string(), epoch);
}

/// Reads `c` until the envelope whose data is `data`: everything it got.
fn read_until(c: &mut Client, topic: &str, data: &str) -> Vec<Got> {
    let mut seen = Vec::new();
    loop {
        let got = envelope(c, topic);
        let done = got.data == data;
        seen.push(got);
        if done {
            return seen;
        }
    }
}

#[test]
fn another_node_answers_too_old_and_unknown_positions() {
    let nats = Nats::start();
    let a = node(&nats, "old", "node-a", 5);
    let b = node(&nats, "old", "node-b", 5);
    let topic = "t.old";
    let (mut watcher, _) = subscribe(&a, topic, None);
    for i in 1..=10 {
        a.server.publish(topic, format!("p{i}"), MessageType::Text);
    }
    let seen = read_until(&mut watcher, topic, "p10");
    assert_eq!(seen.last().unwrap().offset, 10);
    let epoch = seen[0].epoch.clone();
    let now = json!({ "offset": 10, "epoch": epoch });

    // The stream keeps 6..10: after 5, all of them, from B.
    let (mut c, answer) = subscribe(&b, topic, Some((5, &epoch)));
    assert_eq!(answer, json!({ "recovered": 5, "position": now }));
    let got: Vec<(u64, String)> = (0..5)
        .map(|_| envelope(&mut c, topic))
        .map(|g| (g.offset, g.data))
        .collect();
    assert_eq!(
        got,
        (6..=10).map(|i| (i, format!("p{i}"))).collect::<Vec<_>>()
    );
    // After 4: too old. Ahead of the last: unknown. Both then get the live stream.
    let (mut old, answer) = subscribe(&b, topic, Some((4, &epoch)));
    assert_eq!(
        answer,
        json!({ "not_recovered": "position too old", "position": now })
    );
    let (_, answer) = subscribe(&b, topic, Some((11, &epoch)));
    assert_eq!(
        answer,
        json!({ "not_recovered": "unknown position", "position": now })
    );
    b.server.publish(topic, "p11", MessageType::Text);
    assert_eq!(envelope(&mut old, topic).offset, 11);
    assert_eq!(envelope(&mut c, topic).offset, 11);
}

/// Publishes `<prefix><n>` to `topic` through `server` every 20 ms until `c` gets an envelope
/// of an epoch other than `epoch`; returns it.
fn until_new_epoch(server: &Server, c: &mut Client, topic: &str, epoch: &str) -> Got {
    let prober = publisher_every(server, topic, "q", Duration::from_millis(20));
    let got = loop {
        let got = envelope(c, topic);
        if got.epoch != epoch {
            break got;
        }
    };
    stop(prober);
    got
}

fn publisher_every(
    server: &Server,
    topic: &str,
    prefix: &str,
    every: Duration,
) -> (Arc<AtomicBool>, JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (server, topic, prefix) = (server.clone(), topic.to_string(), prefix.to_string());
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut n = 0u64;
        // Bounded: the test's reads give up long before.
        while !flag.load(Ordering::Relaxed) && n < 2_000 {
            n += 1;
            server.publish(&topic, format!("{prefix}{n}"), MessageType::Text);
            std::thread::sleep(every);
        }
        n
    });
    (stop, thread)
}

/// Deletes every history stream of `cluster` on the NATS server at `url`.
fn delete_history_streams(url: &str, cluster: &str) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connects to NATS");
        let js = async_nats::jetstream::new(client);
        let prefix = format!("corecast_{cluster}_h_");
        let mut names = js.stream_names();
        let mut found = Vec::new();
        while let Some(name) = futures_lite::StreamExt::next(&mut names).await {
            let name = name.expect("stream names");
            if name.starts_with(&prefix) {
                found.push(name);
            }
        }
        for name in &found {
            js.delete_stream(name).await.expect("stream deleted");
        }
        found.len()
    })
}

#[test]
fn a_deleted_stream_starts_a_new_epoch_and_old_positions_are_told_so() {
    let nats = Nats::start();
    let a = node(&nats, "del", "node-a", 1000);
    let b = node(&nats, "del", "node-b", 1000);
    let topic = "t.del";
    let (mut watcher, _) = subscribe(&a, topic, None);
    for i in 1..=3 {
        b.server.publish(topic, format!("p{i}"), MessageType::Text);
    }
    let seen = read_until(&mut watcher, topic, "p3");
    let epoch = seen[0].epoch.clone();

    assert_eq!(delete_history_streams(&nats.url(), "del"), 1);
    // Publishing goes on; the stream is made again, and the watcher follows the new one from
    // its first offset.
    let fresh = until_new_epoch(&b.server, &mut watcher, topic, &epoch);
    assert_eq!(fresh.offset, 1, "{fresh:?}");

    let (_, answer) = subscribe(&b, topic, Some((3, &epoch)));
    assert_eq!(answer["not_recovered"], "epoch changed", "{answer}");
    assert_eq!(
        answer["position"]["epoch"],
        fresh.epoch.as_str(),
        "{answer}"
    );
}

#[test]
fn while_nats_is_down_recovery_is_unavailable_and_after_a_restart_the_epoch_changed() {
    let mut nats = Nats::start();
    let a = node(&nats, "down", "node-a", 1000);
    let topic = "t.down";
    let (mut watcher, _) = subscribe(&a, topic, None);
    for i in 1..=3 {
        a.server.publish(topic, format!("p{i}"), MessageType::Text);
    }
    let epoch = read_until(&mut watcher, topic, "p3")[0].epoch.clone();

    nats.kill();
    wait_until(
        || a.server.cluster().is_some_and(|v| !v.is_connected()),
        "the node to see NATS gone",
    );
    // What was missed cannot be told: said so, never a silent gap.
    let (_, answer) = subscribe(&a, topic, Some((3, &epoch)));
    assert_eq!(
        answer,
        json!({ "not_recovered": "history unavailable", "position": null })
    );
    // A publication now reaches no stream: counted, not delivered.
    let lost = |ts: &TestServer| ts.server.metrics().cluster.unwrap().history_lost;
    let before = lost(&a);
    a.server.publish(topic, "lost", MessageType::Text);
    wait_until(|| lost(&a) == before + 1, "the publication counted lost");

    // NATS back without its memory store: the history is gone, a new epoch starts.
    nats.restart();
    wait_until(
        || a.server.cluster().is_some_and(|v| v.is_connected()),
        "the node to reconnect",
    );
    let fresh = until_new_epoch(&a.server, &mut watcher, topic, &epoch);
    assert_eq!(fresh.offset, 1, "{fresh:?}");
    let (_, answer) = subscribe(&a, topic, Some((3, &epoch)));
    assert_eq!(answer["not_recovered"], "epoch changed", "{answer}");
}

#[test]
fn a_subscriber_on_any_node_gets_every_node_s_publications_in_one_order() {
    let nats = Nats::start();
    let a = node(&nats, "order", "node-a", 1000);
    let b = node(&nats, "order", "node-b", 1000);
    let topic = "t.order";
    let (mut on_a, _) = subscribe(&a, topic, None);
    let (mut on_b, _) = subscribe(&b, topic, None);
    // Clients of both nodes publish (a client's own publication skips it), and both servers.
    let mut pa = a.client("/ws");
    let mut pb = b.client("/ws");
    for i in 0..20 {
        pa.send_text(&format!("pub {topic} ca{i}"));
        pb.send_text(&format!("pub {topic} cb{i}"));
        a.server.publish(topic, format!("sa{i}"), MessageType::Text);
        b.server.publish(topic, format!("sb{i}"), MessageType::Text);
    }
    let read = |c: &mut Client| -> BTreeMap<u64, String> {
        (0..80)
            .map(|_| envelope(c, topic))
            .map(|g| (g.offset, g.data))
            .collect()
    };
    let (seen_a, seen_b) = (read(&mut on_a), read(&mut on_b));
    assert_eq!(seen_a, seen_b, "one order on both nodes");
    assert_eq!(
        seen_a.keys().copied().collect::<Vec<_>>(),
        (1..=80).collect::<Vec<_>>()
    );
    for prefix in ["ca", "cb", "sa", "sb"] {
        let mine: Vec<u64> = seen_a
            .values()
            .filter_map(|d| d.strip_prefix(prefix)?.parse().ok())
            .collect();
        assert_eq!(
            mine,
            (0..20).collect::<Vec<_>>(),
            "{prefix} in the order made"
        );
    }
}
