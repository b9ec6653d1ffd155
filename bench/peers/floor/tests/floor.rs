//! `floor-peer` as the load generator meets it: the upgrade, echo, relay to every connection
//! in order, pubsub acknowledgements and publishes, the close handshake. Black box over
//! 127.0.0.1 with plain blocking sockets, every read bounded by a timeout.
//! Not a benchmark.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the floor on a free port and reads the port from its first line.
fn start(mode: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floor-peer"))
        .args([mode, "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the floor starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its first line");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { child, port }
}

/// A client: connected, upgraded, with what came after the 101's head.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(server: &Server, path: &str) -> Client {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("the request");
        let mut c = Client {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(p) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            c.fill();
        };
        let head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        c.buf.drain(..end);
        c
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).expect("a read within 5 s");
        assert!(n > 0, "the server closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// A masked frame of `opcode`.
    fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![0x80 | opcode];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("a send");
    }

    /// The next server frame: its opcode and payload.
    fn next(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[0] & 0x80, 0x80, "a final frame");
                assert_eq!(self.buf[1] & 0x80, 0, "an unmasked frame");
                let (len, at) = match self.buf[1] {
                    126 if self.buf.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    ),
                    126 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if at > 0 && self.buf.len() >= at + len {
                    let opcode = self.buf[0] & 0x0F;
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (opcode, payload);
                }
            }
            self.fill();
        }
    }
}

#[test]
fn echo_answers_each_message_pings_and_the_close() {
    let server = start("echo");
    let mut c = Client::connect(&server, "/ws");
    let big = vec![b'y'; 300];
    c.send(1, b"hello");
    c.send(2, &big);
    c.send(9, b"p");
    assert_eq!(c.next(), (1, b"hello".to_vec()));
    assert_eq!(c.next(), (2, big));
    assert_eq!(c.next(), (10, b"p".to_vec()));
    c.send(8, &1000u16.to_be_bytes());
    assert_eq!(c.next(), (8, 1000u16.to_be_bytes().to_vec()));
    let mut rest = [0u8; 16];
    assert_eq!(c.stream.read(&mut rest).expect("the end of the stream"), 0);
}

#[test]
fn relay_gives_every_connection_every_message_in_order() {
    let server = start("relay");
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(&server, "/ws")).collect();
    for round in 0..50u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(1, format!("{i}:{round}").as_bytes());
        }
    }
    for c in &mut clients {
        let mut next = [0u32; 3];
        for _ in 0..150 {
            let (op, data) = c.next();
            assert_eq!(op, 1);
            let text = String::from_utf8(data).expect("text");
            let (from, round) = text.split_once(':').expect("sender:round");
            let from: usize = from.parse().expect("a sender");
            assert_eq!(round.parse::<u32>().expect("a round"), next[from], "{text}");
            next[from] += 1;
        }
        assert_eq!(next, [50; 3]);
    }
}

#[test]
fn pubsub_acknowledges_and_publishes_to_subscribers_only() {
    let server = start("pubsub");
    let mut a = Client::connect(&server, "/ws?topics=t1,t2");
    let mut b = Client::connect(&server, "/ws?topics=t2");
    assert_eq!(a.next(), (1, br#"{"subscribed":"t1"}"#.to_vec()));
    assert_eq!(a.next(), (1, br#"{"subscribed":"t2"}"#.to_vec()));
    assert_eq!(b.next(), (1, br#"{"subscribed":"t2"}"#.to_vec()));
    let mut p = Client::connect(&server, "/ws");
    p.send(1, br#"{"publish":"t1","data":"one"}"#);
    p.send(1, br#"{"publish":"t2","data":"two"}"#);
    p.send(1, br#"{"publish":"t9","data":"nobody"}"#);
    assert_eq!(a.next(), (1, b"one".to_vec()));
    assert_eq!(a.next(), (1, b"two".to_vec()));
    assert_eq!(b.next(), (1, b"two".to_vec()));
    b.send(1, br#"{"subscribe":"t1"}"#);
    assert_eq!(b.next(), (1, br#"{"subscribed":"t1"}"#.to_vec()));
    b.send(1, br#"{"unsubscribe":"t2"}"#);
    assert_eq!(b.next(), (1, br#"{"unsubscribed":"t2"}"#.to_vec()));
    p.send(1, br#"{"publish":"t2","data":"a only"}"#);
    p.send(1, br#"{"publish":"t1","data":"both"}"#);
    assert_eq!(a.next(), (1, b"a only".to_vec()));
    assert_eq!(a.next(), (1, b"both".to_vec()));
    assert_eq!(b.next(), (1, b"both".to_vec()));
    p.send(1, b"nonsense");
    assert_eq!(
        p.next(),
        (
            1,
            br#"{"error":"expected subscribe, unsubscribe or publish"}"#.to_vec()
        )
    );
}

#[test]
fn shootout_broadcasts_and_answers_the_sender() {
    let server = start("shootout");
    let mut a = Client::connect(&server, "/ws");
    let mut b = Client::connect(&server, "/ws");
    let msg = br#"{"type":"broadcast","payload":{"s":0,"q":1,"t":2}}"#;
    a.send(1, msg);
    let result = br#"{"type":"broadcastResult","payload":{"s":0,"q":1,"t":2}}"#;
    let mut got = vec![a.next(), a.next()];
    got.sort();
    assert_eq!(got, [(1, msg.to_vec()), (1, result.to_vec())]);
    assert_eq!(b.next(), (1, msg.to_vec()));
    b.send(1, br#"{"type":"echo","payload":{"s":1}}"#);
    assert_eq!(
        b.next(),
        (1, br#"{"type":"echo","payload":{"s":1}}"#.to_vec())
    );
}

#[test]
fn a_request_without_a_key_is_refused() {
    let server = start("echo");
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("the request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("the answer and close");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
