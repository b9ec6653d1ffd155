//! The backend's JSON, byte for byte.

use super::*;
use serde_json::json;

fn alice() -> Origin<'static> {
    Origin {
        uuid: "u1",
        user: Some("alice"),
        path: "/ws/alice",
    }
}

#[test]
fn event_sets_parse_lists_and_all() {
    let set = EventSet::parse("message, connect").unwrap();
    assert!(set.contains(EventKind::Message) && set.contains(EventKind::Connect));
    assert!(!set.contains(EventKind::Disconnect));
    assert_eq!(set.to_string(), "connect,message");
    assert_eq!(EventSet::parse("all").unwrap(), EventSet::ALL);
    assert!(EventSet::parse("").unwrap().is_empty());
    let err = EventSet::parse("message,typo").unwrap_err();
    assert!(err.contains("unknown event \"typo\""), "{err}");
}

#[test]
fn events_carry_their_id_type_time_origin_and_fields() {
    let text = EventBody::Message {
        data: b"hi \"you\"",
        binary: false,
    };
    assert_eq!(
        String::from_utf8(event_json("b-0-1", 1700, alice(), text)).unwrap(),
        r#"{"id":"b-0-1","type":"message","time":1700,"uuid":"u1","user":"alice","path":"/ws/alice","text":"hi \"you\""}"#
    );
    let binary = EventBody::Message {
        data: &[0, 1, 2, 255],
        binary: true,
    };
    let anon = Origin {
        user: None,
        ..alice()
    };
    assert_eq!(
        String::from_utf8(event_json("b-0-2", 1, anon, binary)).unwrap(),
        r#"{"id":"b-0-2","type":"message","time":1,"uuid":"u1","user":null,"path":"/ws/alice","binary":"AAEC/w=="}"#
    );
    let gone = EventBody::Disconnect {
        code: Some(1001),
        cause: "clean",
    };
    assert_eq!(
        String::from_utf8(event_json("i", 2, alice(), gone)).unwrap(),
        r#"{"id":"i","type":"disconnect","time":2,"uuid":"u1","user":"alice","path":"/ws/alice","code":1001,"cause":"clean"}"#
    );
    let joined = EventBody::Subscribe { topic: "t" };
    assert_eq!(
        String::from_utf8(event_json("i", 3, alice(), joined)).unwrap(),
        r#"{"id":"i","type":"subscribe","time":3,"uuid":"u1","user":"alice","path":"/ws/alice","topic":"t"}"#
    );
    let not_utf8 = EventBody::Message {
        data: &[0xff],
        binary: false,
    };
    assert!(String::from_utf8(event_json("i", 4, alice(), not_utf8))
        .unwrap()
        .ends_with(r#""binary":"/w=="}"#));
}

#[test]
fn a_batch_is_the_events_in_order() {
    let events: Vec<&[u8]> = vec![br#"{"a":1}"#, br#"{"b":2}"#];
    assert_eq!(batch_json(events), br#"{"events":[{"a":1},{"b":2}]}"#);
    assert_eq!(batch_json(Vec::<&[u8]>::new()), br#"{"events":[]}"#);
}

#[test]
fn hook_requests_name_the_connection_and_the_ask() {
    assert_eq!(
        String::from_utf8(subscribe_request(alice(), "scores")).unwrap(),
        r#"{"uuid":"u1","user":"alice","path":"/ws/alice","topic":"scores"}"#
    );
    assert_eq!(
        String::from_utf8(publish_request(alice(), "t", "x")).unwrap(),
        r#"{"uuid":"u1","user":"alice","path":"/ws/alice","topic":"t","data":"x"}"#
    );
    assert_eq!(
        String::from_utf8(rpc_request(alice(), "sum", &json!([1, 2]))).unwrap(),
        r#"{"uuid":"u1","user":"alice","path":"/ws/alice","method":"sum","data":[1,2]}"#
    );
    let connect = connect_request(
        "/ws",
        "room=1",
        "127.0.0.1:5000",
        &[("Cookie", "s=1"), ("Origin", "https://a.example")],
        None,
    );
    assert_eq!(
        String::from_utf8(connect).unwrap(),
        r#"{"path":"/ws","query":"room=1","remote":"127.0.0.1:5000","headers":{"cookie":"s=1","origin":"https://a.example"},"user":null}"#
    );
}

#[test]
fn connect_answers_allow_as_a_user_or_as_is_or_refuse() {
    assert_eq!(
        connect_verdict(br#"{"user":"bob","subscribe":["a.*"],"expires":99}"#),
        Ok(ConnectVerdict::Allow(Some(Identity {
            user: "bob".into(),
            expires: Some(99),
            subscribe: vec!["a.*".into()],
            publish: vec![],
        })))
    );
    assert_eq!(connect_verdict(b"{}"), Ok(ConnectVerdict::Allow(None)));
    assert_eq!(
        connect_verdict(br#"{"error":"banned","status":451}"#),
        Ok(ConnectVerdict::Refuse {
            status: 451,
            reason: "banned".into()
        })
    );
    // A status that is not an error status becomes 403.
    assert_eq!(
        connect_verdict(br#"{"error":"no","status":200}"#),
        Ok(ConnectVerdict::Refuse {
            status: 403,
            reason: "no".into()
        })
    );
    assert!(connect_verdict(br#"{"user":""}"#).is_err());
    assert!(connect_verdict(br#"{"usr":"typo"}"#).is_err());
    assert!(connect_verdict(b"not json").is_err());
}

#[test]
fn verdicts_allow_with_data_or_refuse() {
    assert_eq!(verdict(b"{}"), Ok(Verdict::Allow(None)));
    assert_eq!(
        verdict(br#"{"data":{"x":1}}"#),
        Ok(Verdict::Allow(Some(json!({"x":1}))))
    );
    assert_eq!(
        verdict(br#"{"error":"muted"}"#),
        Ok(Verdict::Refuse("muted".into()))
    );
    assert_eq!(verdict(br#"{"error":null}"#), Ok(Verdict::Allow(None)));
    assert!(verdict(br#"{"error":5}"#).is_err());
    assert!(verdict(b"[1]").is_err());
}
