//! The hashrocket websocket-shootout scenario: add clients step by step and, at each step, time
//! broadcasts until every client has one and its sender has the `broadcastResult`; stop when
//! the 95th percentile passes the limit. Runs on one generator thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use corecast::ws::frame::Inbound;
use futures_lite::future;
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::options::Options;
use crate::payload::{self, ShootoutKind, Stamp};
use crate::procstat;
use crate::report::{Latency, Report, ServerUsage, ShootoutStep};
use crate::ws::{self, WsConn};

struct Pending {
    /// Clients yet to receive the broadcast, plus one for the sender's result.
    remaining: usize,
    sent_ns: u64,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    rtt: Option<Histogram<u64>>,
    faults: Vec<String>,
    fault_count: u64,
    /// Arrivals so far: broadcasts at clients and results at senders.
    deliveries: u64,
    /// Arrivals owed by the broadcasts sent so far.
    expected: u64,
}

impl State {
    /// Broadcast `seq` leaves for `clients` clients: each is owed it, and its sender the result.
    fn send(&mut self, seq: u64, clients: usize, sent_ns: u64) {
        self.expected += clients as u64 + 1;
        self.pending.insert(
            seq,
            Pending {
                remaining: clients + 1,
                sent_ns,
            },
        );
    }

    fn fault(&mut self, f: String) {
        self.fault_count += 1;
        if self.faults.len() < 20 {
            self.faults.push(f);
        }
    }

    /// One arrival for broadcast `seq`; true when it was the last one.
    fn arrive(&mut self, seq: u64, what: &str, client: usize) -> bool {
        let Some(p) = self.pending.get_mut(&seq) else {
            self.fault(format!(
                "client {client}: {what} for broadcast {seq}, which is not pending (duplicate?)"
            ));
            return false;
        };
        p.remaining -= 1;
        self.deliveries += 1;
        if p.remaining > 0 {
            return false;
        }
        let us = payload::now_ns().saturating_sub(p.sent_ns) / 1000;
        if let Some(h) = self.rtt.as_mut() {
            h.saturating_record(us.max(1));
        }
        self.pending.remove(&seq);
        true
    }
}

/// Runs the shootout to its limit and reports.
pub fn run(opts: Options) -> anyhow::Result<Report> {
    if opts.step == 0 || opts.sample == 0 || opts.concurrent == 0 {
        bail!("step, sample and concurrent must be at least 1");
    }
    corecast::limits::raise_open_files();
    let placement = opts
        .cpus
        .first()
        .map_or(Placement::Unbound, |c| Placement::Fixed(*c));
    let o = opts.clone();
    let handle = LocalExecutorBuilder::new(placement)
        .name("load-shootout")
        .io_memory(64 << 10)
        .spawn(move || async move { drive(o).await })
        .map_err(|e| anyhow::anyhow!("cannot start the generator thread: {e}"))?;
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("generator thread failed: {e}"))?
}

