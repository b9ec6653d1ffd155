//! Shared test harness: a server on 127.0.0.1:0 that shuts down on drop, blocking WebSocket
//! clients whose every read is bounded, and an event recorder to wait on. Not a test itself.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corecast::{Builder, EventPayload, Server};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// Every wait in the tests ends after this, at most.
pub const WAIT: Duration = Duration::from_secs(10);

/// A started server, shut down and joined when dropped.
pub struct TestServer {
    pub server: Server,
}

impl TestServer {
    pub fn start(builder: Builder) -> TestServer {
        let server = builder.bind("127.0.0.1:0").start().expect("server starts");
        TestServer { server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn client(&self, path: &str) -> Client {
        Client::connect(self.addr(), path)
    }

    /// Waits until the server counts `n` live connections.
    pub fn wait_connections(&self, n: usize) {
        wait_until(|| self.server.connections() == n, "connection count");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown_within(Duration::from_secs(1));
        let _ = self.server.join();
    }
}

/// Polls `cond` until it holds; panics after `WAIT`. For state that has no event to wait on.
pub fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The status a well-formed upgrade request to `path` gets (101 when accepted).
pub fn upgrade_status(addr: SocketAddr, path: &str) -> u16 {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    http_status(addr, &req)
}

/// How many connections went before their upgrade for `cause`
/// (`corecast_handshake_failures_total{cause}`).
pub fn handshake_failures(server: &Server, cause: &str) -> u64 {
    let failures = server.metrics().handshake_failures;
    failures
        .iter()
        .find(|(c, _)| *c == cause)
        .map_or(0, |f| f.1)
}

/// Upgrades at `path` once the server accepts it, retrying until then (bounded by `WAIT`).
pub fn client_when_accepted(addr: SocketAddr, path: &str, what: &str) -> Client {
    let mut client = None;
    wait_until(
        || {
            client = try_client(addr, path);
            client.is_some()
        },
        what,
    );
    client.expect("accepted")
}

/// One attempt to upgrade at `path`: the client, or `None` if refused.
fn try_client(addr: SocketAddr, path: &str) -> Option<Client> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(WAIT)).ok()?;
    let url = format!("ws://{addr}{path}");
    tungstenite::client(url.as_str(), stream)
        .ok()
        .map(|(ws, _)| Client { ws })
}

/// A blocking client; reads time out after `WAIT`.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
        Client { ws }
    }

    pub fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).expect("send");
    }

    pub fn send_binary(&mut self, b: &[u8]) {
        self.ws.send(Message::binary(b.to_vec())).expect("send");
    }

    /// The next data message, skipping pings and pongs; panics after `WAIT` in all (pings
    /// arriving meanwhile do not extend it).
    pub fn recv(&mut self) -> Message {
        let end = Instant::now() + WAIT;
        loop {
            match self.ws.read().expect("read") {
                Message::Ping(_) | Message::Pong(_) => {
                    assert!(Instant::now() < end, "no data message within {WAIT:?}");
                }
                m => return m,
            }
        }
    }

    pub fn recv_text(&mut self) -> String {
        match self.recv() {
            Message::Text(t) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Reads until the server's close frame; returns its code and reason.
    pub fn recv_close(&mut self) -> (u16, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }

    pub fn close(&mut self, code: u16, reason: &str) {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.to_string().into(),
            }))
            .expect("close");
    }

    /// Reads until the connection ends; true if it ended (EOF, reset or close).
    pub fn wait_closed(&mut self) -> bool {
        loop {
            match self.ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// A raw socket (plain TCP, or TLS: `RawClient<Tls>`) after a completed handshake, for
/// frames a well-behaved client never sends.
pub struct RawClient<S = TcpStream> {
    pub stream: S,
}

impl RawClient {
    pub fn connect(addr: SocketAddr, path: &str) -> RawClient {
        Self::connect_with(addr, path, "").0
    }

    /// Connects with extra request header lines (each ending in CRLF); returns the 101's head.
    pub fn connect_with(addr: SocketAddr, path: &str, headers: &str) -> (RawClient, String) {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        upgrade(stream, addr, path, headers)
    }

    /// Connects with a small, fixed receive buffer: what the client does not read backs up
    /// into the server's queue quickly.
    pub fn connect_small_window(addr: SocketAddr, path: &str) -> RawClient {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.connect(&addr.into()).expect("tcp connect");
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        upgrade(stream, addr, path, "").0
    }
}

impl RawClient<Tls> {
    /// `connect_with` over TLS, trusting only `trusted`.
    pub fn connect_tls(
        addr: SocketAddr,
        path: &str,
        headers: &str,
        trusted: &[&CertificateDer<'static>],
    ) -> (RawClient<Tls>, String) {
        upgrade(tls_stream(addr, trusted), addr, path, headers)
    }
}

/// Sends the upgrade request on `stream` and reads the 101.
fn upgrade<S: Read + Write>(
    mut stream: S,
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> (RawClient<S>, String) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {headers}\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
    (RawClient { stream }, head)
}

impl<S: Read + Write> RawClient<S> {
    /// Sends one masked frame (FIN set) with `opcode` and `payload`.
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&masked_frame(0x80 | opcode, payload))
            .unwrap();
    }

    /// Reads one server frame: (first byte, payload).
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.stream.read_exact(&mut h).expect("frame header");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        (h[0], payload)
    }

    /// Reads one data or close frame, skipping pings and pongs (the server may ping at any
    /// time): (first byte, payload).
    pub fn read_message(&mut self) -> (u8, Vec<u8>) {
        loop {
            let (b0, payload) = self.read_frame();
            if !matches!(b0 & 0x0f, 0x9 | 0xA) {
                return (b0, payload);
            }
        }
    }

    /// Reads frames until a close frame; returns its code.
    pub fn read_close_code(&mut self) -> u16 {
        loop {
            let (b0, p) = self.read_frame();
            if b0 & 0x0f == 0x8 {
                return if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    1005
                };
            }
        }
    }
}

