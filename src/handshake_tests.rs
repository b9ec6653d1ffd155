//! Unit tests of the upgrade decision: request heads as bytes in, responses as bytes out.

use std::sync::Arc;

use super::*;
use crate::http::{parse_head, HeadParse, RoutePattern};
use crate::registry::{ConnId, ShardId};
use crate::upgrade::Rejection;

#[derive(Clone)]
struct TestRoute {
    protocols: Vec<Arc<str>>,
    deflate: bool,
}

impl RouteOffer for TestRoute {
    fn subprotocols(&self) -> &[Arc<str>] {
        &self.protocols
    }
    fn offers_deflate(&self) -> bool {
        self.deflate
    }
}

/// The key and accept value of RFC 6455 §1.3.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn head(bytes: &str) -> RequestHead {
    match parse_head(bytes.as_bytes(), 8192) {
        Ok(HeadParse::Complete { head, .. }) => head,
        other => panic!("not a complete head: {other:?}"),
    }
}

fn upgrade(path: &str, extra: &str) -> RequestHead {
    head(&format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ))
}

fn routes(protocols: &[&str], deflate: bool) -> Router<TestRoute> {
    let mut r = Router::new();
    let route = TestRoute {
        protocols: protocols.iter().map(|p| Arc::from(*p)).collect(),
        deflate,
    };
    r.add(RoutePattern::parse("/ws/:id").unwrap(), route);
    r
}

const OPEN: Admission = Admission {
    draining: false,
    connections: 0,
    max_connections: None,
    unix_now: NOW,
    refusals_exhausted: false,
};

fn run(
    head: RequestHead,
    router: &Router<TestRoute>,
    admission: Admission,
    gate: Option<&Gate>,
    registry: &Arc<Registry>,
) -> Result<Accepted<TestRoute>, Refusal> {
    decide(
        head,
        "127.0.0.1:9".parse().unwrap(),
        router,
        admission,
        None,
        gate,
        registry,
    )
}

fn decide_plain(head: RequestHead, admission: Admission) -> Result<Accepted<TestRoute>, Refusal> {
    run(head, &routes(&[], false), admission, None, &registry())
}

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(4))
}

fn refused(result: Result<Accepted<TestRoute>, Refusal>) -> Refusal {
    match result {
        Ok(_) => panic!("accepted"),
        Err(r) => r,
    }
}

/// Splits a response into its head and body, checking that `Content-Length` is the body's.
fn checked_body(response: &[u8]) -> (String, String) {
    let text = std::str::from_utf8(response).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a blank line ends the head");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length of {text:?}");
    (head.to_string(), body.to_string())
}

#[test]
fn accepts_with_the_rfc_accept_key_byte_for_byte() {
    let accepted = decide_plain(upgrade("/ws/a", ""), OPEN).unwrap_or_else(|r| panic!("{r:?}"));
    let expected = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
    );
    assert_eq!(String::from_utf8(accepted.response).unwrap(), expected);
    assert_eq!(accepted.request.params.get("id"), Some("a"));
    assert!(accepted.request.extras.is_none());
    assert!(accepted.name.is_none());
}

#[test]
fn refuses_an_unknown_path_before_anything_else() {
    let draining = Admission {
        draining: true,
        ..OPEN
    };
    let r = refused(decide_plain(upgrade("/other", ""), draining));
    assert_eq!(r.status, 404);
    let (head, body) = checked_body(&r.response);
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert_eq!(body, "not found");
}

#[test]
fn refuses_a_plain_request_with_426_naming_websocket() {
    let r = refused(decide_plain(
        head("GET /ws/a HTTP/1.1\r\nHost: x\r\n\r\n"),
        OPEN,
    ));
    assert_eq!(r.status, 426);
    let (head, _) = checked_body(&r.response);
    assert!(head.contains("\r\nUpgrade: websocket"), "{head}");
}

