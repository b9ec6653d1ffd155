//! A live chat on the corecast library, to copy from: rooms are topics with history, visitors
//! hold short-lived HS256 tokens, and one static page (`examples/live_chat/index.html`) talks
//! to it through the JavaScript client (`clients/js`), which reconnects by itself and recovers
//! what it missed.
//!
//! ```sh
//! cargo run --release --example live_chat            # prints the URL to open, in two tabs
//! cargo run --release --example live_chat -- 127.0.0.1:3000 127.0.0.1:3001   # PAGE WS
//! ```
//!
//! Two listeners: a tiny HTTP server on a thread of its own (std only; requests read with
//! `corecast::http::parse_head`) serves the page, the client's modules from `clients/js/src/`
//! and tokens; corecast serves the WebSocket route `/chat`, speaking the subset of the pubsub
//! protocol the client uses (docs/operating.md, "Topics: `--mode pubsub`"):
//!
//! | the page's client sends | the server |
//! |---|---|
//! | the upgrade, `GET /chat?envelope=1` offering the subprotocols `corecast` and `corecast.token.<jwt>` | takes the token from the subprotocol (the library does, before a `?token=`), names `corecast` in its 101, and sends every line in its envelope from the start, whatever the subscription |
//! | `{"subscribe":"room.lobby","positions":true}` | answers where the room stands, then its lines as `{"topic":..,"offset":..,"epoch":..,"data":..}` (without `envelope=1` and positions, as bare payloads) |
//! | `{"subscribe":"room.lobby","since":{"offset":7,"epoch":".."}}` | answers `"recovered":true,"missed":N` and sends the N lines missed, or `"recovered":false` with the reason |
//! | `{"publish":"room.lobby","data":"hi"}` | publishes `{"from":"<token's user>","text":"hi"}` to the room's subscribers, the sender's connection included; answers only a refusal |
//! | `{"publish":"room.lobby","data":{"text":"hi","ref":"k3x9"}}` | the same with `"ref":"k3x9"` in the line, by which the page knows its own line when it comes back |
//! | `{"unsubscribe":"room.lobby"}` / `{"refresh":"<jwt>"}` | answers as the `corecast` binary does |
//! | any of these with `"id":7` (any JSON) | every answer to it carries `"id":7`, and a publish that goes out is answered `{"published":"room.lobby","id":7}` |
//!
//! **A demo, not a login system.** `GET /token?name=alice` signs a token for whatever name it
//! is given, with a secret made at random at each start. A real application signs tokens after
//! its own login (or has its identity provider do it) and keeps the secret in a file
//! (docs/security.md). The defaults listen on 127.0.0.1 only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corecast::auth::Verifier;
use corecast::history::{Epoch, Position, Recovery};
use corecast::http::{parse_head, response, HeadParse};
use corecast::{event, Config, Error, EventPayload, MessageType, Server, Websocket};
use serde_json::{json, Value};

/// The topics that are rooms: `room.<name>`.
const ROOMS: &str = "room.*";
/// Lines a room keeps for a page that comes back, and for how long.
const HISTORY_SIZE: usize = 100;
const HISTORY_TTL: Duration = Duration::from_secs(600);
/// How long a token lasts. The page's client refreshes it over the open connection before
/// then, so a short life costs nothing.
const TOKEN_LIFE: Duration = Duration::from_secs(300);
/// The longest line, in characters.
const MAX_LINE: usize = 2000;
/// The longest name, in characters.
const MAX_NAME: usize = 24;
/// Requests one connection may have waiting while an earlier one (a subscribe that reads the
/// room's history) is worked on; past it a request is refused.
const MAX_WAITING: usize = 64;
/// The WebSocket route.
const ROUTE: &str = "/chat";
/// The longest reference a page may give a line (it knows its own lines by it when they come
/// back).
const MAX_REF: usize = 64;
/// The largest HTTP request head read.
const MAX_HEAD: usize = 8 << 10;

/// A running chat: its two addresses and the corecast server.
pub struct Chat {
    /// Where the page is served (`http://`).
    pub page: SocketAddr,
    /// Where corecast accepts WebSocket connections (`ws://…/chat`).
    pub ws: SocketAddr,
    pub server: Server,
}

