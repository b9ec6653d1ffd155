//! The healthy client: one well-behaved user who sends a small message every period and times
//! its way back (the echo, the relay to a second connection, or a topic's subscribers), phase
//! by phase, while an attack or a soak runs beside it. Every message must arrive exactly once
//! and in order. Not an attacker and not a load generator: it measures what an ordinary user
//! sees.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corecast::ws::frame::Inbound;
use hdrhistogram::Histogram;

use super::client::{self, Conn};
use super::server::pin_current_thread;
use crate::payload::now_ns;

/// How often the healthy client sends during an attack.
pub const PERIOD: Duration = Duration::from_millis(10);

/// Where the healthy client's messages go and come back from.
#[derive(Debug, Clone)]
pub enum Route {
    /// `--mode echo`: back on the sending connection.
    Echo,
    /// `--mode relay`: to a second connection (the sending one only drains).
    Relay,
    /// `--mode pubsub`: published to `topic`, received by `receivers` subscribers, each
    /// message padded to `size` bytes.
    Publish {
        topic: String,
        receivers: usize,
        size: usize,
    },
}

impl Route {
    fn receivers(&self) -> u64 {
        match self {
            Route::Echo | Route::Relay => 1,
            Route::Publish { receivers, .. } => *receivers as u64,
        }
    }

    fn wrap(&self, text: &str) -> Vec<u8> {
        let body = match self {
            Route::Publish { topic, size, .. } => {
                let pad = size.saturating_sub(text.len() + 1);
                let data = format!("{text} {}", "x".repeat(pad));
                serde_json::json!({ "publish": topic, "data": data }).to_string()
            }
            Route::Echo | Route::Relay => text.to_string(),
        };
        client::frame(0x1, body.as_bytes())
    }
}

/// What the probe measured in one phase.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    /// Round trip (or relay delay) in microseconds.
    pub latency_us: Histogram<u64>,
    pub sent: u64,
    /// Deliveries, over all receivers.
    pub received: u64,
    /// Receivers of each message.
    receivers: u64,
}

impl PhaseStats {
    fn new() -> PhaseStats {
        PhaseStats {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            sent: 0,
            received: 0,
            receivers: 1,
        }
    }

    /// Deliveries still missing: each message sent is due once at every receiver.
    pub fn lost(&self) -> u64 {
        (self.sent * self.receivers).saturating_sub(self.received)
    }
}

struct Shared {
    cpus: Vec<usize>,
    phase: AtomicUsize,
    stop: AtomicBool,
    stats: Mutex<Vec<PhaseStats>>,
    /// Set when a healthy connection broke: the server dropped a user it should have kept.
    broken: Mutex<Option<String>>,
    /// Deliveries out of order or twice, over all receivers.
    disorder: AtomicU64,
    route: Route,
    period: Duration,
}

