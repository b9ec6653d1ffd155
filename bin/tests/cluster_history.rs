//! The real `corecast` binary in cluster mode with `--history`: two nodes on one nats-server,
//! publishing through both nodes' HTTP APIs and a client, a subscriber on node A whose process
//! is killed while publishing goes on, coming back on node B with its last position (`since`)
//! and getting exactly what it missed then the live stream, checked publication by
//! publication against a subscriber that saw it all; and `GET /api/topics/{topic}` reporting
//! the stream's window on either node.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use common::*;
use serde_json::{json, Value};
use support::*;

fn recv_json(c: &mut Client) -> Value {
    serde_json::from_str(&c.recv_text()).expect("a JSON frame")
}

/// Node `id` of the cluster `cluster`, in pubsub mode, whose `scores.*` topics keep history.
fn node(nats: &Nats, cluster: &str, id: &str) -> Bin {
    Bin::start(&[
        "--mode",
        "pubsub",
        "--history",
        "scores.*=100000/60s",
        "--send-queue-size",
        "100000",
        "--cluster",
        &nats.url(),
        "--cluster-name",
        cluster,
        "--node-id",
        id,
    ])
}

/// A client subscribed to `topic` with positions, or from `since`; the answer it got.
fn subscribe(bin: &Bin, topic: &str, since: Option<Value>) -> (Client, Value) {
    let mut c = bin.client("/ws");
    let ask = match since {
        Some(since) => json!({ "subscribe": topic, "since": since }),
        None => json!({ "subscribe": topic, "positions": true }),
    };
    c.send_text(&ask.to_string());
    let answer = recv_json(&mut c);
    (c, answer)
}

