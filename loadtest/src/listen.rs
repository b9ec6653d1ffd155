//! The listen scenario: connections held on a pubsub server, each subscribed to one topic at
//! its upgrade, counting what arrives from outside the run: broadcasts and publications a
//! backend sends through the server's HTTP API (`ledger` says how they are written). Every
//! client must get every message of each stream exactly once and in order, up to the stream's
//! end message; the run ends when every client still open has both ends (or at `duration`),
//! and a drop, a gap, a duplicate, a reordering or a stranger fails it. It sends nothing but
//! pongs: who publishes, and when, is the caller's (`corecast-many-nodes`, or a test). Not the
//! other scenarios' engine (`run`): its phases and report are its own.

pub mod ledger;

use std::cell::{Cell, RefCell};
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
use serde::Serialize;

use crate::payload;
use crate::report::Latency;
use crate::signal::Signal;
use crate::topics;
use crate::ws::{self, Target, WsConn};
use ledger::{Books, Ledger, Stream, Taken};

/// The line printed (to stderr) once every connection is set up; what a caller waits for.
pub const HOLDING: &str = "listen: holding";

/// Faults the report keeps in full.
const KEEP: usize = 20;

/// Connections set up at once per generator thread, so a burst does not overflow the
/// server's accept backlog.
const SETTING_UP: u64 = 64;

/// What a listen run is asked to do.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Where to connect: connection `i` goes to `targets[i % len]`.
    pub targets: Vec<Target>,
    pub url: String,
    pub clients: usize,
    /// The topic every client subscribes to at its upgrade (`?topics=`).
    pub topic: String,
    /// The most to hold once connected, waiting for the ends; the run fails if they have not
    /// all come by then.
    pub duration: Duration,
    /// How long one connection may take to connect, upgrade and be acknowledged.
    pub setup_timeout: Duration,
    pub threads: usize,
    pub cpus: Vec<usize>,
    /// Progress lines on stderr, one per `progress_every`.
    pub progress: bool,
    pub progress_every: Duration,
}

impl ListenOptions {
    /// The defaults for `clients` connections to `url` (one thread, `everyone`, 15 minutes).
    pub fn new(url: &str, clients: usize) -> Result<ListenOptions, String> {
        let targets = url
            .split(',')
            .map(Target::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListenOptions {
            targets,
            url: url.to_string(),
            clients,
            topic: "everyone".into(),
            duration: Duration::from_secs(15 * 60),
            setup_timeout: Duration::from_secs(20),
            threads: 1,
            cpus: Vec::new(),
            progress: false,
            progress_every: Duration::from_secs(10),
        })
    }
}

/// What one stream came to over every client.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamReport {
    /// Messages sent in it, as its end said (`None`: no client saw its end).
    pub sent: Option<u64>,
    /// `sent` times the connections held.
    pub expected: u64,
    /// First deliveries counted.
    pub delivered: u64,
    /// Clients that got every message exactly once, in order.
    pub clients_complete: usize,
    /// From the sender's stamp to the client reading it.
    pub latency: Latency,
}

/// Everything a listen run found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ListenReport {
    pub scenario: String,
    pub url: String,
    pub topic: String,
    pub clients: usize,
    /// Connections upgraded and subscribed.
    pub connected: usize,
    pub connect_failures: usize,
    pub connect_seconds: f64,
    /// From the last connection set up to the end of the run.
    pub held_seconds: f64,
    /// Connections still open when the run ended (closed by this client after).
    pub open_at_end: usize,
    /// Connections the server closed, or that failed, while held.
    pub dropped: usize,
    pub pings_answered: u64,
    pub broadcasts: StreamReport,
    pub publications: StreamReport,
    pub ok: bool,
    pub fault_count: u64,
    pub faults: Vec<String>,
}

impl ListenReport {
    /// The human summary.
    pub fn summary(&self) -> String {
        let stream = |name: &str, s: &StreamReport| {
            format!(
                "  {name}: {} sent, {} of {} deliveries counted, {} clients with every one; \
                 latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
                s.sent.map_or("?".to_string(), |n| n.to_string()),
                s.delivered,
                s.expected,
                s.clients_complete,
                s.latency.p50_us as f64 / 1e3,
                s.latency.p99_us as f64 / 1e3,
                s.latency.max_us as f64 / 1e3,
            )
        };
        let mut out = format!(
            "listen {} on {}: {} of {} connected in {:.1}s ({} failed), held {:.1}s, {} open at \
             the end, {} dropped, {} pings answered\n",
            self.topic,
            self.url,
            self.connected,
            self.clients,
            self.connect_seconds,
            self.connect_failures,
            self.held_seconds,
            self.open_at_end,
            self.dropped,
            self.pings_answered,
        );
        out += &stream("broadcasts", &self.broadcasts);
        out += &stream("publications", &self.publications);
        if self.ok {
            out += "  OK: every client got every message exactly once, in order\n";
        } else {
            out += &format!("  FAILED: {} faults\n", self.fault_count);
            for f in &self.faults {
                out += &format!("    {f}\n");
            }
        }
        out
    }
}