/// A running healthy client.
pub struct Probe {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

impl Probe {
    /// Connects and starts sending, one message every `period`, in phase 0. Its threads run
    /// on `cpus`. `token`: for a server that authenticates, the token its connections carry
    /// (in the query), which must grant the route's topic.
    pub fn start(
        addr: SocketAddr,
        route: Route,
        token: Option<&str>,
        period: Duration,
        phases: usize,
        cpus: &[usize],
    ) -> anyhow::Result<Probe> {
        let bound = Duration::from_secs(5);
        let path = |path: &str| client::with_token(path, token);
        let sending = client::open(addr, &path("/ws"), bound)?;
        let mut receiving = Vec::new();
        match &route {
            Route::Echo => {}
            Route::Relay => receiving.push(client::open(addr, &path("/ws"), bound)?),
            Route::Publish {
                topic, receivers, ..
            } => {
                for _ in 0..*receivers {
                    let mut conn =
                        client::open(addr, &path(&format!("/ws?topics={topic}")), bound)?;
                    // The subscription is answered before any publish can reach it.
                    match conn.next_message()? {
                        Some(Inbound::Message { data, .. })
                            if data.starts_with(b"{\"subscribed\"") => {}
                        other => anyhow::bail!("subscribing to {topic} answered {other:?}"),
                    }
                    receiving.push(conn);
                }
            }
        }
        let receivers = route.receivers();
        let stats = (0..phases)
            .map(|_| PhaseStats {
                receivers,
                ..PhaseStats::new()
            })
            .collect();
        let shared = Arc::new(Shared {
            cpus: cpus.to_vec(),
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            stats: Mutex::new(stats),
            broken: Mutex::new(None),
            disorder: AtomicU64::new(0),
            route,
            period,
        });
        let writer = sending.stream.try_clone()?;
        let mut readers = Vec::new();
        let echo = receiving.is_empty();
        readers.push(spawn_reader(sending, Arc::clone(&shared), echo));
        for conn in receiving {
            readers.push(spawn_reader(conn, Arc::clone(&shared), true));
        }
        let sender = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || send_loop(writer, &shared))
        };
        Ok(Probe {
            shared,
            sender: Some(sender),
            readers,
        })
    }

    /// Messages sent from now on count in `phase`.
    pub fn set_phase(&self, phase: usize) {
        self.shared.phase.store(phase, Ordering::Release);
    }

    /// The figures so far (messages of a phase may still be on their way).
    pub fn snapshot(&self) -> Vec<PhaseStats> {
        lock(&self.shared.stats).clone()
    }

    /// Deliveries out of order or twice so far.
    pub fn disorder(&self) -> u64 {
        self.shared.disorder.load(Ordering::Relaxed)
    }

    /// Why a healthy connection broke, if one did.
    pub fn broken(&self) -> Option<String> {
        lock(&self.shared.broken).clone()
    }

    /// Stops sending, waits (at most `grace`) for the answers still on their way, and returns
    /// each phase's figures, why the connection broke (if it did), and the deliveries out of
    /// order or twice.
    pub fn finish(mut self, grace: Duration) -> (Vec<PhaseStats>, Option<String>, u64) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.all_answered() {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Readers end on their next read bound now that `stop` is set and nothing is due.
        self.shared.phase.store(usize::MAX, Ordering::Release);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (self.snapshot(), self.broken(), self.disorder())
    }

    fn all_answered(&self) -> bool {
        lock(&self.shared.stats).iter().all(|p| p.lost() == 0)
            || lock(&self.shared.broken).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn send_loop(mut writer: std::net::TcpStream, shared: &Shared) {
    use std::io::Write;
    let _ = pin_current_thread(&shared.cpus);
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let phase = shared.phase.load(Ordering::Acquire);
        let text = format!("healthy {phase} {seq} {}", now_ns());
        lock(&shared.stats)[phase].sent += 1;
        if lock(&shared.broken).is_none() {
            if let Err(e) = writer.write_all(&shared.route.wrap(&text)) {
                lock(&shared.broken).get_or_insert(format!("send failed: {e}"));
            }
        }
        seq += 1;
        next += shared.period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn spawn_reader(mut conn: Conn, shared: Arc<Shared>, records: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = pin_current_thread(&shared.cpus);
        let _ = conn
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)));
        let mut last_seq = None;
        loop {
            match conn.next_item() {
                Ok(Some(Inbound::Message { data, .. })) if records => {
                    record(&shared, &data, &mut last_seq)
                }
                Ok(Some(Inbound::Close { code, .. })) => {
                    lock(&shared.broken).get_or_insert(format!("server closed it ({code:?})"));
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    lock(&shared.broken).get_or_insert("server ended the stream".into());
                    return;
                }
                Err(e) if client::is_reset(&e) => {
                    lock(&shared.broken).get_or_insert(format!("reset: {e}"));
                    return;
                }
                Err(_) => {
                    if shared.phase.load(Ordering::Acquire) == usize::MAX {
                        return;
                    }
                }
            }
        }
    })
}

fn record(shared: &Shared, data: &[u8], last_seq: &mut Option<u64>) {
    let Some(rest) = data.strip_prefix(b"healthy ") else {
        return; // another client's traffic (relay mode)
    };
    let fields: Vec<u64> = std::str::from_utf8(rest)
        .unwrap_or("")
        .split(' ')
        .filter_map(|f| f.parse().ok())
        .collect();
    let [phase, seq, sent_ns] = fields[..] else {
        return;
    };
    if last_seq.is_some_and(|last| seq != last + 1) {
        shared.disorder.fetch_add(1, Ordering::Relaxed);
    }
    *last_seq = Some(seq);
    let micros = now_ns().saturating_sub(sent_ns) / 1_000;
    let mut stats = lock(&shared.stats);
    if let Some(p) = stats.get_mut(phase as usize) {
        p.latency_us.saturating_record(micros.max(1));
        p.received += 1;
    }
}
