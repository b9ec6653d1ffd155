//! The HTTP API that backends push through (broadcast, emit, fire, close, publish, server-side
//! subscriptions, what a topic holds), plus `/metrics`, `/healthz` and the live status page
//! (`/status`), served by one small glommio executor of its own. Not a general HTTP server: one
//! request per connection, bodies by `Content-Length` only.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::Value;

use corecast::history::Epoch;
use corecast::http::{self, RequestHead};
use corecast::runtime::{self, HeadError};
use corecast::{Error, MessageType, PublishReport, Server};

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// When set, every `/api/*` request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Largest request body accepted (413 above it). Default 1 MiB.
    pub max_body: usize,
    /// Time a client has to send its request and read the answer. Default 10 s.
    pub request_timeout: Duration,
    /// API connections served at once; more are answered 503. Default 256.
    pub max_clients: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token: None,
            max_body: 1 << 20,
            request_timeout: Duration::from_secs(10),
            max_clients: 256,
        }
    }
}

/// A running HTTP API.
pub struct Api {
    addr: SocketAddr,
    stop: flume::Sender<()>,
    handle: Mutex<Option<glommio::ExecutorJoinHandle<()>>>,
}

impl Api {
    /// Starts the API on `addr` (port 0 picks one) for `server`; returns once it is listening,
    /// or with why it could not.
    pub fn start(server: Server, addr: SocketAddr, options: ApiOptions) -> anyhow::Result<Api> {
        let (stop, stop_rx) = flume::bounded::<()>(1);
        let builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name("corecast-api")
            .io_memory(64 << 10);
        let (handle, addr) =
            runtime::spawn_ready(builder, Duration::from_secs(10), move |ready| async move {
                let bound = listen(addr).and_then(|l| Ok((l.local_addr()?, l)));
                match bound {
                    Ok((local, listener)) => {
                        ready.ok(local);
                        accept(listener, server, Rc::new(options), stop_rx).await;
                    }
                    Err(e) => ready.fail(Error::Io(std::io::Error::other(format!(
                        "cannot listen on {addr}: {}",
                        if e.kind() == std::io::ErrorKind::AddrInUse {
                            "address in use: another process listens there".to_string()
                        } else {
                            e.to_string()
                        }
                    )))),
                }
            })
            .map_err(|e| anyhow::anyhow!("HTTP API: {e}"))?;
        Ok(Api {
            addr,
            stop,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the API's thread to end.
    pub fn stop(&self) {
        let _ = self.stop.try_send(());
        if let Some(h) = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// Listens on `addr` with SO_REUSEADDR (the last run's connections left in TIME_WAIT do not
/// hold up a restart) but without SO_REUSEPORT, which glommio's `TcpListener::bind` sets: a
/// second instance on the same address then fails to start with "address in use", rather than
/// the kernel sharing the API calls out between the two (one of them perhaps without the
/// other's `--api-token`). One executor serves the API: it has nothing to share the port with.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // On Unix std's listener sets SO_REUSEADDR and not SO_REUSEPORT.
    let fd = std::net::TcpListener::bind(addr)?.into_raw_fd();
    // SAFETY: `fd` is a bound, listening TCP socket whose ownership moves to the listener.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

async fn accept(
    listener: TcpListener,
    server: Server,
    options: Rc<ApiOptions>,
    stop: flume::Receiver<()>,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let next = future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv_async().await;
            None
        })
        .await;
        match next {
            None => return,
            Some(Ok(stream)) => {
                let (server, options, active) =
                    (server.clone(), Rc::clone(&options), Rc::clone(&active));
                glommio::spawn_local(async move {
                    active.set(active.get() + 1);
                    serve(
                        &server,
                        &options,
                        stream,
                        active.get() > options.max_clients,
                    )
                    .await;
                    active.set(active.get() - 1);
                })
                .detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "API accept failed; retrying");
                Timer::new(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads one request and writes its answer, all within the request timeout.
async fn serve(server: &Server, options: &ApiOptions, mut stream: TcpStream, busy: bool) {
    let exchange = async {
        let answer = if busy {
            json(503, r#"{"error":"too many API clients"}"#)
        } else {
            match read_request(&mut stream, options.max_body).await {
                Ok((head, body)) => answer(server, options, &head, body).await,
                Err(Some(response)) => response,
                Err(None) => return,
            }
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
        // A refused request may leave its body unread; closing on it would reset the
        // connection and could lose the answer.
        runtime::drain_and_close(&mut stream).await;
    };
    future::or(exchange, async {
        Timer::new(options.request_timeout).await;
    })
    .await;
    let _ = stream.close().await;
}

/// The request head and body; `Err(Some)` is the error response, `Err(None)` a client gone.
async fn read_request(
    stream: &mut TcpStream,
    max_body: usize,
) -> Result<(RequestHead, Vec<u8>), Option<Vec<u8>>> {
    const MAX_HEAD: usize = 8 << 10;
    let (head, mut body) = match runtime::read_head(stream, MAX_HEAD).await {
        Ok(read) => read,
        Err(HeadError::Gone) => return Err(None),
        Err(HeadError::Http(e)) => return Err(Some(error(e.status(), &e.to_string()))),
    };
    if head.header("transfer-encoding").is_some() {
        return Err(Some(error(411, "send the body with Content-Length")));
    }
    let length = match head.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Some(error(400, "invalid Content-Length")))?,
    };
    if length > max_body {
        return Err(Some(error(413, &format!("body over {max_body} bytes"))));
    }
    if body.len() > length {
        body.truncate(length);
    }
    if body.len() < length
        && head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        // curl asks before sending bodies over 1 KiB; without this it waits a second.
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| None)?;
    }
    let start = body.len();
    body.resize(length, 0);
    stream
        .read_exact(&mut body[start..])
        .await
        .map_err(|_| None)?;
    Ok((head, body))
}

/// What a request path names, before the method and the token are checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    Health,
    Metrics,
    /// The live status page: static HTML whose script reads `/metrics` and `/api/*`.
    Status,
    Connections,
    Cluster,
    Broadcast,
    Emit(&'a str),
    Fire(&'a str),
    Close(&'a str),
    Topics,
    /// `/api/topics/{topic}`, the topic still percent-encoded: its subscribers and history.
    Topic(&'a str),
    /// `/api/publish/{topic}`, the topic still percent-encoded.
    Publish(&'a str),
    /// `/api/subscriptions/{uuid}/{topic}`: POST subscribes, DELETE unsubscribes.
    Subscription(&'a str, &'a str),
}

impl Endpoint<'_> {
    /// The methods each endpoint takes, as an `Allow` header lists them.
    fn methods(&self) -> &'static str {
        match self {
            Endpoint::Health
            | Endpoint::Metrics
            | Endpoint::Status
            | Endpoint::Connections
            | Endpoint::Topics
            | Endpoint::Topic(_)
            | Endpoint::Cluster => "GET",
            Endpoint::Subscription(..) => "POST, DELETE",
            _ => "POST",
        }
    }

    /// Whether the body goes out to clients as a message.
    fn sends_body(&self) -> bool {
        matches!(
            self,
            Endpoint::Broadcast | Endpoint::Emit(_) | Endpoint::Publish(_)
        )
    }

    /// The status page holds no data: the requests its script makes carry the token.
    fn needs_token(&self) -> bool {
        !matches!(
            self,
            Endpoint::Health | Endpoint::Metrics | Endpoint::Status
        )
    }
}

pub(crate) fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    let one = |prefix: &str| {
        path.strip_prefix(prefix)
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    Some(match path {
        "/healthz" => Endpoint::Health,
        "/metrics" => Endpoint::Metrics,
        "/status" => Endpoint::Status,
        "/api/connections" => Endpoint::Connections,
        "/api/broadcast" => Endpoint::Broadcast,
        "/api/topics" => Endpoint::Topics,
        "/api/cluster" => Endpoint::Cluster,
        _ => {
            if let Some(u) = one("/api/emit/") {
                Endpoint::Emit(u)
            } else if let Some(e) = one("/api/fire/") {
                Endpoint::Fire(e)
            } else if let Some(u) = one("/api/close/") {
                Endpoint::Close(u)
            } else if let Some(t) = one("/api/topics/") {
                Endpoint::Topic(t)
            } else if let Some(t) = one("/api/publish/") {
                Endpoint::Publish(t)
            } else if let Some((u, t)) = path
                .strip_prefix("/api/subscriptions/")
                .and_then(|rest| rest.split_once('/'))
                .filter(|(u, t)| !u.is_empty() && !t.is_empty() && !t.contains('/'))
            {
                Endpoint::Subscription(u, t)
            } else {
                return None;
            }
        }
    })
}

/// `Authorization: Bearer <token>`, compared in time independent of where a guess differs.
pub(crate) fn token_matches(authorization: Option<&str>, token: &str) -> bool {
    // The scheme is case-insensitive (RFC 9110 §11.1): curl and clients send `bearer` too.
    let Some(given) = corecast::auth::bearer(authorization) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, expected) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ expected);
    }
    diff == 0
}

const NOT_UTF8: &str = "body is not UTF-8: send it with Content-Type: application/octet-stream \
    to send binary (a text frame must be UTF-8, RFC 6455 §8.1)";

async fn answer(
    server: &Server,
    options: &ApiOptions,
    head: &RequestHead,
    body: Vec<u8>,
) -> Vec<u8> {
    let Some(endpoint) = endpoint(head.path()) else {
        return error(404, "no such endpoint");
    };
    let allow = endpoint.methods();
    if !allow.split(", ").any(|m| m == head.method()) {
        return http::response(
            405,
            "application/json",
            br#"{"error":"method not allowed"}"#,
            &[("Allow", allow)],
        );
    }
    if endpoint.needs_token() {
        if let Some(token) = &options.token {
            if !token_matches(head.header("authorization"), token) {
                return http::response(
                    401,
                    "application/json",
                    br#"{"error":"missing or wrong bearer token"}"#,
                    &[("WWW-Authenticate", "Bearer")],
                );
            }
        }
    }
    // The media type without parameters, compared case-insensitively (RFC 9110 §8.3.1).
    let ty = if head.header("content-type").is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/octet-stream"))
    }) {
        MessageType::Binary
    } else {
        MessageType::Text
    };
    // Every conforming client closes with 1007 on a text frame that is not UTF-8, so one bad
    // request would disconnect everyone it reaches.
    if endpoint.sends_body() && ty == MessageType::Text && std::str::from_utf8(&body).is_err() {
        return error(400, NOT_UTF8);
    }
    match endpoint {
        Endpoint::Health => {
            if server.is_draining() {
                json(503, r#"{"status":"draining"}"#)
            } else {
                json(200, r#"{"status":"serving"}"#)
            }
        }
        Endpoint::Metrics => http::response(
            200,
            "text/plain; version=0.0.4",
            server.metrics().to_prometheus().as_bytes(),
            &[],
        ),
        Endpoint::Status => http::response(
            200,
            "text/html; charset=utf-8",
            STATUS_PAGE.as_bytes(),
            &[
                // Its own inline script and style, requests to this listener, nothing else.
                ("Content-Security-Policy", STATUS_PAGE_POLICY),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ],
        ),
        Endpoint::Connections => {
            let shards = server.connections_per_shard();
            let list: Vec<String> = shards.iter().map(|n| n.to_string()).collect();
            json(
                200,
                &format!(
                    r#"{{"total":{},"shards":[{}]}}"#,
                    shards.iter().sum::<usize>(),
                    list.join(",")
                ),
            )
        }
        Endpoint::Broadcast => {
            server.broadcast(body, ty);
            json(200, r#"{"ok":true}"#)
        }
        Endpoint::Emit(uuid) => match server.emit_to(uuid, body, ty) {
            Ok(()) => json(200, r#"{"ok":true}"#),
            Err(_) => error(404, "unknown connection"),
        },
        Endpoint::Fire(name) => {
            server.fire(name, body);
            json(200, r#"{"ok":true}"#)
        }
        Endpoint::Close(uuid) => match server.close(uuid) {
            Ok(()) => json(200, r#"{"ok":true}"#),
            Err(_) => error(404, "unknown connection"),
        },
        Endpoint::Cluster => match server.cluster() {
            None => error(404, "cluster mode is off"),
            Some(view) => {
                let nodes: Vec<serde_json::Value> = view
                    .nodes()
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "id": n.id,
                            "connections": n.connections,
                            "last_heartbeat_ms": n.last_heartbeat.as_millis() as u64,
                            "this_node": n.this_node,
                        })
                    })
                    .collect();
                let body = serde_json::json!({
                    "cluster": view.name(),
                    "nats_connected": view.is_connected(),
                    "connections": view.connections(),
                    "nodes": nodes,
                });
                json(200, &body.to_string())
            }
        },
        Endpoint::Topics => {
            let mut topics = server.topics();
            // `?top=N`: the N with the most subscribers, most first (the status page's list).
            if let Some(top) = head.query("top") {
                let Ok(n) = top.parse::<usize>() else {
                    return error(400, "top must be a whole number");
                };
                topics.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                topics.truncate(n);
            }
            let list: Vec<serde_json::Value> = topics
                .iter()
                .map(|(name, n)| serde_json::json!({ "topic": name, "subscribers": n }))
                .collect();
            json(200, &serde_json::json!({ "topics": list }).to_string())
        }
        Endpoint::Topic(topic) => {
            let topic = http::decode_segment(topic);
            if let Err(e) = corecast::topics::check_name(&topic) {
                return error(400, &e.to_string());
            }
            let window = history_window(server, &topic).await;
            let report = topic_report(&topic, server.subscriber_count(&topic), window);
            json(200, &report.to_string())
        }
        Endpoint::Publish(topic) => {
            let topic = http::decode_segment(topic);
            if let Err(e) = corecast::topics::check_name(&topic) {
                return error(400, &e.to_string());
            }
            // `?key=`: the conflation key, for topics whose full queues keep the latest
            // publication per key.
            let key = head.query("key");
            if key.is_some_and(|k| k.is_empty() || k.len() > corecast::topics::MAX_TOPIC_LEN) {
                return error(400, "key must be 1 to 256 bytes");
            }
            if wants_report(head) {
                let report = server.publish_keyed_reported(&topic, key, body, ty).await;
                return json(200, &publish_report(&report));
            }
            match key {
                Some(key) => server.publish_keyed(&topic, key, body, ty),
                None => server.publish(&topic, body, ty),
            }
            let n = server.subscriber_count(&topic);
            json(200, &format!(r#"{{"ok":true,"subscribers":{n}}}"#))
        }
        Endpoint::Subscription(uuid, topic) => {
            let topic = http::decode_segment(topic);
            let changed = if head.method() == "POST" {
                server.subscribe_async(uuid, &topic).await
            } else {
                server.unsubscribe_async(uuid, &topic).await
            };
            match changed {
                Ok(changed) => json(200, &format!(r#"{{"ok":true,"changed":{changed}}}"#)),
                Err(Error::InvalidConnection) => error(404, "unknown connection"),
                Err(e @ Error::TooManyTopics) => error(409, &e.to_string()),
                Err(e) => error(400, &e.to_string()),
            }
        }
    }
}

/// `?report=1` (or `true`): the publish waits for what it reached on this node.
fn wants_report(head: &RequestHead) -> bool {
    head.query("report")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// `POST /api/publish/{topic}?report=1`: `{"subscribers":N,"queued":Q,"closed":C,
/// "dropped":D,"shards":S,"nodes":1,"partial":false}`, summed over the nodes that answered.
fn publish_report(report: &PublishReport) -> String {
    let PublishReport {
        subscribers,
        queued,
        closed,
        dropped,
        shards,
        nodes,
        partial,
    } = report;
    format!(
        r#"{{"subscribers":{subscribers},"queued":{queued},"closed":{closed},"dropped":{dropped},"shards":{shards},"nodes":{nodes},"partial":{partial}}}"#
    )
}

/// The publications `topic` keeps on this node: the first and last offsets, and their epoch;
/// `None` for a topic without history or with nothing kept. Asked of the topic's home shard.
async fn history_window(server: &Server, topic: &str) -> Option<(u64, u64, Epoch)> {
    server.history_window(topic).await
}

/// `GET /api/topics/{topic}`: `{"topic":"t","subscribers":N,"history":{"first":F,"last":L,
/// "epoch":"e"}}`, with `"history":null` when the topic keeps nothing.
fn topic_report(topic: &str, subscribers: usize, window: Option<(u64, u64, Epoch)>) -> Value {
    let history = window.map_or(Value::Null, |(first, last, epoch)| {
        serde_json::json!({ "first": first, "last": last, "epoch": epoch.to_string() })
    });
    serde_json::json!({ "topic": topic, "subscribers": subscribers, "history": history })
}

/// The live status page (`GET /status`).
const STATUS_PAGE: &str = include_str!("status.html");

/// What the status page may load and run: its own inline script and style, requests to this
/// listener; no frame may hold it.
const STATUS_PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn json(status: u16, body: &str) -> Vec<u8> {
    http::response(status, "application/json", body.as_bytes(), &[])
}

/// A JSON error; `message` is escaped as a JSON string.
fn error(status: u16, message: &str) -> Vec<u8> {
    json(status, &serde_json::json!({ "error": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_path() {
        assert_eq!(endpoint("/healthz"), Some(Endpoint::Health));
        assert_eq!(endpoint("/status"), Some(Endpoint::Status));
        // The page holds no data: what its script reads carries the token.
        assert!(!Endpoint::Status.needs_token());
        assert!(Endpoint::Topics.needs_token());
        assert!(STATUS_PAGE.starts_with("<!doctype html>"));
        // Nothing loaded from elsewhere (the SVG namespace is a name, not a load).
        for external in [" src=", " href=", "https://", "@import", "url("] {
            assert!(!STATUS_PAGE.contains(external), "{external}");
        }
        assert_eq!(endpoint("/api/emit/abc"), Some(Endpoint::Emit("abc")));
        assert_eq!(endpoint("/api/fire/tick"), Some(Endpoint::Fire("tick")));
        assert_eq!(endpoint("/api/close/x"), Some(Endpoint::Close("x")));
        assert_eq!(endpoint("/api/emit/"), None);
        assert_eq!(endpoint("/api/emit/a/b"), None);
        assert_eq!(endpoint("/api/nope"), None);
        assert_eq!(endpoint("/api/topics"), Some(Endpoint::Topics));
        assert_eq!(endpoint("/api/cluster"), Some(Endpoint::Cluster));
        assert_eq!(
            endpoint("/api/topics/scores.nba"),
            Some(Endpoint::Topic("scores.nba"))
        );
        assert_eq!(
            endpoint("/api/topics/a%2Fb"),
            Some(Endpoint::Topic("a%2Fb"))
        );
        assert_eq!(endpoint("/api/topics/a/b"), None);
        assert_eq!(endpoint("/api/topics/"), None);
        assert_eq!(Endpoint::Topic("t").methods(), "GET");
        assert_eq!(
            endpoint("/api/publish/a%2Fb"),
            Some(Endpoint::Publish("a%2Fb"))
        );
        assert_eq!(endpoint("/api/publish/a/b"), None);
        assert_eq!(
            endpoint("/api/subscriptions/u1/scores"),
            Some(Endpoint::Subscription("u1", "scores"))
        );
        assert_eq!(endpoint("/api/subscriptions/u1/"), None);
        assert_eq!(endpoint("/api/subscriptions//t"), None);
        assert_eq!(endpoint("/api/subscriptions/u1/t/x"), None);
        assert_eq!(Endpoint::Broadcast.methods(), "POST");
        assert_eq!(Endpoint::Metrics.methods(), "GET");
        assert_eq!(Endpoint::Subscription("u", "t").methods(), "POST, DELETE");
    }

    #[test]
    fn topic_reports() {
        use serde_json::json;
        assert_eq!(
            topic_report("scores", 2, Some((6, 10, Epoch(0xabcd_0001)))),
            json!({ "topic": "scores", "subscribers": 2,
                    "history": { "first": 6, "last": 10, "epoch": "abcd0001" } })
        );
        assert_eq!(
            topic_report("a\"b", 0, None),
            json!({ "topic": "a\"b", "subscribers": 0, "history": null })
        );
    }

    #[test]
    fn bearer_tokens() {
        assert!(token_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!token_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!token_matches(Some("Bearer s3cretX"), "s3cret"));
        assert!(!token_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        // RFC 9110 §11.1: the scheme is case-insensitive, and 1*SP separates it from the token.
        assert!(token_matches(Some("bearer s3cret"), "s3cret"));
        assert!(token_matches(Some("BEARER s3cret"), "s3cret"));
        assert!(token_matches(Some("Bearer  s3cret"), "s3cret"));
        assert!(
            !token_matches(Some("bearer S3CRET"), "s3cret"),
            "the token is not"
        );
        assert!(!token_matches(Some("Bearers3cret"), "s3cret"));
        assert!(!token_matches(Some("Bearer"), "s3cret"));
        assert!(!token_matches(Some("bearer "), ""));
    }
}