/// Starts the chat: the page's HTTP server on `page`, corecast on `ws` (port 0 picks one).
pub fn start(page: &str, ws: &str) -> Result<Chat, Box<dyn std::error::Error + Send + Sync>> {
    // Two random UUIDs: 244 random bits from the OS. A fresh secret at each start also means
    // that every token of the last run is refused: the page fetches a new one as it reconnects.
    let secret: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| *u.as_bytes())
        .collect();
    let config = Config {
        // Chat-sized limits: a page sends a few requests a second at most.
        client_message_rate: 30,
        client_byte_rate: 64 << 10,
        max_message_size: 16 << 10,
        // Room for a whole room's history in one catch-up, and the live lines after it.
        send_queue_size: HISTORY_SIZE + 100,
        ..Config::default()
    };
    // Bound first: a page port in use stops the start before any shard runs.
    let listener = TcpListener::bind(page)?;
    let rooms: Rooms = Arc::default();
    let route_rooms = Arc::clone(&rooms);
    let server = Server::builder()
        .bind(ws)
        .history(ROOMS, HISTORY_SIZE, HISTORY_TTL)
        .authenticate(Verifier::hmac(&secret)?)
        .route_with_config(ROUTE, config, move |kws| open(kws, &route_rooms))
        .start()?;
    let _ = rooms.set(server.clone());
    server.on(event::TOKEN_EXPIRING, tell_expiring);
    server.on(event::ERROR, answer_rate_limited);

    let site = Arc::new(Site {
        secret,
        ws_port: server.local_addr().port(),
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    });
    let page = listener.local_addr()?;
    std::thread::Builder::new()
        .name("live-chat-http".into())
        .spawn(move || serve(listener, site))?;
    Ok(Chat {
        page,
        ws: server.local_addr(),
        server,
    })
}

// ---- the WebSocket side: one ordered lane of requests per connection ------------------------

/// What a page's client asks for.
enum Request {
    /// A plain subscription: the room's lines come as bare payloads.
    Subscribe(String),
    /// A subscription with positions; with `since`, what was missed after it comes first.
    SubscribeFrom {
        topic: String,
        since: Option<Position>,
    },
    Unsubscribe(String),
    Publish {
        topic: String,
        data: Value,
    },
    Refresh(String),
    /// Not a request this chat reads: why, as the error to answer.
    Unreadable(String),
}

/// A request and the `"id"` its client gave it (any JSON), which every answer to it carries
/// back, so the client matches answers to requests whatever order they come in.
struct Asked {
    request: Request,
    id: Option<Value>,
}

impl Asked {
    fn read(data: &[u8], ty: MessageType) -> Asked {
        let unreadable = |e: &str| Asked {
            request: Request::Unreadable(e.into()),
            id: None,
        };
        if ty != MessageType::Text {
            return unreadable("expected a JSON text frame");
        }
        let Ok(Value::Object(mut frame)) = serde_json::from_slice(data) else {
            return unreadable("expected a JSON object");
        };
        let id = frame.remove("id");
        let request = Request::read(frame);
        Asked { request, id }
    }

    /// Sends `answer`, with the request's id when it had one.
    fn answer(&self, kws: &Websocket, mut answer: Value) {
        if let Some(id) = &self.id {
            answer["id"] = id.clone();
        }
        kws.emit(answer.to_string(), MessageType::Text);
    }

    /// The answer that refuses this request with `error`, in its request's form.
    fn refusal(&self, error: &str) -> Value {
        match &self.request {
            Request::Subscribe(topic) | Request::SubscribeFrom { topic, .. } => {
                json!({ "subscribe": topic, "error": error })
            }
            Request::Unsubscribe(topic) => json!({ "unsubscribe": topic, "error": error }),
            Request::Publish { topic, .. } => json!({ "publish": topic, "error": error }),
            Request::Refresh(_) => json!({ "refresh": null, "error": error }),
            Request::Unreadable(_) => json!({ "error": error }),
        }
    }
}