struct Shared {
    opts: ListenOptions,
    /// Connections set up, and those that could not be.
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Clients whose task is past setting up (set up, or failed).
    settled: AtomicUsize,
    /// Clients with both ends, or gone: nothing more will come to them.
    finished: AtomicUsize,
    dropped: AtomicUsize,
    delivered: [AtomicU64; 2],
    done: AtomicBool,
}

struct ThreadCtx {
    shared: Arc<Shared>,
    done: Signal,
    setting_up: glommio::sync::Semaphore,
    latency: RefCell<[Histogram<u64>; 2]>,
    /// When the hold began (every connection set up), for the drops' messages.
    hold_start: Cell<Option<Instant>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// How one client ended.
struct ClientEnd {
    ledger: Option<Ledger>,
    pings: u64,
    /// Why it could not be set up, or why it went while held.
    failure: Option<String>,
    open: bool,
}

/// Runs the scenario to its end and reports.
pub fn run(opts: ListenOptions) -> anyhow::Result<ListenReport> {
    if opts.clients == 0 || opts.threads == 0 || opts.targets.is_empty() {
        bail!("clients and threads must be at least 1, and there must be a URL");
    }
    if opts.topic.is_empty() || opts.topic.contains([',', '&', ' ', '#', '?']) {
        bail!("{:?} cannot be a topic in a query", opts.topic);
    }
    corecast::limits::raise_open_files();
    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        settled: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        delivered: Default::default(),
        done: AtomicBool::new(false),
        opts: opts.clone(),
    });
    let (hold_tx, hold_rx) = flume::unbounded::<Instant>();
    let mut handles = Vec::new();
    let mut holds = Vec::new();
    let started = Instant::now();
    for t in 0..opts.threads {
        let placement = match opts.cpus.get(t % opts.cpus.len().max(1)) {
            Some(cpu) => Placement::Fixed(*cpu),
            None => Placement::Unbound,
        };
        let shared = Arc::clone(&shared);
        let (hold_tx, hold_rx) = (hold_tx.clone(), hold_rx.clone());
        holds.push(hold_tx);
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("listen-{t}"))
            .io_memory(64 << 10)
            .spawn(move || async move { thread_main(t, shared, hold_rx).await })
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start a generator thread (io_uring and memlock, as for the server): {e}"
                )
            })?;
        handles.push(handle);
    }
    drop(hold_tx);

    // Setting up: every client connected and subscribed, or failed.
    let mut last_print = Instant::now();
    while shared.settled.load(Ordering::SeqCst) < opts.clients && started.elapsed() < opts.duration
    {
        std::thread::sleep(Duration::from_millis(20));
        if opts.progress && last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            eprintln!(
                "listen: {:>6.1}s connected {} of {} ({} failed)",
                started.elapsed().as_secs_f64(),
                shared.connected.load(Ordering::Relaxed),
                opts.clients,
                shared.failed.load(Ordering::Relaxed),
            );
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::SeqCst);
    let hold_start = Instant::now();
    for h in &holds {
        let _ = h.send(hold_start);
    }
    if opts.progress {
        eprintln!(
            "{HOLDING} {connected} of {} connections subscribed to {} ({} failed) after {connect_seconds:.1}s",
            opts.clients,
            opts.topic,
            shared.failed.load(Ordering::SeqCst),
        );
    }

    // Holding, until every client has its ends or is gone, or the time is up.
    let mut last_print = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if shared.finished.load(Ordering::SeqCst) >= connected
            || hold_start.elapsed() >= opts.duration
        {
            break;
        }
        if opts.progress && last_print.elapsed() >= opts.progress_every {
            last_print = Instant::now();
            eprintln!(
                "listen: {:>6.1}s held {} of {connected}, dropped {}, broadcasts counted {}, \
                 publications counted {}, finished {}",
                hold_start.elapsed().as_secs_f64(),
                connected - shared.dropped.load(Ordering::Relaxed),
                shared.dropped.load(Ordering::Relaxed),
                shared.delivered[0].load(Ordering::Relaxed),
                shared.delivered[1].load(Ordering::Relaxed),
                shared.finished.load(Ordering::Relaxed),
            );
        }
    }
    let held_seconds = hold_start.elapsed().as_secs_f64();
    shared.done.store(true, Ordering::SeqCst);

    let mut ends = Vec::with_capacity(opts.clients);
    let mut latency = [histogram(), histogram()];
    for h in handles {
        match h.join() {
            Ok((clients, lat)) => {
                ends.extend(clients);
                for (all, one) in latency.iter_mut().zip(lat.iter()) {
                    all.add(one).ok();
                }
            }
            Err(e) => bail!("a generator thread failed: {e}"),
        }
    }
    Ok(account(
        &opts,
        ends,
        &latency,
        connect_seconds,
        held_seconds,
    ))
}

