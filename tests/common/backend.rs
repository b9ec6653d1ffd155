//! A test backend: a small threaded HTTP/1.1 server on 127.0.0.1:0 that records every JSON
//! request it gets and answers as the test says (a status and body, after a delay, or never).
//! Not a real backend: one thread per connection, keep-alive, `Content-Length` bodies only.
//! Self-contained, so the binary's tests can use it too (`#[path]`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How the backend answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status and JSON body.
    Json(u16, String),
    /// The same, after a delay.
    Slow(Duration, u16, String),
    /// No answer until the backend is dropped.
    Hang,
}

impl Answer {
    /// 200 with this body.
    pub fn ok(body: &str) -> Answer {
        Answer::Json(200, body.to_string())
    }
}

/// One request the backend got.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    /// The status it was answered with; `None` for a request never answered.
    pub status: Option<u16>,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

type Answering = dyn Fn(&Request) -> Answer + Send + Sync;

struct State {
    requests: Mutex<Vec<Request>>,
    arrived: Condvar,
    answer: Box<Answering>,
    stopping: AtomicBool,
}

/// The running backend; stops when dropped.
pub struct TestBackend {
    addr: SocketAddr,
    state: Arc<State>,
}

impl TestBackend {
    /// Starts a backend that answers each request with `answer(request)`.
    pub fn start(answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("backend binds");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            answer: Box::new(answer),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopping.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&accepting);
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        TestBackend { addr, state }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits (at most `within`) until `done` holds for the requests so far; returns them.
    pub fn wait(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let end = Instant::now() + within;
        let mut requests = self.state.requests.lock().unwrap();
        while !done(&requests) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "backend: timed out waiting for {what}: {requests:?}"
            );
            requests = self.state.arrived.wait_timeout(requests, left).unwrap().0;
        }
        requests.clone()
    }

    /// Every event delivered to the webhook at `path` so far, in delivery order.
    pub fn events(&self, path: &str) -> Vec<serde_json::Value> {
        events_of(&self.requests(), path)
    }

    /// Waits until the webhook at `path` got events for which `done` holds.
    pub fn wait_events(
        &self,
        within: Duration,
        path: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let requests = self.wait(within, "webhook events", |r| done(&events_of(r, path)));
        events_of(&requests, path)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::Release);
        self.state.arrived.notify_all();
        // Wakes the accept loop so it sees `stopping`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// The events of every batch posted to `path` and taken (answered 2xx), in order.
pub fn events_of(requests: &[Request], path: &str) -> Vec<serde_json::Value> {
    requests
        .iter()
        .filter(|r| r.path == path && r.status.is_some_and(|s| (200..300).contains(&s)))
        .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut length, mut authorization) = (0, None);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if state.stopping.load(Ordering::Acquire) {
            // A dropped backend is down: it answers nothing more, even on a kept connection.
            return;
        }
        let mut request = Request {
            path,
            status: None,
            authorization,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        };
        let answer = (state.answer)(&request);
        request.status = match &answer {
            Answer::Json(status, _) | Answer::Slow(_, status, _) => Some(*status),
            Answer::Hang => None,
        };
        state.requests.lock().unwrap().push(request);
        state.arrived.notify_all();
        let (status, body) = match answer {
            Answer::Json(status, body) => (status, body),
            Answer::Slow(delay, status, body) => {
                std::thread::sleep(delay);
                (status, body)
            }
            Answer::Hang => {
                while !state.stopping.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A NATS subscriber speaking the plain text protocol over TCP: enough to watch the subjects
/// the server publishes events on, without a client library.
pub struct NatsWatcher {
    reader: BufReader<TcpStream>,
}

impl NatsWatcher {
    /// Subscribes to `subject` (wildcards allowed) on the NATS server at `port`, and returns
    /// once the server confirmed the subscription.
    pub fn subscribe(port: u16, subject: &str) -> NatsWatcher {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("NATS accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\nPING\r\n"
        )
        .unwrap();
        let mut watcher = NatsWatcher {
            reader: BufReader::new(stream),
        };
        // INFO first, then PONG once the SUB before the PING is in place.
        loop {
            let line = watcher.line();
            if line.starts_with("PONG") {
                return watcher;
            }
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("a line from NATS within 10 s");
        assert!(n > 0, "NATS closed the connection");
        line
    }

    /// The next message: its subject and payload (answering the server's pings meanwhile).
    pub fn next(&mut self) -> (String, serde_json::Value) {
        loop {
            let line = self.line();
            if line.starts_with("PING") {
                self.reader.get_mut().write_all(b"PONG\r\n").unwrap();
                continue;
            }
            let Some(rest) = line.strip_prefix("MSG ") else {
                continue;
            };
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let size: usize = parts.last().and_then(|s| s.parse().ok()).expect("MSG size");
            let mut payload = vec![0; size + 2];
            self.reader.read_exact(&mut payload).expect("MSG payload");
            payload.truncate(size);
            let value = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
            return (parts[0].to_string(), value);
        }
    }
}
