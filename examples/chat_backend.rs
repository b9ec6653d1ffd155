//! A small chat backend for the `corecast` binary: a plain threaded HTTP server (std and
//! serde_json only) that corecast calls, and that answers through corecast's HTTP API.
//! docs/backend.md has the JSON of every call.
//!
//! Run it, then the binary beside it (two terminals; `CORECAST_API_TOKEN` and
//! `CORECAST_BACKEND_SECRET_FILE`, when set, are read by both):
//!
//! ```sh
//! cargo run --example chat_backend -- 127.0.0.1:3000 127.0.0.1:8081
//! cargo run --release -- --mode pubsub --api-listen 127.0.0.1:8081 \
//!     --webhook http://127.0.0.1:3000/events --webhook-events connect,disconnect,message \
//!     --hook-subscribe http://127.0.0.1:3000/subscribe --hook-publish http://127.0.0.1:3000/publish
//! ```
//!
//! Then talk to it as a client would (`websocat ws://127.0.0.1:8080/ws/alice`):
//!
//! | alice sends | what happens |
//! |---|---|
//! | `{"subscribe":"room.lobby"}` | `{"subscribed":"room.lobby"}` |
//! | `{"subscribe":"secret"}` | `{"subscribe":"secret","error":"rooms only: room.<name>"}` |
//! | `{"publish":"chat.lobby","data":"hello"}` | everyone in `room.lobby` gets `alice: hello` |
//! | `{"publish":"chat.lobby","data":"/who"}` | alice alone gets `online: alice, bob` |
//!
//! The rules:
//!
//! * **Who a client is**: the call's `user` (a verified token's `sub`, or the user a connect
//!   hook named), else its connection id, the `<id>` of `/ws/<id>`. Without tokens anyone may
//!   connect as `/ws/admin`: this is a demo.
//! * **Rooms** are the topics `room.<name>`. The subscribe hook lets clients join those only,
//!   and `room.admins` only the user `admin`.
//! * **Saying something**: a client publishes `{"publish":"chat.<name>","data":"<line>"}`.
//!   Nobody may subscribe to `chat.<name>`, so corecast delivers it to no one; the backend gets
//!   the frame as a `message` event's `text` and publishes `<user>: <line>` to `room.<name>`
//!   (`POST /api/publish/room.<name>`), or answers `/who` to the asker alone
//!   (`POST /api/emit/<uuid>`). The publish hook refuses client publishes anywhere else, so
//!   rooms carry only what the backend wrote.
//! * **Presence**: a client's connect puts `<user> joined` in `room.lobby`, its disconnect
//!   `<user> left`.
//! * **Duplicates**: events come at least once; an event whose `id` was handled is skipped.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// Largest request body taken: a webhook batch of big messages fits.
const MAX_BODY: usize = 64 << 20;

/// The chat: where corecast's API is, and who is online.
pub struct Chat {
    /// corecast's HTTP API (`--api-listen`).
    api: SocketAddr,
    /// Sent to the API as `Authorization: Bearer <token>` (`--api-token`).
    api_token: Option<String>,
    /// What corecast's calls must carry as `Authorization: Bearer <secret>`
    /// (`--backend-secret-file`); `None` takes every call.
    secret: Option<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The connections open: uuid to user.
    online: HashMap<String, String>,
    /// The ids of the events handled. A real backend keeps them beside what it stored.
    seen: HashSet<String>,
}

impl Chat {
    pub fn new(api: SocketAddr, api_token: Option<String>, secret: Option<String>) -> Chat {
        Chat {
            api,
            api_token,
            secret,
            state: Mutex::default(),
        }
    }

