//! The load engine: glommio executors (one per generator thread, pinned when asked), each
//! holding a share of the connections; a closed-loop send window per sender; every delivery
//! counted. Not the reporting: it hands its numbers to `report`.

use std::cell::RefCell;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use corecast::ws::frame::Inbound;
use futures_lite::future;
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::options::{Options, Scenario};
use crate::payload::{self, Stamp};
use crate::procstat;
use crate::report::{Latency, Report, ServerUsage};
use crate::shootout;
use crate::signal::Signal;
use crate::tally::Tally;
use crate::topics;
use crate::upgrades;
use crate::ws::{self, WsConn};

/// Messages one topics publisher may send at most (bounds the completion counters).
const TOPIC_MESSAGES: u64 = 200_000;

struct Shared {
    opts: Options,
    deliveries: AtomicU64,
    /// Messages sent, per sender slot.
    sent: Vec<AtomicU64>,
    /// Broadcast: recipients still to receive each message. Topics: the same per publisher,
    /// `messages` counters each.
    remaining: Vec<AtomicU32>,
    completed: AtomicU64,
    /// Topics: messages fully delivered per publisher, and a wake-up for each publisher.
    completed_by: Vec<AtomicU64>,
    wakes: Vec<(flume::Sender<()>, flume::Receiver<()>)>,
    /// Topics: subscribers per topic.
    subscribers: Vec<u32>,
    stop: AtomicBool,
    done: AtomicBool,
}

struct ThreadCtx {
    /// Wakes every connection task of the thread when the run ends, without a timer per
    /// connection.
    done: Signal,
    shared: Arc<Shared>,
    latency: RefCell<Histogram<u64>>,
    whole: RefCell<Histogram<u64>>,
    completions: (flume::Sender<u64>, flume::Receiver<u64>),
}

