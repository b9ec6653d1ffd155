//! Unit tests of the backend client: URL parsing, request bytes, the response reader byte for
//! byte at every split point, and posts on a glommio executor against small backends on std
//! threads (every wait bounded).

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Instant;

use glommio::{LocalExecutorBuilder, Placement};

use super::*;

// ---- Endpoint ----

#[test]
fn endpoints_parse_with_their_host_field_and_target() {
    let e = Endpoint::parse("http://127.0.0.1:8080/hooks/event?v=1").unwrap();
    assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        (&*e.host, &*e.target),
        ("127.0.0.1:8080", "/hooks/event?v=1")
    );
    assert_eq!(e.to_string(), "http://127.0.0.1:8080/hooks/event?v=1");

    // Port 80 is left out of the Host field; an empty path is `/`.
    let e = Endpoint::parse("http://127.0.0.1").unwrap();
    assert_eq!(e.addr, "127.0.0.1:80".parse().unwrap());
    assert_eq!((&*e.host, &*e.target), ("127.0.0.1", "/"));
    assert_eq!(e.to_string(), "http://127.0.0.1/");
    assert_eq!(
        Endpoint::parse("http://127.0.0.1:80/").unwrap().host,
        "127.0.0.1"
    );

    // The scheme in any case; an IPv6 literal; a query with no path; no fragment.
    let e = Endpoint::parse("HTTP://[::1]:9000?a=b#frag").unwrap();
    assert_eq!(e.addr, "[::1]:9000".parse().unwrap());
    assert_eq!((&*e.host, &*e.target), ("[::1]:9000", "/?a=b"));
    assert_eq!(e.to_string(), "http://[::1]:9000/?a=b");

    let e = Endpoint::parse("http://localhost:7000/x").unwrap();
    assert_eq!((e.addr.port(), &*e.host), (7000, "localhost:7000"));
}

#[test]
fn endpoints_are_shared_across_shards() {
    fn shareable<T: Clone + Send + Sync>() {}
    shareable::<Endpoint>();
}

#[test]
fn bad_urls_say_why() {
    let why = |url: &str| Endpoint::parse(url).unwrap_err();
    let https = why("https://backend.example/hooks");
    assert!(
        https.contains("https is not supported") && https.contains("TLS proxy"),
        "{https}"
    );
    for url in ["ftp://h/", "127.0.0.1:80", "backend/hooks", ""] {
        assert!(
            why(url).contains("not an http:// URL"),
            "{url}: {}",
            why(url)
        );
    }
    for url in ["http://", "http:///hooks", "http://:8080/", "http://?q"] {
        assert!(why(url).contains("no host"), "{url}: {}", why(url));
    }
    for url in [
        "http://h:0/",
        "http://h:65536",
        "http://h:x",
        "http://h:",
        "http://h:-1",
        "http://[::1]x",
    ] {
        assert!(why(url).contains("bad port"), "{url}: {}", why(url));
    }
    assert!(why("http://[::1/").contains("bad IPv6"));
    assert!(why("http://[nope]/").contains("bad IPv6"));
    assert!(why("http://user:pw@h/").contains("credentials"));
    assert!(why("http://a\r\nb/").contains("bad host"));
    assert!(why("http://127.0.0.1/a b").contains("percent-encode"));
    assert!(why("http://127.0.0.1/caf\u{e9}").contains("percent-encode"));
    let unresolved = why("http://no-such-host.invalid:8080/");
    assert!(
        unresolved.contains("cannot resolve no-such-host.invalid"),
        "{unresolved}"
    );
}

// ---- Request bytes ----

