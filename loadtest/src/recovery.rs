//! The recovery scenario: a reconnect storm. Clients subscribe with positions to topics with
//! history, a publisher publishes at a steady rate, and at a set moment a share of the clients
//! drop their TCP connections at once (no close frame) and reconnect, asking for what they
//! missed from the last position they saw. Every client checks every publication of its topic
//! exactly once and in order across the reconnect; a gap, a duplicate, a reordering or a
//! not-recovered answer fails the run. It speaks corecast's pubsub protocol or Socket.IO's
//! connection-state recovery. Not the other scenarios' engine (`run`): its phases and its
//! report are its own.

mod check;
pub mod report;
pub mod wire;

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use corecast::ws::frame::Inbound;
use futures_lite::future;
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::payload::{self, Stamp};
use crate::procstat;
use crate::report::Latency;
use crate::signal::Signal;
use crate::ws::{Target, WsConn};
use check::StreamCheck;
pub use report::{Phase, RecoveryReport};
use wire::{Position, Pubsub, Sio};

/// The protocol the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// corecast `--mode pubsub`: `"positions":true`, then `"since"` with the last position.
    Corecast,
    /// Socket.IO with `connectionStateRecovery`: rooms as topics, the session id and last
    /// offset in the connect packet of the reconnect.
    SocketIo,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Corecast => "corecast",
            Protocol::SocketIo => "socket.io",
        }
    }
}

/// What a recovery run is asked to do.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// The one server (a position means something only on the node that gave it).
    pub target: Target,
    pub url: String,
    pub protocol: Protocol,
    /// Subscribers; client `i` subscribes to topic `i % topics`.
    pub clients: usize,
    /// Topics `rec.0` ... (corecast: give them history, `--history 'rec.*=SIZE/TTL'`).
    pub topics: usize,
    /// Publications a second over all topics, from one publishing connection, round robin.
    pub rate: f64,
    /// Payload bytes of a publication.
    pub size: usize,
    /// How long after publishing starts the storm comes.
    pub storm_at: Duration,
    /// How long publishing goes on once every dropped client is back.
    pub after: Duration,
    /// The share of the clients that drop, 0 to 1, spread evenly over them.
    pub drop_fraction: f64,
    /// Each dropped client waits this long before reconnecting, plus its own share of
    /// `jitter`.
    pub reconnect_delay: Duration,
    pub jitter: Duration,
    /// A not-recovered answer is counted and the client takes the live stream from there,
    /// instead of failing the run.
    pub stale_ok: bool,
    /// Generator threads, pinned to `cpus` round robin when given.
    pub threads: usize,
    pub cpus: Vec<usize>,
    /// The server's processes, for its CPU time and memory.
    pub server_pids: Vec<u32>,
    pub progress: bool,
}

impl RecoveryOptions {
    /// The defaults: 1,000 clients on one topic, 50 publications a second of 64 bytes, every
    /// client dropping at 5 s and reconnecting at once, 5 s after.
    pub fn new(target: Target, url: String, protocol: Protocol) -> RecoveryOptions {
        RecoveryOptions {
            target,
            url,
            protocol,
            clients: 1000,
            topics: 1,
            rate: 50.0,
            size: 64,
            storm_at: Duration::from_secs(5),
            after: Duration::from_secs(5),
            drop_fraction: 1.0,
            reconnect_delay: Duration::ZERO,
            jitter: Duration::ZERO,
            stale_ok: false,
            threads: 1,
            cpus: Vec::new(),
            server_pids: Vec::new(),
            progress: true,
        }
    }

    /// Checks the shape; the error says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.clients == 0 || self.topics == 0 || self.threads == 0 {
            return Err("clients, topics and threads must be at least 1".into());
        }
        if !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            return Err(format!("rate {} is not between 0 and 1,000,000", self.rate));
        }
        if !(0.0..=1.0).contains(&self.drop_fraction) {
            return Err(format!(
                "drop fraction {} is not between 0 and 1",
                self.drop_fraction
            ));
        }
        // A client that saw no publication has no position to come back with.
        let per_topic = self.rate * self.storm_at.as_secs_f64() / self.topics as f64;
        if per_topic < 2.0 {
            return Err(format!(
                "each topic gets {per_topic:.1} publications before the storm: raise the rate or \
                 the storm's time so every client has a position to come back with"
            ));
        }
        Ok(())
    }

    /// Whether client `i` drops at the storm: `drop_fraction` of them, spread evenly.
    pub fn drops(&self, i: usize) -> bool {
        let f = self.drop_fraction;
        ((i + 1) as f64 * f).floor() > (i as f64 * f).floor()
    }

    /// How many clients drop.
    pub fn dropping(&self) -> usize {
        (0..self.clients).filter(|&i| self.drops(i)).count()
    }

    /// How long client `i` waits before reconnecting: the delay, plus its own point in
    /// `[0, jitter)`.
    pub fn delay_of(&self, i: usize) -> Duration {
        if self.jitter.is_zero() {
            return self.reconnect_delay;
        }
        // A fixed spread (Knuth's multiplicative hash), so runs compare.
        let h = (i as u64 + 1).wrapping_mul(2_654_435_761) % 1_000_003;
        self.reconnect_delay + self.jitter.mul_f64(h as f64 / 1_000_003.0)
    }
}

