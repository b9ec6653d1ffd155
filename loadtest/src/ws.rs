//! A lean WebSocket client connection on glommio: the opening handshake, masked frames out,
//! server frames in through corecast's decoder, pongs answered; optionally Socket.IO's framing
//! on top (Engine.IO v4 over WebSocket), to load a Socket.IO server with the same stamps; and
//! optionally permessage-deflate, inflating what the server compressed as a browser would; and
//! `wss://` over rustls; a connection token in the query or an `Authorization: Bearer`
//! header when the target has tokens. Not a general client: it sends uncompressed, and over TLS it trusts
//! any certificate (it loads servers of your own on loopback, it does not check who they are).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::time::Duration;

use std::sync::{Arc, OnceLock};

use corecast::ws::frame::{self, Decoder, Inbound, OpCode};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Read buffer per connection: small, so a generator can hold many connections.
pub const READ_BUF: usize = 2048;

/// A Socket.IO event `m` with a string argument, before and after the string.
const SIO_EVENT: &[u8] = br#"42["m",""#;
const SIO_END: &[u8] = br#""]"#;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path (with query), e.g. `/ws`.
    pub path: String,
    /// `Host` header value.
    pub host: String,
    /// Offer permessage-deflate (as browsers do), and fail the upgrade if the server declines.
    pub deflate: bool,
    /// `wss://`: TLS first.
    pub tls: bool,
    /// Connection tokens to send, minted before the run; none by default.
    pub tokens: Tokens,
    /// The answer the `upgrades` scenario expects: 101, or the status of the refusal a run of
    /// deliberately refused requests is after (401, 404). Every other scenario needs 101.
    pub expect: u16,
}

/// Where a connection's token travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenPlace {
    /// The `token` query parameter, as browsers send it.
    #[default]
    Query,
    /// `Authorization: Bearer <jwt>`.
    Header,
}

/// The tokens of a run's connections: connection `i` sends `list[i % len]`; an empty list
/// sends none.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub list: Arc<[String]>,
    pub place: TokenPlace,
}

impl Tokens {
    /// Connection `i`'s token, if the run sends tokens.
    pub fn of(&self, i: usize) -> Option<&str> {
        (!self.list.is_empty()).then(|| self.list[i % self.list.len()].as_str())
    }
}

impl Target {
    /// Parses `ws://host:port/path` or `wss://host:port/path`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("invalid URL {url:?}: expected ws:// or wss://")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let authority = authority.replace("localhost", "127.0.0.1");
        let addr: SocketAddr = authority
            .parse()
            .map_err(|_| format!("invalid URL {url:?}: expected ws://IP:PORT/path"))?;
        Ok(Target {
            addr,
            path,
            host: authority,
            deflate: false,
            tls,
            tokens: Tokens::default(),
            expect: 101,
        })
    }

    /// The upgrade request connection `i` sends: its token (if any) in the query or the
    /// `Authorization` header, and the permessage-deflate offer when asked for.
    pub fn request(&self, i: usize) -> String {
        let mut path = self.path.clone();
        let mut auth = String::new();
        match (self.tokens.of(i), self.tokens.place) {
            (Some(token), TokenPlace::Query) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                path = format!("{path}{sep}token={token}");
            }
            (Some(token), TokenPlace::Header) => {
                auth = format!("Authorization: Bearer {token}\r\n");
            }
            (None, _) => {}
        }
        let extensions = if self.deflate {
            // What browsers offer, and no context takeover by the server: this client inflates
            // every message on its own (as corecast's decoder does).
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_max_window_bits\r\n"
        } else {
            ""
        };
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {auth}{extensions}\r\n",
            self.host
        )
    }
}

/// Whether a 101's head agrees to permessage-deflate without server context takeover.
fn agreed_deflate(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                && value.trim_start().starts_with("permessage-deflate")
                && value.contains("server_no_context_takeover")
        })
    })
}

/// A byte stream the client speaks WebSocket over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// One client connection.
pub struct WsConn {
    stream: Box<dyn Io>,
    /// The TCP socket under `stream`, for `unread_bytes`.
    fd: RawFd,
    decoder: Decoder,
    buf: Box<[u8]>,
    mask_state: u32,
    /// Pongs owed to the server, written by `flush_control`.
    pending_control: Vec<u8>,
    /// Messages that came with the handshake response, handed out by the first `read`.
    early: Vec<Inbound>,
    /// Speaking Socket.IO: messages travel as `42["m","<payload>"]` events.
    socket_io: bool,
    /// Pings answered on this connection.
    pub pings: u64,
}

