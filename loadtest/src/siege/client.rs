//! Blocking WebSocket client pieces for the siege: an upgrade, raw frames built bit by bit (so
//! broken ones can be sent on purpose), bounded reads, and what a connection's end looked like
//! to the client. Not a load client: one thread per connection, std sockets, no batching.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use corecast::ws::frame::{Decoder, Inbound};

/// The upgrade request the siege sends, with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// `path` with `token=<token>` added to its query, when there is a token.
pub fn with_token(path: &str, token: Option<&str>) -> String {
    match token {
        None => path.to_string(),
        Some(t) if path.contains('?') => format!("{path}&token={t}"),
        Some(t) => format!("{path}?token={t}"),
    }
}

/// Connects with `TCP_NODELAY` (so a one-byte write is one segment) and a bound on every read
/// and write.
pub fn connect(addr: SocketAddr, bound: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, bound)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(bound))?;
    stream.set_write_timeout(Some(bound))?;
    Ok(stream)
}

/// Connects like `connect`, from the local address `from` (any of 127.0.0.0/8 on loopback):
/// attackers that come from addresses of their own, as from other machines.
pub fn connect_from(addr: SocketAddr, from: IpAddr, bound: Duration) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&addr.into(), bound)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(bound))?;
    stream.set_write_timeout(Some(bound))?;
    Ok(stream)
}

/// Connects like `connect`, with a receive buffer of `bytes` set before the handshake: a
/// client on a slow link, whose window the server fills in a few kilobytes.
pub fn connect_small_window(
    addr: SocketAddr,
    bytes: usize,
    bound: Duration,
) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_recv_buffer_size(bytes)?;
    socket.connect_timeout(&addr.into(), bound)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(bound))?;
    stream.set_write_timeout(Some(bound))?;
    Ok(stream)
}

/// Connects and upgrades; the socket is ready for frames. Fails unless the answer is 101.
pub fn open(addr: SocketAddr, path: &str, bound: Duration) -> io::Result<Conn> {
    upgrade(connect(addr, bound)?, path)
}

/// Upgrades a connected socket. Fails unless the answer is 101.
pub fn upgrade(mut stream: TcpStream, path: &str) -> io::Result<Conn> {
    stream.write_all(&upgrade_request(path, ""))?;
    let (status, rest) = read_head(&mut stream)?;
    if status != 101 {
        return Err(io::Error::other(format!("upgrade answered {status}")));
    }
    let mut conn = Conn::new(stream);
    conn.pending = rest;
    Ok(conn)
}

/// Reads an HTTP response head: its status and the bytes read past it.
pub fn read_head(stream: &mut TcpStream) -> io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = std::str::from_utf8(&buf[..end])
                .ok()
                .and_then(|head| head.split(' ').nth(1))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| io::Error::other("no status line"))?;
            return Ok((status, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head too long"));
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A client frame with every bit chosen by the caller: `first` is the whole first byte (FIN,
/// RSV, opcode), `declared` the length put in the header (it may lie), masked with a fixed key
/// unless `masked` is false.
pub fn raw_frame(first: u8, declared: u64, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(first);
    let mask_bit = if masked { 0x80 } else { 0 };
    if declared < 126 {
        out.push(mask_bit | declared as u8);
    } else if let Ok(len) = u16::try_from(declared) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&declared.to_be_bytes());
    }
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A whole, honest masked frame: FIN set, `opcode`, true length.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(0x80 | opcode, payload.len() as u64, payload, true)
}

/// How a connection looked to the client when it ended (or when we stopped looking).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ending {
    /// An HTTP answer instead of an upgrade.
    Status(u16),
    /// A close frame from the server (its code; 1005 when it carried none).
    Close(u16),
    /// The server ended the stream without a close frame.
    Eof,
    /// The connection was reset.
    Reset,
    /// Still open when the bound ran out.
    Open,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Status(s) => write!(f, "HTTP {s}"),
            Ending::Close(c) => write!(f, "close {c}"),
            Ending::Eof => f.write_str("closed, no frame"),
            Ending::Reset => f.write_str("reset"),
            Ending::Open => f.write_str("still open"),
        }
    }
}

