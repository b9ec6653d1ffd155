//! Running out of file descriptors: accept fails with EMFILE, the shard logs it and retries,
//! and once descriptors are free again it serves everyone. Its own test binary, because the
//! limit it lowers is the whole process's.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use corecast::{MessageType, Server};

/// Log lines, captured so the test can see the shard's warning.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn set_soft_nofile(n: u64) {
    // SAFETY: getrlimit/setrlimit with a struct we own; the soft limit stays under the hard one.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = n.min(l.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

#[test]
fn the_shard_survives_emfile_and_serves_again() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", |_| {}));
    let mut first = ts.client("/ws");
    ts.wait_connections(1);
    // SAFETY: getrlimit into a local struct.
    let original = unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur
    };

    // A socket made while there is room; connected once there is none.
    let spare = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // The lowest free descriptor number becomes the limit: no new descriptor can be made.
    // SAFETY: dup/close of stdin's descriptor only probe the lowest free number.
    let lowest_free = unsafe {
        let fd = libc::dup(0);
        libc::close(fd);
        fd as u64
    };
    set_soft_nofile(lowest_free);
    spare
        .connect(&ts.addr().into())
        .expect("connect needs no new descriptor");
    // The server takes a connection once its first bytes are in (TCP_DEFER_ACCEPT).
    spare.send(b"G").expect("send needs no new descriptor");
    wait_until(
        || String::from_utf8_lossy(&logs.0.lock().unwrap()).contains("accept failed"),
        "the shard's accept-failed warning",
    );
    set_soft_nofile(original);

    // The shard kept serving and retried: the first client is served, new clients upgrade.
    ts.server.broadcast("after EMFILE", MessageType::Text);
    assert_eq!(first.recv_text(), "after EMFILE");
    let mut fresh = ts.client("/ws");
    ts.wait_connections(2);
    ts.server.broadcast("again", MessageType::Text);
    assert_eq!(fresh.recv_text(), "again");
    assert_eq!(first.recv_text(), "again");
    drop(spare);
}
