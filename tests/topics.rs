//! Topics over real sockets: subscribe, unsubscribe and publish on one shard and across two,
//! `kws.publish` skipping its sender, exact delivery, teardown, order, limits, server-side
//! subscriptions.

mod common;

use std::sync::mpsc;
use std::sync::Mutex;

use common::*;
use corecast::{event, Config, Error, MessageType, Server};
use tungstenite::Message;

/// Connects clients with `query` until at least one sits on each of the two shards (bounded).
fn one_per_shard(
    ts: &TestServer,
    uuids: &mpsc::Receiver<(String, usize)>,
    query: &str,
) -> Vec<(Client, String, usize)> {
    let mut clients = Vec::new();
    for _ in 0..64 {
        let c = ts.client(&format!("/ws?t={query}"));
        let (uuid, shard) = next_uuid(uuids);
        clients.push((c, uuid, shard));
        let shards: std::collections::BTreeSet<usize> = clients.iter().map(|c| c.2).collect();
        if shards.len() == 2 {
            return clients;
        }
    }
    panic!("64 connections all landed on one shard");
}

#[test]
fn a_publish_reaches_exactly_the_subscribers_on_every_shard() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    let mut on_a = one_per_shard(&ts, &uuids, "a");
    let mut on_b = one_per_shard(&ts, &uuids, "b");
    let mut on_ab = one_per_shard(&ts, &uuids, "a,b");
    let mut none = ts.client("/ws");
    next_uuid(&uuids);
    assert_eq!(ts.server.subscriber_count("a"), on_a.len() + on_ab.len());
    assert_eq!(ts.server.subscriber_count("b"), on_b.len() + on_ab.len());
    assert_eq!(
        ts.server.topics(),
        vec![
            ("a".to_string(), on_a.len() + on_ab.len()),
            ("b".to_string(), on_b.len() + on_ab.len())
        ]
    );

    // The subscribe returned (the callback reported) before these calls: every subscriber
    // gets both, in order.
    ts.server.publish("a", "a1", MessageType::Text);
    ts.server.publish("b", "b1", MessageType::Binary);
    ts.server.publish("nobody", "x", MessageType::Text);
    ts.server.broadcast("end", MessageType::Text);
    for (c, _, _) in &mut on_a {
        assert_eq!(c.recv_text(), "a1");
        assert_eq!(
            c.recv_text(),
            "end",
            "a client of `a` only got a `b` message"
        );
    }
    for (c, _, _) in &mut on_b {
        assert_eq!(c.recv(), Message::binary(b"b1".to_vec()));
        assert_eq!(c.recv_text(), "end");
    }
    for (c, _, _) in &mut on_ab {
        assert_eq!(c.recv_text(), "a1");
        assert_eq!(c.recv(), Message::binary(b"b1".to_vec()));
        assert_eq!(c.recv_text(), "end");
    }
    assert_eq!(none.recv_text(), "end");

    let m = ts.server.metrics();
    let publishes: u64 = m.publishes.iter().sum();
    let delivered: u64 = m.publish_deliveries.iter().sum();
    assert_eq!(
        delivered as usize,
        on_a.len() + on_b.len() + 2 * on_ab.len()
    );
    // One publish per shard with subscribers: two topics, each on both shards.
    assert_eq!(publishes, 4);
    assert_eq!(
        m.subscriptions.iter().sum::<u64>() as usize,
        on_a.len() + on_b.len() + 2 * on_ab.len()
    );
}