/// Whether an I/O error means the peer reset or abandoned the connection.
/// A read that ran out of its time: the peer is there but said nothing.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// An upgraded client connection: a frame decoder over a blocking socket.
pub struct Conn {
    pub stream: TcpStream,
    /// Whether `next` answers pings (a silent attacker must not).
    pub answers_pings: bool,
    decoder: Decoder,
    pending: Vec<u8>,
    items: Vec<Inbound>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            answers_pings: true,
            decoder: Decoder::for_server_frames(usize::MAX),
            pending: Vec::new(),
            items: Vec::new(),
        }
    }

    /// The next item from the server, answering pings on the way; `Ok(None)` at end of stream.
    /// Fails with `TimedOut`/`WouldBlock` when the socket's read bound passes with nothing.
    pub fn next_item(&mut self) -> io::Result<Option<Inbound>> {
        loop {
            if !self.items.is_empty() {
                let item = self.items.remove(0);
                if let (Inbound::Ping(data), true) = (&item, self.answers_pings) {
                    self.stream.write_all(&frame(0xA, data))?;
                }
                return Ok(Some(item));
            }
            let mut chunk = [0u8; 16 * 1024];
            let input = if self.pending.is_empty() {
                match self.stream.read(&mut chunk)? {
                    0 => return Ok(None),
                    n => chunk[..n].to_vec(),
                }
            } else {
                std::mem::take(&mut self.pending)
            };
            self.decoder
                .feed(&input, &mut self.items)
                .map_err(|e| io::Error::other(format!("server broke the protocol: {e:?}")))?;
        }
    }

    /// The next data message, skipping control frames; `Ok(None)` at end of stream.
    pub fn next_message(&mut self) -> io::Result<Option<Inbound>> {
        loop {
            match self.next_item()? {
                Some(Inbound::Ping(_) | Inbound::Pong(_)) => {}
                other => return Ok(other),
            }
        }
    }

    /// Reads until the server ends the connection or `bound` passes, and says how it ended.
    /// Answers nothing on the way, so it never revives a connection the server is timing out.
    pub fn ending(&mut self, bound: Duration) -> Ending {
        self.answers_pings = false;
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ending::Open;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.next_item() {
                Ok(Some(Inbound::Close { code, .. })) => {
                    return Ending::Close(code.unwrap_or(1005))
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ending::Eof,
                Err(e) if is_reset(&e) => return Ending::Reset,
                Err(e) if is_timeout(&e) => return Ending::Open,
                Err(_) => return Ending::Reset,
            }
        }
    }
}

/// How the server ended a connection that never got past the upgrade: its status, or how the
/// stream ended, within `bound`.
pub fn http_ending(stream: &mut TcpStream, bound: Duration) -> Ending {
    let _ = stream.set_read_timeout(Some(bound));
    match read_head(stream) {
        Ok((status, _)) => Ending::Status(status),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ending::Eof,
        Err(e) if is_timeout(&e) => Ending::Open,
        Err(_) => Ending::Reset,
    }
}

/// How the server answered an upgrade it refused: its status and body, read to the end of the
/// stream (at most 64 KiB); or, with no whole head, how the stream ended, within `bound` a read.
/// A reset or a timeout after the whole head still gives its status.
pub fn http_answer(stream: &mut TcpStream, bound: Duration) -> (Ending, String) {
    let _ = stream.set_read_timeout(Some(bound));
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let ended = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break Ending::Eof,
            Ok(n) if buf.len() + n > 64 * 1024 => break Ending::Open,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => break Ending::Open,
            Err(_) => break Ending::Reset,
        }
    };
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (ended, String::new());
    };
    let status = std::str::from_utf8(&buf[..end])
        .ok()
        .and_then(|head| head.split(' ').nth(1))
        .and_then(|code| code.parse().ok());
    match status {
        Some(status) => (
            Ending::Status(status),
            String::from_utf8_lossy(&buf[end + 4..]).into_owned(),
        ),
        None => (ended, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_frames_put_every_bit_where_asked() {
        assert_eq!(raw_frame(0x81, 2, b"hi", false), vec![0x81, 2, b'h', b'i']);
        let lie = raw_frame(0x82, u64::MAX >> 1, b"", true);
        assert_eq!(lie[..2], [0x82, 0x80 | 127]);
        assert_eq!(lie[2..10], (u64::MAX >> 1).to_be_bytes());
        assert_eq!(lie.len(), 14);
        let medium = frame(0x2, &[0; 300]);
        assert_eq!(medium[..4], [0x82, 0x80 | 126, 1, 44]);
        // Masking twice with the same key gives the payload back.
        assert_eq!(medium[8] ^ 0x37, 0);
    }

    #[test]
    fn reads_a_status_and_keeps_what_follows() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"HTTP/1.1 431 Too Large\r\nA: b\r\n\r\nrest")
                .unwrap();
        });
        let mut client = connect(addr, Duration::from_secs(5)).unwrap();
        let (status, rest) = read_head(&mut client).unwrap();
        server.join().unwrap();
        assert_eq!((status, rest.as_slice()), (431, &b"rest"[..]));
    }
}
