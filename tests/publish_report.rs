//! Publish reports over real sockets: `Server::publish_reported` counts the subscribers on
//! both shards exactly, a closing connection as closed, a topic nobody holds as zeros, a topic
//! with history the same way; `Websocket::publish_reported` leaves its sender out.

mod common;

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use corecast::{event, MessageType, PublishReport, Server};
use futures_lite::future::block_on;

/// Connects subscribers of `topic` until at least two sit on each of the two shards (bounded).
fn on_both_shards(
    ts: &TestServer,
    uuids: &mpsc::Receiver<(String, usize)>,
    topic: &str,
) -> Vec<(Client, String, usize)> {
    let mut clients: Vec<(Client, String, usize)> = Vec::new();
    for _ in 0..64 {
        let c = ts.client(&format!("/ws?t={topic}"));
        let (uuid, shard) = next_uuid(uuids);
        clients.push((c, uuid, shard));
        let per_shard = |s| clients.iter().filter(|c| c.2 == s).count();
        if per_shard(0) >= 2 && per_shard(1) >= 2 {
            return clients;
        }
    }
    panic!("64 connections and not two on each shard");
}

fn counted(n: usize, shards: usize) -> PublishReport {
    PublishReport {
        subscribers: n as u64,
        queued: n as u64,
        closed: 0,
        dropped: 0,
        shards,
        nodes: 1,
        partial: false,
    }
}

#[test]
fn a_report_counts_the_subscribers_on_both_shards() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    let mut subs = on_both_shards(&ts, &uuids, "a");
    let mut other = ts.client("/ws?t=b");
    next_uuid(&uuids);

    let report = block_on(ts.server.publish_reported("a", "a1", MessageType::Text));
    assert_eq!(report, counted(subs.len(), 2));
    for (c, _, _) in &mut subs {
        assert_eq!(c.recv_text(), "a1");
    }
    // The plain publish is unchanged, and the other topic got nothing before it.
    ts.server.publish("b", "b1", MessageType::Text);
    assert_eq!(other.recv_text(), "b1");
}

#[test]
fn a_topic_nobody_holds_reports_zeros() {
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", |_| {}));
    // Zeros, from this node alone.
    let zeros = PublishReport {
        nodes: 1,
        ..PublishReport::default()
    };
    let report = block_on(ts.server.publish_reported("nobody", "x", MessageType::Text));
    assert_eq!(report, zeros);
    let report = block_on(ts.server.publish_reported("", "x", MessageType::Text));
    assert_eq!(report, zeros);
}

#[test]
fn a_closing_subscriber_counts_as_closed() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    let mut staying = ts.client("/ws?t=a");
    next_uuid(&uuids);
    // Never read: its close reply never comes, so it stays closing (bounded by the write
    // timeout, 10 s) and subscribed until the publish.
    let _closing = ts.client("/ws?t=a");
    let (closing_uuid, _) = next_uuid(&uuids);

    // The close and the publish go from this thread to the shard in order.
    ts.server.close(&closing_uuid).unwrap();
    let report = block_on(ts.server.publish_reported("a", "a1", MessageType::Text));
    assert_eq!(report.subscribers, 2, "{report:?}");
    assert_eq!(report.queued, 1, "{report:?}");
    assert_eq!(report.closed, 1, "{report:?}");
    assert!(!report.partial);
    assert_eq!(staying.recv_text(), "a1");
}

#[test]
fn a_topic_with_history_is_counted_the_same() {
    let (route, uuids) = subscribe_from_query();
    let builder = Server::builder()
        .shards(2)
        .history("h*", 16, Duration::from_secs(60))
        .route("/ws", route);
    let ts = TestServer::start(builder);
    let mut subs = on_both_shards(&ts, &uuids, "h1");

    let report = block_on(ts.server.publish_reported("h1", "one", MessageType::Text));
    assert_eq!(report, counted(subs.len(), 2));
    for (c, _, _) in &mut subs {
        assert_eq!(c.recv_text(), "one");
    }
    // Nobody holds it: its home shard alone answers, with zeros.
    let report = block_on(ts.server.publish_reported("h2", "two", MessageType::Text));
    assert_eq!(report, counted(0, 1));
    assert!(block_on(ts.server.history_window("h2")).is_some());
}

