//! The real `corecast` binary with client tokens: the `--jwt-*` flags, 401 and 403 at the
//! upgrade, the grants in pubsub mode, the user topic, refresh and expiry in pubsub mode, and
//! the warning when tokens are off.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use support::*;

const SECRET: &str = "binary test secret";

fn secret_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("corecast-auth-{}.secret", std::process::id()));
    // One trailing newline, as an editor leaves it: not part of the secret.
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

/// The binary verifying client tokens with `SECRET`, and `extra` flags.
fn with_secret(extra: &[&str]) -> Bin {
    let path = secret_file();
    let mut args = vec!["--jwt-secret-file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Bin::start(&args)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(sub: &str, subscribe: &[&str], publish: &[&str]) -> String {
    token_until(sub, now() + 600, subscribe, publish)
}

fn token_until(sub: &str, exp: u64, subscribe: &[&str], publish: &[&str]) -> String {
    let claims = json!({ "sub": sub, "exp": exp, "subscribe": subscribe, "publish": publish });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::default(), &claims, &key).unwrap()
}

fn recv_json(c: &mut Client) -> serde_json::Value {
    serde_json::from_str(&c.recv_text()).unwrap()
}

#[test]
fn without_a_key_clients_are_anonymous_and_one_line_says_so() {
    let bin = Bin::start(&[]);
    let warnings = bin
        .log
        .iter()
        .filter(|l| l.contains("clients are not authenticated"))
        .count();
    assert_eq!(warnings, 1, "{:#?}", bin.log);
    assert_eq!(upgrade_status(bin.ws, "/ws"), 101);
}

#[test]
fn both_key_flags_exit_2_with_one_line() {
    let path = secret_file();
    let path = path.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .args(["--jwt-secret-file", path, "--jwt-public-key-file", path])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--jwt-secret-file and --jwt-public-key-file"),
        "{err}"
    );
    // A key file that is not there: one line too, from the environment as well.
    let out = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .env("CORECAST_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/key.pem"));
}

