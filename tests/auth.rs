//! Client tokens at the upgrade (`Builder::authenticate`): who gets 401, who gets in, and what
//! the connection and the gate know of its user; then on the live connection: expiry, the
//! grace, and refresh (`Websocket::refresh_token`).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use corecast::{event, MessageType, Rejection, Server, Verifier};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"the server's secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_with(secret: &[u8], claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn token(sub: &str) -> String {
    token_with(
        SECRET,
        json!({ "sub": sub, "exp": now() + 600, "subscribe": ["scores.*"] }),
    )
}

/// A server that authenticates, whose route reports each connection's user and grants, and
/// whose gate refuses `/ws/<id>` to anyone but user `<id>`.
/// What the route saw of each connection: its user and its subscribe grants.
type Reported = (Option<String>, Vec<String>);

fn server() -> (TestServer, mpsc::Receiver<Reported>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let builder = Server::builder()
        .authenticate(Verifier::hmac(SECRET).unwrap())
        .route("/ws", move |kws| {
            let grants = kws
                .identity()
                .map(|i| i.subscribe.clone())
                .unwrap_or_default();
            let _ = tx
                .lock()
                .unwrap()
                .send((kws.user().map(str::to_string), grants));
        })
        .route("/ws/:id", |_| {})
        .before_upgrade(|req| {
            if let Some(id) = req.param("id").map(str::to_string) {
                if req.user() != Some(id.as_str()) {
                    return Err(Rejection::new(403, "not your id"));
                }
                req.set_uuid(id);
            }
            Ok(())
        });
    (TestServer::start(builder), rx)
}

/// The status and body a raw upgrade request with `headers` gets.
fn answer(ts: &TestServer, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(ts.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = Vec::new();
    if status != 101 {
        let _ = std::io::Read::read_to_end(&mut stream, &mut body);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn refusals(server: &Server, cause: &str) -> u64 {
    let m = server.metrics();
    m.auth_refusals
        .iter()
        .find(|(c, _)| *c == cause)
        .map_or(0, |r| r.1)
}

#[test]
fn no_token_or_a_forged_one_gets_401_counted_by_cause() {
    let (ts, rx) = server();
    assert_eq!(answer(&ts, "/ws", ""), (401, "token required".into()));
    let forged = token_with(b"not the secret", json!({ "sub": "alice" }));
    let (status, body) = answer(&ts, &format!("/ws?token={forged}"), "");
    assert_eq!((status, body.as_str()), (401, "bad token signature"));
    let header = format!("Authorization: Bearer {forged}\r\n");
    assert_eq!(answer(&ts, "/ws", &header).0, 401);
    let expired = token_with(SECRET, json!({ "sub": "alice", "exp": now() - 600 }));
    let (status, body) = answer(&ts, &format!("/ws?token={expired}"), "");
    assert_eq!((status, body.as_str()), (401, "token expired"));
    assert_eq!(answer(&ts, "/ws?token=nonsense", "").0, 401);
    assert_eq!(refusals(&ts.server, "missing"), 1);
    assert_eq!(refusals(&ts.server, "bad_signature"), 2);
    assert_eq!(refusals(&ts.server, "expired"), 1);
    assert_eq!(refusals(&ts.server, "malformed"), 1);
    let text = ts.server.metrics().to_prometheus();
    assert!(text.contains("corecast_auth_refusals_total{cause=\"bad_signature\"} 2\n"));
    assert!(text.contains("corecast_upgrade_rejections_total{status=\"401\"} 5\n"));
    // No connection was made, and the route never ran.
    assert_eq!(ts.server.connections(), 0);
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_good_token_in_the_query_or_the_header_lets_the_user_in() {
    let (ts, rx) = server();
    // Browser style: the query string.
    let _browser = ts.client(&format!("/ws?token={}", token("alice")));
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        (Some("alice".into()), vec!["scores.*".to_string()])
    );
    let header = format!("Authorization: bearer {}\r\n", token("bob"));
    let (_raw, head) = RawClient::connect_with(ts.addr(), "/ws", &header);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(rx.recv_timeout(WAIT).unwrap().0.as_deref(), Some("bob"));
    ts.wait_connections(2);
}

#[test]
fn the_gate_runs_after_the_token_and_sees_its_user() {
    let (ts, _rx) = server();
    let bob = format!("Authorization: Bearer {}\r\n", token("bob"));
    let (status, body) = answer(&ts, "/ws/alice", &bob);
    assert_eq!((status, body.as_str()), (403, "not your id"));
    let (_bob, head) = RawClient::connect_with(ts.addr(), "/ws/bob", &bob);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    wait_until(|| ts.server.is_connected("bob"), "bob connected as /ws/bob");
    // Without a token the gate is not reached: 401, not 403.
    assert_eq!(answer(&ts, "/ws/alice", "").0, 401);
}

#[test]
fn without_authenticate_clients_are_anonymous() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let ts = TestServer::start(Server::builder().route("/ws", move |kws| {
        let _ = tx.lock().unwrap().send(kws.user().map(str::to_string));
    }));
    let _c = ts.client(&format!("/ws?token={}", token("alice")));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), None);
}

