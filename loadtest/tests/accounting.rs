//! The generator's accounting against relays that misbehave on purpose: a server that drops,
//! duplicates or reorders one message must make the run fail, and an honest one must pass.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use corecast::{event, MessageType, Server};
use corecast_load::topics::TopicPlan;
use corecast_load::ws::Target;
use corecast_load::{payload, Options, Report, Scenario};

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Drop,
    Duplicate,
    Reorder,
}

/// A relay built on corecast that mistreats message 5 of every sender.
fn faulty_relay(fault: Fault) -> Server {
    let server = Server::builder()
        .shards(1)
        .route("/ws", |_| {})
        .start()
        .expect("relay starts");
    let held: Arc<Mutex<Option<Bytes>>> = Arc::default();
    server.on(event::MESSAGE, move |ep| {
        let seq = payload::decode(ep.data()).map(|s| s.seq);
        let relay = |data: Bytes| ep.kws().broadcast(data, false, MessageType::Text);
        match (fault, seq) {
            (Fault::Drop, Some(5)) => {}
            (Fault::Duplicate, Some(5)) => {
                relay(ep.data().clone());
                relay(ep.data().clone());
            }
            (Fault::Reorder, Some(5)) => *held.lock().unwrap() = Some(ep.data().clone()),
            (Fault::Reorder, Some(6)) => {
                relay(ep.data().clone());
                if let Some(five) = held.lock().unwrap().take() {
                    relay(five);
                }
            }
            _ => relay(ep.data().clone()),
        }
    });
    server
}