/// The next envelope of `topic`: offset, epoch, data.
fn envelope(c: &mut Client, topic: &str) -> (u64, String, String) {
    let v = recv_json(c);
    assert_eq!(v["topic"], topic, "{v}");
    (
        v["offset"].as_u64().unwrap_or_else(|| panic!("{v}")),
        v["epoch"].as_str().unwrap().to_string(),
        v["data"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_string(),
    )
}

/// Publishes `<prefix><n>` for n = 1, 2, … through `api` (`POST /api/publish/{topic}`) until
/// told to stop or a request fails (its node is gone); returns how many were accepted.
fn api_publisher(
    api: std::net::SocketAddr,
    topic: &str,
    prefix: &str,
) -> (Arc<AtomicBool>, JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, path, prefix) = (
        Arc::clone(&stop),
        format!("/api/publish/{topic}"),
        prefix.to_string(),
    );
    let thread = std::thread::spawn(move || {
        let mut accepted = 0u64;
        while !flag.load(Ordering::Relaxed) && accepted < 100_000 {
            let body = format!("{prefix}{}", accepted + 1);
            match try_post(api, &path, body.as_bytes()) {
                Some(200) => accepted += 1,
                _ => break,
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        accepted
    });
    (stop, thread)
}

/// `POST path` with `body`: the answer's status, `None` when the node did not answer (it is
/// gone). Every read and write bounded by `WAIT`.
fn try_post(api: std::net::SocketAddr, path: &str, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(api).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    s.set_write_timeout(Some(WAIT)).ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

fn stop(publisher: (Arc<AtomicBool>, JoinHandle<u64>)) -> u64 {
    publisher.0.store(true, Ordering::Relaxed);
    publisher.1.join().unwrap()
}

/// The numbers of the payloads with `prefix`, in the order seen.
fn numbers(seen: &[(u64, String, String)], prefix: &str) -> Vec<u64> {
    seen.iter()
        .filter_map(|(_, _, d)| d.strip_prefix(prefix)?.parse().ok())
        .collect()
}

fn window(bin: &Bin, topic: &str) -> Value {
    let (status, body) = bin.api("GET", &format!("/api/topics/{topic}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["history"].clone()
}

#[test]
fn a_client_whose_node_is_killed_recovers_everything_on_another_node() {
    let nats = Nats::start();
    let a = node(&nats, "binkill", "a");
    let b = node(&nats, "binkill", "b");
    let topic = "scores.final";
    let (mut reference, answer) = subscribe(&b, topic, None);
    let epoch = answer["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(
        answer,
        json!({ "subscribed": topic, "offset": 0, "epoch": epoch })
    );
    let (mut sub, answer) = subscribe(&a, topic, None);
    assert_eq!(
        answer,
        json!({ "subscribed": topic, "offset": 0, "epoch": epoch })
    );

    // Publishing through both nodes' APIs and a client of B, all the while.
    let from_a = api_publisher(a.api.unwrap(), topic, "a");
    let from_b = api_publisher(b.api.unwrap(), topic, "b");
    let mut client_b = b.client("/ws");
    let mut first = Vec::new();
    for i in 1..=300u64 {
        if i % 10 == 0 {
            let data = format!("c{}", i / 10);
            client_b.send_text(&json!({ "publish": topic, "data": data }).to_string());
        }
        first.push(envelope(&mut sub, topic));
    }
    // Node A's process dies; its API publisher stops at the first refused request.
    let mut a = a;
    a.signal(libc::SIGKILL);
    wait_until(|| a.child.try_wait().unwrap().is_some(), "a gone");
    let accepted_a = stop(from_a);
    // Whatever A's client got before the kill counts: it read them, so it knows them.
    while let Ok(tungstenite::Message::Text(t)) = sub.ws.read() {
        let v: Value = serde_json::from_str(&t).unwrap();
        first.push((
            v["offset"].as_u64().unwrap(),
            v["epoch"].as_str().unwrap().to_string(),
            v["data"].as_str().unwrap().to_string(),
        ));
    }
    let last = first.last().unwrap().0;

    // Back on B with its last position, while B's publishers go on.
    let (mut back, answer) = subscribe(&b, topic, Some(json!({ "offset": last, "epoch": epoch })));
    assert_eq!(answer["recovered"], true, "{answer}");
    let missed = answer["missed"].as_u64().unwrap();
    assert_eq!(
        answer["offset"].as_u64().unwrap(),
        last + missed,
        "{answer}"
    );
    assert_eq!(answer["epoch"], epoch.as_str(), "{answer}");
    let mut second: Vec<_> = (0..missed + 200)
        .map(|_| envelope(&mut back, topic))
        .collect();
    let accepted_b = stop(from_b);
    client_b.send_text(&json!({ "publish": topic, "data": "end" }).to_string());

    // The reference saw every publication kept; A's client's and the returning client's
    // together are exactly those, offset by offset.
    let mut all = Vec::new();
    loop {
        let got = envelope(&mut reference, topic);
        let end = got.2 == "end";
        all.push(got);
        if end {
            break;
        }
    }
    let end = all.last().unwrap().0;
    while second.last().unwrap().0 < end {
        second.push(envelope(&mut back, topic));
    }
    let mut seen = first;
    seen.extend(second);
    assert_eq!(seen.len(), all.len());
    for (i, (got, want)) in seen.iter().zip(&all).enumerate() {
        assert_eq!(got, want, "publication {i}");
        assert_eq!(got.0, i as u64 + 1, "offsets one by one from 1");
        assert_eq!(got.1, epoch);
    }
    assert!(missed > 0, "publishing went on while the client was away");
    // Every publication B accepted, once, in order; A's up to what its link passed on before
    // the kill; the client's, in order.
    assert_eq!(numbers(&all, "b"), (1..=accepted_b).collect::<Vec<_>>());
    let kept_a = numbers(&all, "a");
    assert_eq!(kept_a, (1..=kept_a.len() as u64).collect::<Vec<_>>());
    // One more than accepted when the kill came between A handing the last one on and its
    // answer reaching the publisher.
    assert!(kept_a.len() as u64 <= accepted_a + 1 && !kept_a.is_empty());
    let from_client = numbers(&all, "c");
    assert_eq!(from_client, (1..=30).collect::<Vec<_>>());

    // The API reports the stream's window.
    assert_eq!(
        window(&b, topic),
        json!({ "first": 1, "last": end, "epoch": epoch })
    );
}