struct ThreadResult {
    tallies: Vec<Tally>,
    latency: Histogram<u64>,
    whole: Histogram<u64>,
    pings: u64,
    errors: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Runs one scenario to its end and reports.
pub fn run(opts: Options) -> anyhow::Result<Report> {
    match opts.scenario {
        Scenario::Shootout => return shootout::run(opts),
        Scenario::Upgrades => return upgrades::run(opts),
        // Its options and report are its own.
        Scenario::Recovery => bail!("the recovery scenario runs through recovery::run"),
        Scenario::Listen => bail!("the listen scenario runs through listen::run"),
        _ => {}
    }
    if opts.clients == 0 || opts.threads == 0 || opts.in_flight == 0 || opts.targets.is_empty() {
        bail!("clients, threads and in-flight must be at least 1");
    }
    corecast::limits::raise_open_files();
    let n = opts.clients;
    let plan = opts.topics;
    let topics = opts.scenario == Scenario::Topics;
    if topics {
        plan.check().map_err(anyhow::Error::msg)?;
    }
    let messages = match opts.scenario {
        Scenario::Broadcast => opts.messages.unwrap_or(1000),
        Scenario::Topics => opts.messages.unwrap_or(TOPIC_MESSAGES).min(TOPIC_MESSAGES),
        _ => opts.messages.unwrap_or(u64::MAX),
    };
    let senders = match opts.scenario {
        Scenario::Broadcast => 1,
        Scenario::Idle => 0,
        Scenario::Topics => plan.slots(),
        _ => n,
    };
    let subscribers = if topics {
        plan.subscriber_counts(n)
    } else {
        Vec::new()
    };
    let remaining = match opts.scenario {
        Scenario::Broadcast => (0..messages).map(|_| AtomicU32::new(n as u32)).collect(),
        Scenario::Topics => (0..plan.publishers)
            .flat_map(|p| {
                let subscribers = &subscribers;
                (0..messages).map(move |g| AtomicU32::new(subscribers[plan.publish(p, g).topic]))
            })
            .collect(),
        _ => Vec::new(),
    };
    let shared = Arc::new(Shared {
        sent: (0..senders).map(|_| AtomicU64::new(0)).collect(),
        remaining,
        completed_by: (0..plan.publishers).map(|_| AtomicU64::new(0)).collect(),
        wakes: (0..plan.publishers).map(|_| flume::unbounded()).collect(),
        subscribers,
        opts: opts.clone(),
        deliveries: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let completions = flume::unbounded();
    let server_rss_before = procstat::rss_kib(&opts.server_pids);
    let own_rss_before = procstat::rss_kib(&[std::process::id()]);

    let (ready_tx, ready_rx) = flume::unbounded();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    let started = Instant::now();
    for t in 0..opts.threads {
        let placement = match opts.cpus.get(t % opts.cpus.len().max(1)) {
            Some(cpu) if !opts.cpus.is_empty() => Placement::Fixed(*cpu),
            _ => Placement::Unbound,
        };
        let (go_tx, go_rx) = flume::bounded::<()>(1);
        go.push(go_tx);
        let (shared, ready, completions) =
            (Arc::clone(&shared), ready_tx.clone(), completions.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("load-{t}"))
            .io_memory(64 << 10)
            .spawn(move || async move { thread_main(t, shared, ready, go_rx, completions, messages).await })
            .map_err(|e| anyhow::anyhow!("cannot start a generator thread (io_uring and memlock, as for the server): {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut connected = 0;
    for _ in 0..opts.threads {
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(c)) => connected += c,
            Ok(Err(e)) => {
                shared.done.store(true, Ordering::SeqCst);
                drop(go);
                for h in handles {
                    let _ = h.join();
                }
                bail!("connecting to {}: {e}", opts.url);
            }
            Err(_) => bail!("the generator threads did not connect within 120 s"),
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    if opts.progress {
        eprintln!("{} connections in {connect_seconds:.2}s", connected);
    }
    let own_rss_after = procstat::rss_kib(&[std::process::id()]);
    let holding = opts.scenario == Scenario::Idle || (topics && plan.publishers == 0);
    if holding {
        // Let the server finish registering every connection before reading its memory.
        std::thread::sleep(Duration::from_secs(1));
    }
    let server_rss_connected = procstat::rss_kib(&opts.server_pids);
    let cpu_before = procstat::cpu_seconds(&opts.server_pids);
    let t0 = Instant::now();
    for g in &go {
        let _ = g.send(());
    }
    wait_for_end(&shared, messages, t0);
    let window = t0.elapsed();
    let cpu_after = procstat::cpu_seconds(&opts.server_pids);
    let server_rss_end = procstat::rss_kib(&opts.server_pids);
    shared.done.store(true, Ordering::SeqCst);
    if opts.progress {
        eprintln!();
    }

    let mut results = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r),
            Err(e) => bail!("a generator thread failed: {e}"),
        }
    }
    let sent: Vec<u64> = shared
        .sent
        .iter()
        .map(|s| s.load(Ordering::SeqCst))
        .collect();
    let total_sent: u64 = sent.iter().sum();
    let expected = match opts.scenario {
        Scenario::Broadcast => total_sent * n as u64,
        Scenario::Chat => total_sent * n as u64,
        Scenario::Echo => total_sent,
        Scenario::Topics => topic_deliveries(&shared, &sent),
        _ => 0,
    };
    let mut latency = histogram();
    let mut whole = histogram();
    let mut faults = Vec::new();
    let mut fault_count = 0;
    let mut delivered = 0;
    let mut pings = 0;
    for mut r in results {
        latency.add(&r.latency).ok();
        whole.add(&r.whole).ok();
        pings += r.pings;
        for e in r.errors.drain(..) {
            fault_count += 1;
            if faults.len() < 20 {
                faults.push(e);
            }
        }
        for mut t in r.tallies {
            if opts.scenario == Scenario::Echo {
                // One slot: the receiver's own messages.
                let me = t.receiver();
                let own = sent.get(me as usize).copied().unwrap_or(0);
                t.finish(&[own], |_| me);
            } else if topics {
                // Only the streams of the receiver's own topics are owed to it.
                let me = t.receiver() as usize;
                let mine: Vec<usize> = if me < n {
                    plan.subscriptions(me).collect()
                } else {
                    Vec::new()
                };
                let owed: Vec<u64> = (0..sent.len())
                    .map(|slot| {
                        let topic = slot % plan.topics;
                        if mine.contains(&topic) {
                            sent[slot]
                        } else {
                            0
                        }
                    })
                    .collect();
                t.finish(&owed, |slot| slot as u32);
            } else {
                t.finish(&sent, |slot| slot as u32);
            }
            delivered += t.delivered;
            fault_count += t.fault_count;
            for f in &t.faults {
                if faults.len() < 20 {
                    faults.push(f.to_string());
                }
            }
            // Whose a fault was: bytes unread at the end were sent, and not read here.
            if let (false, Some(unread)) = (t.faults.is_empty(), t.unread_at_end) {
                if faults.len() < 21 {
                    faults.push(format!(
                        "connection {}: {unread} bytes the server sent were unread in its \
                         socket at the end",
                        t.receiver()
                    ));
                }
            }
        }
    }
    if delivered != expected && fault_count == 0 && !holding {
        fault_count += 1;
        faults.push(format!("delivered {delivered} of {expected} messages"));
    }
    let total = n + if topics { plan.publishers } else { 0 };
    if connected != total && (holding || topics) {
        fault_count += 1;
        faults.push(format!("only {connected} of {total} connections held"));
    }
    let secs = window.as_secs_f64();
    let server = (!opts.server_pids.is_empty()).then(|| {
        let cpu = match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        let before = server_rss_before.unwrap_or(0);
        let after = if holding {
            server_rss_connected.unwrap_or(0)
        } else {
            server_rss_end.unwrap_or(0)
        };
        ServerUsage {
            pids: opts.server_pids.clone(),
            cpu_seconds: cpu,
            cpu_us_per_delivery: (delivered > 0).then(|| cpu * 1e6 / delivered as f64),
            rss_before_kib: before,
            rss_after_kib: after,
            rss_per_connection_bytes: (connected > 0)
                .then(|| after.saturating_sub(before) as f64 * 1024.0 / connected as f64),
            cpu_us_per_connection_second: (holding && connected > 0 && secs > 0.0)
                .then(|| cpu * 1e6 / connected as f64 / secs),
        }
    });
    Ok(Report {
        scenario: opts.scenario.name().into(),
        url: opts.url.clone(),
        clients: n,
        threads: opts.threads,
        payload_bytes: opts.size,
        in_flight: opts.in_flight,
        connect_seconds,
        connects_per_second: connected as f64 / connect_seconds.max(1e-9),
        window_seconds: secs,
        sent: total_sent,
        expected_deliveries: expected,
        deliveries: delivered,
        deliveries_per_second: delivered as f64 / secs.max(1e-9),
        round_trips_per_second: (opts.scenario == Scenario::Echo)
            .then(|| delivered as f64 / secs.max(1e-9)),
        latency: Latency::of(&latency),
        broadcast_latency: (opts.scenario == Scenario::Broadcast).then(|| Latency::of(&whole)),
        pings_answered: pings,
        client_rss_per_connection_bytes: match (own_rss_before, own_rss_after) {
            (Some(a), Some(b)) if connected > 0 => {
                Some(b.saturating_sub(a) as f64 * 1024.0 / connected as f64)
            }
            _ => None,
        },
        server,
        shootout_steps: Vec::new(),
        shootout_max_clients: None,
        subscriptions: topics.then_some((n * plan.per_client) as u64),
        upgrades: None,
        ok: fault_count == 0,
        fault_count,
        faults,
    })
}

/// Topics: deliveries owed for what was sent, every stream times its topic's subscribers.
fn topic_deliveries(shared: &Shared, sent: &[u64]) -> u64 {
    let topics = shared.opts.topics.topics;
    sent.iter()
        .enumerate()
        .map(|(slot, &s)| s * u64::from(shared.subscribers[slot % topics]))
        .sum()
}

/// Watches the run from the calling thread: progress, stop, drain.
fn wait_for_end(shared: &Shared, messages: u64, t0: Instant) {
    let opts = &shared.opts;
    let mut last_print = Instant::now();
    let mut stop_at: Option<Instant> = None;
    let n = opts.clients as u64;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = t0.elapsed();
        let delivered = shared.deliveries.load(Ordering::Relaxed);
        if opts.progress && last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            let rate = delivered as f64 / elapsed.as_secs_f64().max(1e-9);
            let extra = if opts.scenario == Scenario::Broadcast {
                format!(
                    "  completed {}/{}",
                    shared.completed.load(Ordering::Relaxed),
                    messages
                )
            } else {
                String::new()
            };
            eprint!(
                "\r[{}] {:>6.1}s  deliveries {delivered} ({rate:.0}/s){extra}\x1b[K",
                opts.scenario.name(),
                elapsed.as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        match opts.scenario {
            Scenario::Broadcast => {
                let completed = shared.completed.load(Ordering::SeqCst);
                if completed >= messages {
                    return;
                }
                if stop_at.is_none() && elapsed >= opts.duration {
                    // Out of time: stop publishing and let what is in flight arrive.
                    shared.stop.store(true, Ordering::SeqCst);
                    stop_at = Some(Instant::now());
                }
                if let Some(at) = stop_at {
                    let sent = shared.sent[0].load(Ordering::SeqCst);
                    if completed >= sent || at.elapsed() >= Duration::from_secs(5) {
                        return;
                    }
                }
            }
            Scenario::Idle => {
                if elapsed >= opts.duration {
                    return;
                }
            }
            Scenario::Topics if opts.topics.publishers == 0 => {
                if elapsed >= opts.duration {
                    return;
                }
            }
            Scenario::Topics => {
                let sent: Vec<u64> = shared
                    .sent
                    .iter()
                    .map(|s| s.load(Ordering::SeqCst))
                    .collect();
                let all_sent = sent.iter().sum::<u64>() >= messages * opts.topics.publishers as u64;
                if stop_at.is_none() && (elapsed >= opts.duration || all_sent) {
                    shared.stop.store(true, Ordering::SeqCst);
                    stop_at = Some(Instant::now());
                }
                if let Some(at) = stop_at {
                    let expected = topic_deliveries(shared, &sent);
                    if delivered >= expected || at.elapsed() >= Duration::from_secs(5) {
                        return;
                    }
                }
            }
            _ => {
                let sent: u64 = shared.sent.iter().map(|s| s.load(Ordering::SeqCst)).sum();
                let all_sent = opts.messages.is_some_and(|m| sent >= m * n);
                if stop_at.is_none() && (elapsed >= opts.duration || all_sent) {
                    shared.stop.store(true, Ordering::SeqCst);
                    stop_at = Some(Instant::now());
                }
                if let Some(at) = stop_at {
                    let sent: u64 = shared.sent.iter().map(|s| s.load(Ordering::SeqCst)).sum();
                    let expected = if opts.scenario == Scenario::Chat {
                        sent * n
                    } else {
                        sent
                    };
                    // Drain what is in flight; a server that lost messages ends the wait.
                    if delivered >= expected || at.elapsed() >= Duration::from_secs(5) {
                        return;
                    }
                }
            }
        }
    }
}

async fn thread_main(
    t: usize,
    shared: Arc<Shared>,
    ready: flume::Sender<Result<usize, String>>,
    go: flume::Receiver<()>,
    completions: (flume::Sender<u64>, flume::Receiver<u64>),
    messages: u64,
) -> ThreadResult {
    let opts = &shared.opts;
    let topics = opts.scenario == Scenario::Topics;
    let total = opts.clients + if topics { opts.topics.publishers } else { 0 };
    let socket_io = opts.socket_io;
    let mine: Vec<usize> = (0..total).filter(|i| i % opts.threads == t).collect();
    let mut conns: Vec<(usize, WsConn)> = Vec::with_capacity(mine.len());
    // Connect in bounded batches so a burst does not overflow the server's accept backlog.
    for batch in mine.chunks(64) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&i| {
                let mut target = opts.targets[i % opts.targets.len()].clone();
                let source = ws::source_for(i, total, &target.addr);
                // Topics: subscribers join theirs at upgrade, and wait for every acknowledgement.
                let acks = if topics && i < opts.clients {
                    let sep = if target.path.contains('?') { '&' } else { '?' };
                    target.path = format!("{}{sep}{}", target.path, opts.topics.query(i));
                    opts.topics.per_client
                } else {
                    0
                };
                glommio::spawn_local(async move {
                    let timeout = Duration::from_secs(10);
                    let connected = async {
                        let mut c = WsConn::connect_as(&target, i, source, timeout).await?;
                        if socket_io {
                            let joined = future::or(c.join_socket_io(), async {
                                Timer::new(timeout).await;
                                Err(std::io::Error::other("no Socket.IO connect within 10 s"))
                            });
                            joined.await?;
                        }
                        await_acks(&mut c, acks, timeout).await.map(|()| c)
                    }
                    .await;
                    (i, connected)
                })
            })
            .collect();
        for task in tasks {
            match task.await {
                (i, Ok(c)) => conns.push((i, c)),
                (i, Err(e)) => {
                    let _ = ready.send(Err(format!("connection {i}: {e}")));
                    return ThreadResult {
                        tallies: Vec::new(),
                        latency: histogram(),
                        whole: histogram(),
                        pings: 0,
                        errors: vec![format!("connection {i}: {e}")],
                    };
                }
            }
        }
    }
    let _ = ready.send(Ok(conns.len()));
    if go.recv_async().await.is_err() {
        return ThreadResult {
            tallies: Vec::new(),
            latency: histogram(),
            whole: histogram(),
            pings: 0,
            errors: Vec::new(),
        };
    }
    let ctx = Rc::new(ThreadCtx {
        done: Signal::new(conns.len()),
        shared: Arc::clone(&shared),
        latency: RefCell::new(histogram()),
        whole: RefCell::new(histogram()),
        completions,
    });
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(slot, (i, c))| {
            glommio::spawn_local(conn_task(i, slot, c, Rc::clone(&ctx), messages))
        })
        .collect();
    // One timer per thread watches for the end of the run.
    let watcher = {
        let ctx = Rc::clone(&ctx);
        glommio::spawn_local(async move {
            while !ctx.shared.done.load(Ordering::SeqCst) {
                Timer::new(Duration::from_millis(10)).await;
            }
            ctx.done.fire();
        })
    };
    let mut tallies = Vec::new();
    let mut pings = 0;
    let mut errors = Vec::new();
    for task in tasks {
        let (tally, p, err) = task.await;
        tallies.push(tally);
        pings += p;
        errors.extend(err);
    }
    watcher.await;
    let ctx = Rc::try_unwrap(ctx)
        .ok()
        .expect("every connection task has ended");
    ThreadResult {
        tallies,
        latency: ctx.latency.into_inner(),
        whole: ctx.whole.into_inner(),
        pings,
        errors,
    }
}