/// A server with a grace of 1 s whose connections answer `refresh:<jwt>` with `ok` or
/// `err:<error>`, `grants` with their subscribe grants, anything else with itself; and say
/// `expiring:<seconds left>` when their token expires.
fn refresh_server() -> TestServer {
    let verifier = Verifier::hmac(SECRET)
        .unwrap()
        .refresh_grace(Duration::from_secs(1));
    let builder = Server::builder()
        .authenticate(verifier)
        .route("/ws", |kws| {
            kws.on(event::MESSAGE, |ep| {
                let kws = ep.kws();
                let text = String::from_utf8_lossy(ep.data()).into_owned();
                let reply = if let Some(jwt) = text.strip_prefix("refresh:") {
                    match kws.refresh_token(jwt) {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("err:{e}"),
                    }
                } else if text == "grants" {
                    kws.identity().unwrap().subscribe.join(",")
                } else {
                    text
                };
                kws.emit(reply, MessageType::Text);
            });
            kws.on(event::TOKEN_EXPIRING, |ep| {
                let left = String::from_utf8_lossy(ep.data()).into_owned();
                ep.kws().emit(format!("expiring:{left}"), MessageType::Text);
            });
        });
    TestServer::start(builder)
}

fn token_until(sub: &str, exp: u64, subscribe: &[&str]) -> String {
    token_with(
        SECRET,
        json!({ "sub": sub, "exp": exp, "subscribe": subscribe }),
    )
}

#[test]
fn an_expired_token_is_told_then_closed_with_1008_past_the_grace() {
    let ts = refresh_server();
    let names = [
        event::TOKEN_EXPIRING,
        event::CLOSE,
        event::DISCONNECT,
        event::ERROR,
    ];
    let rec = Recorder::attach(&ts.server, &names);
    let mut c = ts.client(&format!(
        "/ws?token={}",
        token_until("alice", now() + 2, &[])
    ));
    // At `exp`: told, with the grace left (1 s, or 0 on a slow machine).
    let told = c.recv_text();
    assert!(told.starts_with("expiring:"), "{told}");
    let left: u64 = told["expiring:".len()..].parse().unwrap();
    assert!(left <= 1, "{told}");
    // Past the grace: 1008. The read is bounded by the client's read timeout (`WAIT`).
    assert_eq!(c.recv_close(), (1008, "token expired".into()));
    // A close of the server's, as in docs/behaviour.md's teardown table: no error.
    let told = rec.wait("token_expiring", |s| s.name == event::TOKEN_EXPIRING);
    rec.expect_sequence(&told.uuid, &["token_expiring", "close", "disconnect"]);
    ts.wait_connections(0);
}

#[test]
fn a_refresh_before_the_deadline_keeps_the_connection_with_the_new_grants() {
    let ts = refresh_server();
    let exp = now() + 2;
    let mut c = ts.client(&format!("/ws?token={}", token_until("alice", exp, &["a"])));
    c.send_text(&format!(
        "refresh:{}",
        token_until("alice", now() + 600, &["b.*"])
    ));
    assert_eq!(c.recv_text(), "ok");
    assert_eq!(
        {
            c.send_text("grants");
            c.recv_text()
        },
        "b.*"
    );
    // Until the old token's deadline (exp plus the 1 s grace) has passed, round trips (which
    // also keep the connection from idling out): never told, never closed.
    wait_until(
        || {
            c.send_text("tick");
            assert_eq!(c.recv_text(), "tick");
            now() > exp + 1
        },
        "the old token's deadline to pass",
    );
    c.send_text("still here");
    assert_eq!(c.recv_text(), "still here");
    assert_eq!(ts.server.connections(), 1);
}

#[test]
fn a_refresh_for_another_user_closes_with_1008() {
    let ts = refresh_server();
    let mut c = ts.client(&format!("/ws?token={}", token("alice")));
    c.send_text(&format!("refresh:{}", token("mallory")));
    assert_eq!(c.recv_close(), (1008, "token for another user".into()));
    ts.wait_connections(0);
}

#[test]
fn a_bad_refresh_token_is_an_error_and_changes_nothing() {
    let ts = refresh_server();
    let mut c = ts.client(&format!("/ws?token={}", token("alice")));
    let forged = token_with(
        b"not the secret",
        json!({ "sub": "alice", "subscribe": ["*"] }),
    );
    c.send_text(&format!("refresh:{forged}"));
    assert_eq!(c.recv_text(), "err:bad token signature");
    let expired = token_with(
        SECRET,
        json!({ "sub": "alice", "exp": now() - 600, "subscribe": ["*"] }),
    );
    c.send_text(&format!("refresh:{expired}"));
    assert_eq!(c.recv_text(), "err:token expired");
    c.send_text("refresh:nonsense");
    assert_eq!(c.recv_text(), "err:malformed token");
    // The grants are the upgrade's, and the connection is open.
    c.send_text("grants");
    assert_eq!(c.recv_text(), "scores.*");
    assert_eq!(ts.server.connections(), 1);
}

#[test]
fn an_address_past_its_refusals_gets_429_without_a_token_check() {
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .authenticate(Verifier::hmac(SECRET).unwrap().refusals_per_address(3))
            .route("/ws", |_| {}),
    );
    let forged = token_with(b"not the secret", json!({ "sub": "alice" }));
    for _ in 0..3 {
        assert_eq!(answer(&ts, &format!("/ws?token={forged}"), "").0, 401);
    }
    // The fourth is not checked: 429, and it is not counted as a token refusal.
    let (status, body) = answer(&ts, &format!("/ws?token={forged}"), "");
    assert_eq!((status, body.as_str()), (429, "too many refused tokens"));
    assert_eq!(refusals(&ts.server, "bad_signature"), 3);
    // Clients behind the same address wait too, until a refusal's worth of time passed.
    assert_eq!(
        answer(&ts, &format!("/ws?token={}", token("alice")), "").0,
        429
    );
    let text = ts.server.metrics().to_prometheus();
    assert!(
        text.contains("corecast_upgrade_rejections_total{status=\"429\"} 2\n"),
        "{text}"
    );
    wait_until(
        || answer(&ts, &format!("/ws?token={}", token("alice")), "").0 == 101,
        "a refusal to come back (3 a second)",
    );
}