/// A pubsub server on corecast speaking the binary's protocol (`?topics=`, acknowledgements,
/// `{"publish":..,"data":..}`); with `leak`, message 3 of every stream also goes to everyone.
fn pubsub_server(leak: bool) -> Server {
    let server = Server::builder()
        .shards(2)
        .route("/ws", |kws| {
            let topics = kws.query("topics").unwrap_or("").to_string();
            for t in topics.split(',').filter(|t| !t.is_empty()) {
                kws.subscribe(t).expect("subscribes");
                kws.emit(format!(r#"{{"subscribed":"{t}"}}"#), MessageType::Text);
            }
        })
        .start()
        .expect("pubsub server starts");
    server.on(event::MESSAGE, move |ep| {
        let v: serde_json::Value = serde_json::from_slice(ep.data()).expect("a publish frame");
        let (topic, data) = (v["publish"].as_str().unwrap(), v["data"].as_str().unwrap());
        let data = Bytes::copy_from_slice(data.as_bytes());
        if leak && payload::decode(&data).is_some_and(|s| s.seq == 3) {
            ep.kws().broadcast(data, true, MessageType::Text);
        } else {
            ep.kws().publish(topic, data, MessageType::Text);
        }
    });
    server
}

fn topics_plan() -> TopicPlan {
    TopicPlan {
        topics: 4,
        per_client: 2,
        publishers: 2,
        publish_topics: 0,
    }
}

#[test]
fn topics_count_exactly_the_subscribers_and_a_leak_fails() {
    let r = load(&pubsub_server(false), Scenario::Topics);
    assert!(r.ok, "{}", r.summary());
    // 2 publishers × 20 messages, each to the 5 of 10 subscribers on its topic.
    assert_eq!(r.sent, 2 * 20);
    assert_eq!(r.expected_deliveries, 2 * 20 * 5);
    assert_eq!(r.deliveries, r.expected_deliveries);
    assert_eq!(r.subscriptions, Some(20));

    let r = load(&pubsub_server(true), Scenario::Topics);
    assert!(!r.ok);
    assert_fault(&r, |f| f.starts_with("unexpected message"));
}

/// Asserts that one of the report's faults (or notes) matches `what`.
fn assert_fault(r: &Report, what: impl Fn(&str) -> bool) {
    assert!(r.faults.iter().any(|f| what(f)), "{:?}", r.faults);
}

fn load(server: &Server, scenario: Scenario) -> Report {
    let report = corecast_load::run(options(server, scenario)).expect("the run completes");
    server.shutdown_within(Duration::from_secs(1));
    server.join().unwrap();
    report
}

/// A small run of `scenario` against `server`.
fn options(server: &Server, scenario: Scenario) -> Options {
    let url = format!("ws://{}/ws", server.local_addr());
    Options {
        scenario,
        targets: vec![Target::parse(&url).unwrap()],
        url,
        clients: 10,
        messages: Some(20),
        duration: Duration::from_secs(3),
        in_flight: 4,
        rate: None,
        size: 32,
        threads: 2,
        cpus: Vec::new(),
        server_pids: Vec::new(),
        progress: false,
        step: 1,
        sample: 1,
        concurrent: 1,
        limit: Duration::from_secs(1),
        topics: topics_plan(),
        socket_io: false,
        deflate: false,
    }
}

#[test]
fn an_open_loop_broadcast_ends_at_its_duration() {
    // More messages than the duration lets the rate send: the run stops publishing at the
    // duration, lets what is in flight arrive and ends, rather than spinning on a send that
    // fell due after the stop.
    let server = faulty_relay(Fault::None);
    let opts = Options {
        messages: Some(100_000),
        in_flight: 100_000,
        rate: Some(200.0),
        duration: Duration::from_secs(1),
        ..options(&server, Scenario::Broadcast)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(corecast_load::run(opts));
    });
    // The duration, the 5 s drain bound at most, and room for a slow machine.
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the run ended by itself")
        .expect("the run completes");
    assert!(report.ok, "{}", report.summary());
    assert!(
        report.sent > 0 && report.sent < 1_000,
        "{} sent in about a second at 200 a second",
        report.sent
    );
    assert_eq!(report.deliveries, report.sent * 10);
    server.shutdown_within(Duration::from_secs(1));
    server.join().unwrap();
}

#[test]
fn an_honest_relay_passes_with_every_delivery_counted() {
    for scenario in [Scenario::Broadcast, Scenario::Chat] {
        let r = load(&faulty_relay(Fault::None), scenario);
        assert!(r.ok, "{}", r.summary());
        let expected = if scenario == Scenario::Broadcast {
            20 * 10
        } else {
            20 * 10 * 10
        };
        assert_eq!(r.sent * 10, expected);
        assert_eq!(r.deliveries, expected);
        assert_eq!(r.expected_deliveries, expected);
        assert_eq!(r.latency.count, expected);
    }
}

#[test]
fn a_dropped_message_fails_the_run() {
    let r = load(&faulty_relay(Fault::Drop), Scenario::Broadcast);
    assert!(!r.ok);
    assert_fault(&r, |f| {
        f.starts_with("missing:") && f.contains("message 5 of sender 0")
    });
    // Never sent: nothing of it waits in the receivers' sockets, and the report says so.
    assert_fault(&r, |f| {
        f.ends_with(": 0 bytes the server sent were unread in its socket at the end")
    });
}

#[test]
fn a_duplicated_message_fails_the_run() {
    let r = load(&faulty_relay(Fault::Duplicate), Scenario::Chat);
    assert!(!r.ok);
    assert_fault(&r, |f| {
        f.starts_with("duplicate:") && f.contains("message 5")
    });
}

#[test]
fn a_reordered_message_fails_the_run() {
    let r = load(&faulty_relay(Fault::Reorder), Scenario::Broadcast);
    assert!(!r.ok);
    assert_fault(&r, |f| {
        f.starts_with("reordered:") && f.contains("message 5 of sender 0")
    });
    // Reordered, not lost: every message still arrived once.
    assert_eq!(r.deliveries, r.expected_deliveries);
}

#[test]
fn echo_counts_round_trips_and_idle_holds_every_connection() {
    let server = Server::builder()
        .shards(1)
        .route("/ws", |_| {})
        .start()
        .unwrap();
    server.on(event::MESSAGE, |ep| {
        ep.kws().emit(ep.data().clone(), MessageType::Text)
    });
    let r = load(&server, Scenario::Echo);
    assert!(r.ok, "{}", r.summary());
    assert_eq!(r.deliveries, 20 * 10);
    assert!(r.round_trips_per_second.unwrap() > 0.0);

    let r = load(&faulty_relay(Fault::None), Scenario::Idle);
    assert!(r.ok, "{}", r.summary());
    assert_eq!(r.clients, 10);
    assert!(r.connects_per_second > 0.0);
}