#[test]
fn kws_publish_skips_the_sender_and_unsubscribe_stops_delivery() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    ts.server.on(event::MESSAGE, |ep| {
        let text = String::from_utf8_lossy(ep.data()).to_string();
        if let Some(topic) = text.strip_prefix("leave ") {
            let was = ep.kws().unsubscribe(topic);
            ep.kws().emit(format!("left {was}"), MessageType::Text);
        } else {
            ep.kws()
                .publish("room", ep.data().clone(), MessageType::Text);
        }
    });
    let mut clients = one_per_shard(&ts, &uuids, "room");
    clients.truncate(3);
    let n = clients.len();
    for i in 0..n {
        clients[i].0.send_text(&format!("from {i}"));
        for (j, (c, _, _)) in clients.iter_mut().enumerate() {
            if j != i {
                assert_eq!(c.recv_text(), format!("from {i}"));
            }
        }
    }
    // Nobody got their own message: each client's next message is the last sender's.
    clients[n - 1].0.send_text("last");
    assert_eq!(clients[0].0.recv_text(), "last");
    clients[0].0.send_text("leave room");
    assert_eq!(clients[0].0.recv_text(), "left true");
    clients[0].0.send_text("leave room");
    assert_eq!(clients[0].0.recv_text(), "left false");
    for (c, _, _) in clients.iter_mut().take(n - 1).skip(1) {
        assert_eq!(c.recv_text(), "last");
    }
    assert_eq!(ts.server.subscriber_count("room"), n - 1);
    ts.server.publish("room", "after", MessageType::Text);
    ts.server.broadcast("end", MessageType::Text);
    assert_eq!(clients[0].0.recv_text(), "end");
    for (c, _, _) in clients.iter_mut().skip(1) {
        assert_eq!(c.recv_text(), "after");
        assert_eq!(c.recv_text(), "end");
    }
}

#[test]
fn teardown_drops_subscriptions_before_disconnect() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    let (tx, late) = mpsc::channel();
    let tx = Mutex::new(tx);
    ts.server.on(event::DISCONNECT, move |ep| {
        // Teardown already left every topic, and a gone connection cannot join one.
        let kws = ep.kws();
        let seen = (kws.topics(), kws.is_subscribed("a"), kws.subscribe("late"));
        let _ = tx
            .lock()
            .unwrap()
            .send((seen.0, seen.1, seen.2.map_err(|e| e.to_string())));
    });
    let mut clients = one_per_shard(&ts, &uuids, "a,b");
    let n = clients.len();
    assert_eq!(ts.server.subscriber_count("a"), n);
    for (c, _, _) in &mut clients {
        c.close(1000, "bye");
    }
    for _ in 0..n {
        let (topics, subscribed, late) = late.recv_timeout(WAIT).expect("disconnect fired");
        assert!(topics.is_empty() && !subscribed);
        assert_eq!(late, Err(Error::InvalidConnection.to_string()));
    }
    wait_until(|| ts.server.connections() == 0, "every teardown");
    assert_eq!(ts.server.subscriber_count("a"), 0);
    assert_eq!(ts.server.subscriber_count("late"), 0);
    assert!(ts.server.topics().is_empty());
    let m = ts.server.metrics();
    assert_eq!(m.subscriptions.iter().sum::<u64>(), 0);
}

#[test]
fn one_publishers_messages_arrive_in_order_on_every_shard() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    let mut clients = one_per_shard(&ts, &uuids, "seq");
    const N: usize = 2_000;
    let server = ts.server.clone();
    let publisher = std::thread::spawn(move || {
        for i in 0..N {
            server.publish("seq", i.to_string(), MessageType::Text);
        }
    });
    for (c, _, _) in &mut clients {
        for i in 0..N {
            assert_eq!(c.recv_text(), i.to_string());
        }
    }
    publisher.join().unwrap();
}

#[test]
fn names_and_limits_give_errors() {
    let (tx, results) = mpsc::channel();
    let tx = Mutex::new(tx);
    let cfg = Config {
        max_topics: 2,
        ..Config::default()
    };
    let ts = TestServer::start(Server::builder().shards(1).route_with_config(
        "/ws",
        cfg,
        move |kws| {
            let long = "x".repeat(257);
            let got = vec![
                format!("{:?}", kws.subscribe("")),
                format!("{:?}", kws.subscribe(long)),
                format!("{:?}", kws.subscribe("x".repeat(256))),
                format!("{:?}", kws.subscribe("t2")),
                format!("{:?}", kws.subscribe("t2")),
                format!("{:?}", kws.subscribe("t3")),
                format!("{:?}", kws.unsubscribe("nope")),
                format!("{:?}", kws.topics().len()),
            ];
            let _ = tx.lock().unwrap().send(got);
        },
    ));
    let _c = ts.client("/ws");
    let got = results.recv_timeout(WAIT).expect("callback ran");
    assert_eq!(
        got,
        [
            "Err(InvalidTopic)",
            "Err(InvalidTopic)",
            "Ok(true)",
            "Ok(true)",
            "Ok(false)",
            "Err(TooManyTopics)",
            "false",
            "2"
        ]
    );
    // Publishing to a name nobody may hold is a no-op, not a panic.
    ts.server.publish("", "x", MessageType::Text);
    ts.server.publish(&"y".repeat(300), "x", MessageType::Text);
}

