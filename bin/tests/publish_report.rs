//! The binary's `POST /api/publish/{topic}?report=1`: what a publish reached on this node.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use support::*;

#[test]
fn a_reported_publish_answers_with_its_counts() {
    let bin = Bin::start(&[]);
    let mut clients = Vec::new();
    for i in 0..4 {
        let id = format!("r{i}");
        let mut c = bin.client(&format!("/ws/{id}"));
        wait_until(
            || bin.api("POST", &format!("/api/emit/{id}"), &[], b"").0 == 200,
            "registration",
        );
        assert_eq!(c.recv_text(), "");
        let path = format!("/api/subscriptions/{id}/scores");
        assert_eq!(bin.api("POST", &path, &[], b"").0, 200);
        clients.push(c);
    }
    // Every connection subscribes: the shards that answer are the ones holding any.
    let (_, body) = bin.api("GET", "/api/connections", &[], b"");
    let per_shard: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shards = per_shard["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.as_u64() != Some(0))
        .count();

    let (status, body) = bin.api("POST", "/api/publish/scores?report=1", &[], b"goal");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!(
            r#"{{"subscribers":4,"queued":4,"closed":0,"dropped":0,"shards":{shards},"nodes":1,"partial":false}}"#
        )
    );
    for c in &mut clients {
        assert_eq!(c.recv_text(), "goal");
    }

    let (status, body) = bin.api("POST", "/api/publish/nobody?report=true", &[], b"x");
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"subscribers":0,"queued":0,"closed":0,"dropped":0,"shards":0,"nodes":1,"partial":false}"#
        )
    );
    // Without `report` the answer is as before.
    let (status, body) = bin.api("POST", "/api/publish/scores", &[], b"again");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ok":true,"subscribers":4}"#)
    );
    for c in &mut clients {
        assert_eq!(c.recv_text(), "again");
    }
}

/// The node ids in `bin`'s cluster view.
fn view(bin: &Bin) -> Vec<String> {
    let (_, body) = bin.api("GET", "/api/cluster", &[], b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A pubsub client of `bin` subscribed to `topic`.
fn subscriber(bin: &Bin, topic: &str) -> Client {
    let mut c = bin.client("/ws");
    c.send_text(&format!(r#"{{"subscribe":"{topic}"}}"#));
    assert_eq!(c.recv_text(), format!(r#"{{"subscribed":"{topic}"}}"#));
    c
}

/// `POST /api/publish/{topic}?report=1` on `bin`, as JSON.
fn reported(bin: &Bin, topic: &str, data: &str) -> serde_json::Value {
    let path = format!("/api/publish/{topic}?report=1");
    let (status, body) = bin.api("POST", &path, &[], data.as_bytes());
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn in_cluster_mode_a_report_sums_the_nodes_and_is_partial_while_one_cannot_answer() {
    let nats = Nats::start();
    let url = nats.url();
    let args = |id: &'static str| {
        [
            "--mode",
            "pubsub",
            "--cluster",
            url.as_str(),
            "--cluster-name",
            "reports",
            "--node-id",
            id,
        ]
        .map(str::to_string)
    };
    let start = |id| {
        let args = args(id);
        Bin::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (a, b) = (start("a"), start("b"));
    wait_until(
        || view(&a) == ["a", "b"] && view(&b) == ["a", "b"],
        "both nodes in both views",
    );
    let mut on_a: Vec<Client> = (0..2).map(|_| subscriber(&a, "scores")).collect();
    let mut on_b: Vec<Client> = (0..3).map(|_| subscriber(&b, "scores")).collect();

    let report = reported(&a, "scores", "goal");
    assert_eq!(
        (
            &report["subscribers"],
            &report["queued"],
            &report["nodes"],
            &report["partial"]
        ),
        (&5.into(), &5.into(), &2.into(), &false.into()),
        "{report}"
    );
    for c in on_a.iter_mut().chain(on_b.iter_mut()) {
        assert_eq!(c.recv_text(), "goal");
    }
    // From the other side, with nobody on this side: the same sum.
    let report = reported(&b, "scores", "again");
    assert_eq!(
        (&report["subscribers"], &report["nodes"]),
        (&5.into(), &2.into())
    );

    // b stops answering (frozen, still in a's view for three heartbeats): a reports what it
    // knows, and says that it is partial.
    b.signal(libc::SIGSTOP);
    let report = reported(&a, "scores", "frozen");
    b.signal(libc::SIGCONT);
    assert_eq!(
        (&report["subscribers"], &report["nodes"], &report["partial"]),
        (&2.into(), &1.into(), &true.into()),
        "{report}"
    );
}
