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
            r#"{{"subscribers":4,"queued":4,"closed":0,"dropped":0,"shards":{shards},"partial":false}}"#
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
            r#"{"subscribers":0,"queued":0,"closed":0,"dropped":0,"shards":0,"partial":false}"#
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
