//! A minimal HTTP/1.1 client on glommio for POSTing JSON to the backend: the endpoint's
//! address, the request bytes, an incremental response reader (pure) and one shard's client
//! with kept-alive connections, each exchange bounded by a timeout.
//!
//! Not a general HTTP client: `http://` only (TLS is a local proxy's job), POST only, no
//! redirects, proxies, compression or pipelining; one request at a time on a connection.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;

/// Most bytes a response head (status line and fields) may take; also the bound on one
/// chunk-size line and on a trailer section.
pub(crate) const MAX_HEAD: usize = 16 << 10;
/// Most bytes of response body a `Client` reads.
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Most kept-alive connections a `Client` holds while none is in use.
pub(crate) const MAX_IDLE: usize = 4;
/// Most header fields a response head may carry.
const MAX_FIELDS: usize = 64;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 << 10;

/// Where the backend listens: `http://host[:port][/path][?query]`, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    /// The Host field's value (RFC 9110 §7.2): the URL's host, and its port when not 80.
    host: String,
    /// The origin-form request target (RFC 9112 §3.2.1): path and query, `/` when empty.
    target: String,
}

impl Endpoint {
    /// Parses `url` and resolves its host (the first address found). Resolving may block on
    /// DNS: call it while configuring, not on a shard.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("backend URL {url:?}: {why}");
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not an http:// URL"))?;
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad(
                "https is not supported: put a local TLS proxy in front",
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("not an http:// URL"));
        }
        // A fragment is never sent (RFC 9110 §4.2.5).
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, target) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(bad("credentials in the URL: send an Authorization header"));
        }
        // The host ends at the port's colon, past the brackets of an IPv6 literal.
        let host_end = if authority.starts_with('[') {
            authority.find(']').map_or(authority.len(), |i| i + 1)
        } else {
            authority.find(':').unwrap_or(authority.len())
        };
        let (host, port) = authority.split_at(host_end);
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => 80,
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => digits
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("bad port {digits:?}")))?,
            _ => return Err(bad(&format!("bad port {:?}", port.trim_start_matches(':')))),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let addr = if let Some(inner) = host.strip_prefix('[') {
            let ip = inner
                .strip_suffix(']')
                .and_then(|a| a.parse::<Ipv6Addr>().ok());
            SocketAddr::new(IpAddr::V6(ip.ok_or_else(|| bad("bad IPv6 address"))?), port)
        } else if host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            (host, port)
                .to_socket_addrs()
                .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| bad(&format!("{host} resolves to no address")))?
        } else {
            return Err(bad(&format!("bad host {host:?}")));
        };
        // The request line has no room for spaces, controls or raw non-ASCII (RFC 9112 §3).
        if target.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(bad(
                "a space, control or non-ASCII byte in the path: percent-encode it",
            ));
        }
        Ok(Endpoint {
            addr,
            host: match port {
                80 => host.to_string(),
                _ => format!("{host}:{port}"),
            },
            target: if target.starts_with('/') {
                target.to_string()
            } else {
                format!("/{target}")
            },
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host, self.target)
    }
}