/// Connecting, the handshake, and each answer a client waits for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most the storm may take, from the drop until every dropped client is back.
const STORM_BOUND: Duration = Duration::from_secs(60);
/// The most the generator waits, after publishing stops, for what is in flight.
const DRAIN_BOUND: Duration = Duration::from_secs(10);
/// The drain also ends when nothing has arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// Tries at a reconnect before the client gives up (a connect refused or timed out).
const RECONNECT_TRIES: u32 = 5;
/// Phases live deliveries are counted in: before, during, after, and the drain.
const PHASES: [&str; 4] = ["before", "during", "after", "drain"];
/// Faults kept in full for the report.
const KEEP_FAULTS: usize = 20;

struct Shared {
    opts: RecoveryOptions,
    /// Index into `PHASES` of the phase now.
    phase: AtomicUsize,
    storm: AtomicBool,
    /// The publisher stops, and says when it has.
    stop: AtomicBool,
    publisher_stopped: AtomicBool,
    done: AtomicBool,
    /// Live deliveries per phase.
    live: [AtomicU64; 4],
    /// First deliveries, live and recovered.
    received: AtomicU64,
    recovered_messages: AtomicU64,
    lost: AtomicU64,
    /// Publications made per topic; final once the publisher has stopped.
    published: Vec<AtomicU64>,
    dropped: AtomicU64,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    /// Dropped clients that could not reconnect at all.
    gave_up: AtomicU64,
    retries: AtomicU64,
    /// `payload::now_ns` of the storm and of the last client's recovery.
    storm_ns: AtomicU64,
    last_back_ns: AtomicU64,
}

impl Shared {
    /// Dropped clients that are back, recovered or not, or gave up.
    fn back(&self) -> u64 {
        self.recovered.load(Ordering::SeqCst)
            + self.not_recovered.load(Ordering::SeqCst)
            + self.gave_up.load(Ordering::SeqCst)
    }

    fn came_back(&self) {
        self.last_back_ns
            .fetch_max(payload::now_ns(), Ordering::SeqCst);
    }
}

/// One generator thread's state, shared by its tasks.
struct ThreadCtx {
    shared: Arc<Shared>,
    go: Signal,
    storm: Signal,
    done: Signal,
    /// Connections subscribed (or, for the publisher, joined) and ready.
    ready: Cell<usize>,
    first_error: RefCell<Option<String>>,
    /// Live delivery latency per phase, µs.
    latency: RefCell<Vec<Histogram<u64>>>,
    /// Reconnect to recovered, µs.
    reconnect: RefCell<Histogram<u64>>,
    /// Bounds connections being set up at the start, so the server's backlog is never the
    /// limit there (the storm itself is not bounded).
    setting_up: glommio::sync::Semaphore,
}

impl ThreadCtx {
    fn failed(&self, e: String) {
        self.first_error.borrow_mut().get_or_insert(e);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// What one task found.
#[derive(Default)]
struct TaskResult {
    delivered: u64,
    /// Publications given up by an allowed not-recovered answer.
    lost: u64,
    fault_count: u64,
    faults: Vec<String>,
}

impl TaskResult {
    fn fault(&mut self, what: String) {
        self.fault_count += 1;
        if self.faults.len() < 4 {
            self.faults.push(what);
        }
    }
}

/// What one thread found.
struct ThreadResult {
    tasks: Vec<TaskResult>,
    latency: Vec<Histogram<u64>>,
    reconnect: Histogram<u64>,
}

/// What a client is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Socket.IO: the Engine.IO open packet, to send the namespace connect.
    Opening,
    /// Socket.IO: the connect packet's answer; on a reconnect, what it missed comes first.
    Connecting,
    /// The subscription's answer.
    Subscribing,
    /// corecast: the answer to the subscription with `since`.
    Recovering,
    /// corecast: `left` publications missed still to come, the last at offset `until`.
    CatchingUp {
        left: u64,
        until: u64,
    },
    Live,
    /// Could not reconnect.
    Gone,
}

/// One subscriber.
struct Client {
    i: usize,
    topic: usize,
    topic_name: String,
    protocol: Protocol,
    conn: Option<WsConn>,
    stage: Stage,
    check: StreamCheck,
    /// corecast: the last position seen.
    position: Position,
    /// Socket.IO: the session to recover and the last packet's offset.
    pid: Option<String>,
    sio_offset: Option<String>,
    /// When the reconnect started (after any jitter); `None` until the storm and once back.
    reconnecting: Option<Instant>,
    /// Frames to send once the ones read are handled.
    outbox: Vec<Vec<u8>>,
}

impl Client {
    fn new(i: usize, opts: &RecoveryOptions) -> Client {
        let topic = i % opts.topics;
        Client {
            i,
            topic,
            topic_name: wire::topic_name(topic),
            protocol: opts.protocol,
            conn: None,
            stage: Stage::Opening,
            check: StreamCheck::new(i, topic),
            position: Position {
                offset: 0,
                epoch: None,
            },
            pid: None,
            sio_offset: None,
            reconnecting: None,
            outbox: Vec::new(),
        }
    }