/// Reads until `n` subscription acknowledgements came; anything else is an error.
async fn await_acks(conn: &mut WsConn, n: usize, timeout: Duration) -> std::io::Result<()> {
    let mut items = Vec::new();
    let mut acks = 0;
    let reading = async {
        while acks < n {
            if conn.read(&mut items).await?.is_none() {
                return Err(std::io::Error::other("closed before subscribing"));
            }
            for item in items.drain(..) {
                match item {
                    Inbound::Message { data, .. } if topics::is_ack(&data) => acks += 1,
                    Inbound::Message { data, .. } => {
                        let text =
                            String::from_utf8_lossy(&data[..data.len().min(120)]).into_owned();
                        return Err(std::io::Error::other(format!("subscribe refused: {text}")));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    };
    future::or(reading, async {
        Timer::new(timeout).await;
        Err(std::io::Error::other(
            "no subscription acknowledgement within 10 s",
        ))
    })
    .await
}

enum Wake {
    Read(std::io::Result<Option<()>>),
    Tick,
}

/// One connection: sends within its window (if it sends), reads and counts everything.
async fn conn_task(
    i: usize,
    slot_in_thread: usize,
    mut conn: WsConn,
    ctx: Rc<ThreadCtx>,
    messages: u64,
) -> (Tally, u64, Option<String>) {
    let shared = &ctx.shared;
    let opts = &shared.opts;
    let me = i as u32;
    let (slots, sender_slot) = match opts.scenario {
        Scenario::Broadcast => (1, Some(0usize)),
        Scenario::Chat => (opts.clients, Some(i)),
        Scenario::Echo => (1, Some(i)),
        Scenario::Topics => (opts.topics.slots(), None),
        _ => (0, None),
    };
    let publishes = match opts.scenario {
        Scenario::Broadcast => i == 0,
        Scenario::Chat | Scenario::Echo => true,
        Scenario::Topics => i >= opts.clients,
        _ => false,
    };
    let plan = opts.topics;
    // Topics: this publisher's number, and the topics this subscriber joined.
    let publisher = i.checked_sub(opts.clients).filter(|_| publishes);
    let my_topics: Vec<usize> = if opts.scenario == Scenario::Topics && i < opts.clients {
        plan.subscriptions(i).collect()
    } else {
        Vec::new()
    };
    let mut tally = Tally::new(me, slots);
    let mut seq = 0u64;
    // An open-loop broadcast: when the next message is due, counted from the first.
    let mut paced_from: Option<Instant> = None;
    let mut own_back = 0u64;
    let mut items = Vec::new();
    let mut error = None;
    while !ctx.done.fired() {
        // When the next send falls due, found afresh each turn: one left from before a stop
        // would have fallen due for good, and the loop would never yield.
        let mut next_due: Option<Instant> = None;
        if publishes && !shared.stop.load(Ordering::Relaxed) {
            loop {
                let acked = match (opts.scenario, publisher) {
                    (Scenario::Broadcast, _) => shared.completed.load(Ordering::SeqCst),
                    (Scenario::Topics, Some(p)) => shared.completed_by[p].load(Ordering::SeqCst),
                    _ => own_back,
                };
                if seq >= messages || seq - acked.min(seq) >= opts.in_flight as u64 {
                    break;
                }
                if let (Some(rate), Scenario::Broadcast) = (opts.rate, opts.scenario) {
                    let from = *paced_from.get_or_insert_with(Instant::now);
                    let due = from + Duration::from_secs_f64(seq as f64 / rate);
                    if Instant::now() < due {
                        next_due = Some(due);
                        break;
                    }
                }
                if let (Scenario::Topics, Some(p)) = (opts.scenario, publisher) {
                    let m = plan.publish(p, seq);
                    let stamp = Stamp {
                        sender: m.slot as u32,
                        seq: m.seq,
                        sent_ns: payload::now_ns(),
                    };
                    let frame = topics::publish_frame(m.topic, &opts.payload(stamp));
                    if let Err(e) = conn.send_text(&frame).await {
                        error = Some(format!("connection {i}: send failed: {e}"));
                        break;
                    }
                    shared.sent[m.slot].fetch_add(1, Ordering::SeqCst);
                    if shared.subscribers[m.topic] == 0 {
                        shared.completed_by[p].fetch_add(1, Ordering::SeqCst);
                    }
                    seq += 1;
                    continue;
                }
                let stamp = Stamp {
                    sender: me,
                    seq,
                    sent_ns: payload::now_ns(),
                };
                if let Err(e) = conn.send_text(&opts.payload(stamp)).await {
                    error = Some(format!("connection {i}: send failed: {e}"));
                    break;
                }
                if let Some(slot) = sender_slot {
                    if let Some(s) = shared.sent.get(if opts.scenario == Scenario::Broadcast {
                        0
                    } else {
                        slot
                    }) {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                }
                seq += 1;
            }
            if error.is_some() {
                break;
            }
        }
        let read = async { Wake::Read(conn.read(&mut items).await) };
        let broadcaster = publishes && opts.scenario == Scenario::Broadcast;
        let wake = future::or(read, async {
            if broadcaster {
                // A completed broadcast opens the window; an open loop's next message falls due.
                future::or(
                    async {
                        let _ = ctx.completions.1.recv_async().await;
                    },
                    future::or(ctx.done.wait(slot_in_thread), async {
                        match next_due {
                            Some(due) => {
                                Timer::new(due.saturating_duration_since(Instant::now())).await;
                            }
                            None => future::pending().await,
                        }
                    }),
                )
                .await;
            } else if let Some(p) = publisher.filter(|_| opts.scenario == Scenario::Topics) {
                // So does a fully delivered publish of this publisher.
                future::or(
                    async {
                        let _ = shared.wakes[p].1.recv_async().await;
                    },
                    ctx.done.wait(slot_in_thread),
                )
                .await;
            } else {
                ctx.done.wait(slot_in_thread).await;
            }
            Wake::Tick
        })
        .await;
        match wake {
            Wake::Tick => {}
            Wake::Read(Ok(Some(()))) => {}
            Wake::Read(Ok(None)) => {
                if !ctx.done.fired() {
                    error = Some(format!("connection {i}: closed by the server"));
                }
                break;
            }
            Wake::Read(Err(e)) => {
                if !ctx.done.fired() {
                    error = Some(format!("connection {i}: {e}"));
                }
                break;
            }
        }
        for item in items.drain(..) {
            let Inbound::Message { data, .. } = item else {
                continue;
            };
            let Some(stamp) = payload::decode(&data) else {
                tally.unexpected(format!(
                    "{} bytes that are not a load-test message",
                    data.len()
                ));
                continue;
            };
            let slot = match opts.scenario {
                Scenario::Broadcast if stamp.sender == 0 => 0,
                Scenario::Chat => stamp.sender as usize,
                Scenario::Echo if stamp.sender == me => 0,
                // A stream of a topic this receiver never joined is not owed to it.
                Scenario::Topics if my_topics.contains(&(stamp.sender as usize % plan.topics)) => {
                    stamp.sender as usize
                }
                _ => usize::MAX,
            };
            let now = payload::now_ns();
            if tally.receive(slot, stamp.sender, stamp.seq) {
                let us = now.saturating_sub(stamp.sent_ns) / 1000;
                ctx.latency.borrow_mut().saturating_record(us.max(1));
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                if opts.scenario == Scenario::Broadcast {
                    if let Some(r) = shared.remaining.get(stamp.seq as usize) {
                        if r.fetch_sub(1, Ordering::SeqCst) == 1 {
                            ctx.whole.borrow_mut().saturating_record(us.max(1));
                            shared.completed.fetch_add(1, Ordering::SeqCst);
                            let _ = ctx.completions.0.send(stamp.seq);
                        }
                    }
                } else if opts.scenario == Scenario::Topics {
                    let (p, g) = plan.origin(slot, stamp.seq);
                    let counter = shared.remaining.get(p * messages as usize + g as usize);
                    if counter.is_some_and(|r| r.fetch_sub(1, Ordering::SeqCst) == 1) {
                        ctx.whole.borrow_mut().saturating_record(us.max(1));
                        shared.completed_by[p].fetch_add(1, Ordering::SeqCst);
                        let _ = shared.wakes[p].0.send(());
                    }
                }
            }
            if stamp.sender == me {
                own_back += 1;
            }
        }
        if let Err(e) = conn.flush_control().await {
            error = Some(format!("connection {i}: {e}"));
            break;
        }
    }
    let pings = conn.pings;
    tally.unread_at_end = conn.unread_bytes();
    conn.close().await;
    (tally, pings, error)
}