/// Why a post got no response, for the caller to log and count.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The request could not be written as asked: a header name or value that HTTP cannot
    /// carry, or one the client sets itself.
    Request(String),
    /// No connection: refused, unreachable, or the socket could not be set up.
    Connect(io::Error),
    /// The exchange (connect, write, read) did not finish within the timeout.
    TimedOut(Duration),
    /// A write or read failed on an open connection.
    Io(io::Error),
    /// The server closed the connection before a complete response.
    Closed,
    /// The response breaks HTTP/1.1 framing, or is one this client does not take.
    Malformed(String),
    /// The response head or body is over its bound.
    TooLarge(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Request(why) => write!(f, "request not sent: {why}"),
            ClientError::Connect(e) => write!(f, "connect failed: {e}"),
            ClientError::TimedOut(d) => write!(f, "no response within {d:?}"),
            ClientError::Io(e) => write!(f, "I/O error: {e}"),
            ClientError::Closed => f.write_str("connection closed before a complete response"),
            ClientError::Malformed(why) => write!(f, "malformed response: {why}"),
            ClientError::TooLarge(what) => write!(f, "response too large: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A final response: its status and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// The request bytes: `POST` to the endpoint's target with Host, Content-Type:
/// application/json, Content-Length, then `headers` as given, then `body`.
pub(crate) fn request_bytes(
    endpoint: &Endpoint,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<Vec<u8>, ClientError> {
    let mut out = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        endpoint.target,
        endpoint.host,
        body.len()
    );
    for &(name, value) in headers {
        // A field name is a token (RFC 9110 §5.1); a value holds no CR, LF or NUL (§5.5), so a
        // value cannot end the field and start another.
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(tchar) {
            return Err(ClientError::Request(format!("bad header name {name:?}")));
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(ClientError::Request(format!("bad value for header {name}")));
        }
        let set_here = [
            "host",
            "content-type",
            "content-length",
            "transfer-encoding",
        ];
        if set_here.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            return Err(ClientError::Request(format!("{name} is set by the client")));
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    Ok(out)
}

/// Where a response reader is in the message (RFC 9112 §6.3 picks the body's framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A status line and fields, of an interim or the final response.
    Head,
    /// Content-Length body bytes left.
    Sized(usize),
    /// A chunk-size line (RFC 9112 §7.1).
    ChunkSize,
    /// Chunk data bytes left.
    ChunkData(usize),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields up to the empty line (RFC 9112 §7.1.2).
    Trailers,
    /// Everything until the server closes (RFC 9112 §6.3, rule 8).
    UntilClose,
    Done,
}

/// What a response reader has after a feed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The response is not complete: feed more, or call `finish_at_eof` at end of stream.
    NeedMore,
    /// The response is complete.
    Done(Complete),
}

/// A complete response and what it says of the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Complete {
    pub(crate) response: Response,
    /// The connection may carry another request (RFC 9112 §9.3).
    pub(crate) reusable: bool,
    /// Bytes of the stream, from the first fed, that made the response (interim ones too);
    /// bytes fed past it are not part of it.
    pub(crate) consumed: usize,
}

/// Reads one response from bytes as they arrive, without I/O. Holds at most a head's worth
/// of unread bytes (plus one feed) and a body of at most `max_body` bytes.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    max_body: usize,
    /// Bytes fed and not yet taken into the response.
    pending: Vec<u8>,
    /// Bytes taken into the response so far.
    taken: usize,
    stage: Stage,
    status: u16,
    reusable: bool,
    body: Vec<u8>,
    trailer_bytes: usize,
    /// Bytes of a partial head already searched for its blank line.
    head_scanned: usize,
}

impl ResponseReader {
    pub(crate) fn new(max_body: usize) -> ResponseReader {
        ResponseReader {
            max_body,
            pending: Vec::new(),
            taken: 0,
            stage: Stage::Head,
            status: 0,
            reusable: false,
            body: Vec::new(),
            trailer_bytes: 0,
            head_scanned: 0,
        }
    }

    /// Takes the bytes that just arrived.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Progress, ClientError> {
        if self.stage == Stage::Done {
            return Err(malformed("bytes fed past a complete response"));
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(bytes);
        let mut at = 0;
        while self.stage != Stage::Done {
            match self.step(pending.get(at..).unwrap_or_default())? {
                Some(n) => at += n,
                None => break,
            }
        }
        self.taken += at;
        if self.stage == Stage::Done {
            return Ok(Progress::Done(self.complete()));
        }
        pending.drain(..at);
        self.pending = pending;
        Ok(Progress::NeedMore)
    }

    /// The stream ended: complete only for a body delimited by the close.
    pub(crate) fn finish_at_eof(&mut self) -> Result<Complete, ClientError> {
        match self.stage {
            Stage::UntilClose => Ok(self.complete()),
            _ => Err(ClientError::Closed),
        }
    }