    /// Opens the connection and sends what the protocol sends first: corecast the
    /// subscription (fresh, or from the last position on a reconnect), Socket.IO nothing until
    /// the server's open packet.
    async fn open(&mut self, target: &Target) -> std::io::Result<()> {
        let mut conn = WsConn::connect_as(target, self.i, None, CONNECT_TIMEOUT).await?;
        self.stage = match self.protocol {
            Protocol::Corecast if self.reconnecting.is_some() => {
                conn.send_text(&wire::subscribe_since(&self.topic_name, &self.position))
                    .await?;
                Stage::Recovering
            }
            Protocol::Corecast => {
                conn.send_text(&wire::subscribe_fresh(&self.topic_name))
                    .await?;
                Stage::Subscribing
            }
            Protocol::SocketIo => Stage::Opening,
        };
        self.conn = Some(conn);
        Ok(())
    }

    /// Reads once and handles what came; `Ok(false)` when the server closed.
    async fn read_once(
        &mut self,
        ctx: &ThreadCtx,
        items: &mut Vec<Inbound>,
    ) -> std::io::Result<bool> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        if conn.read(items).await?.is_none() {
            return Ok(false);
        }
        self.handle(ctx, items);
        self.flush().await?;
        Ok(true)
    }

    /// Handles what a read gave.
    fn handle(&mut self, ctx: &ThreadCtx, items: &mut Vec<Inbound>) {
        for item in items.drain(..) {
            let Inbound::Message { data, .. } = item else {
                continue;
            };
            match self.protocol {
                Protocol::Corecast => self.on_pubsub(ctx, &data),
                Protocol::SocketIo => self.on_sio(ctx, &data),
            }
        }
    }

