//! Open, idle plain connections hold no task: they are parked, and whatever needs the socket
//! itself takes it up again (a close from the server or the client, a slow client's full
//! socket, the shutdown). Seen from outside through `MetricsSnapshot::connection_tasks` and
//! what the clients get.

mod common;

use std::time::Duration;

use common::{next_uuid, uuid_reporter, wait_until, Client, RawClient, TestServer};
use corecast::{MessageType, Server};

const CLIENTS: usize = 20;

fn tasks(server: &Server) -> u64 {
    server.metrics().connection_tasks.iter().sum()
}

/// Waits until no connection task runs: every open connection is parked.
fn wait_parked(server: &TestServer, what: &str) {
    wait_until(|| tasks(&server.server) == 0, what);
}

/// Broadcasts `text` and waits until each of `clients` has it.
fn broadcast_to(server: &TestServer, clients: &mut [Client], text: &str) {
    server.server.broadcast(text.to_string(), MessageType::Text);
    for c in clients.iter_mut() {
        assert_eq!(c.recv_text(), text);
    }
}

#[test]
fn idle_connections_park_and_are_taken_up_for_closes() {
    let (report, uuids) = uuid_reporter();
    // One shard: each callback runs before the next client's handshake is read, so the first
    // UUID reported is the first client's.
    let server = TestServer::start(Server::builder().shards(1).route("/ws", report));
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| server.client("/ws")).collect();
    server.wait_connections(CLIENTS);
    let first = next_uuid(&uuids).0;
    wait_parked(&server, "every open, idle connection parked");

    // Writes do not need a task: the flush pass writes a parked connection's socket.
    broadcast_to(&server, &mut clients, "to all");
    assert_eq!(
        tasks(&server.server),
        0,
        "a broadcast woke connection tasks"
    );

    // A server close: the close frame goes out, the client answers, the socket is finished.
    let mut closed_by_server = clients.remove(0);
    server.server.close(&first).expect("connected");
    let (code, _) = closed_by_server.recv_close();
    assert_eq!(code, 1000);
    assert!(
        closed_by_server.wait_closed(),
        "the server finished the socket"
    );

    // A client close, on another connection.
    let mut closing = clients.remove(0);
    closing.close(1000, "bye");
    assert!(closing.wait_closed(), "the client's close was answered");
    // Their TCP closes end the server's lingers (it reads until the peer closes too).
    drop((closed_by_server, closing));
    server.wait_connections(CLIENTS - 2);
    wait_parked(&server, "the closes' tasks ended and nothing else woke");

    // The connections left still get everything.
    broadcast_to(&server, &mut clients, "still here");
}

#[test]
fn a_full_socket_takes_a_task_and_the_client_gets_every_message() {
    // A small send buffer, so that the socket fills long before the queue does.
    let server = TestServer::start(
        Server::builder()
            .shards(1)
            .socket_send_buffer(16 << 10)
            .route("/ws", |_| {}),
    );
    let mut slow = RawClient::connect_small_window(server.addr(), "/ws");
    server.wait_connections(1);
    wait_parked(&server, "the connection parked");
    // Far more than a 4 KiB receive window and a 16 KiB send buffer hold, less than the
    // send queue's 100 messages: the socket fills and nothing is dropped.
    let payload = "x".repeat(16 << 10);
    let messages = 64;
    for i in 0..messages {
        server
            .server
            .broadcast(format!("{i}:{payload}"), MessageType::Text);
    }
    wait_until(
        || tasks(&server.server) == 1,
        "a task waits for room on the full socket",
    );
    for i in 0..messages {
        let (opcode, data) = slow.read_message();
        assert_eq!(opcode & 0x0f, 1, "a text message");
        let text = String::from_utf8(data).expect("text");
        assert_eq!(text, format!("{i}:{payload}"), "message {i}");
    }
}

#[test]
fn a_shutdown_finishes_parked_connections() {
    let server = TestServer::start(Server::builder().shards(2).route("/ws", |_| {}));
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| server.client("/ws")).collect();
    server.wait_connections(CLIENTS);
    wait_parked(&server, "every connection parked");
    server.server.shutdown_within(Duration::from_secs(5));
    for c in clients.iter_mut() {
        let (code, _) = c.recv_close();
        assert_eq!(code, 1001, "going away");
    }
    server.server.join().expect("stops cleanly");
}