    fn complete(&mut self) -> Complete {
        self.stage = Stage::Done;
        Complete {
            response: Response {
                status: self.status,
                body: std::mem::take(&mut self.body),
            },
            reusable: self.reusable,
            consumed: self.taken,
        }
    }

    /// Takes what it can of the stage from `input`: `Some(bytes taken)` after moving on (a
    /// step that takes nothing changes the stage), `None` when more input is needed.
    fn step(&mut self, input: &[u8]) -> Result<Option<usize>, ClientError> {
        match self.stage {
            Stage::Head => self.head(input),
            Stage::Sized(0) => {
                self.stage = Stage::Done;
                Ok(Some(0))
            }
            Stage::Sized(left) | Stage::ChunkData(left) => {
                let n = left.min(input.len());
                if n == 0 {
                    return Ok(None);
                }
                self.body
                    .extend_from_slice(input.get(..n).unwrap_or_default());
                self.stage = match self.stage {
                    Stage::ChunkData(_) if n == left => Stage::ChunkEnd,
                    Stage::ChunkData(_) => Stage::ChunkData(left - n),
                    _ => Stage::Sized(left - n),
                };
                Ok(Some(n))
            }
            Stage::ChunkSize => {
                let Some((line, n)) = line(input, MAX_HEAD, "chunk-size line")? else {
                    return Ok(None);
                };
                let size = chunk_size(line)?;
                if size > self.max_body - self.body.len() {
                    return Err(self.too_large());
                }
                self.stage = match size {
                    0 => Stage::Trailers,
                    _ => Stage::ChunkData(size),
                };
                Ok(Some(n))
            }
            Stage::ChunkEnd => {
                let n = match input {
                    [b'\r', b'\n', ..] => 2,
                    [b'\n', ..] => 1,
                    [] | [b'\r'] => return Ok(None),
                    _ => return Err(malformed("chunk longer than its size")),
                };
                self.stage = Stage::ChunkSize;
                Ok(Some(n))
            }
            Stage::Trailers => {
                let room = MAX_HEAD - self.trailer_bytes;
                let Some((line, n)) = line(input, room, "trailer section")? else {
                    return Ok(None);
                };
                self.trailer_bytes += n;
                // Trailer fields are read past, not kept: nothing here asks for them.
                match line {
                    [] => self.stage = Stage::Done,
                    _ if !line.contains(&b':') => return Err(malformed("bad trailer field")),
                    _ => {}
                }
                Ok(Some(n))
            }
            Stage::UntilClose => {
                if input.is_empty() {
                    return Ok(None);
                }
                if input.len() > self.max_body - self.body.len() {
                    return Err(self.too_large());
                }
                self.body.extend_from_slice(input);
                Ok(Some(input.len()))
            }
            Stage::Done => Ok(None),
        }
    }

    fn too_large(&self) -> ClientError {
        ClientError::TooLarge(format!("body over {} bytes", self.max_body))
    }