impl WsConn {
    /// Connects (from `source`, to spread past one address's ephemeral ports) and upgrades,
    /// as connection 0 of the run (whose token it sends, if the target has tokens).
    pub async fn connect(
        target: &Target,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> io::Result<WsConn> {
        WsConn::connect_as(target, 0, source, timeout).await
    }

    /// `connect` as connection `i` of the run: it sends connection `i`'s token.
    pub async fn connect_as(
        target: &Target,
        i: usize,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> io::Result<WsConn> {
        let tcp = open_socket(target.addr, source, timeout)?;
        let fd = tcp.as_raw_fd();
        let stream: Box<dyn Io> = if target.tls {
            let name = ServerName::try_from(target.host.clone())
                .or_else(|_| ServerName::try_from("localhost"))
                .map_err(io::Error::other)?;
            Box::new(TlsConnector::from(tls_config()).connect(name, tcp).await?)
        } else {
            Box::new(tcp)
        };
        let mut conn = WsConn {
            stream,
            fd,
            decoder: Decoder::for_server_frames(64 << 20),
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            mask_state: 0x9e37_79b9,
            pending_control: Vec::new(),
            early: Vec::new(),
            socket_io: false,
            pings: 0,
        };
        conn.handshake(target, i).await?;
        Ok(conn)
    }

    /// Bytes the server sent that wait unread in this end's socket (`FIONREAD`; TLS records
    /// still sealed). After a run, a receiver with messages missing tells with it whose they
    /// were: bytes waiting mean the server sent them and this side did not read them.
    pub fn unread_bytes(&self) -> Option<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: `fd` is the open socket `stream` owns; FIONREAD writes one int.
        let r = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut n) };
        (r == 0).then(|| usize::try_from(n).unwrap_or(0))
    }

    async fn handshake(&mut self, target: &Target, i: usize) -> io::Result<()> {
        self.stream.write_all(target.request(i).as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        loop {
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during handshake",
                ));
            }
            head.extend_from_slice(&self.buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                if !head.starts_with(b"HTTP/1.1 101") {
                    let line = String::from_utf8_lossy(&head[..head.len().min(64)]).into_owned();
                    return Err(io::Error::other(format!("upgrade refused: {line}")));
                }
                if target.deflate {
                    if !agreed_deflate(&head[..end]) {
                        return Err(io::Error::other(
                            "the server did not agree to permessage-deflate with \
                             server_no_context_takeover",
                        ));
                    }
                    self.decoder.accept_deflate();
                }
                // Frames sent right after the 101 (a pubsub server's acknowledgements) are
                // already here: the first `read` hands them out.
                let rest = head[end + 4..].to_vec();
                let mut early = Vec::new();
                self.take(&rest, &mut early)?;
                self.early = early;
                return Ok(());
            }
            if head.len() > 8192 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "handshake response too large",
                ));
            }
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift: masks need not be secret here, only present (RFC 6455 §5.3).
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_ne_bytes()
    }

    /// Sends one text message (as a Socket.IO `m` event when speaking Socket.IO: the payload
    /// must then need no JSON escaping, which stamps do not).
    pub async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        let key = self.next_mask();
        let frame = if self.socket_io {
            let mut event = Vec::with_capacity(payload.len() + SIO_EVENT.len() + 2);
            event.extend_from_slice(SIO_EVENT);
            event.extend_from_slice(payload);
            event.extend_from_slice(SIO_END);
            frame::encode_masked(OpCode::Text, &event, key)
        } else {
            frame::encode_masked(OpCode::Text, payload, key)
        };
        self.stream.write_all(&frame).await
    }

    /// Joins the Socket.IO default namespace (Engine.IO v4): waits for the open packet (`0`),
    /// sends the namespace connect (`40`), waits for its answer (`40`). From then on messages
    /// are `m` events and Engine.IO pings (`2`) are answered (`3`).
    pub async fn join_socket_io(&mut self) -> io::Result<()> {
        let mut items = Vec::new();
        let mut stage = 0;
        while stage < 2 {
            if self.read(&mut items).await?.is_none() {
                return Err(io::Error::other("closed while joining Socket.IO"));
            }
            for item in items.drain(..) {
                let Inbound::Message { data, .. } = item else {
                    continue;
                };
                match (stage, data.first()) {
                    (0, Some(b'0')) => {
                        self.send_text(b"40").await?;
                        stage = 1;
                    }
                    (1, _) if data.starts_with(b"40") => stage = 2,
                    _ => {}
                }
            }
        }
        self.socket_io = true;
        Ok(())
    }

    /// Reads once and returns the data messages that completed; pings are answered by the
    /// next `flush_control`. `Ok(None)` means the server closed the connection. Cancel-safe:
    /// its only wait is the socket read, which takes nothing until it completes.
    pub async fn read(&mut self, out: &mut Vec<Inbound>) -> io::Result<Option<()>> {
        if !self.early.is_empty() {
            out.append(&mut self.early);
            return Ok(Some(()));
        }
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            return Ok(None);
        }
        // Lent out for the decode, which needs `self` too; an empty box costs no allocation.
        let buf = std::mem::take(&mut self.buf);
        let read = self.take(&buf[..n], out);
        self.buf = buf;
        read
    }

    /// Decodes `bytes`: data messages go to `out`, pings get a pong owed; `Ok(None)` on a close.
    fn take(&mut self, bytes: &[u8], out: &mut Vec<Inbound>) -> io::Result<Option<()>> {
        let mut items = Vec::new();
        self.decoder
            .feed(bytes, &mut items)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        for item in items {
            match item {
                Inbound::Ping(p) => {
                    self.pings += 1;
                    let key = self.next_mask();
                    let pong = frame::encode_masked(OpCode::Pong, &p, key);
                    self.pending_control.extend_from_slice(&pong);
                }
                Inbound::Close { .. } => return Ok(None),
                Inbound::Message { data, .. } if self.socket_io && &data[..] == b"2" => {
                    self.pings += 1;
                    let key = self.next_mask();
                    let pong = frame::encode_masked(OpCode::Text, b"3", key);
                    self.pending_control.extend_from_slice(&pong);
                }
                Inbound::Message { data, binary } if self.socket_io => {
                    // An `m` event's payload, or the message as it came (not a stamp, so
                    // counted as unexpected).
                    let inner = data
                        .strip_prefix(SIO_EVENT)
                        .and_then(|rest| rest.strip_suffix(SIO_END))
                        .map(|p| data.slice_ref(p))
                        .unwrap_or(data);
                    out.push(Inbound::Message {
                        binary,
                        data: inner,
                    });
                }
                other => out.push(other),
            }
        }
        Ok(Some(()))
    }

    /// Writes the pongs owed since the last call.
    pub async fn flush_control(&mut self) -> io::Result<()> {
        if self.pending_control.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending_control);
        self.stream.write_all(&pending).await
    }

    /// Sends a close frame (1000) and shuts the socket.
    pub async fn close(mut self) {
        let key = self.next_mask();
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"done");
        let _ = self
            .stream
            .write_all(&frame::encode_masked(OpCode::Close, &payload, key))
            .await;
        let _ = self.stream.close().await;
    }
}

