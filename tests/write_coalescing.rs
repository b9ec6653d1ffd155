//! Write coalescing seen from outside: a fan-out shard holds its next flush pass so that
//! frames queued apart share one write per socket, a lull is not held, and a zero bound
//! never holds. Counted with the server's own write and hold counters; the rule's details
//! are unit-tested in `shard/coalescing.rs`.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use corecast::{Config, MessageType, MetricsSnapshot, Server};

/// Above the 64 sockets a pass must write to count as fan-out.
const CLIENTS: usize = 100;

fn start(bound: Duration) -> (TestServer, Vec<Client>) {
    // No pings during the test: they would be passes of their own.
    let config = Config {
        ping_interval: Duration::from_secs(600),
        ..Config::default()
    };
    let server = TestServer::start(
        Server::builder()
            .shards(1)
            .write_coalescing(bound)
            .route_with_config("/ws", config, |_| {}),
    );
    let clients = (0..CLIENTS).map(|_| server.client("/ws")).collect();
    server.wait_connections(CLIENTS);
    (server, clients)
}

/// Broadcasts `text` and waits until every client has it.
fn broadcast_and_receive(server: &TestServer, clients: &mut [Client], text: &str) {
    server.server.broadcast(text.to_string(), MessageType::Text);
    for c in clients.iter_mut() {
        assert_eq!(c.recv_text(), text);
    }
}

fn writes(m: &MetricsSnapshot) -> u64 {
    m.socket_writes.iter().sum()
}

fn holds(m: &MetricsSnapshot) -> u64 {
    m.held_passes.iter().sum()
}

/// Two broadcasts queued 20 ms apart, after a pass that wrote one frame to each of 100 sockets:
/// held, they leave in one write per socket, in order; written at once, in two.
fn two_broadcasts_apart(bound: Duration) -> (u64, u64) {
    let (server, mut clients) = start(bound);
    broadcast_and_receive(&server, &mut clients, "a");
    let before = server.server.metrics();
    server.server.broadcast("b", MessageType::Text);
    // The gap a hold spans: without one, "b" is written before "c" is queued.
    std::thread::sleep(Duration::from_millis(20));
    server.server.broadcast("c", MessageType::Text);
    for c in clients.iter_mut() {
        assert_eq!(c.recv_text(), "b");
        assert_eq!(c.recv_text(), "c");
    }
    let after = server.server.metrics();
    (
        writes(&after) - writes(&before),
        holds(&after) - holds(&before),
    )
}

#[test]
fn a_sparse_fan_out_holds_the_next_pass_so_frames_share_writes() {
    let (writes, holds) = two_broadcasts_apart(Duration::from_millis(500));
    assert!(holds >= 1, "the pass after a sparse fan-out is held");
    assert!(
        writes < CLIENTS as u64 * 3 / 2,
        "{writes} writes for two frames to each of {CLIENTS} sockets: not gathered"
    );
}

#[test]
fn a_zero_bound_writes_every_pass_at_once() {
    let (writes, holds) = two_broadcasts_apart(Duration::ZERO);
    assert_eq!(holds, 0);
    assert!(
        writes >= 2 * CLIENTS as u64,
        "{writes} writes: the two broadcasts were written together"
    );
}

#[test]
fn a_message_after_a_lull_is_not_held() {
    let bound = Duration::from_millis(20);
    let (server, mut clients) = start(bound);
    // A sparse fan-out pass: the shard would hold the next one.
    broadcast_and_receive(&server, &mut clients, "a");
    // A lull of more than four bounds: the shard is quiet again.
    std::thread::sleep(bound * 10);
    let before = holds(&server.server.metrics());
    broadcast_and_receive(&server, &mut clients, "b");
    assert_eq!(holds(&server.server.metrics()), before, "held after a lull");
}