    /// A status line and fields (RFC 9112 §4, §5), then the body's framing (§6.3).
    fn head(&mut self, input: &[u8]) -> Result<Option<usize>, ClientError> {
        // Only a blank line ends a head: parse once one may have come, so a head that trickles
        // in costs one pass over it rather than one parse per read.
        let unsearched = input.get(self.head_scanned.saturating_sub(1)..);
        let blank = |w: &[u8]| w == b"\n\n" || w == b"\n\r";
        if !unsearched.unwrap_or_default().windows(2).any(blank) && input.len() < MAX_HEAD {
            self.head_scanned = input.len();
            return Ok(None);
        }
        self.head_scanned = 0;
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut head = httparse::Response::new(&mut fields);
        let n = match head.parse(input) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Partial) if input.len() < MAX_HEAD => return Ok(None),
            Ok(_) => return Err(ClientError::TooLarge(format!("head over {MAX_HEAD} bytes"))),
            Err(e) => return Err(malformed(format!("bad head: {e}"))),
        };
        let (Some(minor), Some(status)) = (head.version, head.code) else {
            return Err(malformed("incomplete status line"));
        };
        // Three digits, 100 to 599 (RFC 9110 §15).
        if !(100..=599).contains(&status) {
            return Err(malformed(format!("status {status}")));
        }
        if status == 101 {
            return Err(malformed("101 to a request that asked no upgrade"));
        }
        if status < 200 {
            // Interim (100 Continue, 103 Early Hints, ...): the final response follows (RFC
            // 9110 §15.2).
            return Ok(Some(n));
        }
        let mut length: Option<usize> = None;
        let mut codings: Vec<&str> = Vec::new();
        let (mut close, mut keep_alive) = (false, false);
        for field in head.headers.iter() {
            let name = field.name;
            let list = || {
                std::str::from_utf8(field.value)
                    .map(|v| v.split(',').map(|t| t.trim_matches([' ', '\t'])))
                    .map_err(|_| malformed(format!("{name} is not UTF-8")))
            };
            if name.eq_ignore_ascii_case("content-length") {
                // A list of one value repeated is that value; different values are an error
                // (RFC 9112 §6.3, rule 5).
                for value in list()? {
                    let parsed = Some(value)
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<usize>().ok())
                        .ok_or_else(|| malformed(format!("Content-Length {value:?}")))?;
                    if length.is_some_and(|l| l != parsed) {
                        return Err(malformed("conflicting Content-Length"));
                    }
                    length = Some(parsed);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                codings.extend(list()?);
            } else if name.eq_ignore_ascii_case("connection") {
                for option in list()? {
                    close |= option.eq_ignore_ascii_case("close");
                    keep_alive |= option.eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        // Persistence: HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive" (RFC 9112
        // §9.3).
        self.reusable = !close && (minor == 1 || keep_alive);
        self.status = status;
        self.stage = if status == 204 || status == 304 {
            // No body, whatever the fields say (RFC 9112 §6.3, rule 1).
            Stage::Done
        } else if !codings.is_empty() {
            // Transfer-Encoding with Content-Length, or in HTTP/1.0, is faulty framing (RFC
            // 9112 §6.1, §6.3 rule 3); a coding other than chunked alone would need decoding
            // this client does not do, and it never sends TE to ask for one.
            if length.is_some() {
                return Err(malformed("both Transfer-Encoding and Content-Length"));
            }
            if minor == 0 {
                return Err(malformed("Transfer-Encoding in HTTP/1.0"));
            }
            if !matches!(codings[..], [c] if c.eq_ignore_ascii_case("chunked")) {
                let codings = codings.join(", ");
                return Err(malformed(format!("transfer coding {codings:?}")));
            }
            Stage::ChunkSize
        } else if let Some(length) = length {
            if length > self.max_body {
                return Err(self.too_large());
            }
            Stage::Sized(length)
        } else {
            self.reusable = false;
            Stage::UntilClose
        };
        Ok(Some(n))
    }
}

/// A `Malformed` error saying `why`.
fn malformed(why: impl Into<String>) -> ClientError {
    ClientError::Malformed(why.into())
}

/// One line of `input` without its end (CRLF, or a bare LF, RFC 9112 §2.2), with the bytes
/// it took; `None` while it has no end and is under `limit`.
fn line<'a>(
    input: &'a [u8],
    limit: usize,
    what: &str,
) -> Result<Option<(&'a [u8], usize)>, ClientError> {
    match input.iter().position(|&b| b == b'\n') {
        Some(lf) if lf < limit => {
            let line = input.get(..lf).unwrap_or_default();
            Ok(Some((line.strip_suffix(b"\r").unwrap_or(line), lf + 1)))
        }
        None if input.len() < limit => Ok(None),
        _ => Err(ClientError::TooLarge(format!(
            "{what} over {MAX_HEAD} bytes"
        ))),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1): hex digits, then nothing or extensions after
/// a `;`, which are read past.
fn chunk_size(line: &[u8]) -> Result<usize, ClientError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, rest) = line.split_at(digits);
    let rest = rest.trim_ascii_start();
    let size = std::str::from_utf8(hex)
        .ok()
        .filter(|_| digits > 0 && (rest.is_empty() || rest.starts_with(b";")))
        .and_then(|h| usize::from_str_radix(h, 16).ok());
    size.ok_or_else(|| malformed(format!("chunk size {:?}", String::from_utf8_lossy(line))))
}

