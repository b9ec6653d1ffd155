//! The siege: proof that the server holds under attack and over time. Each attack runs against
//! a fresh `corecast` process while a healthy client measures what an ordinary user sees
//! before, during and after it; the soak runs a mixed load for a long time and samples the
//! server's memory and open files. Not a unit test: it needs the release binary and minutes.
//!
//! | module | what it is |
//! |---|---|
//! | `server` | the binary as a child process, its documented limits, its RSS and fds |
//! | `client` | blocking WebSocket pieces: upgrade, raw frames, how a connection ended |
//! | `healthy` | the healthy client: a message every 10 ms, latency and losses per phase |
//! | `attacks` | the attacks and the answer each attacker must get |
//! | `auth` | the attacks on tokens and the rate limit, their key and tokens, `/metrics` checks |
//! | `topics` | the attack of slow consumers on topics, under each slow-consumer policy |
//! | `soak` | the long mixed run, sampled into CSV and an SVG plot |

pub mod attacks;
pub mod auth;
pub mod client;
pub mod healthy;
pub mod server;
pub mod soak;
pub mod topics;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use attacks::{Attack, Mode, Target};
use auth::Tokens;
use healthy::{Probe, Route};
use server::{Cpus, Extras, Limits, ServerProcess};

/// Phases of one attack run, as the healthy client counts them.
const BASELINE: usize = 0;
const DURING: usize = 1;
const AFTER: usize = 2;

/// What one attack did to the server and to the healthy client.
#[derive(Debug, Clone, Serialize)]
pub struct AttackResult {
    pub attack: String,
    pub what: String,
    pub expected: String,
    pub attackers: usize,
    pub documented: usize,
    pub answers: String,
    pub attack_seconds: f64,
    /// The server's CPU use during the attack, in percent of one core.
    pub server_cpu_percent: f64,
    pub healthy_baseline_p50_us: u64,
    pub healthy_baseline_p99_us: u64,
    pub healthy_baseline_max_us: u64,
    pub healthy_during_p50_us: u64,
    pub healthy_during_p99_us: u64,
    pub healthy_during_max_us: u64,
    pub healthy_sent: u64,
    pub healthy_lost: u64,
    /// Healthy messages that arrived out of order or twice.
    pub healthy_disorder: u64,
    pub healthy_broken: Option<String>,
    pub rss_kib_before: u64,
    /// The most the server held during the ordinary use of the big topic before the baseline
    /// (`Setup::big_topic`): what a burst's fan-out leaves to the allocator varies from run to
    /// run by more than the goal's 10%, so the RSS goal is against the larger of this and
    /// `rss_kib_before`.
    pub rss_kib_in_use: Option<u64>,
    pub rss_kib_peak: u64,
    pub rss_kib_after: u64,
    pub fds_before: usize,
    pub fds_peak: usize,
    pub fds_after: usize,
    /// Seconds from the attack's end until the open files were back to the baseline.
    pub fds_back_after_s: Option<f64>,
    pub server_alive: bool,
    /// Each goal that failed, in words; empty when the attack passed.
    pub failures: Vec<String>,
    /// Goals reported but not counted (`--latency-advisory`).
    pub notes: Vec<String>,
}

