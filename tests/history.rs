//! Topic history seen from outside: positions in the envelope, recovery after a reconnect while
//! publishing goes on (no gap, no duplicate, in order), and the answers when a position cannot
//! be recovered from (too old, expired, another epoch after a restart).

mod common;
#[path = "common/history.rs"]
mod history_route;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use corecast::{MessageType, Server};
use history_route::{json_of, queue_for_catchups, sub_and_pub};
use serde_json::json;

/// A server whose topics `t*` keep `size` publications for `ttl`, and whose clients' queues
/// hold a whole catch-up (one larger than the queue waits like any burst). A client's text
/// `sub <topic> [<offset> <epoch>]` subscribes with `subscribe_from` and is answered with the
/// result as JSON; `pub <topic> <data>` publishes.
fn server(shards: usize, size: usize, ttl: Duration) -> TestServer {
    TestServer::start(
        Server::builder()
            .shards(shards)
            .history("t*", size, ttl)
            .route_with_config("/ws", queue_for_catchups(), sub_and_pub),
    )
}

/// Reads envelopes until one with `data`; their offsets, and the epoch.
fn read_until(c: &mut Client, data: &str) -> (Vec<u64>, String) {
    let mut offsets = Vec::new();
    loop {
        let v = json_of(c);
        offsets.push(v["offset"].as_u64().unwrap());
        if v["data"] == data {
            return (offsets, v["epoch"].as_str().unwrap().to_string());
        }
    }
}

#[test]
fn a_subscriber_that_comes_back_gets_what_it_missed_then_the_live_stream_without_gap_or_duplicate()
{
    let ts = server(2, 100_000, Duration::from_secs(60));
    let mut sub = ts.client("/ws");
    sub.send_text("sub t1");
    assert_eq!(json_of(&mut sub), json!({ "fresh": null }));
    // Publishing from another thread, through the server, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (server, stop) = (ts.server.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                server.publish("t1", format!("m{n}"), MessageType::Text);
                // About 10,000 a second: a steady stream, not a flood of the inboxes.
                std::thread::sleep(Duration::from_micros(100));
            }
            n
        })
    };
    // The first publications, in the envelope, from offset 1.
    let v = json_of(&mut sub);
    assert_eq!(v["topic"], "t1");
    let epoch = v["epoch"].as_str().unwrap().to_string();
    let mut last = v["offset"].as_u64().unwrap();
    assert_eq!((last, v["data"].as_str().unwrap()), (1, "m1"));
    for _ in 0..50 {
        let v = json_of(&mut sub);
        assert_eq!(v["offset"].as_u64().unwrap(), last + 1);
        last += 1;
    }
    // Gone until the topic holds more than it saw (the publisher thread may not have run in
    // between on a busy machine), then back on another connection with the last position seen.
    wait_until(
        || {
            futures_lite::future::block_on(ts.server.history_window("t1"))
                .is_some_and(|(_, newest, _)| newest > last)
        },
        "a publication past the last one seen",
    );
    drop(sub);
    let mut back = ts.client("/ws");
    back.send_text(&format!("sub t1 {last} {epoch}"));
    // The answer comes first, then the missed ones and the live ones, one stream.
    let answer = json_of(&mut back);
    let missed = answer["recovered"].as_u64().expect("recovered") as usize;
    assert!(missed > 0, "{answer}");
    let mut next = last + 1;
    for _ in 0..(missed + 200) {
        let v = json_of(&mut back);
        assert_eq!(v["offset"].as_u64().unwrap(), next, "no gap, no duplicate");
        assert_eq!(v["data"], format!("m{next}"));
        assert_eq!(v["epoch"], epoch.as_str());
        next += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert!(published >= next - 1);
}

#[test]
fn publications_from_every_shard_are_ordered_in_one_sequence() {
    let ts = server(2, 1000, Duration::from_secs(60));
    let mut sub = ts.client("/ws");
    sub.send_text("sub t2");
    json_of(&mut sub);
    // Publishers on both shards (connections are spread over them), then the server.
    let mut publishers: Vec<Client> = (0..4).map(|_| ts.client("/ws")).collect();
    for round in 0..10 {
        for (i, p) in publishers.iter_mut().enumerate() {
            p.send_text(&format!("pub t2 c{i}r{round}"));
        }
    }
    ts.server.publish("t2", "server", MessageType::Text);
    // Whatever order they arrived in, they were numbered one by one from 1.
    let mut data = Vec::new();
    for expected in 1..=41u64 {
        let v = json_of(&mut sub);
        assert_eq!(v["offset"].as_u64().unwrap(), expected);
        data.push(v["data"].as_str().unwrap().to_string());
    }
    data.sort();
    data.dedup();
    assert_eq!(data.len(), 41, "every publication once");
}

#[test]
fn a_position_too_old_or_expired_or_from_another_epoch_is_not_recovered() {
    let ts = server(1, 5, Duration::from_secs(60));
    let mut sub = ts.client("/ws");
    sub.send_text("sub t3");
    json_of(&mut sub);
    for i in 1..=10 {
        ts.server.publish("t3", format!("p{i}"), MessageType::Text);
    }
    let (_, epoch) = read_until(&mut sub, "p10");
    // Five kept: 6..10. After 5 recovers them all; after 4 is too old.
    let mut c = ts.client("/ws");
    c.send_text(&format!("sub t3 5 {epoch}"));
    let answer = json_of(&mut c);
    assert_eq!(answer["recovered"], 5, "{answer}");
    assert_eq!(read_until(&mut c, "p10").0, [6, 7, 8, 9, 10]);
    let mut c = ts.client("/ws");
    c.send_text(&format!("sub t3 4 {epoch}"));
    assert_eq!(
        json_of(&mut c),
        json!({ "not_recovered": "position too old",
                "position": { "offset": 10, "epoch": epoch } })
    );
    // The live stream follows, from 11.
    ts.server.publish("t3", "p11", MessageType::Text);
    assert_eq!(read_until(&mut c, "p11").0, [11]);
    // A topic that keeps no history.
    c.send_text("sub other");
    assert_eq!(
        json_of(&mut c),
        json!({ "error": "this topic keeps no history" })
    );
    drop(ts);

    // Another server: another epoch, whatever the offset.
    let ts = server(1, 5, Duration::from_secs(60));
    ts.server.publish("t3", "q1", MessageType::Text);
    let mut c = ts.client("/ws");
    c.send_text(&format!("sub t3 1 {epoch}"));
    let answer = json_of(&mut c);
    assert_eq!(answer["not_recovered"], "epoch changed", "{answer}");
    assert_ne!(answer["position"]["epoch"], epoch.as_str());
}

#[test]
fn publications_older_than_the_ttl_are_not_recovered() {
    let ts = server(1, 100, Duration::from_millis(200));
    let mut sub = ts.client("/ws");
    sub.send_text("sub t4");
    json_of(&mut sub);
    ts.server.publish("t4", "old", MessageType::Text);
    let (_, epoch) = read_until(&mut sub, "old");
    // Past the ttl, by a margin: the recovery of offset 1 asks for a publication gone.
    wait_until(
        || {
            let mut c = ts.client("/ws");
            c.send_text(&format!("sub t4 0 {epoch}"));
            json_of(&mut c)["not_recovered"] == "position too old"
        },
        "the publication to expire",
    );
}