impl Request {
    fn read(mut frame: serde_json::Map<String, Value>) -> Request {
        let mut take = |key: &str| match frame.remove(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        if let Some(topic) = take("subscribe") {
            let since = frame.remove("since");
            let positions = frame.remove("positions") == Some(Value::Bool(true));
            return match (since, positions) {
                (None, false) => Request::Subscribe(topic),
                (None | Some(Value::Null), _) => Request::SubscribeFrom { topic, since: None },
                (Some(v), _) => match position(&v) {
                    Some(p) => Request::SubscribeFrom {
                        topic,
                        since: Some(p),
                    },
                    None => Request::Unreadable(
                        "\"since\" must be {\"offset\":<number>,\"epoch\":\"<8 hex digits>\"}"
                            .into(),
                    ),
                },
            };
        }
        if let Some(topic) = take("unsubscribe") {
            return Request::Unsubscribe(topic);
        }
        if let Some(topic) = take("publish") {
            let data = frame.remove("data").unwrap_or(Value::Null);
            return Request::Publish { topic, data };
        }
        if let Some(jwt) = take("refresh") {
            return Request::Refresh(jwt);
        }
        Request::Unreadable(
            "expected \"subscribe\", \"unsubscribe\", \"publish\" or \"refresh\"".into(),
        )
    }
}

/// A position as answers and envelopes give it: `{"offset":7,"epoch":"9f2c01ab"}`; a room
/// nothing was said in yet is `{"offset":0,"epoch":null}`.
fn position(v: &Value) -> Option<Position> {
    let offset = v.get("offset")?.as_u64()?;
    let epoch = match v.get("epoch")? {
        Value::Null if offset == 0 => Epoch(0),
        e => Epoch::parse(e.as_str()?)?,
    };
    Some(Position { offset, epoch })
}

/// The server, through which a line goes to every subscriber of its room, its sender's
/// connection included (`Websocket::publish` leaves the sender out): the sender's page then
/// sees its line come back at its place in the room, and its client's positions have no hole
/// where its own lines are. Set as soon as `start` has the server.
type Rooms = Arc<OnceLock<Server>>;

/// The route callback: each connection gets a lane, a queue its messages go into and one task
/// that acts on them in order. A subscribe from history waits on the room's home shard; the
/// lane keeps the requests after it from overtaking it, so answers come in request order (a
/// client without ids relies on it).
fn open(kws: &Websocket, rooms: &Rooms) {
    // `?envelope=1`, as the JavaScript client asks: every line in its envelope from the start,
    // so none, whatever its text, can pass for an answer.
    if kws.query("envelope") == Some("1") {
        kws.set_positions(true);
    }
    let (lane, waiting) = flume::bounded::<Asked>(MAX_WAITING);
    // Dropped at the disconnect with the connection's listeners: the task's loop then ends.
    kws.on(event::MESSAGE, move |ep| {
        let asked = Asked::read(ep.data(), ep.message_type());
        if let Err(flume::TrySendError::Full(asked)) = lane.try_send(asked) {
            asked.answer(ep.kws(), asked.refusal("too many requests waiting"));
        }
    });
    let kws = kws.clone();
    let rooms = Arc::clone(rooms);
    glommio::spawn_local(async move {
        while let Ok(asked) = waiting.recv_async().await {
            if kws.is_alive() {
                if let Some(answer) = act(&kws, &rooms, &asked).await {
                    asked.answer(&kws, answer);
                }
            }
        }
    })
    .detach();
}

/// Does what `asked` asks; returns its answer, if it has one.
async fn act(kws: &Websocket, rooms: &Rooms, asked: &Asked) -> Option<Value> {
    let answer = match &asked.request {
        Request::Subscribe(topic) | Request::SubscribeFrom { topic, .. }
            if !may(kws, topic, Grant::Subscribe) =>
        {
            asked.refusal("not permitted")
        }
        Request::Subscribe(topic) => match kws.subscribe(topic.as_str()) {
            Ok(_) => json!({ "subscribed": topic }),
            Err(e) => asked.refusal(&e.to_string()),
        },
        Request::SubscribeFrom { topic, since } => {
            match kws.subscribe_from(topic, *since).await {
                Ok(catchup) => {
                    // The answer first, then what was missed, then the live stream.
                    asked.answer(kws, recovery_answer(topic, catchup.recovery()));
                    catchup.deliver();
                    return None;
                }
                Err(e) => asked.refusal(&e.to_string()),
            }
        }
        Request::Unsubscribe(topic) => {
            if kws.unsubscribe(topic) {
                json!({ "unsubscribed": topic })
            } else {
                json!({ "unsubscribed": topic, "error": "not subscribed" })
            }
        }
        Request::Publish { topic, .. } if !may(kws, topic, Grant::Publish) => {
            asked.refusal("not permitted")
        }
        Request::Publish { topic, data } => match (said(data), rooms.get()) {
            (Ok((text, line_ref)), Some(server)) => {
                // The sender's name is the token's, never the page's word for it.
                let from = kws.user().unwrap_or("someone");
                let mut line = json!({ "from": from, "text": text });
                if let Some(line_ref) = line_ref {
                    line["ref"] = json!(line_ref);
                }
                server.publish(topic, line.to_string(), MessageType::Text);
                // Answered only when asked with an id: a client without ids learns it from
                // the answer to its next request.
                asked.id.as_ref()?;
                json!({ "published": topic })
            }
            (Err(e), _) => asked.refusal(e),
            (_, None) => asked.refusal("starting up"),
        },
        Request::Refresh(jwt) => match kws.refresh_token(jwt) {
            Ok(()) => json!({ "refreshed": true }),
            Err(e) => asked.refusal(&e.to_string()),
        },
        Request::Unreadable(e) => json!({ "error": e }),
    };
    Some(answer)
}

/// What a token's grants are asked for.
enum Grant {
    Subscribe,
    Publish,
}

/// Whether the connection's token grants `topic` (every token this chat signs grants the
/// rooms, and nothing else).
fn may(kws: &Websocket, topic: &str, grant: Grant) -> bool {
    kws.identity().is_some_and(|id| match grant {
        Grant::Subscribe => id.may_subscribe(topic),
        Grant::Publish => id.may_publish(topic),
    })
}

/// What a publish says: its text (1 to `MAX_LINE` characters, trimmed) and the reference its
/// page gave it, from `"data":"<text>"` or `"data":{"text":"<text>","ref":"<ref>"}`. A
/// reference that is not 1 to `MAX_REF` letters, digits, `-` or `_` is dropped.
fn said(data: &Value) -> Result<(&str, Option<&str>), &'static str> {
    let (text, line_ref) = match data {
        Value::String(text) => (Some(text.as_str()), None),
        Value::Object(fields) => (
            fields.get("text").and_then(Value::as_str),
            fields.get("ref").and_then(Value::as_str),
        ),
        _ => (None, None),
    };
    let line_ref = line_ref.filter(|r| {
        (1..=MAX_REF).contains(&r.len())
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    match text.map(str::trim) {
        Some(text) if !text.is_empty() && text.chars().count() <= MAX_LINE => Ok((text, line_ref)),
        _ => Err("a line is 1 to 2000 characters of text"),
    }
}

/// `{"subscribed":"t","offset":N,"epoch":"e"}`, with `"recovered":true,"missed":M` or
/// `"recovered":false,"reason":".."` after a position: where the room stands (0 and `null`
/// before its first line).
fn recovery_answer(topic: &str, recovery: Recovery) -> Value {
    let mut answer = json!({ "subscribed": topic });
    let position = match recovery {
        Recovery::Fresh { position } => position,
        Recovery::Recovered { missed, position } => {
            answer["recovered"] = json!(true);
            answer["missed"] = json!(missed);
            position
        }
        Recovery::NotRecovered { reason, position } => {
            answer["recovered"] = json!(false);
            answer["reason"] = json!(reason.reason());
            position
        }
    };
    answer["offset"] = json!(position.map_or(0, |p| p.offset));
    answer["epoch"] = position.map_or(Value::Null, |p| json!(p.epoch.to_string()));
    answer
}

/// The token reached its `exp`: `{"expiring":<seconds left>}`, and the client refreshes.
fn tell_expiring(ep: &EventPayload) {
    let left: u64 = std::str::from_utf8(ep.data())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let notice = json!({ "expiring": left }).to_string();
    ep.kws().emit(notice, MessageType::Text);
}

/// A request past `client_message_rate` was not acted on: say so in its request's form (the
/// client tries a refused subscribe again). Not to a connection already closing for it.
fn answer_rate_limited(ep: &EventPayload) {
    if matches!(ep.error(), Some(Error::RateLimited)) && ep.kws().is_alive() {
        let asked = Asked::read(ep.data(), ep.message_type());
        asked.answer(ep.kws(), asked.refusal("rate limit"));
    }
}

// ---- the HTTP side: the page, the client's modules, tokens -----------------------------------

/// What the HTTP server needs.
struct Site {
    secret: Vec<u8>,
    /// Written into the page, which connects to the host it was loaded from on this port.
    ws_port: u16,
    /// The repository: the page and `clients/js/src/` are read from it at each request, so an
    /// edit shows at the next reload.
    root: PathBuf,
}

/// Serves HTTP on `listener`, a thread per connection, for as long as the process runs.
fn serve(listener: TcpListener, site: Arc<Site>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("live chat: accept: {e}");
                std::thread::sleep(Duration::from_millis(100)); // out of descriptors: breathe
                continue;
            }
        };
        let site = Arc::clone(&site);
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &site) {
                eprintln!("live chat: {e}");
            }
        });
    }
}

