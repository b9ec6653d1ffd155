//! The strongest multi-threaded Rust baseline we could write for the corecast benchmarks:
//! tokio + tokio-tungstenite, small read buffers, and a writer per connection that drains its
//! whole queue into the sink before one flush. Usage: tokio-relay <relay|echo|shootout|pubsub>
//! <port>. pubsub speaks corecast's protocol (`?topics=` at upgrade, acknowledged; subscribe,
//! unsubscribe and publish frames) with a map of senders per topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Peers = Arc<RwLock<HashMap<u64, mpsc::UnboundedSender<Message>>>>;
/// Topic -> its subscribers' senders.
type Topics = Arc<RwLock<HashMap<String, HashMap<u64, mpsc::UnboundedSender<Message>>>>>;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "relay".into());
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(9202);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("tokio peer ({mode}) on 127.0.0.1:{port}");
    let peers: Peers = Arc::default();
    let topics: Topics = Arc::default();
    let next = AtomicU64::new(0);
    let mode: Arc<str> = mode.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(
            stream,
            id,
            Arc::clone(&peers),
            Arc::clone(&topics),
            Arc::clone(&mode),
        ));
    }
}

fn send_all(peers: &Peers, msg: &Message) {
    for tx in peers.read().expect("lock").values() {
        let _ = tx.send(msg.clone());
    }
}

fn ack(key: &str, topic: &str) -> Message {
    Message::text(serde_json::json!({ key: topic }).to_string())
}

fn subscribe(
    topics: &Topics,
    mine: &mut Vec<String>,
    id: u64,
    tx: &mpsc::UnboundedSender<Message>,
    t: &str,
) {
    topics
        .write()
        .expect("lock")
        .entry(t.to_string())
        .or_default()
        .insert(id, tx.clone());
    if !mine.iter().any(|m| m == t) {
        mine.push(t.to_string());
    }
    let _ = tx.send(ack("subscribed", t));
}

fn unsubscribe(topics: &Topics, mine: &mut Vec<String>, id: u64, t: &str) {
    let mut all = topics.write().expect("lock");
    if let Some(set) = all.get_mut(t) {
        set.remove(&id);
        if set.is_empty() {
            all.remove(t);
        }
    }
    mine.retain(|m| m != t);
}

fn pubsub(
    topics: &Topics,
    mine: &mut Vec<String>,
    id: u64,
    tx: &mpsc::UnboundedSender<Message>,
    msg: &Message,
) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.clone().into_data()) else {
        let _ = tx.send(Message::text(r#"{"error":"expected a JSON object"}"#));
        return;
    };
    if let Some(t) = v.get("subscribe").and_then(|t| t.as_str()) {
        subscribe(topics, mine, id, tx, t);
    } else if let Some(t) = v.get("unsubscribe").and_then(|t| t.as_str()) {
        unsubscribe(topics, mine, id, t);
        let _ = tx.send(ack("unsubscribed", t));
    } else if let Some(t) = v.get("publish").and_then(|t| t.as_str()) {
        let data = match &v["data"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let out = Message::text(data);
        if let Some(set) = topics.read().expect("lock").get(t) {
            for (other, sub) in set {
                if *other != id {
                    let _ = sub.send(out.clone());
                }
            }
        }
    } else {
        let _ = tx.send(Message::text(
            r#"{"error":"expected subscribe, unsubscribe or publish"}"#,
        ));
    }
}

async fn serve(stream: TcpStream, id: u64, peers: Peers, topics: Topics, mode: Arc<str>) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20));
    // The upgrade's `?topics=`, read while the handshake is answered.
    let mut query = String::new();
    let read_query =
        |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
         resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
            query = req.uri().query().unwrap_or("").to_string();
            Ok(resp)
        };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, read_query, Some(config)).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    peers.write().expect("lock").insert(id, tx.clone());
    let mut mine: Vec<String> = Vec::new();
    if &*mode == "pubsub" {
        let list = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("topics="))
            .unwrap_or("")
            .to_string();
        for t in list.split(',').filter(|t| !t.is_empty()) {
            subscribe(&topics, &mut mine, id, &tx, t);
        }
    }
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
            "pubsub" => pubsub(&topics, &mut mine, id, &tx, &msg),
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
                        let result =
                            serde_json::json!({"type": "broadcastResult", "payload": v["payload"]});
                        let _ = tx.send(Message::text(result.to_string()));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    peers.write().expect("lock").remove(&id);
    for t in std::mem::take(&mut mine) {
        unsubscribe(&topics, &mut Vec::new(), id, &t);
    }
    writer.abort();
}