    /// Sends what handling queued, and the pongs owed.
    async fn flush(&mut self) -> std::io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        for frame in self.outbox.drain(..) {
            conn.send_text(&frame).await?;
        }
        conn.flush_control().await
    }

    fn on_pubsub(&mut self, ctx: &ThreadCtx, frame: &[u8]) {
        match wire::parse_pubsub(frame) {
            Pubsub::Envelope {
                topic,
                offset,
                epoch,
                data,
            } => {
                if topic != self.topic_name {
                    let want = self.topic_name.clone();
                    self.check
                        .fault(|| format!("a publication of {topic} on a subscription of {want}"));
                    return;
                }
                if !matches!(self.stage, Stage::Live | Stage::CatchingUp { .. }) {
                    let stage = self.stage;
                    self.check
                        .fault(|| format!("a publication at offset {offset} while {stage:?}"));
                    return;
                }
                self.position = Position {
                    offset,
                    epoch: Some(epoch.to_string()),
                };
                self.publication(ctx, data.as_bytes(), Some((offset, epoch)));
            }
            Pubsub::Answer {
                topic,
                recovered,
                missed,
                reason,
                position,
            } => {
                if topic != self.topic_name {
                    self.check
                        .fault(|| format!("an answer for {topic}, which it did not ask for"));
                    return;
                }
                match (self.stage, recovered) {
                    (Stage::Subscribing, None) => {
                        self.check
                            .set_base(position.offset, position.epoch.as_deref());
                        self.position = position;
                        self.stage = Stage::Live;
                    }
                    (Stage::Recovering, Some(true)) => {
                        if let Some(e) = &position.epoch {
                            self.check.check_epoch(e);
                        }
                        // What it missed is exactly what lies between its position and the
                        // topic's now.
                        let since = self.position.offset;
                        if position.offset.checked_sub(since) != Some(missed) {
                            let now = position.offset;
                            self.check.fault(|| {
                                format!(
                                    "recovered from offset {since} to {now} with {missed} missed"
                                )
                            });
                        }
                        if missed == 0 {
                            self.back(ctx, true);
                        } else {
                            self.stage = Stage::CatchingUp {
                                left: missed,
                                until: position.offset,
                            };
                        }
                    }
                    (Stage::Recovering, Some(false)) => {
                        let reason = reason.unwrap_or("no reason given").to_string();
                        let base = self.check.offset_of(0).map(|o| o - 1);
                        let next = base.and_then(|b| position.offset.checked_sub(b));
                        self.position = position;
                        self.not_recovered(ctx, &reason, next);
                        self.stage = Stage::Live;
                    }
                    (stage, _) => {
                        let text = String::from_utf8_lossy(frame).into_owned();
                        self.check
                            .fault(|| format!("unexpected answer while {stage:?}: {text}"));
                    }
                }
            }
            Pubsub::Other(text) => self.check.fault(|| format!("the server said {text}")),
        }
    }

    fn on_sio(&mut self, ctx: &ThreadCtx, frame: &[u8]) {
        match wire::parse_sio(frame) {
            Sio::Open if self.stage == Stage::Opening => {
                let recover = match (&self.pid, &self.sio_offset, self.reconnecting) {
                    (Some(pid), Some(offset), Some(_)) => Some((pid.as_str(), offset.as_str())),
                    _ => None,
                };
                self.outbox.push(wire::sio_connect(recover));
                self.stage = Stage::Connecting;
            }
            Sio::Ping => self.outbox.push(wire::SIO_PONG.to_vec()),
            Sio::Connected { pid, .. } if self.stage == Stage::Connecting => {
                let Some(pid) = pid else {
                    self.check.fault(|| {
                        "the server gave no session to recover (connectionStateRecovery off?)"
                            .into()
                    });
                    self.stage = Stage::Gone;
                    return;
                };
                let recovered = self.reconnecting.is_some() && self.pid.as_deref() == Some(pid);
                let first = self.reconnecting.is_none();
                self.pid = Some(pid.to_string());
                if recovered {
                    self.back(ctx, true);
                    return;
                }
                if !first {
                    // A fresh session: its rooms are gone, so it subscribes again.
                    self.not_recovered(ctx, "a new session", None);
                }
                self.outbox
                    .push(wire::sio_event("subscribe", &[self.topic_name.as_bytes()]));
                self.stage = Stage::Subscribing;
            }
            Sio::Event {
                name: "subscribed",
                args,
            } if self.stage == Stage::Subscribing => {
                if args.first() != Some(&self.topic_name.as_str()) {
                    self.check
                        .fault(|| format!("subscribed to {args:?}, not what it asked"));
                }
                self.sio_offset = args.last().map(|o| o.to_string());
                if self.sio_offset.is_none() || args.len() < 2 {
                    self.check.fault(|| {
                        "an event without an offset (connectionStateRecovery off?)".into()
                    });
                }
                self.stage = Stage::Live;
            }
            Sio::Event { name: "m", args } if args.len() == 2 => {
                let catching_up = self.stage == Stage::Connecting && self.reconnecting.is_some();
                if self.stage != Stage::Live && !catching_up {
                    let stage = self.stage;
                    self.check
                        .fault(|| format!("a publication while {stage:?}"));
                    return;
                }
                self.sio_offset = Some(args[1].to_string());
                self.publication(ctx, args[0].as_bytes(), None);
            }
            other => {
                let stage = self.stage;
                self.check
                    .fault(|| format!("unexpected while {stage:?}: {other:?}"));
            }
        }
    }

    /// One publication of its topic: checked, then counted as recovered or live.
    fn publication(&mut self, ctx: &ThreadCtx, data: &[u8], at: Option<(u64, &str)>) {
        let shared = &ctx.shared;
        let Some(stamp) = payload::decode(data) else {
            let n = data.len();
            self.check
                .fault(|| format!("{n} bytes that are not a load-test payload"));
            return;
        };
        let lost_before = self.check.lost;
        let first = self.check.receive(stamp.sender, stamp.seq, at);
        // The first publication after an allowed not-recovered answer tells what was lost.
        if self.check.lost > lost_before {
            shared
                .lost
                .fetch_add(self.check.lost - lost_before, Ordering::SeqCst);
        }
        if first {
            shared.received.fetch_add(1, Ordering::Relaxed);
        }
        match self.stage {
            Stage::CatchingUp { left, until } => {
                shared.recovered_messages.fetch_add(1, Ordering::Relaxed);
                if left > 1 {
                    self.stage = Stage::CatchingUp {
                        left: left - 1,
                        until,
                    };
                    return;
                }
                if let Some((offset, _)) = at.filter(|(o, _)| *o != until) {
                    self.check.fault(|| {
                        format!("the catch-up ended at offset {offset}, not {until} as answered")
                    });
                }
                self.back(ctx, true);
            }
            Stage::Connecting => {
                shared.recovered_messages.fetch_add(1, Ordering::Relaxed);
            }
            _ if first => {
                let phase = shared.phase.load(Ordering::Relaxed);
                shared.live[phase].fetch_add(1, Ordering::Relaxed);
                let us = payload::now_ns().saturating_sub(stamp.sent_ns) / 1000;
                ctx.latency.borrow_mut()[phase].saturating_record(us.max(1));
            }
            _ => {}
        }
    }

    /// The dropped client is back: recovered (its time recorded), or not.
    fn back(&mut self, ctx: &ThreadCtx, recovered: bool) {
        if let Some(started) = self.reconnecting.take() {
            if recovered {
                let us = started.elapsed().as_micros() as u64;
                ctx.reconnect.borrow_mut().saturating_record(us.max(1));
                ctx.shared.recovered.fetch_add(1, Ordering::SeqCst);
            } else {
                ctx.shared.not_recovered.fetch_add(1, Ordering::SeqCst);
            }
            ctx.shared.came_back();
        }
        self.stage = Stage::Live;
    }

    /// A not-recovered answer: a fault unless allowed, then the live stream from where the
    /// server says (corecast) or from the next publication (Socket.IO).
    fn not_recovered(&mut self, ctx: &ThreadCtx, reason: &str, next_seq: Option<u64>) {
        if !ctx.shared.opts.stale_ok {
            let reason = reason.to_string();
            self.check.fault(|| format!("not recovered: {reason}"));
        }
        let lost_before = self.check.lost;
        self.check.resync(next_seq);
        ctx.shared
            .lost
            .fetch_add(self.check.lost - lost_before, Ordering::SeqCst);
        self.back(ctx, false);
    }

    /// The storm: drops the connection without a close frame and reconnects.
    async fn storm(&mut self, ctx: &ThreadCtx) {
        let shared = &ctx.shared;
        // Dropping the socket closes it: FIN, or RST with unread data; no close frame.
        self.conn = None;
        shared.dropped.fetch_add(1, Ordering::SeqCst);
        let wait = shared.opts.delay_of(self.i);
        if !wait.is_zero() {
            Timer::new(wait).await;
        }
        self.reconnecting = Some(Instant::now());
        for attempt in 1..=RECONNECT_TRIES {
            match self.open(&shared.opts.target).await {
                Ok(()) => return,
                Err(e) if attempt == RECONNECT_TRIES => {
                    self.check
                        .fault(|| format!("could not reconnect in {RECONNECT_TRIES} tries: {e}"));
                    self.stage = Stage::Gone;
                    self.reconnecting = None;
                    shared.gave_up.fetch_add(1, Ordering::SeqCst);
                    shared.came_back();
                    return;
                }
                Err(_) => {
                    shared.retries.fetch_add(1, Ordering::SeqCst);
                    Timer::new(Duration::from_millis(50 * u64::from(attempt))).await;
                }
            }
        }
    }
}