    /// Answers one HTTP request from corecast (one request per connection, for brevity).
    fn answer(&self, stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let (mut length, mut authorization) = (0, String::new());
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let Some((name, value)) = header.trim_end().split_once(':') else {
                break; // the blank line after the headers (or the end of the stream)
            };
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = value.trim().to_string(),
                _ => {}
            }
        }
        // The body is read before any answer, a refusal's too: closing with bytes unread
        // makes the kernel reset the connection, and the caller may lose the answer with it.
        let mut body = Vec::new();
        if length <= MAX_BODY {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        let (status, answer) = if !self.authorized(&authorization) {
            (401, json!({ "error": "unauthorized" }))
        } else if length > MAX_BODY {
            (413, json!({ "error": "too large" }))
        } else {
            match serde_json::from_slice(&body) {
                Ok(request) => self.call(&path, &request),
                Err(_) => (400, json!({ "error": "expected JSON" })),
            }
        };
        let answer = answer.to_string();
        write!(
            &stream,
            "HTTP/1.1 {status} -\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{answer}",
            answer.len()
        )
    }

    /// Whether a call carries the secret: only corecast knows it.
    fn authorized(&self, authorization: &str) -> bool {
        let Some(secret) = &self.secret else {
            return true;
        };
        let expected = format!("Bearer {secret}");
        // In constant time, so the answer's timing gives nothing of the secret away.
        authorization.len() == expected.len()
            && authorization
                .bytes()
                .zip(expected.bytes())
                .fold(0, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// One call, by its path: the webhook or a hook. A hook's answer is 200 with its verdict.
    fn call(&self, path: &str, request: &Value) -> (u16, Value) {
        match path {
            "/events" => {
                let events = request["events"].as_array().into_iter().flatten();
                for (api_path, text) in events.filter_map(|e| self.on_event(e)) {
                    self.post(&api_path, &text);
                }
                (200, json!({}))
            }
            "/subscribe" => {
                let topic = request["topic"].as_str().unwrap_or_default();
                let verdict = match topic.strip_prefix("room.") {
                    Some(room) => may_join(&who(request), room),
                    None => Err("rooms only: room.<name>"),
                };
                (
                    200,
                    verdict.map_or_else(|e| json!({ "error": e }), |()| json!({})),
                )
            }
            "/publish" => match request["topic"].as_str() {
                Some(topic) if topic.starts_with("chat.") => (200, json!({})),
                _ => (200, json!({ "error": "say it on chat.<room>" })),
            },
            _ => (404, json!({ "error": "no such hook" })),
        }
    }

    /// What one event makes the backend do: a call to corecast's API (path and text), or none.
    fn on_event(&self, event: &Value) -> Option<(String, String)> {
        let uuid = event["uuid"].as_str()?;
        let user = who(event);
        let mut state = self.state.lock().unwrap();
        if !state.seen.insert(event["id"].as_str()?.to_string()) {
            return None; // delivered again after a failed try: handled already
        }
        match event["type"].as_str()? {
            "connect" => {
                state.online.insert(uuid.to_string(), user.clone());
                Some(publish("room.lobby", format!("{user} joined")))
            }
            "disconnect" => {
                let user = state.online.remove(uuid)?;
                Some(publish("room.lobby", format!("{user} left")))
            }
            "message" => {
                // The client's frame: {"publish":"chat.<room>","data":"<line>"}.
                let frame: Value = serde_json::from_str(event["text"].as_str()?).ok()?;
                let room = frame["publish"].as_str()?.strip_prefix("chat.")?;
                let line = frame["data"].as_str()?;
                if line == "/who" {
                    let mut users: Vec<&str> = state.online.values().map(String::as_str).collect();
                    users.sort_unstable();
                    users.dedup();
                    let answer = format!("online: {}", users.join(", "));
                    return Some((format!("/api/emit/{uuid}"), answer));
                }
                may_join(&user, room).ok()?;
                Some(publish(&format!("room.{room}"), format!("{user}: {line}")))
            }
            _ => None,
        }
    }

    /// POSTs `text` to corecast's API; a failure is logged and the chat goes on.
    fn post(&self, path: &str, text: &str) {
        if let Err(e) = self.try_post(path, text) {
            eprintln!("chat backend: POST {path}: {e}");
        }
    }

    fn try_post(&self, path: &str, text: &str) -> io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&self.api, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let token = self.api_token.as_ref();
        let authorization =
            token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: corecast\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\n{authorization}Connection: close\r\n\r\n{text}",
            text.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        match answer.split(' ').nth(1) {
            Some("200") => Ok(()),
            _ => Err(io::Error::other(
                answer.lines().next().unwrap_or("no answer").to_string(),
            )),
        }
    }
}

/// Who made a call or an event: its `user`, else its connection's uuid.
fn who(call: &Value) -> String {
    let user = call["user"].as_str().or(call["uuid"].as_str());
    user.unwrap_or("someone").to_string()
}

/// Whether `user` may join or write to the room `room`.
fn may_join(user: &str, room: &str) -> Result<(), &'static str> {
    match room {
        "admins" if user != "admin" => Err("admins only"),
        _ => Ok(()),
    }
}

/// The API call that publishes `text` to `topic`.
fn publish(topic: &str, text: String) -> (String, String) {
    // The topic is one path segment: percent-encoded but for letters, digits and -._~
    let segment: String = topic
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    (format!("/api/publish/{segment}"), text)
}

/// Serves corecast's calls on `listener`, a thread per connection, for as long as it runs.
pub fn serve(listener: TcpListener, chat: Arc<Chat>) {
    for stream in listener.incoming().flatten() {
        let chat = Arc::clone(&chat);
        std::thread::spawn(move || {
            if let Err(e) = chat.answer(stream) {
                eprintln!("chat backend: {e}");
            }
        });
    }
}

/// `chat_backend [LISTEN] [API]`: listens on LISTEN (default 127.0.0.1:3000), reaches
/// corecast's API at API (default 127.0.0.1:8081).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let api = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()?;
    let secret = match std::env::var_os("CORECAST_BACKEND_SECRET_FILE") {
        // The file's text, one trailing newline dropped, as corecast reads it.
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Some(text.strip_suffix('\r').unwrap_or(text).to_string())
        }
        None => None,
    };
    let api_token = std::env::var("CORECAST_API_TOKEN").ok();
    let listener = TcpListener::bind(&listen)?;
    println!("chat backend on http://{listen}; corecast's API at {api}");
    serve(listener, Arc::new(Chat::new(api, api_token, secret)));
    Ok(())
}