impl AttackResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Peak RSS and fds seen by a 50 ms sampler while it runs.
struct Peaks {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<(u64, usize)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peaks {
    fn start(pid: u32) -> Peaks {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new((0, 0)));
        let thread = {
            let (stop, peaks) = (Arc::clone(&stop), Arc::clone(&peaks));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let rss = crate::procstat::rss_kib(&[pid]).unwrap_or(0);
                    let fds = crate::procstat::open_fds(pid).unwrap_or(0);
                    if let Ok(mut p) = peaks.lock() {
                        *p = (p.0.max(rss), p.1.max(fds));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Peaks {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, usize) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peaks.lock().map(|p| *p).unwrap_or((0, 0))
    }
}

/// An attack is repeated until it has lasted this long, so the healthy client has hundreds of
/// samples taken during it.
const MIN_ATTACK: Duration = Duration::from_secs(10);

/// Connections the warm-up opens at once, and closes, before the baseline.
const WARM_UP_CONNECTIONS: usize = 300;

/// Ordinary use before the baseline: `WARM_UP_CONNECTIONS` clients connect together (with
/// `token`, when the server authenticates), each is answered once, and all leave. The
/// allocator then holds what ordinary traffic of that size needs, so the RSS goal measures
/// what an attack leaves behind beyond it.
fn warm_up(server: &ServerProcess, token: Option<&str>) -> anyhow::Result<()> {
    let fds = steady_fds(server);
    let path = client::with_token("/ws", token);
    let mut conns = Vec::with_capacity(WARM_UP_CONNECTIONS);
    for _ in 0..WARM_UP_CONNECTIONS {
        conns.push(client::open(server.addr, &path, Duration::from_secs(5))?);
    }
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.fds() > fds {
        anyhow::ensure!(
            Instant::now() < deadline,
            "warm-up connections still open after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The server's open files at rest: the most of a few samples 10 ms apart. A shard waiting on
/// its readiness set holds one more descriptor than a shard at work (a duplicate of the set's
/// epoll, made for each wait), so one sample taken while the healthy client keeps it busy, or
/// while the shard accepts (the start's readiness probe wakes it), may come out one short, and
/// the open-files goal would then ask for less than the server holds at rest.
fn steady_fds(server: &ServerProcess) -> usize {
    (0..10)
        .map(|_| {
            let n = server.fds();
            std::thread::sleep(Duration::from_millis(10));
            n
        })
        .max()
        .unwrap_or(0)
}

/// Runs one attack against a fresh server and judges it against the goals.
/// The calling thread should already run on `cpus.attackers` (`server::pin_current_thread`).
/// `latency_advisory`: a healthy p99 over 2× its baseline is noted, not failed.
pub fn run_attack(
    binary: &Path,
    attack: &Attack,
    baseline: Duration,
    cpus: &Cpus,
    latency_advisory: bool,
) -> anyhow::Result<AttackResult> {
    let limits = Limits::SIEGE;
    let setup = attack.setup;
    let tokens = setup.auth.then(Tokens::generate).transpose()?.map(Arc::new);
    let mut args = tokens.as_ref().map(|t| t.server_args()).unwrap_or_default();
    if setup.slow_consumers {
        args.extend(topics::SERVER_ARGS.map(String::from));
    }
    let extras = Extras {
        message_rate: setup.message_rate,
        args,
        api: setup.auth || setup.slow_consumers,
    };
    let mut server =
        ServerProcess::start_with(binary, setup.mode.name(), &limits, &cpus.server, &extras)?;
    let token = tokens.as_ref().map(|t| t.healthy.as_str());
    warm_up(&server, token)?;
    let mut target = Target {
        addr: server.addr,
        limits,
        message_rate: setup.message_rate,
        tokens: tokens.clone(),
        api: server.api,
        big_topic: None,
    };
    let mut rss_kib_in_use = None;
    if setup.big_topic {
        let peaks = Peaks::start(server.pid());
        let big = auth::BigTopic::open(&target).context("subscribing to the big topic")?;
        rss_kib_in_use = Some(peaks.finish().0);
        target.big_topic = Some(Arc::new(big));
    }
    let route = match setup.mode {
        Mode::Echo => Route::Echo,
        Mode::Relay => Route::Relay,
        Mode::Pubsub => Route::Publish {
            topic: auth::HEALTHY_TOPIC.into(),
            receivers: 1,
            size: 64,
        },
    };
    let probe = Probe::start(server.addr, route, token, healthy::PERIOD, 3, &cpus.server)?;
    std::thread::sleep(baseline);
    let (rss_before, fds_before) = (server.rss_kib(), steady_fds(&server));

    probe.set_phase(DURING);
    let peaks = Peaks::start(server.pid());
    let started = Instant::now();
    let cpu_before = server.cpu_seconds();
    let mut seen = attacks::Seen::default();
    while started.elapsed() < MIN_ATTACK {
        seen.merge((attack.run)(&target));
    }
    let attack_seconds = started.elapsed().as_secs_f64();
    let server_cpu_percent = 100.0 * (server.cpu_seconds() - cpu_before) / attack_seconds;

    probe.set_phase(AFTER);
    let ended = Instant::now();
    let bound = limits.teardown_bound() + Duration::from_secs(5);
    let mut fds_back_after_s = None;
    while ended.elapsed() < bound {
        if server.fds() <= fds_before {
            fds_back_after_s = Some(ended.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A moment for freed memory to show, with the healthy client still going.
    std::thread::sleep(Duration::from_secs(1));
    let (rss_after, fds_after) = (server.rss_kib(), server.fds());
    let (rss_peak, fds_peak) = peaks.finish();
    let (phases, broken, disorder) = probe.finish(Duration::from_secs(3));
    if let Some(big) = &target.big_topic {
        seen.merge(big.finish());
    }
    let server_alive = server.alive();

    let q = |phase: usize, quantile: f64| phases[phase].latency_us.value_at_quantile(quantile);
    let lost: u64 = phases.iter().map(|p| p.lost()).sum();
    let mut result = AttackResult {
        attack: attack.name.into(),
        what: attack.what.into(),
        expected: attack.expected.into(),
        attackers: seen.attackers,
        documented: seen.documented,
        answers: seen.summary(),
        attack_seconds,
        server_cpu_percent,
        healthy_baseline_p50_us: q(BASELINE, 0.5),
        healthy_baseline_p99_us: q(BASELINE, 0.99),
        healthy_baseline_max_us: phases[BASELINE].latency_us.max(),
        healthy_during_p50_us: q(DURING, 0.5),
        healthy_during_p99_us: q(DURING, 0.99),
        healthy_during_max_us: phases[DURING].latency_us.max(),
        healthy_sent: phases.iter().map(|p| p.sent).sum(),
        healthy_lost: lost,
        healthy_disorder: disorder,
        healthy_broken: broken,
        rss_kib_before: rss_before,
        rss_kib_in_use,
        rss_kib_peak: rss_peak,
        rss_kib_after: rss_after,
        fds_before,
        fds_peak,
        fds_after,
        fds_back_after_s,
        server_alive,
        failures: Vec::new(),
        notes: Vec::new(),
    };
    result.failures = judge(&result);
    // Goals beyond each attacker's answer, once each however often the attack repeated.
    for why in seen.failures {
        if !result.failures.contains(&why) {
            result.failures.push(why);
        }
    }
    if latency_advisory {
        let (slow, rest): (Vec<_>, Vec<_>) = result
            .failures
            .drain(..)
            .partition(|f| f.starts_with(LATENCY_GOAL));
        result.failures = rest;
        result.notes = slow;
    }
    Ok(result)
}

/// A result's last cell: "pass", "pass (not counted: …)" or "**fail**: …".
pub fn verdict(failures: &[String], notes: &[String]) -> String {
    match (failures.is_empty(), notes.is_empty()) {
        (true, true) => "pass".to_string(),
        (true, false) => format!("pass (not counted: {})", notes.join("; ")),
        (false, _) => format!("**fail**: {}", failures.join("; ")),
    }
}

/// How the latency goal's failure begins (so `--latency-advisory` can set it aside).
const LATENCY_GOAL: &str = "healthy p99";

/// The goals, each failure in words.
fn judge(r: &AttackResult) -> Vec<String> {
    let mut failures = Vec::new();
    if !r.server_alive {
        failures.push("the server died".into());
    }
    if r.documented != r.attackers {
        failures.push(format!(
            "{} of {} attackers got another answer",
            r.attackers - r.documented,
            r.attackers
        ));
    }
    if let Some(why) = &r.healthy_broken {
        failures.push(format!("the healthy connection broke: {why}"));
    }
    if r.healthy_lost > 0 {
        failures.push(format!(
            "the healthy client lost {} messages",
            r.healthy_lost
        ));
    }
    if r.healthy_disorder > 0 {
        failures.push(format!(
            "{} healthy messages out of order or twice",
            r.healthy_disorder
        ));
    }
    if r.healthy_during_p99_us > 2 * r.healthy_baseline_p99_us {
        failures.push(format!(
            "{LATENCY_GOAL} {} µs during against {} µs before (over 2×)",
            r.healthy_during_p99_us, r.healthy_baseline_p99_us
        ));
    }
    let rss_in_use = r.rss_kib_in_use.unwrap_or(0);
    if r.rss_kib_after * 10 > r.rss_kib_before.max(rss_in_use) * 11 {
        let against = if rss_in_use > r.rss_kib_before {
            "at most in ordinary use"
        } else {
            "before"
        };
        failures.push(format!(
            "RSS {} KiB after against {} KiB {against} (over +10%)",
            r.rss_kib_after,
            r.rss_kib_before.max(rss_in_use)
        ));
    }
    if r.fds_back_after_s.is_none() {
        failures.push(format!(
            "open files {} after against {} before",
            r.fds_after, r.fds_before
        ));
    }
    failures
}

/// The results as a Markdown table.
pub fn markdown(results: &[AttackResult], limits: &Limits, cpus: &Cpus) -> String {
    let mut out =
        String::from("### Attacks: what a healthy client saw, and what each attacker got\n\n");
    out.push_str(&format!(
        "Server: `corecast` (release) on CPUs {:?} with handshake timeout {:?}, ping interval {:?}, \
         read idle timeout {:?}, write timeout {:?}, max message size {} B; attackers on CPUs \
         {:?}. Each attack runs against a fresh server after a warm-up of {WARM_UP_CONNECTIONS} \
         ordinary connections. Healthy client (on the server's CPUs): one message every 10 ms, \
         latency in µs (p50 / p99 / max), before the attack and during it.\n\n",
        cpus.server,
        limits.handshake_timeout,
        limits.ping_interval,
        limits.read_idle_timeout,
        limits.write_timeout,
        limits.max_message_size,
        cpus.attackers
    ));
    out.push_str("| attack | attackers: answer | healthy before | healthy during | lost | server CPU during | RSS KiB before / peak / after | fds before / peak / after | fds back after | result |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in results {
        let back = r
            .fds_back_after_s
            .map_or("never".into(), |s| format!("{s:.1} s"));
        let verdict = verdict(&r.failures, &r.notes);
        // The big topic's ordinary use, where the RSS goal counts it (see `rss_kib_in_use`).
        let rss_before = match r.rss_kib_in_use {
            Some(in_use) => format!("{} (in use {in_use})", r.rss_kib_before),
            None => r.rss_kib_before.to_string(),
        };
        out.push_str(&format!(
            "| {} | {}: {} | {} / {} / {} | {} / {} / {} | {} | {:.0}% | {} / {} / {} | {} / {} / {} | {} | {} |\n",
            r.attack,
            r.attackers,
            r.answers,
            r.healthy_baseline_p50_us,
            r.healthy_baseline_p99_us,
            r.healthy_baseline_max_us,
            r.healthy_during_p50_us,
            r.healthy_during_p99_us,
            r.healthy_during_max_us,
            r.healthy_lost,
            r.server_cpu_percent,
            rss_before,
            r.rss_kib_peak,
            r.rss_kib_after,
            r.fds_before,
            r.fds_peak,
            r.fds_after,
            back,
            verdict
        ));
    }
    out.push_str("\n| attack | what it does | documented answer |\n|---|---|---|\n");
    for r in results {
        out.push_str(&format!("| {} | {} | {} |\n", r.attack, r.what, r.expected));
    }
    out
}