#[test]
fn a_connection_s_report_leaves_out_its_sender() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    let (tx, reports) = mpsc::channel();
    let tx = Mutex::new(tx);
    ts.server.on(event::MESSAGE, move |ep| {
        if ep.data()[..] != b"pub"[..] {
            return;
        }
        let pending = ep.kws().publish_reported("a", "from-ws", MessageType::Text);
        let tx = tx.lock().unwrap().clone();
        // Awaited in a task of the shard: the shard goes on meanwhile.
        glommio::spawn_local(async move {
            let _ = tx.send(pending.await);
        })
        .detach();
    });
    let mut subs = on_both_shards(&ts, &uuids, "a");

    subs[0].0.send_text("pub");
    let report = reports.recv_timeout(WAIT).expect("the report");
    assert_eq!(report, counted(subs.len() - 1, 2));
    for (c, _, _) in &mut subs[1..] {
        assert_eq!(c.recv_text(), "from-ws");
    }
    // The sender got nothing of it: the next thing it reads is a plain publish.
    ts.server.publish("a", "after", MessageType::Text);
    assert_eq!(subs[0].0.recv_text(), "after");
}

#[test]
fn a_shard_whose_inbox_refused_the_publish_makes_the_report_partial() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .inbox_capacity(4)
            .route("/ws", route),
    );
    // A listener holds the only shard's thread until told to go on: its inbox fills meanwhile.
    let (go, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    ts.server.on(event::MESSAGE, move |ep| {
        if ep.data() == "hold" {
            let _ = wait.lock().unwrap().recv_timeout(WAIT);
        }
    });
    let mut sub = ts.client("/ws?t=p");
    next_uuid(&uuids);
    sub.send_text("hold");
    wait_until(|| ts.server.metrics().messages_in == [1], "the shard held");
    for i in 0..4 {
        ts.server
            .publish("p", format!("fill{i}"), MessageType::Text);
    }
    // Refused at once: nothing was offered, and the report says it is not the whole story.
    let report = block_on(
        ts.server
            .publish_reported("p", "refused", MessageType::Text),
    );
    assert_eq!(
        report,
        PublishReport {
            subscribers: 0,
            queued: 0,
            closed: 0,
            dropped: 0,
            shards: 0,
            nodes: 1,
            partial: true,
        }
    );
    go.send(()).unwrap();
    for i in 0..4 {
        assert_eq!(sub.recv_text(), format!("fill{i}"));
    }
    // With room again, a report is whole.
    let report = block_on(ts.server.publish_reported("p", "last", MessageType::Text));
    assert_eq!(report, counted(1, 1));
    assert_eq!(sub.recv_text(), "last");
}

#[test]
fn a_shard_that_answers_too_late_makes_the_report_partial_and_still_delivers() {
    let (route, uuids) = subscribe_from_query();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", route));
    // A listener holds its shard's thread until told to go on.
    let (go, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    ts.server.on(event::MESSAGE, move |ep| {
        if ep.data() == "hold" {
            let _ = wait.lock().unwrap().recv_timeout(WAIT);
        }
    });
    let mut subs = on_both_shards(&ts, &uuids, "late");
    let held = subs[0].2;
    let on_held = subs.iter().filter(|s| s.2 == held).count();
    subs[0].0.send_text("hold");
    wait_until(
        || ts.server.metrics().messages_in[held] == 1,
        "the shard held",
    );

    // The held shard answers only after the report's 2 s bound: the report has the other
    // shard's part alone, and says it is partial.
    let report = block_on(
        ts.server
            .publish_reported("late", "slow", MessageType::Text),
    );
    go.send(()).unwrap();
    assert_eq!(
        report,
        PublishReport {
            subscribers: (subs.len() - on_held) as u64,
            queued: (subs.len() - on_held) as u64,
            closed: 0,
            dropped: 0,
            shards: 1,
            nodes: 1,
            partial: true,
        }
    );
    // Late is not lost: every subscriber, on the held shard too, gets the publication.
    for (c, _, _) in &mut subs {
        assert_eq!(c.recv_text(), "slow");
    }
}
