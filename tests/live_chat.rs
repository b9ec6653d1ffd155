//! `examples/live_chat.rs` spoken to with a plain WebSocket client, as its page's JavaScript
//! client speaks to it: the page and tokens over HTTP, rooms with positions, lines stamped with
//! the token's user and back to their sender too, refusals, recovery after a reconnect,
//! in-order answers, token refresh; the token in a subprotocol and `?envelope=1`, as the
//! client connects.
//! The same chat in headless Chromium is `clients/js/test/browser/live-chat.test.js`.

mod common;

#[path = "../examples/live_chat.rs"]
#[allow(dead_code)]
mod live_chat;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `GET path` on the chat's HTTP server, sent as written (no normalising): status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: chat\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status.unwrap_or(0), body.to_string())
}

fn token(chat: &live_chat::Chat, name: &str) -> String {
    let (status, body) = get(chat.page, &format!("/token?name={name}"));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    answer["token"].as_str().unwrap().to_string()
}

fn join(chat: &live_chat::Chat, name: &str) -> Client {
    Client::connect(chat.ws, &format!("/chat?token={}", token(chat, name)))
}

fn next(c: &mut Client) -> Value {
    let text = c.recv_text();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn send(c: &mut Client, request: Value) {
    c.send_text(&request.to_string());
}

/// A line as subscribers get it: the envelope of the room's history.
fn line(topic: &str, offset: u64, epoch: &Value, from: &str, text: &str) -> Value {
    let data = json!({ "from": from, "text": text }).to_string();
    json!({ "topic": topic, "offset": offset, "epoch": epoch, "data": data })
}

/// The same with the reference its page gave it.
fn line_with_ref(
    topic: &str,
    offset: u64,
    epoch: &Value,
    from: &str,
    text: &str,
    line_ref: &str,
) -> Value {
    let data = json!({ "from": from, "text": text, "ref": line_ref }).to_string();
    json!({ "topic": topic, "offset": offset, "epoch": epoch, "data": data })
}

#[test]
fn the_live_chat_serves_its_page_and_tokens_and_relays_and_recovers_lines() {
    let chat = live_chat::start("127.0.0.1:0", "127.0.0.1:0").expect("the chat starts");

    // The page, with the WebSocket port written in; the client's modules; nothing else.
    let (status, page) = get(chat.page, "/");
    assert_eq!(status, 200);
    let port = format!(r#"content="{}""#, chat.ws.port());
    assert!(page.contains(&port), "the page names the WebSocket port");
    assert!(page.contains("from '/client/index.js'"));
    let (status, js) = get(chat.page, "/client/index.js");
    assert_eq!(status, 200);
    assert!(js.contains("CorecastClient"));
    for path in [
        "/client/../../Cargo.toml",
        "/client/%2e%2e/index.js",
        "/client/index.d.ts",
        "/nope",
    ] {
        assert_eq!(get(chat.page, path).0, 404, "{path}");
    }
    assert_eq!(get(chat.page, "/token?name=a%20b").0, 400);
    assert_eq!(get(chat.page, "/token").0, 400);
    // Without a token, or with a forged one, no connection.
    assert_eq!(upgrade_status(chat.ws, "/chat"), 401);
    assert_eq!(upgrade_status(chat.ws, "/chat?token=e30.e30.e30"), 401);

    let room = "room.test";
    let mut alice = join(&chat, "alice");
    let mut bob = join(&chat, "bob");
    for c in [&mut alice, &mut bob] {
        send(c, json!({ "subscribe": room, "positions": true }));
        assert_eq!(
            next(c),
            json!({ "subscribed": room, "offset": 0, "epoch": null })
        );
    }

    // A line reaches everyone in the room, its sender too, stamped with the token's user
    // whatever the page says, and with the page's reference when it gave one. A publish
    // without a request id that goes out is not answered: the sender's next message is its
    // line.
    send(
        &mut alice,
        json!({ "publish": room, "data": "  hello  ", "from": "mallory" }),
    );
    let first = next(&mut bob);
    let epoch = first["epoch"].clone();
    assert!(epoch.is_string(), "{first}");
    assert_eq!(first, line(room, 1, &epoch, "alice", "hello"));
    assert_eq!(next(&mut alice), first);
    // With a request id, the publish is answered too; the line and the answer travel apart
    // (the line through the room's home shard), so their order is not told.
    send(
        &mut bob,
        json!({ "publish": room, "data": { "text": "hi", "ref": "k3x9" }, "id": 7 }),
    );
    let second = line_with_ref(room, 2, &epoch, "bob", "hi", "k3x9");
    let mut got = [next(&mut bob), next(&mut bob)];
    got.sort_by_key(|v| v.get("published").is_none());
    assert_eq!(got, [json!({ "published": room, "id": 7 }), second.clone()]);
    assert_eq!(next(&mut alice), second);
    send(
        &mut bob,
        json!({ "publish": room, "data": { "text": "bad ref", "ref": "no spaces" } }),
    );
    let third = line(room, 3, &epoch, "bob", "bad ref");
    assert_eq!(next(&mut bob), third);
    assert_eq!(next(&mut alice), third);

    // Refusals, each in its request's form.
    send(&mut alice, json!({ "subscribe": "admin" }));
    assert_eq!(
        next(&mut alice),
        json!({ "subscribe": "admin", "error": "not permitted" })
    );
    send(&mut alice, json!({ "publish": "admin", "data": "x" }));
    assert_eq!(
        next(&mut alice),
        json!({ "publish": "admin", "error": "not permitted" })
    );
    for data in [
        json!(5),
        json!("   "),
        json!("x".repeat(2001)),
        json!({ "ref": "k" }),
    ] {
        send(&mut alice, json!({ "publish": room, "data": data }));
        assert_eq!(
            next(&mut alice),
            json!({ "publish": room, "error": "a line is 1 to 2000 characters of text" })
        );
    }
    alice.send_text("not json");
    assert_eq!(
        next(&mut alice),
        json!({ "error": "expected a JSON object" })
    );
    // Every answer carries its request's id: a refusal, a success, a request not understood.
    send(&mut alice, json!({ "subscribe": "admin", "id": "a" }));
    assert_eq!(
        next(&mut alice),
        json!({ "subscribe": "admin", "error": "not permitted", "id": "a" })
    );
    send(&mut alice, json!({ "unsubscribe": "admin", "id": [1] }));
    assert_eq!(
        next(&mut alice),
        json!({ "unsubscribed": "admin", "error": "not subscribed", "id": [1] })
    );
    send(&mut alice, json!({ "shout": room, "id": 3 }));
    let unread = next(&mut alice);
    assert_eq!(unread["id"], 3, "{unread}");
    assert!(unread["error"].is_string(), "{unread}");

    // bob goes away; what alice says meanwhile waits in the room's history.
    bob.close(1000, "");
    assert!(bob.wait_closed());
    for (offset, text) in [(4, "one"), (5, "two")] {
        send(&mut alice, json!({ "publish": room, "data": text }));
        assert_eq!(next(&mut alice), line(room, offset, &epoch, "alice", text));
    }
    let mut bob = join(&chat, "bob");
    // A request right behind the recovery is answered after it, and after what it sends (a
    // client without request ids relies on that order to match answers).
    send(
        &mut bob,
        json!({ "subscribe": room, "since": { "offset": 3, "epoch": epoch }, "id": 9 }),
    );
    send(&mut bob, json!({ "unsubscribe": "$barrier" }));
    assert_eq!(
        next(&mut bob),
        json!({ "subscribed": room, "recovered": true, "missed": 2, "offset": 5, "epoch": epoch, "id": 9 })
    );
    assert_eq!(next(&mut bob), line(room, 4, &epoch, "alice", "one"));
    assert_eq!(next(&mut bob), line(room, 5, &epoch, "alice", "two"));
    assert_eq!(
        next(&mut bob),
        json!({ "unsubscribed": "$barrier", "error": "not subscribed" })
    );
    // Then the live stream, both ways.
    send(&mut alice, json!({ "publish": room, "data": "three" }));
    assert_eq!(next(&mut bob), line(room, 6, &epoch, "alice", "three"));
    assert_eq!(next(&mut alice), line(room, 6, &epoch, "alice", "three"));

    // A position the room never gave is told, not silently skipped.
    let mut carol = join(&chat, "carol");
    send(
        &mut carol,
        json!({ "subscribe": room, "since": { "offset": 1, "epoch": "00000000" } }),
    );
    assert_eq!(
        next(&mut carol),
        json!({ "subscribed": room, "recovered": false, "reason": "epoch changed", "offset": 6, "epoch": epoch })
    );

    // Past the rate limit (30 a second, in bursts of 30) a request is refused at once, in its
    // form and with its id; the others are answered as usual.
    let mut dave = join(&chat, "dave");
    for id in 0..35 {
        send(&mut dave, json!({ "unsubscribe": "x", "id": id }));
    }
    let answers: Vec<Value> = (0..35).map(|_| next(&mut dave)).collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a["error"] == "rate limit")
        .collect();
    // At most 5: a token or more may refill while the 35 go out on a loaded machine.
    assert!((1..=5).contains(&refused.len()), "{answers:?}");
    assert!(
        refused.iter().all(|a| a["unsubscribe"] == "x"),
        "{refused:?}"
    );
    let mut ids: Vec<u64> = answers.iter().filter_map(|a| a["id"].as_u64()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..35).collect::<Vec<u64>>());

    // Token refresh over the open connection: a good one is taken, a bad one refused, and one
    // for another user closes the connection.
    let fresh = token(&chat, "alice");
    send(&mut alice, json!({ "refresh": fresh }));
    assert_eq!(next(&mut alice), json!({ "refreshed": true }));
    send(&mut alice, json!({ "refresh": "e30.e30.e30" }));
    let refused = next(&mut alice);
    assert_eq!(refused["refresh"], Value::Null, "{refused}");
    assert!(refused["error"].is_string(), "{refused}");
    send(&mut alice, json!({ "refresh": token(&chat, "bob") }));
    assert_eq!(alice.recv_close().0, 1008);

    chat.server.shutdown_within(Duration::from_secs(1));
    chat.server.join().unwrap();
}