async fn drive(opts: Options) -> anyhow::Result<Report> {
    let state = Rc::new(RefCell::new(State::default()));
    let completed = Rc::new(flume::unbounded::<()>());
    let mut senders: Vec<flume::Sender<Vec<u8>>> = Vec::new();
    let mut tasks = Vec::new();
    let mut steps = Vec::new();
    let mut max_ok = None;
    let mut seq = 0u64;
    let started = Instant::now();
    let mut connecting = Duration::ZERO;
    let cpu_before = procstat::cpu_seconds(&opts.server_pids);
    let rss_before_kib = procstat::rss_kib(&opts.server_pids);
    while senders.len() < opts.clients {
        let target_count = (senders.len() + opts.step).min(opts.clients);
        let connect_started = Instant::now();
        while senders.len() < target_count {
            let i = senders.len();
            let source = ws::source_for(i, opts.clients, &opts.targets[0].addr);
            let conn = WsConn::connect(&opts.targets[0], source, Duration::from_secs(10))
                .await
                .with_context(|| format!("connecting client {i}"))?;
            let (tx, rx) = flume::unbounded();
            senders.push(tx);
            tasks.push(glommio::spawn_local(client(
                i,
                conn,
                rx,
                Rc::clone(&state),
                Rc::clone(&completed),
            )));
        }
        connecting += connect_started.elapsed();
        let clients = senders.len();
        state.borrow_mut().rtt =
            Some(Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds"));
        for k in 0..opts.sample {
            while state.borrow().pending.len() >= opts.concurrent {
                wait_completion(&completed, &state).await;
            }
            let from = k % clients;
            let stamp = Stamp {
                sender: from as u32,
                seq,
                sent_ns: payload::now_ns(),
            };
            state.borrow_mut().send(seq, clients, stamp.sent_ns);
            seq += 1;
            let _ = senders[from].send(payload::encode_shootout(ShootoutKind::Broadcast, stamp));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state.borrow().pending.is_empty() && Instant::now() < deadline {
            wait_completion(&completed, &state).await;
        }
        let lost: Vec<u64> = state.borrow().pending.keys().copied().collect();
        for s in lost {
            state.borrow_mut().fault(format!(
                "broadcast {s} did not reach every client within 10 s"
            ));
        }
        let rtt = state
            .borrow_mut()
            .rtt
            .take()
            .map(|h| Latency::of(&h))
            .unwrap_or_default();
        if opts.progress {
            eprintln!(
                "[shootout] {clients} clients: broadcast rtt p95 {}µs",
                rtt.p95_us
            );
        }
        let over = Duration::from_micros(rtt.p95_us) > opts.limit;
        steps.push(ShootoutStep { clients, rtt });
        if over || state.borrow().fault_count > 0 {
            break;
        }
        max_ok = Some(clients);
    }
    let window = started.elapsed();
    let cpu_after = procstat::cpu_seconds(&opts.server_pids);
    // Read while every client is still connected.
    let rss_after_kib = procstat::rss_kib(&opts.server_pids);
    let connected = senders.len();
    drop(senders);
    for t in tasks {
        t.await;
    }
    let measured = Measured {
        connected,
        connecting,
        window,
        sent: seq,
        cpu_seconds: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        rss_kib: rss_before_kib.zip(rss_after_kib),
        steps,
        max_ok,
    };
    let st = state.borrow();
    Ok(report(&opts, &st, measured))
}

/// What the driver measured around the per-broadcast accounting in `State`.
struct Measured {
    /// Connections opened.
    connected: usize,
    /// Time spent opening them, summed over the steps (the timing between is not connecting).
    connecting: Duration,
    /// The whole run.
    window: Duration,
    /// Broadcasts sent.
    sent: u64,
    /// The server's CPU time over the run, where its pids were given and readable.
    cpu_seconds: Option<f64>,
    /// The server's resident memory before the first connection and after the last step.
    rss_kib: Option<(u64, u64)>,
    steps: Vec<ShootoutStep>,
    /// The most clients whose p95 stayed under the limit.
    max_ok: Option<usize>,
}

/// The server's CPU time and memory, as `run` reports them for the other scenarios.
fn server_usage(opts: &Options, st: &State, m: &Measured) -> ServerUsage {
    let cpu = m.cpu_seconds.unwrap_or(0.0);
    let (before, after) = m.rss_kib.unwrap_or((0, 0));
    ServerUsage {
        pids: opts.server_pids.clone(),
        cpu_seconds: cpu,
        cpu_us_per_delivery: (st.deliveries > 0).then(|| cpu * 1e6 / st.deliveries as f64),
        rss_before_kib: before,
        rss_after_kib: after,
        rss_per_connection_bytes: (m.rss_kib.is_some() && m.connected > 0)
            .then(|| after.saturating_sub(before) as f64 * 1024.0 / m.connected as f64),
        cpu_us_per_connection_second: None,
    }
}

/// The report of a finished shootout. Pure, so the numbers it prints can be checked.
fn report(opts: &Options, st: &State, m: Measured) -> Report {
    let window = m.window.as_secs_f64();
    Report {
        scenario: "shootout".into(),
        url: opts.url.clone(),
        clients: opts.clients,
        threads: 1,
        connect_seconds: m.connecting.as_secs_f64(),
        connects_per_second: m.connected as f64 / m.connecting.as_secs_f64().max(1e-9),
        window_seconds: window,
        sent: m.sent,
        expected_deliveries: st.expected,
        deliveries: st.deliveries,
        deliveries_per_second: st.deliveries as f64 / window.max(1e-9),
        server: (!opts.server_pids.is_empty()).then(|| server_usage(opts, st, &m)),
        shootout_steps: m.steps,
        shootout_max_clients: m.max_ok,
        subscriptions: None,
        ok: st.fault_count == 0,
        fault_count: st.fault_count,
        faults: st.faults.clone(),
        ..Report::default()
    }
}

async fn wait_completion(
    completed: &(flume::Sender<()>, flume::Receiver<()>),
    _state: &Rc<RefCell<State>>,
) {
    future::or(
        async {
            let _ = completed.1.recv_async().await;
        },
        async {
            Timer::new(Duration::from_millis(100)).await;
        },
    )
    .await;
}

/// One client: sends what the driver hands it, reads and accounts everything it gets.
async fn client(
    i: usize,
    mut conn: WsConn,
    outbox: flume::Receiver<Vec<u8>>,
    state: Rc<RefCell<State>>,
    completed: Rc<(flume::Sender<()>, flume::Receiver<()>)>,
) {
    let mut items = Vec::new();
    enum Wake {
        Read(std::io::Result<Option<()>>),
        Send(Option<Vec<u8>>),
    }
    loop {
        let wake = future::or(async { Wake::Read(conn.read(&mut items).await) }, async {
            Wake::Send(outbox.recv_async().await.ok())
        })
        .await;
        match wake {
            Wake::Send(Some(msg)) => {
                if let Err(e) = conn.send_text(&msg).await {
                    state
                        .borrow_mut()
                        .fault(format!("client {i}: send failed: {e}"));
                    return;
                }
            }
            // The driver is finished with this client.
            Wake::Send(None) => break,
            Wake::Read(Ok(Some(()))) => {}
            Wake::Read(Ok(None)) | Wake::Read(Err(_)) => {
                state
                    .borrow_mut()
                    .fault(format!("client {i}: connection lost"));
                return;
            }
        }
        for item in items.drain(..) {
            let Inbound::Message { data, .. } = item else {
                continue;
            };
            let done = match payload::decode_shootout(&data) {
                Some((ShootoutKind::Broadcast, s)) => {
                    state.borrow_mut().arrive(s.seq, "broadcast", i)
                }
                Some((ShootoutKind::Result, s)) if s.sender as usize == i => {
                    state.borrow_mut().arrive(s.seq, "broadcastResult", i)
                }
                _ => {
                    state.borrow_mut().fault(format!(
                        "client {i}: unexpected message of {} bytes",
                        data.len()
                    ));
                    false
                }
            };
            if done {
                let _ = completed.0.send(());
            }
        }
        let _ = conn.flush_control().await;
    }
    conn.close().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{report, Measured, State};
    use crate::options::{Options, Scenario};
    use crate::topics::TopicPlan;
    use crate::ws::Target;

    fn options() -> Options {
        let url = "ws://127.0.0.1:8080/ws";
        Options {
            scenario: Scenario::Shootout,
            targets: vec![Target::parse(url).unwrap()],
            url: url.into(),
            clients: 2000,
            messages: None,
            duration: Duration::from_secs(10),
            in_flight: 1,
            rate: None,
            size: 64,
            threads: 1,
            cpus: Vec::new(),
            server_pids: Vec::new(),
            progress: false,
            step: 1000,
            sample: 2,
            concurrent: 4,
            limit: Duration::from_millis(500),
            topics: TopicPlan {
                topics: 0,
                per_client: 0,
                publishers: 0,
                publish_topics: 0,
            },
            socket_io: false,
            deflate: false,
        }
    }

    #[test]
    fn summary_counts_connects_and_owed_deliveries() {
        let mut st = State::default();
        let mut seq = 0;
        // Two steps of two broadcasts each, every one delivered to all and answered.
        for clients in [1000, 2000] {
            for _ in 0..2 {
                st.send(seq, clients, 0);
                for c in 0..clients {
                    st.arrive(seq, "broadcast", c);
                }
                assert!(st.arrive(seq, "broadcastResult", 0));
                seq += 1;
            }
        }
        let measured = Measured {
            connected: 2000,
            connecting: Duration::from_millis(1600),
            window: Duration::from_secs(4),
            sent: seq,
            cpu_seconds: Some(0.6004),
            rss_kib: Some((1000, 3000)),
            steps: Vec::new(),
            max_ok: Some(2000),
        };
        let opts = Options {
            server_pids: vec![42],
            ..options()
        };
        let summary = report(&opts, &st, measured).summary();
        assert!(summary.contains("  connect: 1.60s (1250/s)"), "{summary}");
        assert!(
            summary.contains("  sent 4, delivered 6004/6004"),
            "{summary}"
        );
        assert!(
            summary.contains(
                "  server: 0.60 CPU-s, 100.00 CPU-µs per delivery, RSS 1000 → 3000 KiB (1024 B per connection)"
            ),
            "{summary}"
        );
        // Its messages are the protocol's JSON, not sized by --size.
        assert!(!summary.contains("B payloads"), "{summary}");
        assert!(summary.contains("  OK:"), "{summary}");
    }
}
