//! After `shutdown()` and `join()`, nothing the server started is left: no thread, no socket,
//! no other descriptor (the Go helper checks the same with goleak). Its own test binary, so no
//! other test's server runs in the process meanwhile.
//!
//! One exception, outside corecast: glommio 0.9 keeps one eventfd per executor open after the
//! executor ends (glommio issue #448: a task header holds the executor's sleep notifier). The
//! test allows exactly that and no more.

mod common;

use std::time::Duration;

use common::*;
use corecast::{event, MessageType, Server};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Open descriptors: (eventfds, all others), each as "kind" strings.
fn fds() -> (usize, Vec<String>) {
    let links: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        // The listing's own descriptor.
        .filter(|p| !p.starts_with("/proc/"))
        .collect();
    let eventfds = links.iter().filter(|l| l.contains("[eventfd]")).count();
    let mut others: Vec<String> = links
        .into_iter()
        .filter(|l| !l.contains("[eventfd]"))
        .collect();
    others.sort();
    (eventfds, others)
}

#[test]
fn start_serve_and_stop_leave_no_thread_and_no_descriptor() {
    let (threads_before, fds_before) = (threads(), fds());
    const CYCLES: usize = 3;
    const SHARDS: usize = 2;
    for _ in 0..CYCLES {
        let server = Server::builder()
            .bind("127.0.0.1:0")
            .shards(SHARDS)
            .route("/ws", |_| {})
            .start()
            .expect("server starts");
        server.on(event::MESSAGE, |ep| {
            ep.kws().emit(ep.data().clone(), MessageType::Text);
        });
        let mut clients: Vec<Client> = (0..4)
            .map(|_| Client::connect(server.local_addr(), "/ws"))
            .collect();
        for c in &mut clients {
            c.send_text("ping?");
            assert_eq!(c.recv_text(), "ping?");
        }
        server.shutdown_within(Duration::from_secs(2));
        server.join().expect("shards stop");
        for c in &mut clients {
            assert_eq!(c.recv_close().0, 1001);
        }
        drop(clients);
    }
    // Threads leave /proc a moment after join returns; wait for that, bounded.
    wait_until(
        || threads() == threads_before,
        "threads back to the start count",
    );
    let (eventfds_after, others_after) = fds();
    assert_eq!(
        others_after, fds_before.1,
        "sockets, pipes and files back to the start"
    );
    assert!(
        eventfds_after <= fds_before.0 + CYCLES * SHARDS,
        "{eventfds_after} eventfds, more than glommio's one per executor"
    );
}
