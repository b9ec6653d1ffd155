//! The real `corecast` binary on free ports: modes, the HTTP API, limits, flags, signals.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use support::*;
use tungstenite::Message;

fn uuid_of(bin: &Bin, path: &str) -> (Client, String) {
    // /ws/<id> makes the id the UUID: the test knows it without asking.
    let id = path.trim_start_matches("/ws/").to_string();
    let mut c = bin.client(path);
    wait_until(
        || bin.api("POST", &format!("/api/emit/{id}"), &[], b"").0 == 200,
        "registration",
    );
    // The one emit that found it arrives as an empty message.
    assert_eq!(c.recv_text(), "");
    (c, id)
}

#[test]
fn echo_mode_answers_with_the_same_type() {
    let bin = Bin::start(&["--mode", "echo"]);
    let mut c = bin.client("/ws");
    c.send_text("hello");
    assert_eq!(c.recv(), Message::text("hello"));
    c.send_binary(&[1, 2, 3]);
    assert_eq!(c.recv(), Message::binary(vec![1u8, 2, 3]));
}

#[test]
fn relay_mode_reaches_everyone_including_the_sender() {
    let bin = Bin::start(&["--mode", "relay"]);
    let (mut a, _) = uuid_of(&bin, "/ws/a");
    let (mut b, _) = uuid_of(&bin, "/ws/b");
    a.send_text("to all");
    assert_eq!(a.recv_text(), "to all");
    assert_eq!(b.recv_text(), "to all");
}

#[test]
fn shootout_mode_speaks_the_shootout_protocol() {
    let bin = Bin::start(&["--mode", "shootout"]);
    let (mut a, _) = uuid_of(&bin, "/ws/a");
    let (mut b, _) = uuid_of(&bin, "/ws/b");
    let echo = r#"{"type":"echo","payload":{"n":1}}"#;
    a.send_text(echo);
    assert_eq!(a.recv_text(), echo);
    let bc = r#"{"type":"broadcast","payload":{"n":2}}"#;
    a.send_text(bc);
    assert_eq!(b.recv_text(), bc);
    let first = a.recv_text();
    let second = a.recv_text();
    assert_eq!(first, bc, "the sender gets the broadcast, then the result");
    let result: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(result["type"], "broadcastResult");
    assert_eq!(result["payload"]["n"], 2);
}

#[test]
fn push_mode_ignores_clients_and_the_api_sends() {
    let bin = Bin::start(&["--mode", "push"]);
    let (mut a, id) = uuid_of(&bin, "/ws/a");
    a.send_text("ignored");
    assert_eq!(
        bin.api("POST", "/api/broadcast", &[], b"news"),
        (200, r#"{"ok":true}"#.into())
    );
    assert_eq!(
        a.recv(),
        Message::text("news"),
        "nothing came back for the client's message"
    );
    let (st, _) = bin.api(
        "POST",
        "/api/broadcast",
        &["Content-Type: application/octet-stream"],
        &[9, 9],
    );
    assert_eq!(st, 200);
    assert_eq!(a.recv(), Message::binary(vec![9u8, 9]));
    assert_eq!(
        bin.api("POST", &format!("/api/emit/{id}"), &[], b"just you")
            .0,
        200
    );
    assert_eq!(a.recv_text(), "just you");
    assert_eq!(bin.api("POST", "/api/emit/nobody", &[], b"x").0, 404);
    assert_eq!(bin.api("POST", "/api/fire/tick", &[], b"x").0, 200);
    let (st, body) = bin.api("GET", "/api/connections", &[], b"");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["shards"].as_array().unwrap().len(), 2);
    assert_eq!(
        bin.api("POST", &format!("/api/close/{id}"), &[], b"").0,
        200
    );
    assert_eq!(a.recv_close().0, 1000);
    assert_eq!(bin.api("POST", "/api/close/nobody", &[], b"").0, 404);
    // Wrong method, unknown path, body over the limit, garbage.
    assert_eq!(bin.api("GET", "/api/broadcast", &[], b"").0, 405);
    assert_eq!(bin.api("POST", "/api/nothing", &[], b"").0, 404);
    let big = vec![b'x'; (1 << 20) + 1];
    assert_eq!(bin.api("POST", "/api/broadcast", &[], &big).0, 413);
    assert_eq!(
        http_status(bin.api.unwrap(), "\x01\x02 nonsense\r\n\r\n"),
        400
    );
    assert_eq!(bin.api("GET", "/healthz", &[], b"").0, 200);
}

