//! The pubsub protocol's requests and answers, byte for byte.

use super::*;

/// The request a frame holds, its id left aside.
fn parse(data: &[u8]) -> Result<PubsubRequest, String> {
    pubsub_request(data).0
}

#[test]
fn pubsub_frames() {
    use PubsubRequest::*;
    assert_eq!(parse(br#"{"subscribe":"a"}"#), Ok(Subscribe("a".into())));
    assert_eq!(
        parse(br#"{"unsubscribe":"b"}"#),
        Ok(Unsubscribe("b".into()))
    );
    assert_eq!(
        parse(br#"{"publish":"a","data":"hi"}"#),
        Ok(Publish {
            topic: "a".into(),
            data: "hi".into(),
            key: None,
        })
    );
    assert_eq!(
        parse(br#"{"publish":"p","data":"1.5","key":"AAPL"}"#),
        Ok(Publish {
            topic: "p".into(),
            data: "1.5".into(),
            key: Some("AAPL".into()),
        })
    );
    for key in [String::new(), "k".repeat(257)] {
        let frame = serde_json::json!({ "publish": "p", "data": "1", "key": key }).to_string();
        assert!(parse(frame.as_bytes())
            .unwrap_err()
            .contains("1 to 256 bytes"));
    }
    assert!(parse(br#"{"publish":"p","data":"1","key":7}"#)
        .unwrap_err()
        .contains(r#""key" must be a string"#));
    assert_eq!(
        parse(br#"{"publish":"a","data":{"x":[1,2]}}"#),
        Ok(Publish {
            topic: "a".into(),
            data: r#"{"x":[1,2]}"#.into(),
            key: None,
        })
    );
    assert!(parse(br#"{"publish":"a"}"#).unwrap_err().contains("data"));
    assert_eq!(
        parse(br#"{"refresh":"a.b.c"}"#),
        Ok(Refresh("a.b.c".into()))
    );
    assert!(parse(br#"{"refresh":null}"#)
        .unwrap_err()
        .contains("string"));
    assert!(parse(br#"{"subscribe":3}"#).unwrap_err().contains("string"));
    assert!(parse(b"{").unwrap_err().contains("JSON object"));
    assert!(parse(br#"{"other":1}"#).unwrap_err().contains("expected"));
    assert_eq!(
        pubsub_reply("subscribe", "a\"b", Some("too many topics")),
        r#"{"error":"too many topics","subscribe":"a\"b"}"#
    );
}

#[test]
fn subscriptions_from_history() {
    use PubsubRequest::*;
    let at = |offset, epoch| {
        Some(Position {
            offset,
            epoch: Epoch(epoch),
        })
    };
    assert_eq!(
        parse(br#"{"subscribe":"t","since":{"offset":5,"epoch":"abcd0001"}}"#),
        Ok(SubscribeFrom {
            topic: "t".into(),
            since: at(5, 0xabcd_0001)
        })
    );
    assert_eq!(
        parse(br#"{"subscribe":"t","positions":true}"#),
        Ok(SubscribeFrom {
            topic: "t".into(),
            since: None
        })
    );
    // `since` implies positions; `null` is no position yet.
    assert_eq!(
        parse(br#"{"since":{"epoch":"ABCD0001","offset":0},"subscribe":"t"}"#),
        Ok(SubscribeFrom {
            topic: "t".into(),
            since: at(0, 0xabcd_0001)
        })
    );
    assert_eq!(
        parse(br#"{"subscribe":"t","since":null}"#),
        Ok(SubscribeFrom {
            topic: "t".into(),
            since: None
        })
    );
    // The position of a topic nothing was published to yet, as a fresh answer gives it.
    assert_eq!(
        parse(br#"{"subscribe":"t","since":{"offset":0,"epoch":null}}"#),
        Ok(SubscribeFrom {
            topic: "t".into(),
            since: at(0, 0)
        })
    );
    // Without either, or with positions off: a plain subscribe, raw payloads.
    assert_eq!(
        parse(br#"{"subscribe":"t","positions":false}"#),
        Ok(Subscribe("t".into()))
    );
    assert_eq!(
        parse(br#"{"unsubscribe":"t","since":{"offset":1}}"#),
        Ok(Unsubscribe("t".into()))
    );
    for bad in [
        r#"{"subscribe":"t","since":5}"#,
        r#"{"subscribe":"t","since":"abcd0001"}"#,
        r#"{"subscribe":"t","since":{"offset":5}}"#,
        r#"{"subscribe":"t","since":{"epoch":"abcd0001"}}"#,
        r#"{"subscribe":"t","since":{"offset":-1,"epoch":"abcd0001"}}"#,
        r#"{"subscribe":"t","since":{"offset":1.5,"epoch":"abcd0001"}}"#,
        r#"{"subscribe":"t","since":{"offset":"5","epoch":"abcd0001"}}"#,
        r#"{"subscribe":"t","since":{"offset":5,"epoch":"abcd001"}}"#,
        r#"{"subscribe":"t","since":{"offset":5,"epoch":"abcd0001x"}}"#,
        r#"{"subscribe":"t","since":{"offset":5,"epoch":"wxyz0001"}}"#,
        r#"{"subscribe":"t","since":{"offset":5,"epoch":null}}"#,
        r#"{"subscribe":"t","since":{"offset":5,"epoch":1234}}"#,
    ] {
        assert_eq!(parse(bad.as_bytes()), Err(SINCE_FORM.into()), "{bad}");
    }
    assert_eq!(
        parse(br#"{"subscribe":"t","positions":"yes"}"#),
        Err("\"positions\" must be true or false".into())
    );
    assert!(parse(br#"{"subscribe":7,"positions":true}"#)
        .unwrap_err()
        .contains("string"));
}

#[test]
fn answers_to_subscriptions_from_history() {
    use corecast::history::NotRecovered;
    let reply = |r| serde_json::from_str::<Value>(&recovery_reply("t", r)).unwrap();
    let position = Some(Position {
        offset: 12,
        epoch: Epoch(0xabcd_0001),
    });
    assert_eq!(
        recovery_reply("t", Recovery::Fresh { position }),
        r#"{"subscribed":"t","offset":12,"epoch":"abcd0001"}"#
    );
    assert_eq!(
        reply(Recovery::Fresh { position: None }),
        serde_json::json!({ "subscribed": "t", "offset": 0, "epoch": null })
    );
    assert_eq!(
        recovery_reply(
            "t",
            Recovery::Recovered {
                missed: 3,
                position
            }
        ),
        r#"{"subscribed":"t","recovered":true,"missed":3,"offset":12,"epoch":"abcd0001"}"#
    );
    assert_eq!(
        recovery_reply(
            "t",
            Recovery::NotRecovered {
                reason: NotRecovered::TooOld,
                position
            }
        ),
        r#"{"subscribed":"t","recovered":false,"reason":"position too old","offset":12,"epoch":"abcd0001"}"#
    );
    assert_eq!(
        reply(Recovery::NotRecovered {
            reason: NotRecovered::EpochChanged,
            position: None
        }),
        serde_json::json!({ "subscribed": "t", "recovered": false,
            "reason": "epoch changed", "offset": 0, "epoch": null })
    );
    // A name that needs escaping stays one JSON string.
    let odd = recovery_reply("a\"b", Recovery::Fresh { position: None });
    assert_eq!(
        serde_json::from_str::<Value>(&odd).unwrap()["subscribed"],
        "a\"b"
    );
}

#[test]
fn rpc_frames_and_answers() {
    use serde_json::json;
    assert_eq!(
        parse(br#"{"rpc":"time","id":7,"data":{"tz":"UTC"}}"#),
        Ok(PubsubRequest::Rpc {
            method: "time".into(),
            id: Some(json!(7)),
            data: json!({ "tz": "UTC" })
        })
    );
    // Without an id or data: none comes back, and the backend gets null.
    assert_eq!(
        parse(br#"{"rpc":"ping"}"#),
        Ok(PubsubRequest::Rpc {
            method: "ping".into(),
            id: None,
            data: Value::Null
        })
    );
    assert_eq!(
        parse(br#"{"rpc":["x"]}"#),
        Err("\"rpc\" must be a string".into())
    );
    assert_eq!(
        parse(br#"{"other":1}"#),
        Err("expected \"subscribe\", \"unsubscribe\", \"publish\", \"refresh\" or \"rpc\"".into())
    );
    let reply = |r: String| serde_json::from_str::<Value>(&r).unwrap();
    assert_eq!(
        reply(rpc_reply("time", Some(&json!("a1")), Ok(json!([1, 2])))),
        json!({ "rpc": "time", "id": "a1", "data": [1, 2] })
    );
    assert_eq!(
        reply(rpc_reply("time", None, Err(NO_RPC_HOOK))),
        json!({ "rpc": "time", "error": "no rpc hook" })
    );
    assert_eq!(
        backend_failure(&Error::BackendUnavailable("status 500".into())),
        "backend unavailable"
    );
    assert_eq!(backend_failure(&Error::BackendBusy), "backend busy");
}

#[test]
fn every_request_may_carry_an_id() {
    use serde_json::json;
    assert_eq!(
        pubsub_request(br#"{"subscribe":"a","id":"s1"}"#),
        (Ok(PubsubRequest::Subscribe("a".into())), Some(json!("s1")))
    );
    assert_eq!(
        pubsub_request(br#"{"publish":"a","data":"d","id":3}"#),
        (
            Ok(PubsubRequest::Publish {
                topic: "a".into(),
                data: "d".into(),
                key: None
            }),
            Some(json!(3))
        )
    );
    // A request that is not one still has its id, for the error's answer.
    let (request, id) = pubsub_request(br#"{"other":1,"id":[1,2]}"#);
    assert!(request.is_err());
    assert_eq!(id, Some(json!([1, 2])));
    assert_eq!(pubsub_request(b"not json").1, None);
    assert_eq!(pubsub_request(br#"{"unsubscribe":"a"}"#).1, None);
}