/// Answers one request (then closes the connection).
fn answer(mut stream: TcpStream, site: &Site) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0; 1024];
    let head = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(()); // closed before a whole request
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_head(&buf, MAX_HEAD) {
            Ok(HeadParse::Complete { head, .. }) => break head,
            Ok(HeadParse::Partial) => continue,
            Err(e) => {
                let body = format!("bad request: {e:?}");
                return stream.write_all(&response(400, TEXT, body.as_bytes(), &[]));
            }
        }
    };
    let (status, content_type, body) = if head.method() != "GET" {
        (405, TEXT, b"GET only".to_vec())
    } else {
        route(site, head.path(), head.query("name"))
    };
    let headers = [
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ];
    stream.write_all(&response(status, content_type, &body, &headers))
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `GET path`: status, content type, body.
fn route(site: &Site, path: &str, name: Option<&str>) -> (u16, &'static str, Vec<u8>) {
    let not_found = (404, TEXT, b"not found".to_vec());
    match path {
        "/" | "/index.html" => {
            match std::fs::read_to_string(site.root.join("examples/live_chat/index.html")) {
                Ok(page) => {
                    let page = page.replace("{{WS_PORT}}", &site.ws_port.to_string());
                    (200, "text/html; charset=utf-8", page.into_bytes())
                }
                Err(e) => (500, TEXT, format!("the page: {e}").into_bytes()),
            }
        }
        "/token" => match name.map(str::trim) {
            Some(name) if valid_name(name) => match mint(site, name) {
                Ok(token) => {
                    let body = json!({ "token": token, "expiresIn": TOKEN_LIFE.as_secs() });
                    (200, "application/json", body.to_string().into_bytes())
                }
                Err(e) => (500, TEXT, format!("signing: {e}").into_bytes()),
            },
            _ => (
                400,
                TEXT,
                format!("a name is 1 to {MAX_NAME} letters, digits, '-' or '_'").into_bytes(),
            ),
        },
        _ => {
            // The client's modules: one plain file name under clients/js/src, nothing else.
            let Some(file) = path.strip_prefix("/client/") else {
                return not_found;
            };
            let plain = file.strip_suffix(".js").is_some_and(|stem| {
                !stem.is_empty()
                    && stem
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-')
            });
            if !plain {
                return not_found;
            }
            match std::fs::read(site.root.join("clients/js/src").join(file)) {
                Ok(js) => (200, "text/javascript; charset=utf-8", js),
                Err(_) => not_found,
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    let count = name.chars().count();
    (1..=MAX_NAME).contains(&count)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

/// An HS256 token for `name`: the rooms to read and write, for `TOKEN_LIFE`.
fn mint(site: &Site, name: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = json!({
        "sub": name,
        "exp": now + TOKEN_LIFE.as_secs(),
        "subscribe": [ROOMS],
        "publish": [ROOMS],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&site.secret),
    )
}

/// `live_chat [PAGE] [WS]`: the page on PAGE (default 127.0.0.1:8080), WebSocket on WS
/// (default 127.0.0.1:8081).
fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let page = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let ws = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    corecast::limits::raise_open_files();
    let chat = start(&page, &ws)?;
    // One line a test (or a person) reads the addresses from.
    println!(
        "live chat: open http://{}/ in two tabs (WebSocket on ws://{}{ROUTE}); a demo: anyone may take any name",
        chat.page, chat.ws
    );
    chat.server.join()?;
    Ok(())
}
