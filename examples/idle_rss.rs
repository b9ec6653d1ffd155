//! Measures the server's resident memory per idle connection: starts a corecast server in a
//! child process, opens N WebSocket connections to it from this one, and compares the child's
//! VmRSS before and after. Usage: `cargo run --release --example idle_rss -- [N] [shards]`.
//! Loopback only; ends by itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corecast::{Config, Server};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        serve(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1));
        return;
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let shards: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    raise_fd_limit();
    let mut child = Command::new(&args[0])
        .args(["--serve", &shards.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut line = String::new();
    let mut out = child.stdout.take().expect("child stdout");
    let mut b = [0u8; 1];
    while !line.ends_with('\n') && out.read(&mut b).unwrap_or(0) == 1 {
        line.push(b[0] as char);
    }
    let addr: SocketAddr = line.trim().parse().expect("server address");
    let pid = child.id();
    // Warm up: one connection opened and closed, so one-time allocations are not counted.
    drop(connect(addr));
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let start = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(connect(addr));
        if (i + 1) % 1000 == 0 {
            eprint!("\r{} connections", i + 1);
        }
    }
    eprintln!("\r{n} connections in {:.1?}", start.elapsed());
    // Let the server settle (every connection has had its first ping).
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "server RSS: {before} KiB before, {after} KiB with {n} idle connections ({shards} shard(s)): {per_conn:.0} bytes per connection"
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}

fn serve(shards: usize) {
    raise_fd_limit();
    // A long ping interval: the idle clients of this tool do not answer pings.
    let cfg = Config {
        ping_interval: Duration::from_secs(60),
        ..Config::default()
    };
    let server = Server::builder()
        .shards(shards)
        .route_with_config("/ws", cfg, |_| {})
        .start()
        .expect("server starts");
    println!("{}", server.local_addr());
    let _ = std::io::stdout().flush();
    let _ = server.join();
}

fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("response"), 1, "server closed");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}