/// The report from every client's end: the streams' counts as the ends agree, each client's
/// books closed against them.
fn account(
    opts: &ListenOptions,
    ends: Vec<ClientEnd>,
    latency: &[Histogram<u64>; 2],
    connect_seconds: f64,
    held_seconds: f64,
) -> ListenReport {
    let mut faults = Faults::default();
    let agreed = match ledger::agreed_ends(ends.iter().filter_map(|e| e.ledger.as_ref())) {
        Ok(a) => a,
        Err(e) => {
            faults.push(e);
            [None; 2]
        }
    };
    let connected = ends.iter().filter(|e| e.ledger.is_some()).count();
    for stream in Stream::ALL {
        if connected > 0 && agreed[stream.index()].is_none() {
            faults.push(format!(
                "no client saw the end of the {}s within {:.0}s",
                stream.name(),
                opts.duration.as_secs_f64()
            ));
        }
    }
    let sent = agreed.map(|a| a.unwrap_or(0));
    let mut streams = [StreamReport::default(), StreamReport::default()];
    let (mut pings, mut open, mut dropped, mut failures) = (0, 0, 0, 0);
    for end in ends {
        pings += end.pings;
        open += usize::from(end.open);
        match (&end.ledger, end.failure) {
            (None, Some(f)) => {
                failures += 1;
                faults.push(f);
            }
            (Some(_), Some(f)) => {
                dropped += 1;
                faults.push(f);
            }
            _ => {}
        }
        let Some(ledger) = end.ledger else { continue };
        let Books {
            delivered,
            complete,
            fault_count: n,
            faults: theirs,
        } = ledger.close(sent);
        faults.count += n;
        faults.keep(theirs);
        for s in 0..2 {
            streams[s].delivered += delivered[s];
            streams[s].clients_complete += usize::from(complete[s]);
        }
    }
    for (s, report) in streams.iter_mut().enumerate() {
        report.sent = agreed[s];
        report.expected = sent[s] * connected as u64;
        report.latency = Latency::of(&latency[s]);
    }
    let [broadcasts, publications] = streams;
    ListenReport {
        scenario: "listen".into(),
        url: opts.url.clone(),
        topic: opts.topic.clone(),
        clients: opts.clients,
        connected,
        connect_failures: failures,
        connect_seconds,
        held_seconds,
        open_at_end: open,
        dropped,
        pings_answered: pings,
        broadcasts,
        publications,
        ok: faults.count == 0,
        fault_count: faults.count,
        faults: faults.kept,
    }
}

/// A run's faults: all counted, the first `KEEP` kept.
#[derive(Default)]
struct Faults {
    count: u64,
    kept: Vec<String>,
}

impl Faults {
    fn push(&mut self, fault: String) {
        self.count += 1;
        self.keep([fault]);
    }

    /// Keeps what room is left of faults counted elsewhere.
    fn keep(&mut self, faults: impl IntoIterator<Item = String>) {
        let room = KEEP.saturating_sub(self.kept.len());
        self.kept.extend(faults.into_iter().take(room));
    }
}

async fn thread_main(
    t: usize,
    shared: Arc<Shared>,
    hold: flume::Receiver<Instant>,
) -> (Vec<ClientEnd>, [Histogram<u64>; 2]) {
    let opts = &shared.opts;
    let mine: Vec<usize> = (0..opts.clients)
        .filter(|i| i % opts.threads == t)
        .collect();
    let ctx = Rc::new(ThreadCtx {
        shared: Arc::clone(&shared),
        done: Signal::new(mine.len()),
        setting_up: glommio::sync::Semaphore::new(SETTING_UP),
        latency: RefCell::new([histogram(), histogram()]),
        hold_start: Cell::new(None),
    });
    let tasks: Vec<_> = mine
        .iter()
        .enumerate()
        .map(|(slot, &i)| glommio::spawn_local(client_task(i, slot, Rc::clone(&ctx))))
        .collect();
    // One watcher per thread: the hold's start, then the run's end.
    if let Ok(at) = hold.recv_async().await {
        ctx.hold_start.set(Some(at));
    }
    while !shared.done.load(Ordering::SeqCst) {
        Timer::new(Duration::from_millis(10)).await;
    }
    ctx.done.fire();
    let mut ends = Vec::with_capacity(tasks.len());
    for task in tasks {
        ends.push(task.await);
    }
    let ctx = Rc::try_unwrap(ctx)
        .ok()
        .expect("every client task has ended");
    (ends, ctx.latency.into_inner())
}