/// The client's TLS settings, made once: any certificate is accepted (see the module doc).
fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(config)
    }))
}

/// Accepts whatever certificate the server shows; signatures are still checked, so the
/// handshake costs what a real client's does.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connected TCP socket, bound to `source` first when given. The connect itself is blocking
/// (bounded by `timeout`): on loopback it completes at once unless the backlog is full.
fn open_socket(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = source {
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    socket.connect_timeout(&SockAddr::from(addr), timeout)?;
    socket.set_nodelay(true)?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is a connected TCP socket whose ownership moves into the glommio stream.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// The source address for connection `i` of `total`: past ~28k connections to one server
/// address, spread over 127.0.0.x so the ephemeral ports of one address do not run out.
pub fn source_for(i: usize, total: usize, server: &SocketAddr) -> Option<IpAddr> {
    if total <= 28_000 || !server.ip().is_loopback() || server.is_ipv6() {
        return None;
    }
    let n = 1 + (i / 25_000) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_counts_as_agreed_only_without_server_context_takeover() {
        let head = |ext: &str| format!("HTTP/1.1 101 Switching Protocols\r\n{ext}\r\n");
        let ok = head("sec-websocket-extensions: permessage-deflate; server_no_context_takeover");
        assert!(agreed_deflate(ok.as_bytes()));
        let takeover = head("Sec-WebSocket-Extensions: permessage-deflate");
        assert!(!agreed_deflate(takeover.as_bytes()));
        assert!(!agreed_deflate(head("Upgrade: websocket").as_bytes()));
    }

    #[test]
    fn parses_ws_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/ws?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/ws?x=1");
        assert_eq!(Target::parse("ws://127.0.0.1:9").unwrap().path, "/");
        assert_eq!(Target::parse("ws://localhost:9/a").unwrap().addr.port(), 9);
        assert!(!t.tls);
        let t = Target::parse("wss://127.0.0.1:8443/ws").unwrap();
        assert!(t.tls);
        assert_eq!(t.addr.port(), 8443);
        assert!(Target::parse("wss://x:1/").is_err());
        assert!(Target::parse("http://127.0.0.1:1/").is_err());
        assert!(Target::parse("ws://nohost/").is_err());
    }

    #[test]
    fn a_connection_sends_its_token_in_the_query_or_the_header() {
        let mut t = Target::parse("ws://127.0.0.1:8080/ws?topics=t1").unwrap();
        assert!(t.request(3).starts_with("GET /ws?topics=t1 HTTP/1.1\r\n"));
        assert!(!t.request(3).contains("Authorization"));
        t.tokens = Tokens {
            list: vec!["a.b.c".to_string(), "d.e.f".to_string()].into(),
            place: TokenPlace::Query,
        };
        assert!(t
            .request(3)
            .starts_with("GET /ws?topics=t1&token=d.e.f HTTP/1.1\r\n"));
        t.path = "/ws".into();
        assert!(t.request(4).starts_with("GET /ws?token=a.b.c HTTP/1.1\r\n"));
        t.tokens.place = TokenPlace::Header;
        let head = t.request(5);
        assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("\r\nAuthorization: Bearer d.e.f\r\n"),
            "{head}"
        );
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn sources_spread_only_when_needed() {
        let server: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(source_for(5, 1000, &server), None);
        assert_eq!(
            source_for(0, 50_000, &server),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            source_for(30_000, 50_000, &server),
            Some("127.0.0.2".parse().unwrap())
        );
    }
}