#[test]
fn a_body_that_is_not_utf8_is_refused_as_text_and_every_client_stays() {
    let bin = Bin::start(&[]);
    let (mut c, id) = uuid_of(&bin, "/ws/u8");
    assert_eq!(
        bin.api("POST", &format!("/api/subscriptions/{id}/t"), &[], b"")
            .0,
        200
    );
    let bad = b"\xff\xfe not UTF-8";
    for path in [
        "/api/broadcast",
        &format!("/api/emit/{id}"),
        "/api/publish/t",
    ] {
        let (status, body) = bin.api("POST", path, &[], bad);
        assert_eq!(status, 400, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("not UTF-8") && e.contains("application/octet-stream"),
            "{body}"
        );
    }
    // Nothing went out: a text frame that is not UTF-8 would have made the client close
    // (1007), and the next message would not be this one.
    assert_eq!(bin.api("POST", "/api/broadcast", &[], b"still here").0, 200);
    assert_eq!(c.recv(), Message::text("still here"));
    // The same bytes as binary are fine.
    let binary = ["Content-Type: application/octet-stream"];
    assert_eq!(bin.api("POST", "/api/broadcast", &binary, bad).0, 200);
    assert_eq!(c.recv(), Message::binary(bad.to_vec()));
}

#[test]
fn the_binary_content_type_is_matched_case_insensitively() {
    let bin = Bin::start(&[]);
    let (mut c, _) = uuid_of(&bin, "/ws/ct");
    // Media types are case-insensitive (RFC 9110 §8.3.1); parameters may follow.
    for content_type in [
        "Content-Type: Application/Octet-Stream",
        "Content-Type: application/octet-stream;foo=bar",
    ] {
        let (status, body) = bin.api("POST", "/api/broadcast", &[content_type], &[0xff, 1]);
        assert_eq!(status, 200, "{content_type}: {body}");
        assert_eq!(c.recv(), Message::binary(vec![0xffu8, 1]), "{content_type}");
    }
    // Another type that merely starts the same is not binary.
    let (status, _) = bin.api(
        "POST",
        "/api/broadcast",
        &["Content-Type: application/octet-streamy"],
        b"text",
    );
    assert_eq!(status, 200);
    assert_eq!(c.recv(), Message::text("text"));
}

/// The next text message that is not a pubsub acknowledgement, parsed as JSON.
fn recv_json(c: &mut Client) -> serde_json::Value {
    serde_json::from_str(&c.recv_text()).expect("a JSON frame")
}

