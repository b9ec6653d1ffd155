//! Write coalescing seen from outside: a fan-out shard holds its next flush pass so that
//! frames queued apart share one write per socket, ends the hold once they do, waits for the
//! rest of a burst the size of the last one (up to eight a socket), a lull is not held, and a
//! zero bound never holds.
//! Counted with the server's own write and hold counters; the rule's details are unit-tested
//! in `shard/coalescing.rs`.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use corecast::{Config, MessageType, MetricsSnapshot, Server};

/// Above the 64 sockets a pass must write to count as fan-out.
const CLIENTS: usize = 100;

fn start(bound: Duration) -> (TestServer, Vec<Client>) {
    start_with(bound, |_| {})
}

fn start_with(bound: Duration, setup: impl FnOnce(&corecast::Server)) -> (TestServer, Vec<Client>) {
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
    setup(&server.server);
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

/// The writes and held passes the server made while `f` ran.
fn counted(server: &TestServer, f: impl FnOnce()) -> (u64, u64) {
    let before = server.server.metrics();
    f();
    let after = server.server.metrics();
    (
        writes(&after) - writes(&before),
        holds(&after) - holds(&before),
    )
}

/// Two broadcasts queued 20 ms apart, after a pass that wrote one frame to each of 100 sockets:
/// held, they leave in one write per socket, in order; written at once, in two.
fn two_broadcasts_apart(bound: Duration) -> (u64, u64) {
    let (server, mut clients) = start(bound);
    broadcast_and_receive(&server, &mut clients, "a");
    counted(&server, || {
        server.server.broadcast("b", MessageType::Text);
        // The gap a hold spans: without one, "b" is written before "c" is queued.
        std::thread::sleep(Duration::from_millis(20));
        server.server.broadcast("c", MessageType::Text);
        for c in clients.iter_mut() {
            assert_eq!(c.recv_text(), "b");
            assert_eq!(c.recv_text(), "c");
        }
    })
}

/// (writes, holds) of a run where a held pass should have gathered frames sent apart.
fn assert_gathered((writes, holds): (u64, u64), what: &str) {
    assert!(holds >= 1, "no pass was held: {what}");
    assert!(
        writes < CLIENTS as u64 * 3 / 2,
        "{writes} writes for {what} to each of {CLIENTS} sockets: not gathered"
    );
}

/// (writes, holds) of a run with holding off: every pass written at once.
fn assert_written_apart((writes, holds): (u64, u64), what: &str) {
    assert_eq!(holds, 0);
    assert!(
        writes >= 2 * CLIENTS as u64,
        "{writes} writes: {what} were written together"
    );
}

#[test]
fn a_sparse_fan_out_holds_the_next_pass_so_frames_share_writes() {
    assert_gathered(
        two_broadcasts_apart(Duration::from_millis(500)),
        "two frames",
    );
}

#[test]
fn a_held_pass_goes_once_each_socket_has_a_second_frame() {
    // A bound far past every wait of this test: the frames arrive only if the hold ends when
    // "c" is queued, not at its bound.
    assert_gathered(
        two_broadcasts_apart(Duration::from_secs(600)),
        "two frames under a long bound",
    );
}

#[test]
fn a_zero_bound_writes_every_pass_at_once() {
    assert_written_apart(two_broadcasts_apart(Duration::ZERO), "the two broadcasts");
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

/// Client 0's message `burst:a,b,c` broadcasts a, b and c from the shard in one go.
fn broadcast_bursts(server: &corecast::Server) {
    server.on(corecast::event::MESSAGE, |ep: &corecast::EventPayload| {
        let text = String::from_utf8_lossy(ep.data()).into_owned();
        if let Some(list) = text.strip_prefix("burst:") {
            for item in list.split(',') {
                ep.kws()
                    .broadcast(item.to_string(), false, MessageType::Text);
            }
        }
    });
}

/// After a pass that carried a burst of four to each socket, one broadcast and, 20 ms later,
/// three more: waiting for the burst's rest, they leave in one write per socket; written at
/// once, in two.
fn a_burst_split_in_time(bound: Duration) -> (u64, u64) {
    let (server, mut clients) = start_with(bound, broadcast_bursts);
    // Queued in one tick of the shard: one pass, four frames a socket.
    clients[0].send_text("burst:a,b,c,d");
    for c in clients.iter_mut() {
        for expected in ["a", "b", "c", "d"] {
            assert_eq!(c.recv_text(), expected);
        }
    }
    counted(&server, || {
        server.server.broadcast("w", MessageType::Text);
        // The gap a wait for the burst spans: without one, "w" is written before "x" is queued.
        std::thread::sleep(Duration::from_millis(20));
        clients[0].send_text("burst:x,y,z");
        for c in clients.iter_mut() {
            for expected in ["w", "x", "y", "z"] {
                assert_eq!(c.recv_text(), expected);
            }
        }
    })
}

#[test]
fn a_pass_waits_for_the_rest_of_a_burst_the_size_of_the_last() {
    assert_gathered(
        a_burst_split_in_time(Duration::from_millis(500)),
        "a burst of four",
    );
}

#[test]
fn a_pass_of_eight_a_socket_does_not_wait_for_a_bigger_burst() {
    // After a pass of ten a socket, one of eight would wait for ten; with a bound far past
    // every wait of this test, its frames arrive only if it goes at once.
    let (_server, mut clients) = start_with(Duration::from_secs(600), broadcast_bursts);
    let ten: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let eight: Vec<String> = (0..8).map(|i| format!("e{i}")).collect();
    for burst in [&ten, &eight] {
        clients[0].send_text(&format!("burst:{}", burst.join(",")));
        for c in clients.iter_mut() {
            for expected in burst.iter() {
                assert_eq!(&c.recv_text(), expected);
            }
        }
    }
}

#[test]
fn a_zero_bound_splits_the_burst() {
    assert_written_apart(a_burst_split_in_time(Duration::ZERO), "the burst's frames");
}
