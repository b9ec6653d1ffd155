//! What the binary's black-box tests share: a `corecast` process on free ports, killed on
//! drop, and a one-shot HTTP request. Not a test of its own.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Client, WAIT};

/// A running binary, killed on drop, with the log lines it wrote up to "corecast serving".
pub struct Bin {
    pub child: Child,
    pub ws: SocketAddr,
    pub api: Option<SocketAddr>,
    pub log: Vec<String>,
}

impl Bin {
    pub fn start(args: &[&str]) -> Bin {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Bin {
        Self::start_on_shards(2, args, env)
    }

    pub fn client(&self, path: &str) -> Client {
        Client::connect(self.ws, path)
    }

    pub fn api(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
        http_request(self.api.expect("api on"), method, path, headers, body)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit; returns its code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Bin {
    /// The binary on `shards` shards (`start` and `start_with_env` run 2), with the API on,
    /// both on 127.0.0.1:0; returns once it logged that it serves.
    pub fn start_on_shards(shards: usize, args: &[&str], env: &[(&str, &str)]) -> Bin {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corecast"));
        cmd.args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
            .args(["--shards", &shards.to_string()])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start corecast");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        let line = loop {
            let line = rx.recv_timeout(WAIT).expect("the serving log line");
            log.push(line.clone());
            if line.contains("corecast serving") {
                break line;
            }
        };
        let field = |name: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
        };
        Bin {
            ws: field("listen").expect("listen address in the log"),
            api: field("api"),
            log,
            child,
        }
    }
}

/// An upgrade request to `path`: the status, and the body of a refusal.
pub fn upgrade(addr: SocketAddr, path: &str) -> (u16, String) {
    let headers = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A 101 keeps the connection open: read its head only.
    let mut resp = Vec::new();
    let mut byte = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => resp.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&resp).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status == 101 {
        return (status, String::new());
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    (status, body)
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
