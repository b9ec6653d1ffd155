//! `corecast-sink`: a backend for measuring what forwarding and hooks cost. It answers every
//! POST with 200 and the body given by `--answer` (default `{}`: a webhook delivery taken, a
//! hook allowed), counts the requests and the webhook events they carried, and tells the counts
//! on `GET /count` as `{"requests":N,"events":M}`. One thread per connection: the server keeps
//! few connections to its backend (a webhook delivery in flight per shard, and hook calls).
//! Not an example backend (`examples/chat_backend.rs` is one): it decides nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "corecast-sink",
    about = "A backend that takes everything and counts it"
)]
struct Args {
    /// Address to listen on (port 0 picks one; the address is printed on stdout)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The JSON body of every answer
    #[arg(long, default_value = "{}")]
    answer: String,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    events: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let counts = Arc::new(Counts::default());
    let answer: Arc<str> = args.answer.into();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (counts, answer) = (Arc::clone(&counts), Arc::clone(&answer));
        std::thread::spawn(move || serve(stream, &counts, &answer));
    }
    Ok(())
}

/// Serves one keep-alive connection until it closes or sends something unreadable.
fn serve(stream: TcpStream, counts: &Counts, answer: &str) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let is_count = line.starts_with("GET /count");
        let mut length = 0usize;
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
                if name.eq_ignore_ascii_case("content-length") {
                    match value.trim().parse() {
                        Ok(n) => length = n,
                        Err(_) => return,
                    }
                }
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = if is_count {
            format!(
                r#"{{"requests":{},"events":{}}}"#,
                counts.requests.load(Ordering::Relaxed),
                counts.events.load(Ordering::Relaxed)
            )
        } else {
            counts.requests.fetch_add(1, Ordering::Relaxed);
            counts
                .events
                .fetch_add(event_count(&body), Ordering::Relaxed);
            answer.to_string()
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The events in a webhook delivery, counted by their `"id":` keys (each event has one, and
/// a client's text cannot contain the quoted key unescaped); 0 for a hook call.
fn event_count(body: &[u8]) -> u64 {
    if !body.starts_with(b"{\"events\":") {
        return 0;
    }
    body.windows(5).filter(|w| w == b"\"id\":").count() as u64
}