enum Wake {
    Read(std::io::Result<bool>),
    Storm,
    Done,
}

/// One subscriber, from its first connect to the end of the run.
async fn client_task(i: usize, slot: usize, ctx: Rc<ThreadCtx>) -> TaskResult {
    let shared = Arc::clone(&ctx.shared);
    let opts = &shared.opts;
    let mut c = Client::new(i, opts);
    let mut items = Vec::new();
    // Set up: connect and subscribe, bounded.
    let permit = ctx.setting_up.acquire_permit(1).await;
    let setup = async {
        c.open(&opts.target).await?;
        while c.stage != Stage::Live {
            if !c.read_once(&ctx, &mut items).await? {
                return Err(std::io::Error::other("closed while subscribing"));
            }
            if c.check.fault_count > 0 || c.stage == Stage::Gone {
                return Err(std::io::Error::other(c.check.faults.join("; ")));
            }
        }
        Ok(())
    };
    let set_up = future::or(setup, async {
        Timer::new(CONNECT_TIMEOUT * 2).await;
        Err(std::io::Error::other("not subscribed within 20 s"))
    })
    .await;
    drop(permit);
    if let Err(e) = set_up {
        ctx.failed(format!("client {i}: {e}"));
        return result_of(c.check);
    }
    ctx.ready.set(ctx.ready.get() + 1);
    let mut stormed = !opts.drops(i);
    let mut error = None;
    loop {
        let read = async { Wake::Read(c.read_once(&ctx, &mut items).await) };
        let wake = future::or(read, async {
            if stormed {
                ctx.done.wait(slot).await;
                Wake::Done
            } else {
                future::or(
                    async {
                        ctx.storm.wait(slot).await;
                        Wake::Storm
                    },
                    async {
                        ctx.done.wait(slot).await;
                        Wake::Done
                    },
                )
                .await
            }
        })
        .await;
        match wake {
            Wake::Read(Ok(true)) => {}
            Wake::Read(Ok(false)) if c.conn.is_none() => {
                // Gone after a failed reconnect: wait for the end.
                ctx.done.wait(slot).await;
                break;
            }
            Wake::Read(Ok(false)) => {
                error = Some("closed by the server".to_string());
                break;
            }
            Wake::Read(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
            Wake::Storm if ctx.done.fired() => break,
            Wake::Storm => {
                stormed = true;
                c.storm(&ctx).await;
            }
            Wake::Done => break,
        }
        if ctx.done.fired() {
            break;
        }
    }
    if let Some(e) = error.filter(|_| !ctx.done.fired()) {
        c.check.fault(|| format!("connection: {e}"));
    }
    if c.stage != Stage::Live && c.stage != Stage::Gone {
        let stage = c.stage;
        c.check
            .fault(|| format!("still {stage:?} when the run ended"));
    }
    let published = shared.published[c.topic].load(Ordering::SeqCst);
    c.check.finish(published);
    if let Some(conn) = c.conn.take() {
        conn.close().await;
    }
    result_of(c.check)
}

fn result_of(check: StreamCheck) -> TaskResult {
    TaskResult {
        delivered: check.delivered,
        lost: check.lost,
        fault_count: check.fault_count,
        faults: check.faults,
    }
}

/// The publisher: one connection, `rate` publications a second, round robin over the topics,
/// each carrying its topic and its sequence number in that topic.
async fn publisher_task(slot: usize, ctx: Rc<ThreadCtx>) -> TaskResult {
    let shared = Arc::clone(&ctx.shared);
    let opts = &shared.opts;
    let mut faults = TaskResult::default();
    let names: Vec<String> = (0..opts.topics).map(wire::topic_name).collect();
    let mut conn = match WsConn::connect_as(&opts.target, opts.clients, None, CONNECT_TIMEOUT).await
    {
        Ok(c) => c,
        Err(e) => {
            ctx.failed(format!("publisher: {e}"));
            return faults;
        }
    };
    let mut items = Vec::new();
    if opts.protocol == Protocol::SocketIo {
        let joined = future::or(
            async {
                let mut stage = 0;
                while stage < 2 {
                    if conn.read(&mut items).await?.is_none() {
                        return Err(std::io::Error::other("closed while joining"));
                    }
                    for item in items.drain(..) {
                        let Inbound::Message { data, .. } = item else {
                            continue;
                        };
                        match (stage, wire::parse_sio(&data)) {
                            (0, Sio::Open) => {
                                conn.send_text(&wire::sio_connect(None)).await?;
                                stage = 1;
                            }
                            (1, Sio::Connected { .. }) => stage = 2,
                            (_, Sio::Ping) => conn.send_text(wire::SIO_PONG).await?,
                            _ => {}
                        }
                    }
                }
                Ok(())
            },
            async {
                Timer::new(CONNECT_TIMEOUT).await;
                Err(std::io::Error::other(
                    "no Socket.IO connect answer within 10 s",
                ))
            },
        )
        .await;
        if let Err(e) = joined {
            ctx.failed(format!("publisher: {e}"));
            return faults;
        }
    }
    ctx.ready.set(ctx.ready.get() + 1);
    ctx.go.wait(slot).await;
    let t0 = Instant::now();
    let mut seqs = vec![0u64; opts.topics];
    let mut sent = 0u64;
    let mut error = None;
    while !shared.stop.load(Ordering::SeqCst) && !ctx.done.fired() {
        let due = (t0.elapsed().as_secs_f64() * opts.rate) as u64;
        while sent < due && error.is_none() {
            let k = (sent % opts.topics as u64) as usize;
            let stamp = Stamp {
                sender: k as u32,
                seq: seqs[k],
                sent_ns: payload::now_ns(),
            };
            let data = payload::encode(stamp, opts.size);
            let frame = match opts.protocol {
                Protocol::Corecast => wire::publish(&names[k], &data),
                Protocol::SocketIo => wire::sio_event("publish", &[names[k].as_bytes(), &data]),
            };
            if let Err(e) = conn.send_text(&frame).await {
                error = Some(format!("send failed: {e}"));
            }
            seqs[k] += 1;
            shared.published[k].store(seqs[k], Ordering::SeqCst);
            sent += 1;
        }
        if error.is_some() {
            break;
        }
        let next = t0 + Duration::from_secs_f64((sent + 1) as f64 / opts.rate);
        let wait = next.saturating_duration_since(Instant::now());
        let read = async { Some(conn.read(&mut items).await) };
        let woke = future::or(read, async {
            Timer::new(wait).await;
            None
        })
        .await;
        match woke {
            None | Some(Ok(Some(()))) => {}
            Some(Ok(None)) => error = Some("closed by the server".into()),
            Some(Err(e)) => error = Some(e.to_string()),
        }
        // Pings are answered; anything else (a refusal such as the rate limit) is a fault.
        for item in items.drain(..) {
            let Inbound::Message { data, .. } = item else {
                continue;
            };
            if opts.protocol == Protocol::SocketIo && wire::parse_sio(&data) == Sio::Ping {
                if let Err(e) = conn.send_text(wire::SIO_PONG).await {
                    error = Some(e.to_string());
                }
                continue;
            }
            let text = String::from_utf8_lossy(&data[..data.len().min(160)]);
            faults.fault(format!("the publisher was sent {text}"));
        }
        if let Err(e) = conn.flush_control().await {
            error = Some(e.to_string());
        }
        if error.is_some() {
            break;
        }
    }
    shared.publisher_stopped.store(true, Ordering::SeqCst);
    if let Some(e) = error {
        faults.fault(format!("publisher: {e}"));
    }
    // Answer pings until the end.
    while !ctx.done.fired() {
        let read = async { conn.read(&mut items).await.ok().flatten().is_some() };
        let open = future::or(read, async {
            ctx.done.wait(slot).await;
            false
        })
        .await;
        for item in items.drain(..) {
            if let Inbound::Message { data, .. } = item {
                if opts.protocol == Protocol::SocketIo && wire::parse_sio(&data) == Sio::Ping {
                    let _ = conn.send_text(wire::SIO_PONG).await;
                }
            }
        }
        let _ = conn.flush_control().await;
        if !open {
            break;
        }
    }
    conn.close().await;
    faults
}

async fn thread_main(
    t: usize,
    shared: Arc<Shared>,
    ready: flume::Sender<Result<usize, String>>,
    go: flume::Receiver<()>,
) -> ThreadResult {
    let opts = &shared.opts;
    let mine: Vec<usize> = (0..opts.clients)
        .filter(|i| i % opts.threads == t)
        .collect();
    let publishes = t == 0;
    let slots = mine.len() + 1;
    let ctx = Rc::new(ThreadCtx {
        shared: Arc::clone(&shared),
        go: Signal::new(slots),
        storm: Signal::new(slots),
        done: Signal::new(slots),
        ready: Cell::new(0),
        first_error: RefCell::new(None),
        latency: RefCell::new(PHASES.iter().map(|_| histogram()).collect()),
        reconnect: RefCell::new(histogram()),
        setting_up: glommio::sync::Semaphore::new(64),
    });
    let clients: Vec<_> = mine
        .iter()
        .enumerate()
        .map(|(slot, &i)| glommio::spawn_local(client_task(i, slot, Rc::clone(&ctx))))
        .collect();
    let publisher =
        publishes.then(|| glommio::spawn_local(publisher_task(mine.len(), Rc::clone(&ctx))));
    let want = mine.len() + usize::from(publishes);
    let deadline = Instant::now() + Duration::from_secs(120);
    let outcome = loop {
        if let Some(e) = ctx.first_error.borrow().clone() {
            break Err(e);
        }
        if ctx.ready.get() >= want {
            break Ok(want);
        }
        if Instant::now() > deadline {
            break Err(format!(
                "{} of {want} connections set up within 120 s",
                ctx.ready.get()
            ));
        }
        Timer::new(Duration::from_millis(5)).await;
    };
    let set_up = outcome.is_ok();
    let _ = ready.send(outcome);
    if set_up && go.recv_async().await.is_ok() {
        ctx.go.fire();
    }
    // Watches the run's flags for this thread's tasks.
    loop {
        if shared.storm.load(Ordering::SeqCst) && !ctx.storm.fired() {
            ctx.storm.fire();
        }
        if shared.done.load(Ordering::SeqCst) || !set_up {
            ctx.done.fire();
            break;
        }
        Timer::new(Duration::from_millis(1)).await;
    }
    let mut tasks = Vec::new();
    for c in clients {
        tasks.push(c.await);
    }
    if let Some(p) = publisher {
        tasks.push(p.await);
    }
    let ctx = Rc::try_unwrap(ctx)
        .ok()
        .expect("every task of the thread has ended");
    ThreadResult {
        tasks,
        latency: ctx.latency.into_inner(),
        reconnect: ctx.reconnect.into_inner(),
    }
}

/// Prints the progress line every half second while `until` holds, up to `bound`; returns
/// whether `until` stopped holding (false: the bound passed).
fn watch(shared: &Shared, t0: Instant, bound: Duration, until: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    let mut last_print: Option<Instant> = None;
    loop {
        if !until() {
            return true;
        }
        if start.elapsed() >= bound {
            return false;
        }
        let opts = &shared.opts;
        let due = match last_print {
            None => true,
            Some(at) => at.elapsed() >= Duration::from_millis(500),
        };
        if opts.progress && due {
            last_print = Some(Instant::now());
            let phase = PHASES[shared.phase.load(Ordering::Relaxed)];
            let live: u64 = shared.live.iter().map(|l| l.load(Ordering::Relaxed)).sum();
            eprint!(
                "\r[recovery] {:>6.1}s {phase:<6} live {live}  dropped {}  recovered {}  not {}  caught up {}\x1b[K",
                t0.elapsed().as_secs_f64(),
                shared.dropped.load(Ordering::Relaxed),
                shared.recovered.load(Ordering::Relaxed),
                shared.not_recovered.load(Ordering::Relaxed),
                shared.recovered_messages.load(Ordering::Relaxed),
            );
            let _ = std::io::stderr().flush();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the storm to its end and reports.
pub fn run(opts: RecoveryOptions) -> anyhow::Result<RecoveryReport> {
    opts.check().map_err(anyhow::Error::msg)?;
    corecast::limits::raise_open_files();
    let dropping = opts.dropping() as u64;
    let shared = Arc::new(Shared {
        phase: AtomicUsize::new(0),
        storm: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        publisher_stopped: AtomicBool::new(false),
        done: AtomicBool::new(false),
        live: Default::default(),
        received: AtomicU64::new(0),
        recovered_messages: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        published: (0..opts.topics).map(|_| AtomicU64::new(0)).collect(),
        dropped: AtomicU64::new(0),
        recovered: AtomicU64::new(0),
        not_recovered: AtomicU64::new(0),
        gave_up: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        storm_ns: AtomicU64::new(0),
        last_back_ns: AtomicU64::new(0),
        opts: opts.clone(),
    });
    let pids = &opts.server_pids;
    let rss_before = procstat::rss_kib(pids);
    let (ready_tx, ready_rx) = flume::unbounded();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    let started = Instant::now();
    for t in 0..opts.threads {
        let placement = match opts.cpus.get(t % opts.cpus.len().max(1)) {
            Some(cpu) => Placement::Fixed(*cpu),
            None => Placement::Unbound,
        };
        let (go_tx, go_rx) = flume::bounded::<()>(1);
        go.push(go_tx);
        let (shared, ready) = (Arc::clone(&shared), ready_tx.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("recovery-{t}"))
            .io_memory(64 << 10)
            .spawn(move || async move { thread_main(t, shared, ready, go_rx).await })
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start a generator thread (io_uring and memlock, as for the server): {e}"
                )
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let end_threads = |handles: Vec<glommio::ExecutorJoinHandle<ThreadResult>>| {
        shared.done.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    };
    for _ in 0..opts.threads {
        match ready_rx.recv_timeout(Duration::from_secs(150)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                drop(go);
                end_threads(handles);
                bail!("setting up against {}: {e}", opts.url);
            }
            Err(_) => {
                drop(go);
                end_threads(handles);
                bail!("the generator threads did not set up within 150 s");
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    if opts.progress {
        eprintln!(
            "{} clients subscribed and the publisher joined in {connect_seconds:.2}s",
            opts.clients
        );
    }
    let cpu = || procstat::cpu_seconds(pids);
    let mut faults: Vec<String> = Vec::new();
    let mut fault_count = 0u64;

    // Before: publishing, everyone subscribed.
    let cpu0 = cpu();
    let t0 = Instant::now();
    for g in &go {
        let _ = g.send(());
    }
    watch(&shared, t0, opts.storm_at, || true);
    // During: from the drop until every dropped client is back.
    let cpu1 = cpu();
    let t1 = Instant::now();
    shared.phase.store(1, Ordering::SeqCst);
    shared.storm_ns.store(payload::now_ns(), Ordering::SeqCst);
    shared.storm.store(true, Ordering::SeqCst);
    let all_back = watch(&shared, t0, STORM_BOUND, || shared.back() < dropping);
    let cpu2 = cpu();
    let t2 = Instant::now();
    shared.phase.store(2, Ordering::SeqCst);
    if !all_back {
        fault_count += 1;
        faults.push(format!(
            "only {} of {dropping} dropped clients back within {} s",
            shared.back(),
            STORM_BOUND.as_secs()
        ));
    }
    // After: as long again as asked, everyone back.
    watch(&shared, t0, opts.after, || true);
    let cpu3 = cpu();
    let t3 = Instant::now();
    let rss_after = procstat::rss_kib(pids);
    shared.phase.store(3, Ordering::SeqCst);
    shared.stop.store(true, Ordering::SeqCst);
    let stopped = watch(&shared, t0, Duration::from_secs(5), || {
        !shared.publisher_stopped.load(Ordering::SeqCst)
    });
    if !stopped {
        fault_count += 1;
        faults.push("the publisher did not stop within 5 s".into());
    }
    let published: Vec<u64> = shared
        .published
        .iter()
        .map(|p| p.load(Ordering::SeqCst))
        .collect();
    let expected: u64 = (0..opts.clients).map(|i| published[i % opts.topics]).sum();
    // Drain: what is in flight arrives; a lost publication ends the wait once nothing has
    // arrived for a while, or at the bound.
    let last_change = Cell::new((0u64, Instant::now()));
    watch(&shared, t0, DRAIN_BOUND, || {
        let got = shared.received.load(Ordering::SeqCst) + shared.lost.load(Ordering::SeqCst);
        let (before, since) = last_change.get();
        if got != before {
            last_change.set((got, Instant::now()));
        }
        got < expected && since.elapsed() < DRAIN_QUIET
    });
    if opts.progress {
        eprintln!();
    }
    drop(go);
    let results = end_threads(handles);
    if results.len() != opts.threads {
        bail!("a generator thread failed");
    }

    let mut latency: Vec<Histogram<u64>> = PHASES.iter().map(|_| histogram()).collect();
    let mut reconnect = histogram();
    let mut delivered = 0;
    let mut lost = 0;
    for r in results {
        for (all, one) in latency.iter_mut().zip(&r.latency) {
            all.add(one).ok();
        }
        reconnect.add(&r.reconnect).ok();
        for task in r.tasks {
            delivered += task.delivered;
            lost += task.lost;
            fault_count += task.fault_count;
            for f in task.faults {
                if faults.len() < KEEP_FAULTS {
                    faults.push(f);
                }
            }
        }
    }
    if delivered + lost != expected && fault_count == 0 {
        fault_count += 1;
        faults.push(format!("delivered {delivered} of {expected} publications"));
    }
    let windows = [
        (t1 - t0, cpu0.zip(cpu1)),
        (t2 - t1, cpu1.zip(cpu2)),
        (t3 - t2, cpu2.zip(cpu3)),
    ];
    let phases: Vec<Phase> = windows
        .iter()
        .enumerate()
        .map(|(k, (window, cpus))| {
            let secs = window.as_secs_f64();
            let deliveries = shared.live[k].load(Ordering::SeqCst);
            let cpu = cpus.map(|(a, b)| b - a);
            Phase {
                name: PHASES[k].into(),
                seconds: secs,
                deliveries,
                deliveries_per_second: deliveries as f64 / secs.max(1e-9),
                latency: Latency::of(&latency[k]),
                server_cpu_seconds: cpu,
                server_cpu_us_per_delivery: cpu
                    .filter(|_| deliveries > 0)
                    .map(|c| c * 1e6 / deliveries as f64),
            }
        })
        .collect();
    let dropped = shared.dropped.load(Ordering::SeqCst);
    let recovered_messages = shared.recovered_messages.load(Ordering::SeqCst);
    // The storm's CPU beyond what its live deliveries cost at the CPU per delivery before it,
    // per dropped client: what a reconnect costs, its recovered publications included (a
    // catch-up may go out in fewer writes than the live stream, so it is not priced as one).
    let (before, during) = (&phases[0], &phases[1]);
    let storm_cpu = before
        .server_cpu_us_per_delivery
        .zip(during.server_cpu_seconds)
        .filter(|_| dropped > 0)
        .map(|(per, d)| (d * 1e6 - per * during.deliveries as f64) / dropped as f64);
    let storm_ns = shared.storm_ns.load(Ordering::SeqCst);
    let last_back = shared.last_back_ns.load(Ordering::SeqCst);
    let not_recovered = shared.not_recovered.load(Ordering::SeqCst);
    Ok(RecoveryReport {
        scenario: "recovery".into(),
        url: opts.url.clone(),
        protocol: opts.protocol.name().into(),
        clients: opts.clients,
        topics: opts.topics,
        threads: opts.threads,
        payload_bytes: opts.size,
        rate: opts.rate,
        storm_at_seconds: opts.storm_at.as_secs_f64(),
        drop_fraction: opts.drop_fraction,
        reconnect_delay_ms: opts.reconnect_delay.as_secs_f64() * 1000.0,
        jitter_ms: opts.jitter.as_secs_f64() * 1000.0,
        connect_seconds,
        published: published.iter().sum(),
        expected_deliveries: expected,
        deliveries: delivered,
        dropped,
        recovered: shared.recovered.load(Ordering::SeqCst),
        not_recovered,
        reconnect_retries: shared.retries.load(Ordering::SeqCst),
        messages_recovered: recovered_messages,
        messages_lost: lost,
        reconnect_to_recovered: Latency::of(&reconnect),
        all_recovered_seconds: (all_back && dropped > 0 && last_back >= storm_ns)
            .then(|| (last_back - storm_ns) as f64 / 1e9),
        phases,
        storm_cpu_us_per_reconnect: storm_cpu,
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        ok: fault_count == 0,
        fault_count,
        faults,
    })
}

#[cfg(test)]
mod tests;