#[test]
fn tokens_decide_who_connects_as_whom() {
    let bin = with_secret(&[]);
    assert!(!bin.log.iter().any(|l| l.contains("not authenticated")));
    assert_eq!(upgrade_status(bin.ws, "/ws"), 401);
    let forged = encode(
        &Header::default(),
        &json!({ "sub": "alice" }),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    assert_eq!(upgrade_status(bin.ws, &format!("/ws?token={forged}")), 401);
    let bob = token("bob", &[], &[]);
    assert_eq!(
        upgrade_status(bin.ws, &format!("/ws/alice?token={bob}")),
        403
    );
    let alice = token("alice", &[], &[]);
    let _alice = Client::connect(bin.ws, &format!("/ws/alice?token={alice}"));
    // The id is the user's: a second connection on it is 409, as ever.
    assert_eq!(
        upgrade_status(bin.ws, &format!("/ws/alice?token={alice}")),
        409
    );
    // Header style, on /ws: a random UUID, the same user.
    let (_raw, head) =
        RawClient::connect_with(bin.ws, "/ws", &format!("Authorization: Bearer {alice}\r\n"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Browser style: the token in a subprotocol, `corecast` named in the answer.
    let carried = format!("Sec-WebSocket-Protocol: corecast, corecast.token.{alice}\r\n");
    let (_raw, head) = RawClient::connect_with(bin.ws, "/ws", &carried);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Protocol: corecast\r\n"),
        "{head}"
    );
    assert!(!head.contains(&alice), "{head}");
    let carried = format!("Sec-WebSocket-Protocol: corecast, corecast.token.{forged}\r\n");
    let status = http_status(
        bin.ws,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{carried}\r\n"
        )
    );
    assert_eq!(status, 401, "a forged token in a subprotocol");
}

#[test]
fn pubsub_follows_the_grants_and_user_topics() {
    let bin = with_secret(&["--mode", "pubsub"]);
    let alice = token("alice", &["scores.*"], &["chat"]);
    let bob = token("bob", &["*"], &["scores.*"]);
    // At connect: granted topics are subscribed, the others answered with an error.
    let mut a = Client::connect(bin.ws, &format!("/ws?token={alice}&topics=scores.nba,news"));
    assert_eq!(recv_json(&mut a), json!({ "subscribed": "scores.nba" }));
    assert_eq!(
        recv_json(&mut a),
        json!({ "subscribe": "news", "error": "not permitted" })
    );
    let mut b = Client::connect(bin.ws, &format!("/ws?token={bob}"));
    b.send_text(r#"{"subscribe":"chat"}"#);
    assert_eq!(recv_json(&mut b), json!({ "subscribed": "chat" }));
    // Another user's topic, whatever the grants (bob holds `*`).
    b.send_text(r#"{"subscribe":"inbox#alice"}"#);
    assert_eq!(
        recv_json(&mut b),
        json!({ "subscribe": "inbox#alice", "error": "not permitted" })
    );
    a.send_text(r#"{"subscribe":"inbox#alice"}"#);
    assert_eq!(recv_json(&mut a), json!({ "subscribed": "inbox#alice" }));
    // Publish outside the grant: refused, and nothing reaches the subscriber.
    a.send_text(r#"{"publish":"scores.nba","data":"forged"}"#);
    assert_eq!(
        recv_json(&mut a),
        json!({ "publish": "scores.nba", "error": "not permitted" })
    );
    a.send_text(r#"{"publish":"chat","data":"hi bob"}"#);
    assert_eq!(b.recv_text(), "hi bob");
    b.send_text(r#"{"publish":"scores.nba","data":"3-2"}"#);
    assert_eq!(a.recv_text(), "3-2");
    // The backend reaches every connection of a user through `user#<user>`.
    let mut a2 = Client::connect(bin.ws, &format!("/ws?token={alice}"));
    wait_until(
        || {
            let (_, body) = api_get(bin.api.unwrap(), "/api/topics");
            body.contains("\"user#alice\"") && body.contains("\"subscribers\":2")
        },
        "both of alice's connections on user#alice",
    );
    let status = api_post(bin.api.unwrap(), "/api/publish/user%23alice", "for alice");
    assert_eq!(status, 200);
    assert_eq!(a.recv_text(), "for alice");
    assert_eq!(a2.recv_text(), "for alice");
}

#[test]
fn pubsub_refreshes_tokens_and_closes_expired_connections_with_1008() {
    let bin = with_secret(&["--mode", "pubsub", "--jwt-refresh-grace", "1s"]);
    let mut a = Client::connect(bin.ws, &format!("/ws?token={}", token("alice", &[], &[])));
    a.send_text(r#"{"subscribe":"news"}"#);
    assert_eq!(
        recv_json(&mut a),
        json!({ "subscribe": "news", "error": "not permitted" })
    );
    // A fresh token with more grants: taken, and its grants hold from then on.
    let fresh = token("alice", &["news"], &[]);
    a.send_text(&json!({ "refresh": fresh }).to_string());
    assert_eq!(recv_json(&mut a), json!({ "refreshed": true }));
    a.send_text(r#"{"subscribe":"news"}"#);
    assert_eq!(recv_json(&mut a), json!({ "subscribed": "news" }));
    // A bad one: an error, and nothing changes.
    let forged = encode(
        &Header::default(),
        &json!({ "sub": "alice" }),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    a.send_text(&json!({ "refresh": forged }).to_string());
    assert_eq!(
        recv_json(&mut a),
        json!({ "refresh": null, "error": "bad token signature" })
    );
    // A token about to expire: the notice at exp, then 1008 past the 1 s grace.
    let soon = token_until("bob", now() + 1, &[], &[]);
    let mut b = Client::connect(bin.ws, &format!("/ws?token={soon}"));
    let notice = recv_json(&mut b);
    assert!(
        notice["expiring"].as_u64().is_some_and(|s| s <= 1),
        "{notice}"
    );
    assert_eq!(b.recv_close(), (1008, "token expired".into()));
    // Alice's connection is still served.
    a.send_text(r#"{"unsubscribe":"news"}"#);
    assert_eq!(recv_json(&mut a), json!({ "unsubscribed": "news" }));
}

fn api_post(addr: SocketAddr, path: &str, body: &str) -> u16 {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_status(addr, &req)
}

fn api_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], b"")
}
