//! The listen scenario against the real binary (`corecast --mode pubsub`, one shard, ports
//! picked by the kernel): a few hundred clients subscribe, the test sends broadcasts and
//! publications through the HTTP API, and the generator's counts must match exactly; an end
//! that claims more than was sent must fail the run, naming the message that never came.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corecast_load::listen::ledger::{self, Stream};
use corecast_load::listen::{self, ListenOptions, ListenReport};
use corecast_load::many_nodes::{http, serving_addresses};

const WAIT: Duration = Duration::from_secs(30);

/// The `corecast` binary of this build's profile, built first (a no-op when it is fresh),
/// once for every test here.
fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/<test>: the binary lies in target/<profile>.
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    build.args(["build", "-q", "-p", "corecast-bin"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p corecast-bin failed");
    profile_dir.join("corecast")
}

/// The binary in pubsub mode, killed on drop.
struct Server {
    child: Child,
    ws: SocketAddr,
    api: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary())
        .args(["--mode", "pubsub", "--shards", "1"])
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corecast starts");
    let stderr = child.stderr.take().expect("its stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addrs) = serving_addresses(&line) {
                let _ = tx.send(addrs);
            }
        }
    });
    let (ws, api) = rx.recv_timeout(WAIT).expect("the serving log line");
    Server {
        child,
        ws,
        api: api.expect("the API is on"),
    }
}

fn api(server: &Server, path: &str, body: &str) -> (u16, String) {
    let method = if body.is_empty() { "GET" } else { "POST" };
    http(server.api, method, path, body.as_bytes(), WAIT).expect("the API answers")
}

/// Waits until the topic has `n` subscribers on the server.
fn wait_subscribers(server: &Server, topic: &str, n: u64) {
    let end = Instant::now() + WAIT;
    loop {
        let (_, body) = api(server, &format!("/api/topics/{topic}"), "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["subscribers"].as_u64() == Some(n) {
            return;
        }
        assert!(Instant::now() < end, "{n} subscribers never came: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends message `seq` of `stream`, or its end when `end` is given.
fn send(server: &Server, stream: Stream, seq: u64, end: Option<u64>) {
    let body = match end {
        Some(count) => ledger::end(stream, count),
        None => ledger::message(stream, seq, corecast_load::payload::now_ns()),
    };
    let path = match stream {
        Stream::Broadcast => "/api/broadcast",
        Stream::Publication => "/api/publish/everyone",
    };
    let (status, answer) = api(server, path, &body);
    assert_eq!(status, 200, "{path}: {answer}");
}

/// Runs `clients` listeners; once all are subscribed, `send` sends; returns the report.
fn listen(server: &Server, clients: usize, send: impl FnOnce()) -> ListenReport {
    let mut opts = ListenOptions::new(&format!("ws://{}/ws", server.ws), clients).unwrap();
    opts.duration = WAIT;
    let run = std::thread::spawn(move || listen::run(opts));
    wait_subscribers(server, "everyone", clients as u64);
    send();
    run.join().expect("the run ends").expect("the run is made")
}

#[test]
fn every_client_counts_every_api_message_exactly_once() {
    let server = start();
    let r = listen(&server, 300, || {
        for seq in 0..2 {
            send(&server, Stream::Broadcast, seq, None);
            send(&server, Stream::Publication, seq, None);
        }
        send(&server, Stream::Broadcast, 0, Some(2));
        send(&server, Stream::Publication, 0, Some(2));
    });
    assert!(r.ok, "{}", r.summary());
    assert_eq!((r.connected, r.dropped, r.open_at_end), (300, 0, 300));
    for s in [&r.broadcasts, &r.publications] {
        assert_eq!(s.sent, Some(2));
        assert_eq!((s.expected, s.delivered), (600, 600));
        assert_eq!(s.clients_complete, 300);
        assert_eq!(s.latency.count, 600);
    }
}

#[test]
fn an_end_that_claims_more_than_arrived_fails_the_run() {
    let server = start();
    let r = listen(&server, 50, || {
        send(&server, Stream::Broadcast, 0, None);
        send(&server, Stream::Publication, 0, None);
        send(&server, Stream::Broadcast, 0, Some(2));
        send(&server, Stream::Publication, 0, Some(1));
    });
    assert!(!r.ok);
    assert_eq!((r.broadcasts.expected, r.broadcasts.delivered), (100, 50));
    assert_eq!(r.broadcasts.clients_complete, 0);
    assert_eq!(
        (r.publications.delivered, r.publications.clients_complete),
        (50, 50)
    );
    assert_eq!(r.fault_count, 50);
    assert!(
        r.faults
            .iter()
            .any(|f| f.ends_with("never got broadcast 1")),
        "{:?}",
        r.faults
    );
}
