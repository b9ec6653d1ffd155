//! The strongest multi-threaded Rust baseline we could write for the corecast benchmarks:
//! tokio + tokio-tungstenite, small read buffers, and a writer per connection that drains its
//! whole queue into the sink before one flush. Usage: tokio-relay <relay|echo|shootout> <port>.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Peers = Arc<RwLock<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "relay".into());
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(9202);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("tokio peer ({mode}) on 127.0.0.1:{port}");
    let peers: Peers = Arc::default();
    let next = AtomicU64::new(0);
    let mode: Arc<str> = mode.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(stream, id, Arc::clone(&peers), Arc::clone(&mode)));
    }
}

fn send_all(peers: &Peers, msg: &Message) {
    for tx in peers.read().expect("lock").values() {
        let _ = tx.send(msg.clone());
    }
}

async fn serve(stream: TcpStream, id: u64, peers: Peers, mode: Arc<str>) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    peers.write().expect("lock").insert(id, tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Drain everything queued, then flush once.
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        if !(msg.is_text() || msg.is_binary()) {
            continue;
        }
        match &*mode {
            "echo" => {
                let _ = tx.send(msg);
            }
            "relay" => send_all(&peers, &msg),
            "shootout" => {
                let Ok(text) = msg.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
                    continue;
                };
                match v.get("type").and_then(|t| t.as_str()) {
                    Some("echo") => {
                        let _ = tx.send(msg);
                    }
                    Some("broadcast") => {
                        send_all(&peers, &msg);
                        let result = serde_json::json!({"type": "broadcastResult", "payload": v["payload"]});
                        let _ = tx.send(Message::text(result.to_string()));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    peers.write().expect("lock").remove(&id);
    writer.abort();
}
