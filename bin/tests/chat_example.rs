//! `examples/chat_backend.rs` beside the real binary in `--mode pubsub`: rooms through its
//! subscribe and publish hooks, chat lines by webhook and back through the HTTP API, `/who`
//! to the asker alone, every call carrying the backend secret.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

#[path = "../../examples/chat_backend.rs"]
#[allow(dead_code)]
mod chat_backend;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "chat example secret";

/// Reads `c`'s messages until one satisfies `wanted`; returns it and those before it. Each
/// read is bounded, and so is the whole wait.
fn recv_until(c: &mut Client, what: &str, wanted: impl Fn(&str) -> bool) -> (String, Vec<String>) {
    let end = Instant::now() + WAIT;
    let mut before = Vec::new();
    loop {
        assert!(
            Instant::now() < end,
            "no {what} within {WAIT:?}; got {before:?}"
        );
        let text = c.recv_text();
        if wanted(&text) {
            return (text, before);
        }
        before.push(text);
    }
}

/// The next pubsub answer that is JSON (skipping the room's plain text lines).
fn recv_answer(c: &mut Client) -> Value {
    let (text, _) = recv_until(c, "JSON answer", |t| t.starts_with('{'));
    serde_json::from_str(&text).unwrap()
}

fn say(c: &mut Client, room: &str, line: &str) {
    c.send_text(&json!({ "publish": format!("chat.{room}"), "data": line }).to_string());
}

#[test]
fn the_chat_backend_keeps_rooms_relays_lines_and_answers_who_to_the_asker_alone() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    let url = |path: &str| format!("http://{backend}{path}");
    let secret = std::env::temp_dir().join(format!("corecast-chat-{}.secret", std::process::id()));
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--webhook",
        &url("/events"),
        "--webhook-events",
        "connect,disconnect,message",
        "--hook-subscribe",
        &url("/subscribe"),
        "--hook-publish",
        &url("/publish"),
        "--backend-secret-file",
        secret.to_str().unwrap(),
    ]);
    let chat = chat_backend::Chat::new(bin.api.unwrap(), None, Some(SECRET.into()));
    std::thread::spawn(move || chat_backend::serve(listener, Arc::new(chat)));

    let mut alice = bin.client("/ws/alice");
    alice.send_text(r#"{"subscribe":"room.lobby"}"#);
    assert_eq!(
        recv_answer(&mut alice),
        json!({ "subscribed": "room.lobby" })
    );
    alice.send_text(r#"{"subscribe":"secret"}"#);
    assert_eq!(
        recv_answer(&mut alice),
        json!({ "subscribe": "secret", "error": "rooms only: room.<name>" })
    );

    let mut bob = bin.client("/ws/bob");
    bob.send_text(r#"{"subscribe":"room.lobby"}"#);
    assert_eq!(recv_answer(&mut bob), json!({ "subscribed": "room.lobby" }));
    bob.send_text(r#"{"subscribe":"room.admins"}"#);
    assert_eq!(
        recv_answer(&mut bob),
        json!({ "subscribe": "room.admins", "error": "admins only" })
    );
    // Straight into a room, past the backend: refused by the publish hook.
    bob.send_text(r#"{"publish":"room.lobby","data":"forged"}"#);
    assert_eq!(
        recv_answer(&mut bob),
        json!({ "publish": "room.lobby", "error": "say it on chat.<room>" })
    );

    // alice's line reaches bob through the webhook and the API. It comes after alice's connect
    // event on her shard's webhook, so the backend knows her from now on.
    say(&mut alice, "lobby", "hello");
    let (_, before) = recv_until(&mut bob, "alice's line", |t| t == "alice: hello");
    assert!(before.iter().all(|t| t.ends_with(" joined")), "{before:?}");

    // "/who" is answered to bob alone. bob's next line comes after it on his shard's webhook,
    // and the backend answers each event before the next: so by the time alice has bob's next
    // line, she would have had the answer, had it been sent to her too.
    say(&mut bob, "lobby", "/who");
    let (who, _) = recv_until(&mut bob, "the /who answer", |t| t.starts_with("online: "));
    assert_eq!(who, "online: alice, bob");
    say(&mut bob, "lobby", "bye");
    let (_, before) = recv_until(&mut alice, "bob's line", |t| t == "bob: bye");
    assert!(
        !before.iter().any(|t| t.starts_with("online: ")),
        "{before:?}"
    );
    assert!(before.contains(&"alice: hello".to_string()), "{before:?}");

    // bob leaves: the lobby hears it.
    bob.close(1000, "");
    recv_until(&mut alice, "bob's leaving", |t| t == "bob left");

    // The calls above carried the secret; one without it is refused.
    let request = br#"{"uuid":"eve","user":null,"path":"/ws/eve","topic":"room.lobby"}"#;
    let (status, _) = http_request(backend, "POST", "/subscribe", &[], request);
    assert_eq!(status, 401);
    let wrong = ["Authorization: Bearer guess"];
    let (status, _) = http_request(backend, "POST", "/subscribe", &wrong, request);
    assert_eq!(status, 401);
    let _ = std::fs::remove_file(&secret);
}
