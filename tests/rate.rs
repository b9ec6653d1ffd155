//! The inbound rate limit (`Config::client_message_rate`) seen from outside: what a flooding
//! client gets delivered, what it is told, how it is closed, and that a client within its
//! limit never notices it.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use corecast::{event, Config, Server};

/// A route whose clients may send 5 messages a second, in bursts of up to 5.
fn limited_server() -> (TestServer, std::sync::mpsc::Receiver<(String, usize)>) {
    let cfg = Config {
        client_message_rate: 5,
        ..Config::default()
    };
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .route_with_config("/ws", cfg, report),
    );
    (ts, uuids)
}

/// `n` masked text frames "m0", "m1", ... in one buffer, written at once.
fn burst(n: usize) -> Vec<u8> {
    burst_of("m", n)
}

/// `n` masked text frames "<prefix>0", "<prefix>1", ...
fn burst_of(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| masked_frame(0x81, format!("{prefix}{i}").as_bytes()))
        .collect()
}

fn rate_limited_drops(server: &Server) -> u64 {
    server
        .metrics()
        .drops
        .iter()
        .find(|(cause, _)| *cause == "rate_limited")
        .map_or(0, |(_, n)| *n)
}

/// Reads frames until the close frame; returns its code and reason (pings are skipped, any
/// data frame fails the test: nothing here sends the client data).
fn read_close(raw: &mut RawClient) -> (u16, String) {
    loop {
        let (b0, p) = raw.read_frame();
        match b0 & 0x0f {
            0x9 => continue,
            0x8 => {
                let code = u16::from_be_bytes([p[0], p[1]]);
                return (code, String::from_utf8_lossy(&p[2..]).into_owned());
            }
            op => panic!("unexpected frame, opcode {op}"),
        }
    }
}

#[test]
fn a_flood_delivers_the_burst_refuses_the_rest_and_closes_1008() {
    let (ts, uuids) = limited_server();
    let rec = Recorder::attach(
        &ts.server,
        &[event::MESSAGE, event::ERROR, event::DISCONNECT],
    );
    let mut raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    raw.stream.write_all(&burst(20)).unwrap();

    assert_eq!(read_close(&mut raw), (1008, "rate limit".to_string()));
    rec.wait_event(event::DISCONNECT, &uuid);
    let seen = rec.seen.lock().unwrap().clone();
    let messages: Vec<_> = seen
        .iter()
        .filter(|s| s.name == event::MESSAGE)
        .map(|s| String::from_utf8_lossy(&s.data).into_owned())
        .collect();
    assert_eq!(
        messages,
        ["m0", "m1", "m2", "m3", "m4"],
        "exactly the burst"
    );
    // Refused: one error each, with the message, until one refusal more than the rate (6)
    // closes the connection; what followed the close is not looked at.
    let refused: Vec<_> = seen
        .iter()
        .filter(|s| s.name == event::ERROR)
        .map(|s| {
            assert_eq!(s.error.as_deref(), Some("RateLimited"));
            String::from_utf8_lossy(&s.data).into_owned()
        })
        .collect();
    assert_eq!(refused, ["m5", "m6", "m7", "m8", "m9", "m10"]);
    assert_eq!(rate_limited_drops(&ts.server), 6);
    // The close is the server's own, not a failure.
    let disconnect = rec.wait_event(event::DISCONNECT, &uuid);
    assert_eq!(disconnect.error, None);
    ts.wait_connections(0);
}

#[test]
fn a_client_a_little_over_loses_the_excess_and_stays() {
    let (ts, uuids) = limited_server();
    let rec = Recorder::attach(&ts.server, &[event::MESSAGE, event::ERROR]);
    let mut raw = RawClient::connect(ts.addr(), "/ws");
    let (uuid, _) = next_uuid(&uuids);
    raw.stream.write_all(&burst(7)).unwrap();
    rec.wait("the second refusal", |s| s.data == b"m6");
    let names = rec.names_for(&uuid);
    assert_eq!(
        names,
        ["message", "message", "message", "message", "message", "error", "error"]
    );
    // A second later the bucket is full again: the next message is delivered.
    std::thread::sleep(Duration::from_millis(1100));
    raw.send_frame(0x1, b"later");
    rec.wait("the later message", |s| {
        s.name == event::MESSAGE && s.data == b"later"
    });
    assert_eq!(ts.server.connections(), 1);
    assert_eq!(rate_limited_drops(&ts.server), 2);
}

#[test]
fn a_client_within_its_limit_is_unaffected_by_a_flooding_neighbour() {
    let (ts, uuids) = limited_server();
    let rec = Recorder::attach(&ts.server, &[event::MESSAGE, event::ERROR]);
    let mut calm = RawClient::connect(ts.addr(), "/ws");
    let (calm_uuid, _) = next_uuid(&uuids);
    let mut flood = RawClient::connect(ts.addr(), "/ws");
    next_uuid(&uuids);
    flood.stream.write_all(&burst(50)).unwrap();
    assert_eq!(read_close(&mut flood).0, 1008);
    // The calm client sends its whole rate, twice, a second apart.
    for round in ["a", "b"] {
        if round == "b" {
            std::thread::sleep(Duration::from_millis(1050));
        }
        calm.stream.write_all(&burst_of(round, 5)).unwrap();
        let last = format!("{round}4");
        rec.wait("the calm client's fifth", |s| {
            s.uuid == calm_uuid && s.name == event::MESSAGE && s.data == last.as_bytes()
        });
    }
    let calm_events = rec.names_for(&calm_uuid);
    assert_eq!(calm_events.len(), 10, "{calm_events:?}");
    assert!(calm_events.iter().all(|n| n == event::MESSAGE));
    assert_eq!(ts.server.connections(), 1);
}