/// A client frame: masked with a fixed key, as RFC 6455 §5.3 requires of clients.
pub fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![first_byte];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Reads an HTTP response head (up to the blank line).
pub fn read_head(stream: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends raw bytes and returns the status code of the response.
pub fn http_status(addr: SocketAddr, request: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// One recorded event.
#[derive(Debug, Clone)]
pub struct Seen {
    pub name: String,
    pub uuid: String,
    pub data: Vec<u8>,
    pub error: Option<String>,
    pub is_timeout: bool,
}

/// Records the events of the names it is given, from every connection.
pub struct Recorder {
    rx: Mutex<mpsc::Receiver<Seen>>,
    pub seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    pub fn attach(server: &Server, names: &[&str]) -> Arc<Recorder> {
        let (tx, rx) = mpsc::channel();
        for name in names {
            let tx = Mutex::new(tx.clone());
            server.on(name, move |ep: &EventPayload| {
                let _ = tx.lock().unwrap().send(Seen::of(ep));
            });
        }
        Arc::new(Recorder {
            rx: Mutex::new(rx),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Waits for an event matching `pred`; returns it. Everything received on the way is kept.
    pub fn wait(&self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        if let Some(s) = self.seen.lock().unwrap().iter().find(|s| pred(s)) {
            return s.clone();
        }
        let end = Instant::now() + WAIT;
        let rx = self.rx.lock().unwrap();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let s = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            self.seen.lock().unwrap().push(s.clone());
            if pred(&s) {
                return s;
            }
        }
    }

    /// Waits for `event` on `uuid`.
    pub fn wait_event(&self, name: &str, uuid: &str) -> Seen {
        self.wait(&format!("{name} on {uuid}"), |s| {
            s.name == name && s.uuid == uuid
        })
    }

    /// Waits for the last of `expected` on `uuid`, then checks that exactly `expected` were
    /// seen for it, in that order; returns the last.
    pub fn expect_sequence(&self, uuid: &str, expected: &[&str]) -> Seen {
        let last = expected.last().expect("a non-empty sequence");
        let seen = self.wait_event(last, uuid);
        assert_eq!(self.names_for(uuid), expected, "events for {uuid}");
        seen
    }

    /// The names of the events seen so far for `uuid`, in order (after draining the channel).
    pub fn names_for(&self, uuid: &str) -> Vec<String> {
        let rx = self.rx.lock().unwrap();
        while let Ok(s) = rx.try_recv() {
            self.seen.lock().unwrap().push(s);
        }
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uuid == uuid)
            .map(|s| s.name.clone())
            .collect()
    }
}

impl Seen {
    pub fn of(ep: &EventPayload) -> Seen {
        Seen {
            name: ep.name().to_string(),
            uuid: ep.socket_uuid().to_string(),
            data: ep.data().to_vec(),
            error: ep.error().map(|e| format!("{e:?}")),
            is_timeout: ep.error().is_some_and(|e| e.is_timeout()),
        }
    }
}

/// A route callback that sends the connection's UUID to the test, so it can address it.
pub fn uuid_reporter() -> (
    impl Fn(&corecast::Websocket) + Send + Sync + 'static,
    mpsc::Receiver<(String, usize)>,
) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    (
        move |kws: &corecast::Websocket| {
            let _ = tx.lock().unwrap().send((kws.uuid(), kws.shard()));
        },
        rx,
    )
}

/// A route callback that subscribes each connection to the comma-separated topics of its
/// `?t=` query, then reports its UUID and shard.
pub fn subscribe_from_query() -> (
    impl Fn(&corecast::Websocket) + Send + Sync + 'static,
    mpsc::Receiver<(String, usize)>,
) {
    let (report, uuids) = uuid_reporter();
    (
        move |kws: &corecast::Websocket| {
            if let Some(list) = kws.query("t") {
                for t in list.split(',').filter(|t| !t.is_empty()) {
                    assert_eq!(kws.subscribe(t).ok(), Some(true));
                }
            }
            report(kws);
        },
        uuids,
    )
}

/// Receives the next reported UUID, bounded.
pub fn next_uuid(rx: &mpsc::Receiver<(String, usize)>) -> (String, usize) {
    rx.recv_timeout(WAIT).expect("route callback ran")
}

/// A `nats-server` with JetStream on a free loopback port, killed (and its store removed) on
/// drop. Cluster tests need it installed: `tests/run` installs it, or `apt-get install nats-server`.
pub struct Nats {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: std::path::PathBuf,
}

/// A loopback port nobody listens on now (for servers the tests start but do not bind).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Nats {
    pub fn start() -> Nats {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("corecast-nats-{}-{port}", std::process::id()));
        let mut nats = Nats {
            child: None,
            port,
            dir,
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server without closing its sockets (SIGSTOP): NATS is there but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("nats-server running");
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    /// Starts the server on its port again and waits until it accepts.
    pub fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "nats-server does not run ({e}): the cluster tests need it; \
                     install it with `apt-get install nats-server`, or run `tests/run`, which does"
                )
            });
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_until(|| TcpStream::connect(addr).is_ok(), "nats-server accepting");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client stream.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A fresh folder for this test's files (certificates), under the system's temp folder.
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("corecast-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM into `dir` as
/// `name.crt` and `name.key`.
pub fn certificate(
    dir: &std::path::Path,
    name: &str,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    CertificateDer<'static>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a certificate");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key, made.cert.der().clone())
}

/// A TLS client configuration trusting only `trusted`. Connections made with one config share
/// its session store, so a second one can resume the first's session.
pub fn tls_config(trusted: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for root in trusted {
        roots.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr` with `config`, its handshake done. Every read is bounded.
pub fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// A TLS connection to `addr` trusting only `trusted`, its handshake done.
pub fn tls_stream(addr: SocketAddr, trusted: &[&CertificateDer<'static>]) -> Tls {
    tls_connect(addr, &tls_config(trusted))
}

/// Upgrades a TLS connection to `addr` to a WebSocket of `/ws`.
pub fn wss_over(tls: Tls, addr: SocketAddr) -> WebSocket<Tls> {
    let url = format!("wss://localhost:{}/ws", addr.port());
    tungstenite::client(url, tls).expect("upgrade over TLS").0
}

/// A wss client of `/ws` trusting only `trusted`; returns the socket and the certificate the
/// server showed. Every read is bounded.
pub fn wss(
    addr: SocketAddr,
    trusted: &[&CertificateDer<'static>],
) -> (WebSocket<Tls>, CertificateDer<'static>) {
    let tls = tls_stream(addr, trusted);
    let shown = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    (wss_over(tls, addr), shown)
}
