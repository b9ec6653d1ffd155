//! The recovery scenario against servers built on corecast's library that speak the subset of
//! `--mode pubsub` it uses, with real topic history: an honest one must pass, one that says
//! "recovered" but sends nothing it missed must fail on the gap, and one that never recovers
//! must fail unless not-recovered answers are allowed.

use std::time::Duration;

use corecast::history::{Epoch, Position as HistoryPosition, Recovery};
use corecast::{event, MessageType, Server};

use super::*;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Honest,
    /// Answers a `since` with `"recovered":true,"missed":0` and subscribes fresh.
    Forgets,
    /// Answers every `since` with `"recovered":false`.
    NeverRecovers,
}

/// `{"subscribed":..,[recovered..],"offset":..,"epoch":..}` as the binary writes it.
fn answer(topic: &str, recovered: &str, position: Option<HistoryPosition>) -> String {
    let (offset, epoch) = match position {
        Some(p) => (p.offset, format!(r#""{}""#, p.epoch)),
        None => (0, "null".into()),
    };
    format!(r#"{{"subscribed":"{topic}"{recovered},"offset":{offset},"epoch":{epoch}}}"#)
}

fn server(behaviour: Behaviour) -> Server {
    let server = Server::builder()
        .shards(2)
        .history("rec.*", 10_000, Duration::from_secs(60))
        .route("/ws", |_| {})
        .start()
        .expect("the test server starts");
    server.on(event::MESSAGE, move |ep| {
        let v: serde_json::Value = serde_json::from_slice(ep.data()).expect("a JSON request");
        let kws = ep.kws().clone();
        if let (Some(topic), Some(data)) = (v["publish"].as_str(), v["data"].as_str()) {
            kws.publish(topic, data.to_string(), MessageType::Text);
            return;
        }
        let topic = v["subscribe"].as_str().expect("a subscribe").to_string();
        let since = v["since"].as_object().map(|s| HistoryPosition {
            offset: s["offset"].as_u64().expect("an offset"),
            epoch: Epoch::parse(s["epoch"].as_str().expect("an epoch")).expect("8 hex digits"),
        });
        // The faulty ones subscribe fresh whatever was asked: nothing missed is sent.
        let asked = since.filter(|_| behaviour == Behaviour::Honest);
        glommio::spawn_local(async move {
            let catchup = kws.subscribe_from(&topic, asked).await.expect("subscribed");
            let reply = match (behaviour, since, catchup.recovery()) {
                (Behaviour::Forgets, Some(_), Recovery::Fresh { position }) => {
                    answer(&topic, r#","recovered":true,"missed":0"#, position)
                }
                (Behaviour::NeverRecovers, Some(_), Recovery::Fresh { position }) => answer(
                    &topic,
                    r#","recovered":false,"reason":"position too old""#,
                    position,
                ),
                (_, _, Recovery::Fresh { position }) => answer(&topic, "", position),
                (_, _, Recovery::Recovered { missed, position }) => answer(
                    &topic,
                    &format!(r#","recovered":true,"missed":{missed}"#),
                    position,
                ),
                (_, _, Recovery::NotRecovered { reason, position }) => answer(
                    &topic,
                    &format!(r#","recovered":false,"reason":"{}""#, reason.reason()),
                    position,
                ),
            };
            kws.emit(reply, MessageType::Text);
            catchup.deliver();
        })
        .detach();
    });
    server
}

fn options(server: &Server) -> RecoveryOptions {
    let url = format!("ws://{}/ws", server.local_addr());
    let target = Target::parse(&url).expect("a valid URL");
    RecoveryOptions {
        clients: 40,
        topics: 2,
        rate: 400.0,
        storm_at: Duration::from_millis(500),
        after: Duration::from_millis(300),
        drop_fraction: 0.5,
        // Away long enough to miss publications (about 20 each), so a server that forgets
        // them is caught every time.
        reconnect_delay: Duration::from_millis(100),
        progress: false,
        ..RecoveryOptions::new(target, url, Protocol::Corecast)
    }
}

#[test]
fn an_honest_server_recovers_every_dropped_client_exactly() {
    let server = server(Behaviour::Honest);
    let r = run(options(&server)).expect("the run completes");
    assert!(r.ok, "{}", r.summary());
    assert_eq!((r.dropped, r.recovered, r.not_recovered), (20, 20, 0));
    assert_eq!(r.deliveries, r.expected_deliveries);
    assert!(r.published >= 200, "{}", r.summary());
    assert!(r.messages_recovered >= 20 * 10, "{}", r.summary());
    assert_eq!(r.reconnect_to_recovered.count, 20);
    assert!(r.all_recovered_seconds.is_some());
    let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["before", "during", "after"]);
    assert!(r.phase("before").is_some_and(|p| p.deliveries > 0));
    stop(server);
}

#[test]
fn a_server_that_forgets_what_was_missed_fails_the_run() {
    let server = server(Behaviour::Forgets);
    let r = run(options(&server)).expect("the run completes");
    assert!(!r.ok, "{}", r.summary());
    assert!(
        r.faults
            .iter()
            .any(|f| f.contains("gap") || f.contains("missed")),
        "{:?}",
        r.faults
    );
    stop(server);
}

#[test]
fn not_recovered_fails_unless_allowed() {
    let server = server(Behaviour::NeverRecovers);
    let strict = run(options(&server)).expect("the run completes");
    assert!(!strict.ok, "{}", strict.summary());
    assert!(
        strict.faults.iter().any(|f| f.contains("not recovered")),
        "{:?}",
        strict.faults
    );
    assert_eq!(strict.not_recovered, 20);
    let lenient = run(RecoveryOptions {
        stale_ok: true,
        ..options(&server)
    })
    .expect("the run completes");
    assert!(lenient.ok, "{}", lenient.summary());
    assert_eq!(lenient.not_recovered, 20);
    assert!(lenient.messages_lost > 0, "{}", lenient.summary());
    stop(server);
}

#[test]
fn drop_fraction_and_jitter_spread_evenly() {
    let target = Target::parse("ws://127.0.0.1:1/ws").expect("a valid URL");
    let mut o = RecoveryOptions::new(target, "u".into(), Protocol::Corecast);
    o.clients = 10;
    o.drop_fraction = 0.3;
    let dropping: Vec<usize> = (0..10).filter(|&i| o.drops(i)).collect();
    assert_eq!(dropping, [3, 6, 9]);
    o.drop_fraction = 1.0;
    assert_eq!(o.dropping(), 10);
    assert_eq!(o.delay_of(3), Duration::ZERO);
    o.reconnect_delay = Duration::from_millis(50);
    o.jitter = Duration::from_millis(100);
    let delays: Vec<Duration> = (0..1000).map(|i| o.delay_of(i)).collect();
    assert!(delays
        .iter()
        .all(|d| *d >= Duration::from_millis(50) && *d < Duration::from_millis(150)));
    assert_ne!(delays[1], delays[2]);
    assert!(o.check().is_ok());
    o.rate = 0.1;
    assert!(o.check().is_err());
}

fn stop(server: Server) {
    server.shutdown_within(Duration::from_secs(1));
    server.join().expect("the test server stops");
}