#[test]
fn request_bytes_exactly() {
    let e = Endpoint::parse("http://127.0.0.1:8080/hooks?v=1").unwrap();
    let bytes = request_bytes(
        &e,
        b"{\"a\":1}",
        &[("Authorization", "Bearer t0k"), ("X-Id", "7")],
    );
    assert_eq!(
        String::from_utf8(bytes.unwrap()).unwrap(),
        "POST /hooks?v=1 HTTP/1.1\r\n\
         Host: 127.0.0.1:8080\r\n\
         Content-Type: application/json\r\n\
         Content-Length: 7\r\n\
         Authorization: Bearer t0k\r\n\
         X-Id: 7\r\n\
         \r\n\
         {\"a\":1}"
    );
    let empty = request_bytes(&Endpoint::parse("http://127.0.0.1").unwrap(), b"", &[]);
    assert_eq!(
        empty.unwrap(),
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn request_headers_that_would_break_the_request_are_refused() {
    let e = Endpoint::parse("http://127.0.0.1/").unwrap();
    for header in [
        ("X-A", "v\r\nX-Injected: 1"),
        ("X-A", "v\nw"),
        ("X-A", "v\0"),
        ("", "v"),
        ("X A", "v"),
        ("X:A", "v"),
        ("content-length", "3"),
        ("Transfer-Encoding", "chunked"),
        ("HOST", "elsewhere"),
        ("Content-Type", "text/plain"),
    ] {
        let r = request_bytes(&e, b"{}", &[header]);
        assert!(
            matches!(r, Err(ClientError::Request(_))),
            "{header:?}: {r:?}"
        );
    }
}

// ---- Response reader ----

/// Feeds `pieces` in order; at the end of them, the stream ends.
fn read_pieces(pieces: &[&[u8]], max_body: usize) -> Result<Complete, ClientError> {
    let mut reader = ResponseReader::new(max_body);
    for piece in pieces {
        if let Progress::Done(complete) = reader.feed(piece)? {
            return Ok(complete);
        }
    }
    reader.finish_at_eof()
}

fn read(bytes: &[u8]) -> Result<Complete, ClientError> {
    read_pieces(&[bytes], 1 << 10)
}

/// `bytes` read whole, split in two at every point, and one byte at a time, all alike.
fn read_every_way(bytes: &[u8]) -> Complete {
    let whole = read(bytes).unwrap();
    for at in 0..=bytes.len() {
        let (a, b) = bytes.split_at(at);
        assert_eq!(
            read_pieces(&[a, b], 1 << 10).unwrap(),
            whole,
            "split at {at}"
        );
    }
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        read_pieces(&bytewise, 1 << 10).unwrap(),
        whole,
        "a byte at a time"
    );
    whole
}

fn complete(status: u16, body: &[u8], reusable: bool, consumed: usize) -> Complete {
    Complete {
        response: Response {
            status,
            body: body.to_vec(),
        },
        reusable,
        consumed,
    }
}

#[test]
fn a_content_length_answer() {
    let r = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
    assert_eq!(
        read_every_way(r),
        complete(200, b"{\"ok\":true}", true, r.len())
    );
    // Bytes past it are not taken.
    let mut more = r.to_vec();
    more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    assert_eq!(
        read_every_way(&more),
        complete(200, b"{\"ok\":true}", true, r.len())
    );
    // A repeated identical length is that length; no reason phrase is fine.
    let r = b"HTTP/1.1 201\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nhi";
    assert_eq!(read_every_way(r), complete(201, b"hi", true, r.len()));
    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(read_every_way(r), complete(200, b"", true, r.len()));
}

#[test]
fn a_chunked_answer_with_extensions_and_trailers() {
    let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6 ; x ; y=\"q\"\r\n world\r\nA\r\n, and more\r\n\
              000\r\nExpires: never\r\nX-Digest: abc\r\n\r\n";
    assert_eq!(
        read_every_way(r),
        complete(200, b"hello world, and more", true, r.len())
    );
    let r = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nextra";
    assert_eq!(read_every_way(r), complete(500, b"", false, r.len() - 5));
    // Bare LF line ends (RFC 9112 §2.2).
    let r = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nhi\n0\n\n";
    assert_eq!(read_every_way(r), complete(200, b"hi", true, r.len()));
}

#[test]
fn interim_answers_are_skipped() {
    let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\nyes";
    assert_eq!(read_every_way(r), complete(202, b"yes", true, r.len()));
    let r = read(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    assert!(matches!(r, Err(ClientError::Malformed(_))), "{r:?}");
}

#[test]
fn no_body_after_204_and_304() {
    let r = b"HTTP/1.1 204 No Content\r\nContent-Length: 100\r\n\r\n";
    assert_eq!(read_every_way(r), complete(204, b"", true, r.len()));
    let r = b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(read_every_way(r), complete(304, b"", true, r.len()));
}

#[test]
fn a_body_until_close() {
    let r = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"to\":\"the end\"}";
    assert_eq!(
        read_every_way(r),
        complete(200, b"{\"to\":\"the end\"}", false, r.len())
    );
    let r = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n";
    assert_eq!(read_every_way(r), complete(200, b"", false, r.len()));
}

#[test]
fn which_connections_may_be_reused() {
    let cases: &[(&[u8], bool)] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        (
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            true,
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
    ];
    for (bytes, reusable) in cases {
        let got = read(bytes).unwrap();
        assert_eq!(
            got.reusable,
            *reusable,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn malformed_answers_are_errors() {
    for bytes in [
        &b"HTTP/1.1 abc OK\r\n\r\n"[..],
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 600 High\r\n\r\n",
        b"<html>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Field\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xff\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
    ] {
        let r = read(bytes);
        assert!(
            matches!(r, Err(ClientError::Malformed(_))),
            "{}: {r:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn heads_are_bounded() {
    // A head of exactly MAX_HEAD bytes is read; one byte more is not.
    let head_of = |len: usize| {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Fill: ".to_vec();
        head.resize(len - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    assert_eq!(read(&head_of(MAX_HEAD)).unwrap().consumed, MAX_HEAD);
    let r = read(&head_of(MAX_HEAD + 1));
    assert!(matches!(r, Err(ClientError::TooLarge(_))), "{r:?}");
    // One that never ends is refused once MAX_HEAD bytes are in, a byte at a time too.
    let endless = head_of(MAX_HEAD + 100);
    let endless = &endless[..MAX_HEAD + 50];
    let mut reader = ResponseReader::new(1 << 10);
    let fed = endless.iter().position(|b| reader.feed(&[*b]).is_err());
    assert_eq!(fed, Some(MAX_HEAD - 1));
    // A chunk-size line and a trailer section are bounded alike.
    let mut long_ext = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    long_ext.resize(long_ext.len() + MAX_HEAD, b'e');
    let r = read(&long_ext);
    assert!(matches!(r, Err(ClientError::TooLarge(_))), "{r:?}");
    let mut trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    for _ in 0..MAX_HEAD / 8 {
        trailers.extend_from_slice(b"X: 123\r\n");
    }
    let r = read(&trailers);
    assert!(matches!(r, Err(ClientError::TooLarge(_))), "{r:?}");
}

#[test]
fn bodies_are_bounded() {
    let max = 8;
    let at_most = |bytes: &[u8]| read_pieces(&[bytes], max);
    let r = at_most(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678").unwrap();
    assert_eq!(r.response.body, b"12345678");
    for bytes in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n4\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n123456789",
    ] {
        let r = at_most(bytes);
        assert!(
            matches!(r, Err(ClientError::TooLarge(_))),
            "{}: {r:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let r = at_most(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n3\r\n678\r\n0\r\n\r\n",
    );
    assert_eq!(r.unwrap().response.body, b"12345678");
    // Until close, the bound is checked as bytes arrive, a byte at a time too.
    let mut reader = ResponseReader::new(max);
    assert_eq!(
        reader.feed(b"HTTP/1.1 200 OK\r\n\r\n").unwrap(),
        Progress::NeedMore
    );
    for _ in 0..max {
        assert_eq!(reader.feed(b"x").unwrap(), Progress::NeedMore);
    }
    assert!(matches!(reader.feed(b"x"), Err(ClientError::TooLarge(_))));
}

#[test]
fn an_early_end_is_closed() {
    for bytes in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n",
    ] {
        let r = read(bytes);
        assert!(
            matches!(r, Err(ClientError::Closed)),
            "{}: {r:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // A reader that is done takes nothing more.
    let mut reader = ResponseReader::new(16);
    let done = reader.feed(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    assert!(matches!(done, Progress::Done(_)));
    assert!(matches!(reader.feed(b"x"), Err(ClientError::Malformed(_))));
}

#[test]
fn errors_read_well() {
    assert_eq!(
        ClientError::TimedOut(Duration::from_millis(200)).to_string(),
        "no response within 200ms"
    );
    assert_eq!(
        ClientError::Closed.to_string(),
        "connection closed before a complete response"
    );
    let refused = ClientError::Connect(io::ErrorKind::ConnectionRefused.into());
    assert!(
        refused.to_string().starts_with("connect failed: "),
        "{refused}"
    );
    assert_eq!(
        ClientError::Malformed("status 600".into()).to_string(),
        "malformed response: status 600"
    );
}

// ---- Posts over sockets ----

const WAIT: Duration = Duration::from_secs(5);

/// Runs `make()`'s future on a fresh glommio executor and returns its output.
fn on_executor<T, F>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(make)
        .expect("executor starts")
        .join()
        .expect("executor ends")
}

/// A test backend on a std thread, listening on 127.0.0.1:0.
fn backend<R: Send + 'static>(
    serve: impl FnOnce(TcpListener) -> R + Send + 'static,
) -> (Endpoint, thread::JoinHandle<R>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/events")).unwrap();
    (endpoint, thread::spawn(move || serve(listener)))
}

/// The next connection, waited for at most `WAIT`; its reads wait at most `WAIT` too.
fn accept(listener: &TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(WAIT)).unwrap();
                return stream;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("no connection: {e}"),
        }
    }
}

/// How many kept-alive connections `client` holds.
fn idle_count(client: &Client) -> usize {
    client.idle.borrow().len()
}

/// Whether a connection is waiting to be accepted now.
fn another_connection(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    listener.accept().is_ok()
}

/// One request's bytes (head and Content-Length body); `None` if the client closed first.
fn read_request(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if request.len() >= end + 4 + length {
                return Some(request);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) if request.is_empty() => return None,
            Ok(0) => panic!("request cut short"),
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading a request: {e}"),
        }
    }
}

const JSON_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";

#[test]
fn posts_json_and_reads_the_answer() {
    let (endpoint, server) = backend(|listener| {
        let mut conn = accept(&listener);
        let request = read_request(&mut conn).unwrap();
        conn.write_all(JSON_ANSWER).unwrap();
        request
    });
    let headers = [("Authorization", "Bearer t0k")];
    let to = endpoint.clone();
    let response = on_executor(move || async move {
        let client = Client::new(to);
        client.post(b"{\"event\":1}", &headers, WAIT).await
    });
    assert_eq!(
        response.unwrap(),
        Response {
            status: 200,
            body: b"{\"ok\":true}".to_vec()
        }
    );
    let expected = request_bytes(&endpoint, b"{\"event\":1}", &headers).unwrap();
    assert_eq!(server.join().unwrap(), expected);
}

#[test]
fn reads_a_chunked_answer_in_pieces() {
    let (endpoint, server) = backend(|listener| {
        let mut conn = accept(&listener);
        read_request(&mut conn).unwrap();
        for piece in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"6\r\n{\"ok\":\r\n",
            b"5;ext=1\r\ntrue}\r\n",
            b"0\r\nX-Trailer: 1\r\n\r\n",
        ] {
            conn.write_all(piece).unwrap();
            conn.flush().unwrap();
        }
    });
    let response = on_executor(move || async move {
        let client = Client::new(endpoint);
        let response = client.post(b"{}", &[], WAIT).await;
        (response, idle_count(&client))
    });
    assert_eq!(response.0.unwrap().body, b"{\"ok\":true}");
    assert_eq!(
        response.1, 1,
        "a chunked answer leaves the connection reusable"
    );
    server.join().unwrap();
}

#[test]
fn reuses_a_kept_alive_connection() {
    let (endpoint, server) = backend(|listener| {
        let mut conn = accept(&listener);
        for answer in [&b"1"[..], b"2"] {
            read_request(&mut conn).unwrap();
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n";
            conn.write_all(&[head.as_bytes(), answer].concat()).unwrap();
        }
        another_connection(&listener)
    });
    let (first, second, idle) = on_executor(move || async move {
        let client = Client::new(endpoint);
        let first = client.post(b"{}", &[], WAIT).await;
        let second = client.post(b"{}", &[], WAIT).await;
        (first, second, idle_count(&client))
    });
    assert_eq!(first.unwrap().body, b"1");
    assert_eq!(second.unwrap().body, b"2");
    assert_eq!(idle, 1);
    assert!(
        !server.join().unwrap(),
        "both posts went over the one connection"
    );
}

#[test]
fn posts_in_flight_together_each_have_a_connection() {
    // Neither is answered until both requests are in: they must travel side by side.
    let (endpoint, server) = backend(|listener| {
        let mut a = accept(&listener);
        let mut b = accept(&listener);
        read_request(&mut a).unwrap();
        read_request(&mut b).unwrap();
        a.write_all(JSON_ANSWER).unwrap();
        b.write_all(JSON_ANSWER).unwrap();
    });
    let (a, b, idle) = on_executor(move || async move {
        let client = Client::new(endpoint);
        let (a, b) = future::zip(client.post(b"1", &[], WAIT), client.post(b"2", &[], WAIT)).await;
        (a, b, idle_count(&client))
    });
    assert_eq!(a.unwrap().status, 200);
    assert_eq!(b.unwrap().status, 200);
    assert_eq!(idle, 2);
    server.join().unwrap();
}

#[test]
fn keeps_at_most_max_idle_connections() {
    let posts = MAX_IDLE + 2;
    let (endpoint, server) = backend(move |listener| {
        let mut conns: Vec<_> = (0..posts).map(|_| accept(&listener)).collect();
        for conn in &mut conns {
            read_request(conn).unwrap();
        }
        for conn in &mut conns {
            conn.write_all(JSON_ANSWER).unwrap();
        }
    });
    let idle = on_executor(move || async move {
        let client = std::rc::Rc::new(Client::new(endpoint));
        let posting = |client: std::rc::Rc<Client>| async move {
            client.post(b"{}", &[], WAIT).await.is_ok()
        };
        let tasks: Vec<_> = (0..posts)
            .map(|_| glommio::spawn_local(posting(client.clone())))
            .collect();
        let mut answered = 0;
        for task in tasks {
            answered += usize::from(task.await);
        }
        (answered, idle_count(&client))
    });
    assert_eq!(idle, (posts, MAX_IDLE));
    server.join().unwrap();
}

#[test]
fn retries_once_when_the_server_closed_the_idle_connection() {
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let (endpoint, server) = backend(move |listener| {
        let mut first = accept(&listener);
        read_request(&mut first).unwrap();
        first.write_all(JSON_ANSWER).unwrap();
        // The server's idle timeout: the kept connection ends before the next request.
        drop(first);
        closed_tx.send(()).unwrap();
        let mut second = accept(&listener);
        let request = read_request(&mut second).unwrap();
        second
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        request
    });
    let expected = request_bytes(&endpoint, b"{\"n\":2}", &[]).unwrap();
    let (first, second) = on_executor(move || async move {
        let client = Client::new(endpoint);
        let first = client.post(b"{\"n\":1}", &[], WAIT).await;
        assert_eq!(idle_count(&client), 1, "the first connection is kept");
        closed.recv_timeout(WAIT).unwrap();
        (first, client.post(b"{\"n\":2}", &[], WAIT).await)
    });
    assert_eq!(first.unwrap().status, 200);
    assert_eq!(second.unwrap().status, 201);
    assert_eq!(server.join().unwrap(), expected);
}

#[test]
fn a_fresh_connection_closed_unanswered_is_not_retried() {
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let (endpoint, server) = backend(move |listener| {
        let mut conn = accept(&listener);
        read_request(&mut conn).unwrap();
        drop(conn);
        done.recv_timeout(WAIT).unwrap();
        another_connection(&listener)
    });
    let response =
        on_executor(move || async move { Client::new(endpoint).post(b"{}", &[], WAIT).await });
    assert!(matches!(response, Err(ClientError::Closed)), "{response:?}");
    done_tx.send(()).unwrap();
    assert!(!server.join().unwrap(), "no second connection");
}

#[test]
fn a_backend_that_never_answers_times_out() {
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let (endpoint, server) = backend(move |listener| {
        let mut conn = accept(&listener);
        read_request(&mut conn).unwrap();
        // Holds the connection open, silent, until the test is done.
        let _ = done.recv_timeout(WAIT);
    });
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let response =
        on_executor(move || async move { Client::new(endpoint).post(b"{}", &[], timeout).await });
    let took = started.elapsed();
    assert!(
        matches!(response, Err(ClientError::TimedOut(t)) if t == timeout),
        "{response:?}"
    );
    assert!(took >= timeout && took < WAIT / 2, "{took:?}");
    done_tx.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn a_refused_connection_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let response =
        on_executor(move || async move { Client::new(endpoint).post(b"{}", &[], WAIT).await });
    match response {
        Err(ClientError::Connect(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_oversize_answer_is_refused_without_reading_it() {
    let (endpoint, server) = backend(|listener| {
        let mut conn = accept(&listener);
        read_request(&mut conn).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&[b'x'; 4096]);
    });
    let (response, idle) = on_executor(move || async move {
        let client = Client::new(endpoint);
        let response = client.post(b"{}", &[], WAIT).await;
        (response, idle_count(&client))
    });
    assert!(
        matches!(response, Err(ClientError::TooLarge(_))),
        "{response:?}"
    );
    assert_eq!(idle, 0);
    server.join().unwrap();
}