#[test]
fn pubsub_mode_speaks_its_protocol() {
    let bin = Bin::start(&["--mode", "pubsub", "--max-topics", "2"]);
    let mut a = bin.client("/ws?topics=scores,news");
    assert_eq!(
        recv_json(&mut a),
        serde_json::json!({ "subscribed": "scores" })
    );
    assert_eq!(
        recv_json(&mut a),
        serde_json::json!({ "subscribed": "news" })
    );
    let mut b = bin.client("/ws");
    b.send_text(r#"{"subscribe":"scores"}"#);
    assert_eq!(
        recv_json(&mut b),
        serde_json::json!({ "subscribed": "scores" })
    );

    // A publish reaches the topic's other subscribers, never the sender; a string goes out
    // as its text, any other value as JSON.
    b.send_text(r#"{"publish":"scores","data":"1-0"}"#);
    assert_eq!(a.recv_text(), "1-0");
    a.send_text(r#"{"publish":"scores","data":{"home":2}}"#);
    assert_eq!(b.recv_text(), r#"{"home":2}"#);
    a.send_text(r#"{"publish":"news","data":"only a"}"#);

    // Bad frames get an error frame and the connection stays open.
    for bad in [
        "not json",
        r#"{"subscribe":7}"#,
        r#"{"publish":"scores"}"#,
        r#"{"nothing":1}"#,
    ] {
        b.send_text(bad);
        let reply = recv_json(&mut b);
        assert!(reply["error"].is_string(), "{bad} -> {reply}");
    }
    b.send_binary(b"\x01");
    assert!(recv_json(&mut b)["error"].is_string());
    let long = "x".repeat(300);
    b.send_text(&format!(r#"{{"subscribe":"{long}"}}"#));
    assert!(recv_json(&mut b)["error"]
        .as_str()
        .unwrap()
        .contains("invalid topic"));
    b.send_text(r#"{"subscribe":"t2"}"#);
    recv_json(&mut b);
    b.send_text(r#"{"subscribe":"t3"}"#);
    let over = recv_json(&mut b);
    assert_eq!(over["subscribe"], "t3");
    assert!(over["error"].as_str().unwrap().contains("too many topics"));
    b.send_text(r#"{"unsubscribe":"scores"}"#);
    assert_eq!(
        recv_json(&mut b),
        serde_json::json!({ "unsubscribed": "scores" })
    );
    b.send_text(r#"{"unsubscribe":"scores"}"#);
    assert_eq!(recv_json(&mut b)["error"], "not subscribed");

    // The HTTP API: publish (text and binary), topics, server-side subscriptions.
    let (status, body) = bin.api("POST", "/api/publish/scores", &[], b"from api");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ok":true,"subscribers":1}"#)
    );
    assert_eq!(a.recv_text(), "from api");
    let octets = "Content-Type: application/octet-stream";
    assert_eq!(
        bin.api("POST", "/api/publish/scores", &[octets], b"\x02").0,
        200
    );
    assert_eq!(a.recv(), Message::binary(vec![2u8]));
    let (status, body) = bin.api("GET", "/api/topics", &[], b"");
    assert_eq!(status, 200);
    let topics: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        topics,
        serde_json::json!({ "topics": [
            { "topic": "news", "subscribers": 1 },
            { "topic": "scores", "subscribers": 1 },
            { "topic": "t2", "subscribers": 1 },
        ] })
    );
    let (mut c, id) = uuid_of(&bin, "/ws/watcher");
    let path = format!("/api/subscriptions/{id}/weather%2Feu");
    assert_eq!(
        bin.api("POST", &path, &[], b"").1,
        r#"{"ok":true,"changed":true}"#
    );
    assert_eq!(
        bin.api("POST", &path, &[], b"").1,
        r#"{"ok":true,"changed":false}"#
    );
    bin.api("POST", "/api/publish/weather%2Feu", &[], b"rain");
    assert_eq!(c.recv_text(), "rain");
    assert_eq!(
        bin.api("DELETE", &path, &[], b"").1,
        r#"{"ok":true,"changed":true}"#
    );
    assert_eq!(
        bin.api("POST", "/api/subscriptions/nobody/t", &[], b"").0,
        404
    );
    assert_eq!(
        bin.api("GET", "/api/subscriptions/nobody/t", &[], b"").0,
        405
    );
    assert_eq!(
        bin.api("POST", &format!("/api/publish/{long}"), &[], b"").0,
        400
    );
    let (_, metrics) = bin.api("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("corecast_publish_recipients_count"),
        "{metrics}"
    );

    // A only gets what was published to it: its next message is a fresh marker.
    bin.api("POST", "/api/broadcast", &[], b"end");
    assert_eq!(a.recv_text(), "end");
    assert_eq!(b.recv_text(), "end");
}

/// `corecast_dropped_messages_total{cause="rate_limited"}` from `/metrics`.
fn rate_limited_drops(bin: &Bin) -> u64 {
    let (_, metrics) = bin.api("GET", "/metrics", &[], b"");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("corecast_dropped_messages_total{cause=\"rate_limited\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rate_limited drops in {metrics}"))
}

/// `n` publishes to `t` of "<prefix>0", "<prefix>1", ..., as client frames in one buffer.
fn publishes(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let text = format!(r#"{{"publish":"t","data":"{prefix}{i}"}}"#);
            masked_frame(0x81, text.as_bytes())
        })
        .collect()
}

#[test]
fn pubsub_refuses_a_publish_past_the_client_message_rate() {
    let bin = Bin::start(&["--mode", "pubsub", "--client-message-rate", "3"]);
    let mut a = bin.client("/ws?topics=t");
    assert_eq!(recv_json(&mut a), serde_json::json!({ "subscribed": "t" }));
    let mut b = bin.client("/ws");
    b.ws.get_mut().write_all(&publishes("p", 4)).unwrap();
    // The burst of 3 goes out; the 4th is refused, with the error form of a publish.
    for i in 0..3 {
        assert_eq!(a.recv_text(), format!("p{i}"));
    }
    assert_eq!(
        recv_json(&mut b),
        serde_json::json!({ "publish": "t", "error": "rate limit" })
    );
    assert_eq!(rate_limited_drops(&bin), 1);
    // A second later the bucket is full again, and p3 never went out.
    std::thread::sleep(Duration::from_millis(1100));
    b.send_text(r#"{"publish":"t","data":"later"}"#);
    assert_eq!(a.recv_text(), "later");
    // A flood: answered refusals, then the close.
    b.ws.get_mut().write_all(&publishes("f", 20)).unwrap();
    assert_eq!(b.recv_close(), (1008, "rate limit".to_string()));
    assert_eq!(a.recv_text(), "f0");
    assert_eq!(a.recv_text(), "f1");
}

#[test]
fn pubsub_refuses_a_publish_past_the_client_byte_rate() {
    let bin = Bin::start(&[
        "--mode",
        "pubsub",
        "--client-message-rate",
        "0",
        "--client-byte-rate",
        "200",
    ]);
    let mut a = bin.client("/ws?topics=t");
    assert_eq!(recv_json(&mut a), serde_json::json!({ "subscribed": "t" }));
    let mut b = bin.client("/ws");
    // Each request is 126 bytes: the first fits in 200, the second does not, and a small one
    // still does: bytes, not messages, are what ran out.
    let big = |tag: &str| format!(r#"{{"publish":"t","data":"{tag}{}"}}"#, "x".repeat(100));
    let small = r#"{"publish":"t","data":"s"}"#;
    assert_eq!(big("1").len(), 126);
    let burst: Vec<u8> = [big("1"), big("2"), small.to_string()]
        .iter()
        .flat_map(|m| masked_frame(0x81, m.as_bytes()))
        .collect();
    b.ws.get_mut().write_all(&burst).unwrap();
    assert_eq!(a.recv_text(), format!("1{}", "x".repeat(100)));
    assert_eq!(
        recv_json(&mut b),
        serde_json::json!({ "publish": "t", "error": "rate limit" })
    );
    assert_eq!(a.recv_text(), "s");
    assert_eq!(rate_limited_drops(&bin), 1);
}

#[test]
fn client_message_rate_comes_from_env_and_file_and_defaults_to_100() {
    // The environment: 2 a second, in echo mode (no answer for a refused message).
    let bin = Bin::start_with_env(
        &["--mode", "echo"],
        &[("CORECAST_CLIENT_MESSAGE_RATE", "2")],
    );
    let mut c = bin.client("/ws");
    let abc: Vec<u8> = ["a", "b", "c"]
        .iter()
        .flat_map(|m| masked_frame(0x81, m.as_bytes()))
        .collect();
    c.ws.get_mut().write_all(&abc).unwrap();
    assert_eq!(c.recv_text(), "a");
    assert_eq!(c.recv_text(), "b");
    wait_until(|| rate_limited_drops(&bin) == 1, "the refusal of c");
    drop(bin);

    // The file: 0 turns the limit off.
    let dir = std::env::temp_dir().join(format!("corecast-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "mode = \"echo\"\nclient-message-rate = 0\n").unwrap();
    let bin = Bin::start(&["--config", file.to_str().unwrap()]);
    let mut c = bin.client("/ws");
    for i in 0..150 {
        c.send_text(&i.to_string());
    }
    for i in 0..150 {
        assert_eq!(c.recv_text(), i.to_string());
    }
    assert_eq!(rate_limited_drops(&bin), 0);
    drop(bin);
    let _ = std::fs::remove_dir_all(&dir);

    // The default: a burst of 100, the 101st refused.
    let bin = Bin::start(&["--mode", "echo"]);
    let mut c = bin.client("/ws");
    // At once: sent one by one they could take long enough for a token to come back.
    let burst: Vec<u8> = (0..101)
        .flat_map(|i: u32| masked_frame(0x81, i.to_string().as_bytes()))
        .collect();
    c.ws.get_mut().write_all(&burst).unwrap();
    for i in 0..100 {
        assert_eq!(c.recv_text(), i.to_string());
    }
    wait_until(|| rate_limited_drops(&bin) == 1, "the refusal of the 101st");
}

#[test]
fn api_token_is_required_on_api_paths() {
    let bin = Bin::start(&["--api-token", "s3cret"]);
    let auth = "Authorization: Bearer s3cret";
    for (method, path) in [
        ("POST", "/api/broadcast"),
        ("POST", "/api/fire/x"),
        ("GET", "/api/connections"),
        ("POST", "/api/emit/nobody"),
        ("POST", "/api/close/nobody"),
        ("POST", "/api/publish/t"),
        ("GET", "/api/topics"),
        ("POST", "/api/subscriptions/nobody/t"),
        ("DELETE", "/api/subscriptions/nobody/t"),
    ] {
        assert_eq!(
            bin.api(method, path, &[], b"").0,
            401,
            "{path} without token"
        );
        assert_eq!(
            bin.api(method, path, &["Authorization: Bearer wrong"], b"")
                .0,
            401
        );
        assert_ne!(
            bin.api(method, path, &[auth], b"").0,
            401,
            "{path} with token"
        );
    }
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(bin.api("GET", "/healthz", &[], b"").0, 200);
    assert_eq!(bin.api("GET", "/metrics", &[], b"").0, 200);
}

#[test]
fn subprotocols_are_negotiated_with_a_real_client() {
    use tungstenite::client::IntoClientRequest;
    let bin = Bin::start(&["--subprotocols", "chat.v2,chat", "--mode", "echo"]);
    let mut request = format!("ws://{}/ws", bin.ws).into_client_request().unwrap();
    let offer = "chat,chat.v2".parse().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", offer);
    let stream = std::net::TcpStream::connect(bin.ws).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (mut ws, response) = tungstenite::client(request, stream).expect("upgrade");
    let chosen = response.headers().get("sec-websocket-protocol").unwrap();
    assert_eq!(chosen, "chat.v2", "the server's first choice");
    ws.send(tungstenite::Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hi"));
}

#[test]
fn deflate_is_on_by_default_and_the_flags_set_it() {
    const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let quiet = ["--mode", "echo", "--ping-interval", "60s"];
    let bin = Bin::start(&quiet);
    let (mut c, head) = RawClient::connect_with(bin.ws, "/ws", OFFER);
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"),
        "{head}"
    );
    let json = br#"{"id":7,"symbol":"BTC-USD","side":"buy","price":97000.5}"#.repeat(8);
    c.send_frame(0x1, &json);
    let (b0, payload) = c.read_frame();
    assert_eq!(b0, 0xC1, "compressed: FIN, RSV1, text");
    assert_eq!(
        corecast::ws::deflate::inflate(&payload, usize::MAX).unwrap(),
        json
    );
    // A higher threshold leaves the same message plain; `off` declines the offer.
    let bin = Bin::start(&[&quiet[..], &["--deflate-min-size", "1KiB"]].concat());
    let (mut c, _) = RawClient::connect_with(bin.ws, "/ws", OFFER);
    c.send_frame(0x1, &json);
    assert_eq!(c.read_frame(), (0x81, json.clone()));
    let bin = Bin::start(&["--mode", "echo", "--deflate", "off"]);
    let (_, head) = RawClient::connect_with(bin.ws, "/ws", OFFER);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
}

#[test]
fn tls_flags_serve_wss_and_sighup_reloads_the_files() {
    let dir = std::env::temp_dir().join(format!("corecast-bin-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, first) = certificate(&dir, "live");
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let bin = Bin::start(&[
        "--mode",
        "echo",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
    ]);
    let (mut old, shown) = wss(bin.ws, &[&first]);
    assert_eq!(shown, first);
    old.send(Message::text("over tls")).unwrap();
    assert_eq!(old.read().unwrap(), Message::text("over tls"));

    let (next_cert, next_key, second) = certificate(&dir, "next");
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    bin.signal(libc::SIGHUP);
    wait_until(
        || wss(bin.ws, &[&first, &second]).1 == second,
        "the reloaded certificate",
    );
    old.send(Message::text("still open")).unwrap();
    assert_eq!(old.read().unwrap(), Message::text("still open"));
}

#[test]
fn taken_id_gets_409_and_limits_and_origins_are_enforced() {
    let bin = Bin::start(&[
        "--max-connections",
        "2",
        "--origins",
        "https://good.example",
    ]);
    let upgrade = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    };
    let _a = uuid_of(&bin, "/ws/alice");
    assert_eq!(http_status(bin.ws, &upgrade("/ws/alice", "")), 409);
    assert_eq!(
        http_status(bin.ws, &upgrade("/ws", "Origin: https://evil.example\r\n")),
        403
    );
    let _b = Client::connect(bin.ws, "/ws"); // no Origin header: not a browser, allowed
    wait_until(
        || {
            bin.api("GET", "/api/connections", &[], b"")
                .1
                .contains("\"total\":2")
        },
        "two connections",
    );
    assert_eq!(
        http_status(bin.ws, &upgrade("/ws", "")),
        503,
        "past --max-connections"
    );
    let (_, metrics) = bin.api("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("corecast_upgrade_rejections_total{status=\"409\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("corecast_upgrade_rejections_total{status=\"403\"} 1"));
    assert!(metrics.contains("corecast_upgrade_rejections_total{status=\"503\"} 1"));
}

#[test]
fn metrics_move_with_traffic() {
    let bin = Bin::start(&["--mode", "echo"]);
    let total = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let (_, before) = bin.api("GET", "/metrics", &[], b"");
    assert_eq!(total(&before, "corecast_messages_in_total"), 0);
    let mut c = bin.client("/ws");
    for _ in 0..5 {
        c.send_text("12345");
        c.recv_text();
    }
    c.close(1000, "");
    c.recv_close();
    wait_until(
        || {
            total(
                &bin.api("GET", "/metrics", &[], b"").1,
                "corecast_teardowns_total{cause=\"clean\"}",
            ) == 1
        },
        "clean teardown counted",
    );
    let (_, after) = bin.api("GET", "/metrics", &[], b"");
    assert_eq!(total(&after, "corecast_messages_in_total"), 5);
    assert_eq!(total(&after, "corecast_bytes_in_total"), 25);
    assert_eq!(total(&after, "corecast_messages_out_total"), 5);
    assert!(total(&after, "corecast_bytes_out_total") > 25);
    assert_eq!(total(&after, "corecast_upgrades_total"), 1);
}

#[test]
fn sigterm_sends_1001_to_everyone_and_exits_0() {
    let mut bin = Bin::start(&[]);
    let mut clients: Vec<Client> = (0..10).map(|_| bin.client("/ws")).collect();
    wait_until(
        || {
            bin.api("GET", "/api/connections", &[], b"")
                .1
                .contains("\"total\":10")
        },
        "ten connections",
    );
    bin.signal(libc::SIGTERM);
    for c in clients.iter_mut() {
        assert_eq!(c.recv_close(), (1001, "server shutting down".to_string()));
    }
    assert_eq!(bin.wait_exit(WAIT), Some(0));
}

#[test]
fn drain_delay_answers_503_before_clients_are_closed() {
    let mut bin = Bin::start(&["--mode", "echo", "--drain-delay", "3s"]);
    let mut old = bin.client("/ws");
    old.send_text("before");
    assert_eq!(old.recv_text(), "before");
    let signalled = Instant::now();
    bin.signal(libc::SIGTERM);
    wait_until(
        || bin.api("GET", "/healthz", &[], b"").0 == 503,
        "healthz 503 during the drain delay",
    );
    assert_eq!(
        upgrade_status(bin.ws, "/ws"),
        503,
        "a new upgrade during the drain delay"
    );
    // Still served, with no close ahead of the echo: the shutdown has not started.
    old.send_text("still open");
    assert_eq!(old.recv_text(), "still open");
    assert_eq!(old.recv_close(), (1001, "server shutting down".to_string()));
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "close 1001 came {:?} after SIGTERM, before the 3 s drain delay",
        signalled.elapsed()
    );
    assert_eq!(bin.wait_exit(WAIT), Some(0));
}

/// A client that never reads, with megabytes queued for it: its close frame cannot go out, so
/// a shutdown has to wait for its deadline.
fn stuck_client(bin: &Bin) -> RawClient {
    let stuck = RawClient::connect(bin.ws, "/ws/stuck");
    wait_until(
        || bin.api("POST", "/api/emit/stuck", &[], b"").0 == 200,
        "registration",
    );
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..24 {
        assert_eq!(bin.api("POST", "/api/emit/stuck", &[], &chunk).0, 200);
    }
    stuck
}

#[test]
fn draining_reports_503_on_healthz_and_the_deadline_ends_it() {
    let mut bin = Bin::start(&["--shutdown-timeout", "2s"]);
    let _stuck = stuck_client(&bin);
    bin.signal(libc::SIGTERM);
    wait_until(
        || bin.api("GET", "/healthz", &[], b"").0 == 503,
        "healthz 503 while draining",
    );
    assert_eq!(
        bin.wait_exit(WAIT),
        Some(0),
        "exits 0 once the deadline force-closes"
    );
}

/// Runs the binary to its end: exit code, stdout, stderr.
fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corecast"));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run corecast");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_and_config_exit_2_with_one_clear_line() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let (code, _, err) = run_bin(args, env);
        (code, err)
    };
    let (code, err) = run(&["--ping-interval", "soon"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid duration \"soon\""), "{err}");
    let (code, err) = run(&["--mode", "chat"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown mode \"chat\""), "{err}");
    let (code, err) = run(&["--no-such-flag"], &[]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--subprotocols", "chat,json v1"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid subprotocol \"json v1\""), "{err}");
    let (code, err) = run(&["--tls-cert", "/nonexistent/cert.pem"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-cert needs --tls-key"), "{err}");
    let (code, err) = run(
        &[
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
        &[],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let (code, err) = run(&["--deflate", "maybe"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("expected on or off, got \"maybe\""), "{err}");
    let (code, err) = run(&[], &[("CORECAST_DEFLATE_LEVEL", "11")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("compression level from 0 to 9"), "{err}");
    let (code, err) = run(&[], &[("CORECAST_MAX_MESSAGE_SIZE", "huge")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid size \"huge\""), "{err}");
    let dir = std::env::temp_dir().join(format!("corecast-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "write-timeout = \"forever\"\n").unwrap();
    let (code, err) = run(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("write-timeout: invalid duration"), "{err}");
    let (code, err) = run(&["--config", "/nonexistent/corecast.toml"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read config file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_bad_setting_is_exactly_one_line_and_status_2() {
    let dir = std::env::temp_dir().join(format!("corecast-line-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "max-message-size = \"huge\"\n").unwrap();
    let file = file.to_str().unwrap();
    // Flags, environment, and what the line must contain.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--no-such-flag"], &[], "--no-such-flag"),
        (&["--ping-intervall", "5s"], &[], "--ping-interval"),
        (
            &["--ping-interval", "soon"],
            &[],
            "invalid duration \"soon\"",
        ),
        (
            &["--max-message-size", "huge"],
            &[],
            "invalid size \"huge\"",
        ),
        (&["--shards", "0"], &[], "--shards"),
        (&["--ping-interval"], &[], "--ping-interval"),
        (
            &[],
            &[("CORECAST_WRITE_TIMEOUT", "forever")],
            "invalid value 'forever' for CORECAST_WRITE_TIMEOUT: invalid duration",
        ),
        (&["--config", file], &[], "max-message-size: invalid size"),
    ];
    for (args, env, needle) in cases {
        let (code, out, err) = run_bin(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?} {env:?}: {err:?}");
        assert!(!err.trim().is_empty(), "{args:?} {env:?}");
        assert!(err.contains(needle), "{args:?} {env:?}: {err:?}");
        assert_eq!(out, "", "{args:?} {env:?}");
    }
    // Help and version are answers, not errors.
    let (code, out, err) = run_bin(&["--help"], &[]);
    assert_eq!((code, err.as_str()), (Some(0), ""));
    assert!(
        out.contains("Usage: corecast") && out.contains("--ping-interval"),
        "{out}"
    );
    let (code, out, err) = run_bin(&["--version"], &[]);
    assert_eq!((code, err.as_str()), (Some(0), ""));
    assert!(out.starts_with("corecast "), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flags_win_over_env_which_wins_over_the_file() {
    let dir = std::env::temp_dir().join(format!("corecast-prec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "mode = \"push\"\napi-token = \"from-file\"\n").unwrap();
    // The environment's mode beats the file's; the file's token applies.
    let bin = Bin::start_with_env(
        &["--config", file.to_str().unwrap()],
        &[("CORECAST_MODE", "echo")],
    );
    let mut c = bin.client("/ws");
    c.send_text("e");
    assert_eq!(c.recv_text(), "e", "echo mode from the environment");
    assert_eq!(bin.api("GET", "/api/connections", &[], b"").0, 401);
    assert_eq!(
        bin.api(
            "GET",
            "/api/connections",
            &["Authorization: Bearer from-file"],
            b""
        )
        .0,
        200
    );
    drop(bin);
    // A flag beats the environment.
    let bin = Bin::start_with_env(&["--mode", "push"], &[("CORECAST_MODE", "echo")]);
    let (mut c, _) = uuid_of(&bin, "/ws/p");
    c.send_text("e");
    bin.api("POST", "/api/broadcast", &[], b"from api");
    assert_eq!(c.recv_text(), "from api", "push mode: no echo came first");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut bin = Bin::start(&["--shutdown-timeout", "60s"]);
    let _stuck = stuck_client(&bin);
    bin.signal(libc::SIGTERM);
    wait_until(|| bin.api("GET", "/healthz", &[], b"").0 == 503, "draining");
    bin.signal(libc::SIGINT);
    // Well before the 60 s shutdown timeout.
    assert_eq!(bin.wait_exit(WAIT), Some(130));
}

#[test]
fn a_second_signal_during_the_drain_delay_exits_at_once() {
    let mut bin = Bin::start(&["--drain-delay", "60s"]);
    bin.signal(libc::SIGTERM);
    wait_until(|| bin.api("GET", "/healthz", &[], b"").0 == 503, "draining");
    bin.signal(libc::SIGINT);
    // Well before the 60 s drain delay.
    assert_eq!(bin.wait_exit(WAIT), Some(130));
}

#[test]
fn a_memlock_limit_too_low_is_a_clear_start_error() {
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "ulimit -l 64 && exec {} --listen 127.0.0.1:0 --api-listen off --shards 1",
                env!("CARGO_BIN_EXE_corecast")
            ),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start the server"), "{err}");
    assert!(err.contains("memlock"), "{err}");
}

#[test]
fn the_api_answers_expect_100_continue() {
    let bin = Bin::start(&[]);
    let (mut c, _) = uuid_of(&bin, "/ws/e");
    let mut s = TcpStream::connect(bin.api.unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = vec![b'z'; 4096];
    write!(
        s,
        "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&body).unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "{rest}");
    assert_eq!(c.recv_text(), "z".repeat(4096));
}

#[test]
fn cluster_unreachable_nats_exits_1_with_one_line() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-listen",
            "off",
            "--shards",
            "1",
        ])
        .args(["--cluster", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&url), "{err}");
}

/// The cluster view of a node, from its API.
fn cluster_nodes(bin: &Bin) -> Vec<String> {
    let (status, body) = bin.api("GET", "/api/cluster", &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_killed_node_leaves_the_view_and_frees_its_ids_while_the_others_serve() {
    let nats = Nats::start();
    let url = nats.url();
    let cluster = [
        "--cluster",
        &url,
        "--cluster-name",
        "killtest",
        "--mode",
        "relay",
    ];
    let a = Bin::start(&[&cluster[..], &["--node-id", "a"]].concat());
    let mut b = Bin::start(&[&cluster[..], &["--node-id", "b"]].concat());
    wait_until(
        || cluster_nodes(&a) == ["a", "b"] && cluster_nodes(&b) == ["a", "b"],
        "both nodes in both views",
    );
    // bob is on b; a refuses the same id while b lives.
    let _bob = b.client("/ws/bob");
    assert_eq!(
        upgrade_status(a.ws, "/ws/bob"),
        409,
        "bob's claim holds on a"
    );
    let mut alice = a.client("/ws/alice");
    let (_, api) = a.api("GET", "/api/cluster", &[], b"");
    assert!(api.contains(r#""nats_connected":true"#), "{api}");

    b.signal(libc::SIGKILL);
    wait_until(|| b.child.try_wait().unwrap().is_some(), "b gone");
    // a keeps serving its own clients.
    alice.send_text("still here");
    assert_eq!(alice.recv_text(), "still here");
    // Three missed heartbeats (3 s) and b is out of a's view; bob can connect to a then.
    wait_until(|| cluster_nodes(&a) == ["a"], "b dropped from a's view");
    client_when_accepted(a.ws, "/ws/bob", "bob free again on a");
}

/// Runs an instance that must refuse to start: returns its exit code and its stderr once it
/// exits (within `WAIT`); fails at once if it reports serving.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corecast");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let end = Instant::now() + WAIT;
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("corecast serving") => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the second instance started: {line}");
            }
            Ok(line) => lines.push(line),
            // Its stderr closed: it has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit within {WAIT:?}: {lines:?}");
            }
        }
    }
    (child.wait().unwrap().code(), lines.join("\n"))
}

/// The one error line a refused start printed, which names `addr` and says it is in use.
fn the_one_line_naming(err: &str, addr: SocketAddr) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&addr.to_string()), "{err}");
    assert!(lines[0].contains("in use"), "{err}");
    lines[0]
}

#[test]
fn a_second_instance_on_the_same_listen_address_exits_1_with_one_line() {
    let first = Bin::start(&[]);
    let ws = first.ws.to_string();
    let (code, err) = refused_start(&[
        "--listen",
        &ws,
        "--api-listen",
        "127.0.0.1:0",
        "--shards",
        "2",
    ]);
    assert_eq!(code, Some(1), "{err}");
    let line = the_one_line_naming(&err, first.ws);
    assert!(line.contains("cannot start the server"), "{line}");
    // Every upgrade still reaches the first.
    for i in 0..16 {
        assert_eq!(upgrade_status(first.ws, &format!("/ws/{i}")), 101);
    }
}

#[test]
fn a_second_instance_on_the_same_api_address_exits_1_with_one_line() {
    let first = Bin::start(&["--api-token", "s3cret"]);
    let api = first.api.unwrap();
    let (code, err) = refused_start(&[
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        &api.to_string(),
        "--shards",
        "2",
    ]);
    assert_eq!(code, Some(1), "{err}");
    let line = the_one_line_naming(&err, api);
    assert!(line.contains("HTTP API"), "{line}");
    // Only the first answers the API: no call gets past its token.
    for _ in 0..16 {
        assert_eq!(first.api("GET", "/api/connections", &[], b"").0, 401);
    }
}