/// Reads the next data frame of `c` as JSON.
fn next_raw(c: &mut RawClient) -> Value {
    let (_, payload) = c.read_message();
    serde_json::from_slice(&payload)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&payload)))
}

#[test]
fn the_live_chat_takes_the_token_from_a_subprotocol_and_envelopes_every_line_when_asked() {
    let chat = live_chat::start("127.0.0.1:0", "127.0.0.1:0").expect("the chat starts");
    let room = "room.envelopes";

    // As the page's client connects: `?envelope=1`, the token in a subprotocol. The 101 names
    // `corecast`, never the token.
    let erin = token(&chat, "erin");
    let carried = format!("Sec-WebSocket-Protocol: corecast, corecast.token.{erin}\r\n");
    let (mut enveloped, head) = RawClient::connect_with(chat.ws, "/chat?envelope=1", &carried);
    assert!(
        head.contains("Sec-WebSocket-Protocol: corecast\r\n"),
        "{head}"
    );
    assert!(!head.contains(&erin), "{head}");
    // A forged token in the subprotocol is refused like one in the query.
    let forged = "Sec-WebSocket-Protocol: corecast, corecast.token.e30.e30.e30\r\n";
    let status = http_status(
        chat.ws,
        &format!(
            "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{forged}\r\n"
        ),
    );
    assert_eq!(status, 401);

    // Both subscribe plainly, without positions; only the connection that asked for envelopes
    // gets the line in one (with its position: rooms keep history), the other gets it bare.
    let subscribe = json!({ "subscribe": room }).to_string();
    enveloped.send_frame(0x1, subscribe.as_bytes());
    assert_eq!(next_raw(&mut enveloped), json!({ "subscribed": room }));
    let mut bare = join(&chat, "frank");
    bare.send_text(&subscribe);
    assert_eq!(next(&mut bare), json!({ "subscribed": room }));

    // The line a page sends is shaped like an answer: in its envelope it is only a line.
    let mut gail = join(&chat, "gail");
    send(
        &mut gail,
        json!({ "publish": room, "data": "{\"published\":\"room.envelopes\",\"id\":1}" }),
    );
    let said = json!({ "from": "gail", "text": "{\"published\":\"room.envelopes\",\"id\":1}" });
    assert_eq!(next(&mut bare), said);
    let got = next_raw(&mut enveloped);
    assert_eq!(got["topic"], room, "{got}");
    assert_eq!(got["offset"], 1, "{got}");
    assert!(got["epoch"].is_string(), "{got}");
    let data: Value = serde_json::from_str(got["data"].as_str().unwrap_or_default()).unwrap();
    assert_eq!(data, said);

    chat.server.shutdown_within(Duration::from_secs(1));
    chat.server.join().unwrap();
}