/// Why an exchange failed, and whether the server ended the connection before any byte of
/// response: on a reused connection, that is the keep-alive race.
struct Failure {
    error: ClientError,
    unanswered: bool,
}

/// One shard's client for one endpoint: posts, each on its own connection, reusing idle
/// kept-alive ones. Lives in one executor.
pub(crate) struct Client {
    endpoint: Endpoint,
    /// Kept-alive connections between posts, the most recently used last.
    idle: RefCell<Vec<TcpStream>>,
}

impl Client {
    pub(crate) fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            idle: RefCell::new(Vec::new()),
        }
    }

    /// POSTs `body` (JSON) with `headers`, and returns the final response, whatever its
    /// status. Connecting, writing and reading together take at most `timeout`.
    pub(crate) async fn post(
        &self,
        body: &[u8],
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let request = request_bytes(&self.endpoint, body, headers)?;
        let exchange = async {
            // The most recently used is the least likely to have hit the server's idle timeout.
            let idle = self.idle.borrow_mut().pop();
            if let Some(stream) = idle {
                match self.exchange(stream, &request).await {
                    // The server closed the idle connection as the request went out, so most
                    // likely never read it: try once on a fresh connection (RFC 9112 §9.3.1,
                    // §9.6). A server that read it and closed without a byte of answer sees
                    // it twice.
                    Err(Failure {
                        unanswered: true, ..
                    }) => {}
                    done => return done.map_err(|f| f.error),
                }
            }
            let stream = self.connect().await?;
            self.exchange(stream, &request).await.map_err(|f| f.error)
        };
        let deadline = async {
            Timer::new(timeout).await;
            Err(ClientError::TimedOut(timeout))
        };
        // The loser is dropped, and with it a connection in an unknown state.
        future::or(exchange, deadline).await
    }

    async fn connect(&self) -> Result<TcpStream, ClientError> {
        let connect_error = |e: glommio::GlommioError<()>| ClientError::Connect(e.into());
        let stream = TcpStream::connect(self.endpoint.addr)
            .await
            .map_err(connect_error)?;
        // A request goes out in one write; waiting to coalesce it only adds latency.
        stream.set_nodelay(true).map_err(connect_error)?;
        Ok(stream)
    }

    /// Writes the request and reads the response; keeps the connection if it may be reused.
    async fn exchange(&self, mut stream: TcpStream, request: &[u8]) -> Result<Response, Failure> {
        let failed = |error, unanswered| Failure { error, unanswered };
        let ended = |e: &io::Error| {
            use io::ErrorKind::*;
            matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
        };
        if let Err(e) = stream.write_all(request).await {
            let unanswered = ended(&e);
            return Err(failed(ClientError::Io(e), unanswered));
        }
        let mut reader = ResponseReader::new(MAX_BODY);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut fed = 0;
        let complete = loop {
            let n = match stream.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let unanswered = fed == 0 && ended(&e);
                    return Err(failed(ClientError::Io(e), unanswered));
                }
            };
            if n == 0 {
                break reader.finish_at_eof().map_err(|e| failed(e, fed == 0))?;
            }
            fed += n;
            let read = buf.get(..n).unwrap_or_default();
            if let Progress::Done(complete) = reader.feed(read).map_err(|e| failed(e, false))? {
                break complete;
            }
        };
        // Bytes past the response were never asked for: the connection's framing is lost.
        if complete.reusable && complete.consumed == fed {
            let mut idle = self.idle.borrow_mut();
            if idle.len() < MAX_IDLE {
                idle.push(stream);
            }
        }
        Ok(complete.response)
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