#[test]
fn refuses_another_version_with_426_naming_13() {
    let h = head(&format!(
        "GET /ws/a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    ));
    let r = refused(decide_plain(h, OPEN));
    assert_eq!(r.status, 426);
    let (head, _) = checked_body(&r.response);
    assert!(head.contains("\r\nSec-WebSocket-Version: 13"), "{head}");
}

#[test]
fn refuses_a_malformed_upgrade_with_400_and_its_reason() {
    let h = head(&format!(
        "POST /ws/a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ));
    let r = refused(decide_plain(h, OPEN));
    assert_eq!(r.status, 400);
    assert_eq!(checked_body(&r.response).1, "method must be GET");
}

#[test]
fn a_draining_server_answers_503() {
    let draining = Admission {
        draining: true,
        ..OPEN
    };
    let r = refused(decide_plain(upgrade("/ws/a", ""), draining));
    assert_eq!(r.status, 503);
    assert_eq!(checked_body(&r.response).1, "server is draining");
}

#[test]
fn the_connection_limit_answers_503_at_the_limit_only() {
    let at = |connections| Admission {
        connections,
        max_connections: Some(2),
        ..OPEN
    };
    assert!(decide_plain(upgrade("/ws/a", ""), at(1)).is_ok());
    let r = refused(decide_plain(upgrade("/ws/a", ""), at(2)));
    assert_eq!(r.status, 503);
    assert_eq!(checked_body(&r.response).1, "too many connections");
}

#[test]
fn picks_the_routes_first_choice_among_the_offered_subprotocols() {
    let router = routes(&["v2", "v1"], false);
    let h = upgrade("/ws/a", "Sec-WebSocket-Protocol: v1, v2\r\n");
    let accepted = run(h, &router, OPEN, None, &registry()).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(accepted.request.protocol(), Some("v2"));
    let text = String::from_utf8(accepted.response).unwrap();
    assert!(
        text.contains("\r\nSec-WebSocket-Protocol: v2\r\n"),
        "{text}"
    );
}

#[test]
fn agrees_deflate_only_where_the_route_offers_it() {
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    for on in [false, true] {
        let router = routes(&[], on);
        let accepted = run(upgrade("/ws/a", offer), &router, OPEN, None, &registry())
            .unwrap_or_else(|r| panic!("{r:?}"));
        let text = String::from_utf8(accepted.response).unwrap();
        assert_eq!(accepted.request.deflate.is_some(), on);
        assert_eq!(
            text.contains("Sec-WebSocket-Extensions: permessage-deflate"),
            on
        );
    }
}

#[test]
fn the_gate_sees_the_request_and_its_refusal_is_the_answer() {
    let gate: Gate = Arc::new(|req: &mut UpgradeRequest| {
        if req.query("token") == Some("ok") {
            req.set_local("user", 7u32);
            Ok(())
        } else {
            Err(Rejection::new(401, "no token").with_header("WWW-Authenticate", "Bearer"))
        }
    });
    let router = routes(&[], false);
    let r = refused(run(
        upgrade("/ws/a", ""),
        &router,
        OPEN,
        Some(&gate),
        &registry(),
    ));
    assert_eq!(r.status, 401);
    let (head, body) = checked_body(&r.response);
    assert!(head.contains("\r\nWWW-Authenticate: Bearer"), "{head}");
    assert_eq!(body, "no token");

    let accepted = run(
        upgrade("/ws/a?token=ok", ""),
        &router,
        OPEN,
        Some(&gate),
        &registry(),
    )
    .unwrap_or_else(|r| panic!("{r:?}"));
    let extras = accepted.request.extras.expect("the gate's locals are kept");
    assert_eq!(extras.locals["user"].downcast_ref::<u32>(), Some(&7));
}

#[test]
fn a_gate_that_panics_answers_500() {
    let gate: Gate = Arc::new(|_: &mut UpgradeRequest| panic!("gate bug"));
    let router = routes(&[], false);
    let r = refused(run(
        upgrade("/ws/a", ""),
        &router,
        OPEN,
        Some(&gate),
        &registry(),
    ));
    assert_eq!(r.status, 500);
    checked_body(&r.response);
}

#[test]
fn a_name_the_gate_gives_is_refused_409_when_taken() {
    let gate: Gate = Arc::new(|req: &mut UpgradeRequest| {
        let id = req.param("id").unwrap_or_default().to_string();
        req.set_uuid(id);
        Ok(())
    });
    let router = routes(&[], false);
    let registry = registry();
    let id = ConnId {
        shard: ShardId(0),
        slot: 0,
        generation: 1,
    };
    assert!(registry.insert(Arc::from("alice"), id));
    let r = refused(run(
        upgrade("/ws/alice", ""),
        &router,
        OPEN,
        Some(&gate),
        &registry,
    ));
    assert_eq!(r.status, 409);
    checked_body(&r.response);
    let accepted = run(
        upgrade("/ws/bob", ""),
        &router,
        OPEN,
        Some(&gate),
        &registry,
    )
    .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(accepted.name.as_deref(), Some("bob"));
}

#[test]
fn every_refusal_outside_the_ladder_has_a_true_content_length() {
    let too_large = Refusal::bad_head(&HttpError::TooLarge);
    assert_eq!(too_large.status, 431);
    let malformed = Refusal::bad_head(&HttpError::Malformed("bad".into()));
    assert_eq!(malformed.status, 400);
    let tls = Refusal::plain_http_on_tls();
    assert_eq!(
        checked_body(&tls.response).1,
        "this port speaks TLS: connect with wss"
    );
    for r in [too_large, malformed, tls, Refusal::name_taken()] {
        checked_body(&r.response);
    }
}

const NOW: u64 = 1_700_000_000;

fn token(sub: &str, exp: u64) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": exp, "subscribe": ["a.*"] });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap()
}

fn decide_authed(head: RequestHead, gate: Option<&Gate>) -> Result<Accepted<TestRoute>, Refusal> {
    let verifier = crate::auth::Verifier::hmac(b"secret").unwrap();
    decide(
        head,
        "127.0.0.1:9".parse().unwrap(),
        &routes(&[], false),
        OPEN,
        Some(&verifier),
        gate,
        &registry(),
    )
}

#[test]
fn a_token_in_the_header_or_the_query_lets_the_client_in_with_its_identity() {
    let t = token("alice", NOW + 60);
    for head in [
        upgrade("/ws/x", &format!("Authorization: Bearer {t}\r\n")),
        upgrade("/ws/x", &format!("authorization: bEaReR {t}\r\n")),
        upgrade(&format!("/ws/x?token={t}"), ""),
    ] {
        let accepted = decide_authed(head, None).unwrap();
        let identity = accepted.request.identity().unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.subscribe, ["a.*"]);
        assert!(String::from_utf8_lossy(&accepted.response).starts_with("HTTP/1.1 101"));
    }
}

#[test]
fn a_token_carried_in_a_subprotocol_lets_a_browser_in_and_corecast_is_named() {
    let t = token("alice", NOW + 60);
    let head = upgrade(
        "/ws/x",
        &format!("Sec-WebSocket-Protocol: corecast, corecast.token.{t}\r\n"),
    );
    let accepted = decide_authed(head, None).unwrap();
    assert_eq!(accepted.request.identity().unwrap().user, "alice");
    let response = String::from_utf8_lossy(&accepted.response).to_string();
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    // The marker is named, never the token.
    assert!(
        response.contains("Sec-WebSocket-Protocol: corecast\r\n"),
        "{response}"
    );
    assert!(!response.contains(&t), "{response}");
    // Without the marker offered, no subprotocol is named (nothing offered fits).
    let head = upgrade(
        "/ws/x",
        &format!("Sec-WebSocket-Protocol: corecast.token.{t}\r\n"),
    );
    let accepted = decide_authed(head, None).unwrap();
    let response = String::from_utf8_lossy(&accepted.response).to_string();
    assert!(!response.contains("Sec-WebSocket-Protocol"), "{response}");
}

#[test]
fn a_missing_or_refused_token_gets_401_with_its_cause_and_never_reaches_the_gate() {
    let gate: Gate = Arc::new(|_| panic!("the gate runs after authentication"));
    let cases = [
        (upgrade("/ws/x", ""), AuthRefusal::Missing),
        (
            upgrade("/ws/x", "Authorization: Basic abc\r\n"),
            AuthRefusal::Missing,
        ),
        (upgrade("/ws/x?token=abc", ""), AuthRefusal::Malformed),
        (
            upgrade(&format!("/ws/x?token={}", token("alice", NOW - 60)), ""),
            AuthRefusal::Expired,
        ),
    ];
    for (head, cause) in cases {
        let r = refused(decide_authed(head, Some(&gate)));
        assert_eq!((r.status, r.auth), (401, Some(cause)));
        let text = String::from_utf8_lossy(&r.response).to_string();
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        assert!(text.contains("WWW-Authenticate: Bearer"), "{text}");
        assert!(text.ends_with(cause.reason()), "{text}");
    }
    // Without a verifier, no token is asked for.
    assert!(decide_plain(upgrade("/ws/x", ""), OPEN).is_ok());
}

#[test]
fn the_gate_sees_the_user_and_may_refuse_further() {
    let gate: Gate = Arc::new(|req| {
        if req.param("id") != req.user() {
            return Err(Rejection::new(403, "not your id"));
        }
        Ok(())
    });
    let t = token("alice", NOW + 60);
    let header = format!("Authorization: Bearer {t}\r\n");
    assert!(decide_authed(upgrade("/ws/alice", &header), Some(&gate)).is_ok());
    let r = refused(decide_authed(upgrade("/ws/bob", &header), Some(&gate)));
    assert_eq!((r.status, r.auth), (403, None));
}