/// Connects client `i`, subscribed to the topic, and waits for the acknowledgement.
async fn set_up(i: usize, ctx: &ThreadCtx) -> std::io::Result<WsConn> {
    let opts = &ctx.shared.opts;
    let mut target = opts.targets[i % opts.targets.len()].clone();
    let source = ws::source_for(i, opts.clients, &target.addr);
    let sep = if target.path.contains('?') { '&' } else { '?' };
    target.path = format!("{}{sep}topics={}", target.path, opts.topic);
    let timeout = opts.setup_timeout;
    let setting_up = async {
        let mut conn = WsConn::connect_as(&target, i, source, timeout).await?;
        let mut items = Vec::new();
        loop {
            if conn.read(&mut items).await?.is_none() {
                return Err(std::io::Error::other("closed before subscribing"));
            }
            for item in items.drain(..) {
                if let Inbound::Message { data, .. } = item {
                    if topics::is_ack(&data) {
                        conn.flush_control().await?;
                        return Ok(conn);
                    }
                    let text = String::from_utf8_lossy(&data[..data.len().min(120)]).into_owned();
                    return Err(std::io::Error::other(format!("subscribe refused: {text}")));
                }
            }
            conn.flush_control().await?;
        }
    };
    future::or(setting_up, async {
        Timer::new(timeout).await;
        Err(std::io::Error::other(format!(
            "not connected and subscribed within {:.0}s",
            timeout.as_secs_f64()
        )))
    })
    .await
}

enum Wake {
    Read(std::io::Result<Option<()>>),
    Done,
}

/// One client: set up, then read and count until the run ends.
async fn client_task(i: usize, slot: usize, ctx: Rc<ThreadCtx>) -> ClientEnd {
    let shared = &ctx.shared;
    let conn = future::or(
        async {
            let _permit = ctx.setting_up.acquire_permit(1).await;
            set_up(i, &ctx).await
        },
        async {
            ctx.done.wait(slot).await;
            Err(std::io::Error::other("the run ended before it was set up"))
        },
    )
    .await;
    let mut conn = match conn {
        Ok(c) => {
            shared.connected.fetch_add(1, Ordering::SeqCst);
            shared.settled.fetch_add(1, Ordering::SeqCst);
            c
        }
        Err(e) => {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            shared.settled.fetch_add(1, Ordering::SeqCst);
            return ClientEnd {
                ledger: None,
                pings: 0,
                failure: Some(format!("connection {i}: {e}")),
                open: false,
            };
        }
    };
    let mut ledger = Ledger::new(i as u32);
    let mut items = Vec::new();
    let mut failure = None;
    let mut finished = false;
    loop {
        let read = async { Wake::Read(conn.read(&mut items).await) };
        let wake = future::or(read, async {
            ctx.done.wait(slot).await;
            Wake::Done
        })
        .await;
        let gone = match wake {
            Wake::Done => break,
            Wake::Read(Ok(Some(()))) => None,
            Wake::Read(Ok(None)) => Some("closed by the server".to_string()),
            Wake::Read(Err(e)) => Some(e.to_string()),
        };
        if let Some(why) = gone {
            let when = match ctx.hold_start.get() {
                Some(at) => format!("{:.1}s into the hold", at.elapsed().as_secs_f64()),
                None => "before the hold".to_string(),
            };
            failure = Some(format!("connection {i}: {why}, {when}"));
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            if !finished {
                shared.finished.fetch_add(1, Ordering::SeqCst);
            }
            let pings = conn.pings;
            return ClientEnd {
                ledger: Some(ledger),
                pings,
                failure,
                open: false,
            };
        }
        let now = payload::now_ns();
        for item in items.drain(..) {
            let Inbound::Message { data, .. } = item else {
                continue;
            };
            if let Taken::Delivery { stream, sent_ns } = ledger.take(&data) {
                let us = now.saturating_sub(sent_ns) / 1000;
                ctx.latency.borrow_mut()[stream.index()].saturating_record(us.max(1));
                shared.delivered[stream.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
        if !finished && ledger.finished() {
            finished = true;
            shared.finished.fetch_add(1, Ordering::SeqCst);
        }
        if let Err(e) = conn.flush_control().await {
            failure = Some(format!("connection {i}: {e}"));
            break;
        }
    }
    let pings = conn.pings;
    let open = failure.is_none();
    if failure.is_some() {
        shared.dropped.fetch_add(1, Ordering::SeqCst);
        if !finished {
            shared.finished.fetch_add(1, Ordering::SeqCst);
        }
    }
    conn.close().await;
    ClientEnd {
        ledger: Some(ledger),
        pings,
        failure,
        open,
    }
}
