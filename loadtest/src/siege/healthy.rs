//! The healthy client: one well-behaved user who sends a small message every 10 ms and times
//! its way back (the echo, or the relay to a second connection), phase by phase, while an
//! attack runs beside it. Not an attacker and not a load generator: it measures what an
//! ordinary user sees.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corecast::ws::frame::Inbound;
use hdrhistogram::Histogram;

use super::client::{self, Conn};
use super::server::pin_current_thread;
use crate::payload::now_ns;

/// How often the healthy client sends.
pub const PERIOD: Duration = Duration::from_millis(10);

/// What the probe measured in one phase.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    /// Round trip (or relay delay) in microseconds.
    pub latency_us: Histogram<u64>,
    pub sent: u64,
    pub received: u64,
}

impl PhaseStats {
    fn new() -> PhaseStats {
        PhaseStats {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            sent: 0,
            received: 0,
        }
    }

    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

struct Shared {
    cpus: Vec<usize>,
    phase: AtomicUsize,
    stop: AtomicBool,
    stats: Mutex<Vec<PhaseStats>>,
    /// Set when a healthy connection broke: the server dropped a user it should have kept.
    broken: Mutex<Option<String>>,
}

/// A running healthy client.
pub struct Probe {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

impl Probe {
    /// Connects and starts sending in phase 0. `relay`: the server relays instead of echoing,
    /// so a second connection receives (and the sending one only drains).
    /// Its threads run on `cpus`.
    pub fn start(
        addr: SocketAddr,
        relay: bool,
        phases: usize,
        cpus: &[usize],
    ) -> anyhow::Result<Probe> {
        let bound = Duration::from_secs(5);
        let sending = client::open(addr, "/ws", bound)?;
        let receiving = if relay {
            Some(client::open(addr, "/ws", bound)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            cpus: cpus.to_vec(),
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            stats: Mutex::new((0..phases).map(|_| PhaseStats::new()).collect()),
            broken: Mutex::new(None),
        });
        let writer = sending.stream.try_clone()?;
        let mut readers = Vec::new();
        match receiving {
            Some(receiving) => {
                readers.push(spawn_reader(sending, Arc::clone(&shared), false));
                readers.push(spawn_reader(receiving, Arc::clone(&shared), true));
            }
            None => readers.push(spawn_reader(sending, Arc::clone(&shared), true)),
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

    /// Stops sending, waits (at most `grace`) for the answers still on their way, and returns
    /// each phase's figures and why the connection broke, if it did.
    pub fn finish(mut self, grace: Duration) -> (Vec<PhaseStats>, Option<String>) {
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
        let stats = lock(&self.shared.stats).clone();
        let broken = lock(&self.shared.broken).clone();
        (stats, broken)
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
            if let Err(e) = writer.write_all(&client::frame(0x1, text.as_bytes())) {
                lock(&shared.broken).get_or_insert(format!("send failed: {e}"));
            }
        }
        seq += 1;
        next += PERIOD;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn spawn_reader(mut conn: Conn, shared: Arc<Shared>, records: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = pin_current_thread(&shared.cpus);
        let _ = conn
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)));
        loop {
            match conn.next_item() {
                Ok(Some(Inbound::Message { data, .. })) if records => record(&shared, &data),
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

fn record(shared: &Shared, data: &[u8]) {
    let Some(rest) = data.strip_prefix(b"healthy ") else {
        return; // another client's traffic (relay mode)
    };
    let fields: Vec<u64> = std::str::from_utf8(rest)
        .unwrap_or("")
        .split(' ')
        .filter_map(|f| f.parse().ok())
        .collect();
    let [phase, _seq, sent_ns] = fields[..] else {
        return;
    };
    let micros = now_ns().saturating_sub(sent_ns) / 1_000;
    let mut stats = lock(&shared.stats);
    if let Some(p) = stats.get_mut(phase as usize) {
        p.latency_us.saturating_record(micros.max(1));
        p.received += 1;
    }
}