#[test]
fn server_side_subscriptions_by_uuid() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", report));
    let mut c = ts.client("/ws");
    let (uuid, _) = next_uuid(&uuids);
    assert_eq!(ts.server.subscribe(&uuid, "news").ok(), Some(true));
    assert_eq!(ts.server.subscribe(&uuid, "news").ok(), Some(false));
    assert!(matches!(
        ts.server.subscribe("no-such-uuid", "news"),
        Err(Error::InvalidConnection)
    ));
    assert!(matches!(
        ts.server.subscribe(&uuid, ""),
        Err(Error::InvalidTopic)
    ));
    ts.server.publish("news", "n1", MessageType::Text);
    assert_eq!(c.recv_text(), "n1");
    assert_eq!(ts.server.unsubscribe(&uuid, "news").ok(), Some(true));
    assert_eq!(ts.server.unsubscribe(&uuid, "news").ok(), Some(false));
    ts.server.publish("news", "n2", MessageType::Text);
    ts.server.broadcast("end", MessageType::Text);
    assert_eq!(c.recv_text(), "end");
    // The blocking forms refuse to run on a shard thread, where they would stall it.
    let (tx, refused) = mpsc::channel();
    let tx = Mutex::new(tx);
    let server = ts.server.clone();
    ts.server.on(event::MESSAGE, move |ep| {
        let r = server.subscribe(&ep.kws().uuid(), "x");
        let _ = tx
            .lock()
            .unwrap()
            .send(matches!(r, Err(Error::OnShardThread)));
    });
    c.send_text("go");
    assert!(refused.recv_timeout(WAIT).expect("listener ran"));
}

#[test]
fn a_subscriber_that_never_reads_gets_the_queue_policy_and_others_are_served() {
    let cfg = Config {
        send_queue_size: 8,
        write_timeout: std::time::Duration::from_millis(800),
        ..Config::default()
    };
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(2).route_with_config(
        "/ws",
        cfg,
        move |kws| {
            kws.subscribe("feed").expect("subscribes");
            report(kws);
        },
    ));
    let rec = Recorder::attach(&ts.server, &[event::ERROR, event::DISCONNECT]);
    let _stuck = RawClient::connect_small_window(ts.addr(), "/ws"); // never reads
    let (stuck, _) = next_uuid(&uuids);
    let mut fast = ts.client("/ws");
    next_uuid(&uuids);
    // Big messages fill the stuck client's socket and queue; publishing never blocks.
    let big = vec![b'p'; 64 << 10];
    for i in 0..60 {
        ts.server.publish("feed", big.clone(), MessageType::Binary);
        assert_eq!(fast.recv(), Message::binary(big.clone()), "message {i}");
    }
    let full = rec.wait("QueueFull on the stuck subscriber", |s| {
        s.uuid == stuck && s.error.as_deref().is_some_and(|e| e.contains("QueueFull"))
    });
    assert_eq!(full.data.len(), 64 << 10, "the dropped message is the data");
    let gone = rec.wait_event(event::DISCONNECT, &stuck);
    assert!(gone.is_timeout, "{gone:?}");
    wait_until(
        || ts.server.subscriber_count("feed") == 1,
        "the stuck one left",
    );
    ts.server.publish("feed", "after", MessageType::Text);
    assert_eq!(fast.recv_text(), "after");
}

#[test]
fn churn_leaves_no_subscription_behind() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    for round in 0..20 {
        let mut batch: Vec<Client> = (0..10)
            .map(|i| ts.client(&format!("/ws?t=a,r{round},c{i}")))
            .collect();
        for _ in 0..10 {
            next_uuid(&uuids);
        }
        assert_eq!(ts.server.subscriber_count("a"), 10);
        for c in &mut batch {
            c.close(1000, "bye");
        }
        wait_until(
            || ts.server.connections() == 0 && ts.server.topics().is_empty(),
            "every subscription gone",
        );
    }
    assert_eq!(ts.server.metrics().subscriptions.iter().sum::<u64>(), 0);
}
