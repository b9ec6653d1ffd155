//! The real binary's pubsub protocol with request ids and envelopes: every answer to a request
//! that had an `"id"` carries it (subscribe, unsubscribe, an error, a refusal by the rate
//! limit), and a publish with one is answered `{"published":..}`, so a client matches answers
//! to requests whatever their order; a request without one is answered as it always was. With
//! `?envelope=1` every publication comes in the envelope, so no payload passes for an answer.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use serde_json::{json, Value};
use support::*;

fn recv_json(c: &mut Client) -> Value {
    serde_json::from_str(&c.recv_text()).expect("a JSON frame")
}

#[test]
fn answers_carry_the_request_s_id() {
    let bin = Bin::start(&["--mode", "pubsub", "--client-message-rate", "5"]);
    let mut c = bin.client("/ws");
    let mut other = bin.client("/ws");
    other.send_text(r#"{"subscribe":"scores"}"#);
    assert_eq!(recv_json(&mut other), json!({ "subscribed": "scores" }));

    c.send_text(r#"{"subscribe":"scores","id":1}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "subscribed": "scores", "id": 1 })
    );
    c.send_text(r#"{"publish":"scores","data":"1-0","id":"p-2"}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "published": "scores", "id": "p-2" })
    );
    assert_eq!(other.recv_text(), "1-0");
    c.send_text(r#"{"unsubscribe":"nope","id":3}"#);
    assert_eq!(
        recv_json(&mut c),
        json!({ "unsubscribed": "nope", "error": "not subscribed", "id": 3 })
    );
    c.send_text(r#"{"shout":"x","id":{"n":4}}"#);
    let error = recv_json(&mut c);
    assert_eq!(error["id"], json!({ "n": 4 }), "{error}");
    assert!(
        error["error"].as_str().unwrap().starts_with("expected"),
        "{error}"
    );
    // Without an id, as before: a publish is not answered, the next answer is the subscribe's.
    c.send_text(r#"{"publish":"scores","data":"2-0"}"#);
    assert_eq!(other.recv_text(), "2-0");
    // Past the rate limit (5 a second, spent above): a burst, each answered with its id,
    // published or refused, and at least one refused.
    for id in 6..10 {
        c.send_text(&json!({ "publish": "scores", "data": "x", "id": id }).to_string());
    }
    let mut refused = 0;
    for id in 6..10 {
        let answer = recv_json(&mut c);
        assert_eq!(answer["id"], id, "{answer}");
        if answer["error"] == "rate limit" {
            refused += 1;
        } else {
            assert_eq!(answer, json!({ "published": "scores", "id": id }));
        }
    }
    assert!(refused > 0, "the burst went past the limit");
}

#[test]
fn with_envelopes_no_payload_passes_for_an_answer() {
    let bin = Bin::start(&["--mode", "pubsub"]);
    let mut enveloped = bin.client("/ws?envelope=1");
    let mut bare = bin.client("/ws");
    for c in [&mut enveloped, &mut bare] {
        c.send_text(r#"{"subscribe":"scores","id":1}"#);
        assert_eq!(recv_json(c), json!({ "subscribed": "scores", "id": 1 }));
    }
    // A publisher's payload shaped like an answer to the subscriber's next request.
    let spoof = r#"{"published":"scores","id":2}"#;
    let (status, body) = bin.api("POST", "/api/publish/scores", &[], spoof.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        recv_json(&mut enveloped),
        json!({ "topic": "scores", "data": spoof })
    );
    assert_eq!(bare.recv_text(), spoof, "without envelopes, as before");
}
