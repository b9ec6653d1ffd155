//! The soak: a long mixed run against one server — idle connections, connection churn, a
//! topic publisher with subscribers who check every delivery, and slow consumers who never
//! read — sampling the server's memory, open files and CPU and the subscribers' latency into
//! a CSV and an SVG plot, then judging whether anything grew or was lost. Not an attack: the
//! load is what a busy production server sees all day.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use corecast::units::parse_duration;
use corecast::ws::frame::Inbound;
use plotters::prelude::*;
use serde::Serialize;

use super::client::{self, Conn, Ending};
use super::healthy::{Probe, Route};
use super::server::{Cpus, Limits, ServerProcess};

/// What the soak runs (also its command-line flags).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SoakOptions {
    /// How long to run.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// How often the server is sampled.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub sample: Duration,
    /// Connections held open all along, answering pings and nothing else.
    #[arg(long, default_value_t = 1000)]
    pub idle: usize,
    /// Subscribers of the feed topic who check every delivery.
    #[arg(long, default_value_t = 20)]
    pub subscribers: usize,
    /// Publishes per second to the feed topic.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Bytes per published message.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Connect/subscribe/close cycles per second.
    #[arg(long, default_value_t = 20)]
    pub churn_rate: u32,
    /// Subscribers with a 4 KiB window who never read, each replaced when torn down.
    #[arg(long, default_value_t = 5)]
    pub slow: usize,
    /// Report whether the p99 stayed stable but do not fail on it (for shared, noisy
    /// machines); every other goal still counts.
    #[arg(long)]
    pub latency_advisory: bool,
}

impl SoakOptions {
    /// Refuses options that cannot make a run.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.sample >= Duration::from_secs(1),
            "--sample must be at least 1s"
        );
        anyhow::ensure!(
            self.duration >= self.sample * 3,
            "--duration must be at least three samples"
        );
        anyhow::ensure!(
            self.subscribers > 0 && self.rate > 0,
            "--subscribers and --rate must be above zero"
        );
        Ok(())
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The topic the soak publishes to.
const TOPIC: &str = "feed";

/// When a slow consumer looks whether it was torn down: by then the feed (51 KB/s by
/// default) has filled the server's socket buffer for it (about 1.3 MB on loopback), then
/// its queue, and `write_timeout` (10 s) has passed.
const SLOW_PATIENCE: Duration = Duration::from_secs(60);

/// One sample of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub cpu_percent: f64,
    pub published: u64,
    pub delivered: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub idle_open: u64,
    pub churn_cycles: u64,
    pub slow_torn_down: u64,
}

/// The run's samples and verdict.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub options: SoakOptions,
    pub duration_s: f64,
    pub published: u64,
    pub delivered: u64,
    pub lost: u64,
    pub disorder: u64,
    pub idle_dropped: u64,
    pub idle_unexpected: u64,
    pub churn_cycles: u64,
    pub churn_failures: u64,
    pub slow_torn_down: u64,
    pub slow_overdue: u64,
    #[serde(flatten)]
    pub judgement: Judgement,
    pub samples: Vec<Sample>,
}

/// What `judge` found: the trends it measured and each goal missed, in words.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Judgement {
    /// Growth over the run after warm-up, from a least-squares line through the samples.
    pub rss_trend_kib: f64,
    pub fds_trend: f64,
    pub p99_early_us: u64,
    pub p99_late_us: u64,
    pub failures: Vec<String>,
    /// Goals reported but not counted (`--latency-advisory`).
    pub notes: Vec<String>,
}

/// Counters the load threads share with the sampler.
#[derive(Default)]
struct Counters {
    stop: AtomicBool,
    idle_open: AtomicU64,
    idle_dropped: AtomicU64,
    idle_unexpected: AtomicU64,
    churn_cycles: AtomicU64,
    churn_failures: AtomicU64,
    slow_torn_down: AtomicU64,
    slow_overdue: AtomicU64,
}

impl Counters {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Runs the soak against a fresh `binary --mode pubsub` with the server's default limits, but
/// no inbound rate limit (see `ServerProcess::start`).
/// The calling thread should already run on `cpus.attackers`; `progress` gets one line per
/// sample.
pub fn run(
    binary: &Path,
    opts: &SoakOptions,
    cpus: &Cpus,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SoakReport> {
    opts.check()?;
    let limits = Limits::DEFAULTS;
    let mut server = ServerProcess::start(binary, "pubsub", &limits, &cpus.server)?;
    let addr = server.addr;
    let counters = Arc::new(Counters::default());
    let windows = (opts.duration.as_secs_f64() / opts.sample.as_secs_f64()).ceil() as usize + 1;
    let route = Route::Publish {
        topic: TOPIC.into(),
        receivers: opts.subscribers,
        size: opts.size,
    };
    let period = Duration::from_secs(1) / opts.rate.max(1);
    let probe = Probe::start(addr, route, None, period, windows + 1, &cpus.server)?;

    let mut load = Vec::new();
    {
        let (c, n) = (Arc::clone(&counters), opts.idle);
        load.push(thread::spawn(move || idle(addr, n, &c)));
    }
    {
        let (c, rate) = (Arc::clone(&counters), opts.churn_rate);
        load.push(thread::spawn(move || churn(addr, rate, &c)));
    }
    {
        let (c, n) = (Arc::clone(&counters), opts.slow);
        load.push(thread::spawn(move || slow(addr, n, &c)));
    }

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut cpu_then = (start, server.cpu_seconds());
    for window in 0..windows.saturating_sub(1) {
        let due = opts.sample * (window as u32 + 1);
        thread::sleep(due.saturating_sub(start.elapsed()));
        probe.set_phase(window + 1);
        let now = (Instant::now(), server.cpu_seconds());
        let cpu_percent = 100.0 * (now.1 - cpu_then.1) / (now.0 - cpu_then.0).as_secs_f64();
        cpu_then = now;
        let stats = probe.snapshot();
        let w = &stats[window];
        let sample = Sample {
            t_s: start.elapsed().as_secs_f64(),
            rss_kib: server.rss_kib(),
            fds: server.fds(),
            cpu_percent,
            published: stats.iter().map(|p| p.sent).sum(),
            delivered: stats.iter().map(|p| p.received).sum(),
            p50_us: w.latency_us.value_at_quantile(0.5),
            p99_us: w.latency_us.value_at_quantile(0.99),
            idle_open: Counters::get(&counters.idle_open),
            churn_cycles: Counters::get(&counters.churn_cycles),
            slow_torn_down: Counters::get(&counters.slow_torn_down),
        };
        progress(&format!(
            "{:>6.0} s  rss {:>7} KiB  fds {:>5}  cpu {:>3.0}%  delivered {:>9}  p99 {:>6} µs  idle {}  churn {}  slow torn down {}",
            sample.t_s,
            sample.rss_kib,
            sample.fds,
            sample.cpu_percent,
            sample.delivered,
            sample.p99_us,
            sample.idle_open,
            sample.churn_cycles,
            sample.slow_torn_down
        ));
        samples.push(sample);
        if !server.alive() {
            break;
        }
        if probe.broken().is_some() {
            break;
        }
    }
    counters.stop.store(true, Ordering::Release);
    for t in load {
        let _ = t.join();
    }
    let (phases, broken, disorder) = probe.finish(Duration::from_secs(5));
    let alive = server.alive();

    let lost = phases.iter().map(|p| p.lost()).sum();
    let mut report = SoakReport {
        options: opts.clone(),
        duration_s: start.elapsed().as_secs_f64(),
        published: phases.iter().map(|p| p.sent).sum(),
        delivered: phases.iter().map(|p| p.received).sum(),
        lost,
        disorder,
        idle_dropped: Counters::get(&counters.idle_dropped),
        idle_unexpected: Counters::get(&counters.idle_unexpected),
        churn_cycles: Counters::get(&counters.churn_cycles),
        churn_failures: Counters::get(&counters.churn_failures),
        slow_torn_down: Counters::get(&counters.slow_torn_down),
        slow_overdue: Counters::get(&counters.slow_overdue),
        judgement: Judgement::default(),
        samples,
    };
    report.judgement = judge(&report, alive, broken);
    Ok(report)
}

/// Growth of `values` over their span: the slope of the least-squares line times the span.
pub fn trend(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if var == 0.0 {
        return 0.0;
    }
    let span = points.last().map_or(0.0, |p| p.0) - points.first().map_or(0.0, |p| p.0);
    cov / var * span
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The pass rules: nothing lost or reordered, every idle client kept, every churn cycle and
/// slow consumer answered as documented; after a warm-up of the first fifth, RSS grows less
/// than max(5%, 1 MiB) and open files less than max(2%, 10) over the run, and the median
/// per-sample p99 of the last third is at most 2× that of the first third (+0.5 ms).
fn judge(r: &SoakReport, alive: bool, broken: Option<String>) -> Judgement {
    let mut j = Judgement::default();
    let f = &mut j.failures;
    if !alive {
        f.push("the server died".into());
    }
    if let Some(why) = broken {
        f.push(format!(
            "a subscriber's or the publisher's connection broke: {why}"
        ));
    }
    if r.lost > 0 {
        f.push(format!("{} deliveries lost", r.lost));
    }
    if r.disorder > 0 {
        f.push(format!("{} deliveries out of order or twice", r.disorder));
    }
    if r.idle_dropped > 0 || r.idle_unexpected > 0 {
        f.push(format!(
            "idle clients: {} dropped, {} got something other than pings",
            r.idle_dropped, r.idle_unexpected
        ));
    }
    if r.churn_failures > 0 {
        f.push(format!(
            "{} of {} churn cycles failed",
            r.churn_failures, r.churn_cycles
        ));
    }
    if r.slow_overdue > 0 {
        f.push(format!(
            "{} slow consumers still served after {SLOW_PATIENCE:?}",
            r.slow_overdue
        ));
    }
    let settled: Vec<&Sample> = r.samples.iter().skip(r.samples.len() / 5).collect();
    let rss: Vec<(f64, f64)> = settled.iter().map(|s| (s.t_s, s.rss_kib as f64)).collect();
    let fds: Vec<(f64, f64)> = settled.iter().map(|s| (s.t_s, s.fds as f64)).collect();
    j.rss_trend_kib = trend(&rss);
    j.fds_trend = trend(&fds);
    let mean = |v: &[(f64, f64)]| v.iter().map(|p| p.1).sum::<f64>() / v.len().max(1) as f64;
    if j.rss_trend_kib > (mean(&rss) * 0.05).max(1024.0) {
        let why = format!("RSS grew {:.0} KiB after warm-up", j.rss_trend_kib);
        j.failures.push(why);
    }
    if j.fds_trend > (mean(&fds) * 0.02).max(10.0) {
        let why = format!("open files grew {:.0} after warm-up", j.fds_trend);
        j.failures.push(why);
    }
    let third = settled.len() / 3;
    if third > 0 {
        let p99s = |part: &[&Sample]| median(part.iter().map(|s| s.p99_us).collect());
        j.p99_early_us = p99s(&settled[..third]);
        j.p99_late_us = p99s(&settled[settled.len() - third..]);
        if j.p99_late_us > 2 * j.p99_early_us + 500 {
            let why = format!(
                "p99 rose from {} µs to {} µs over the run",
                j.p99_early_us, j.p99_late_us
            );
            if r.options.latency_advisory {
                j.notes.push(why);
            } else {
                j.failures.push(why);
            }
        }
    }
    j
}

/// Idle clients: open `n`, then answer pings until the end; anything else is counted.
fn idle(addr: SocketAddr, n: usize, c: &Counters) {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        match client::open(addr, "/ws", Duration::from_secs(5)) {
            Ok(conn) if conn.stream.set_nonblocking(true).is_ok() => conns.push(conn),
            _ => {
                c.idle_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    c.idle_open.store(conns.len() as u64, Ordering::Relaxed);
    while !c.stop.load(Ordering::Acquire) {
        conns.retain_mut(|conn| loop {
            match conn.next_item() {
                Ok(Some(Inbound::Ping(_))) => {}
                Ok(Some(_)) => {
                    c.idle_unexpected.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Ok(None) | Err(_) => {
                    c.idle_dropped.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
        });
        c.idle_open.store(conns.len() as u64, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(100));
    }
}

/// Connect, subscribe, close, `rate` times a second.
fn churn(addr: SocketAddr, rate: u32, c: &Counters) {
    let close = client::frame(0x8, &1000u16.to_be_bytes());
    let every = Duration::from_secs(1) / rate.max(1);
    let mut next = Instant::now();
    while !c.stop.load(Ordering::Acquire) {
        let ok = (|| {
            let mut conn =
                client::open(addr, &format!("/ws?topics={TOPIC}"), Duration::from_secs(5)).ok()?;
            match conn.next_message().ok()?? {
                Inbound::Message { data, .. } if data.starts_with(b"{\"subscribed\"") => {}
                _ => return None,
            }
            conn.stream.write_all(&close).ok()?;
            (conn.ending(Duration::from_secs(5)) == Ending::Close(1000)).then_some(())
        })()
        .is_some();
        c.churn_cycles.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.churn_failures.fetch_add(1, Ordering::Relaxed);
        }
        next += every;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// `n` subscribers that never read but send an unsolicited pong every second (so only their
/// stalled writes, not idleness, can end them). After `SLOW_PATIENCE` each one reads what
/// is left: the server must have torn it down by then. Each is then replaced.
fn slow(addr: SocketAddr, n: usize, c: &Counters) {
    let pong = client::frame(0xA, b"");
    let open = || {
        client::connect_small_window(addr, 4096, Duration::from_secs(5))
            .and_then(|s| client::upgrade(s, &format!("/ws?topics={TOPIC}")))
            .ok()
            .map(|conn| (conn, Instant::now()))
    };
    let mut conns: Vec<(Conn, Instant)> = (0..n).filter_map(|_| open()).collect();
    while !c.stop.load(Ordering::Acquire) {
        conns.retain_mut(|(conn, opened)| {
            if opened.elapsed() < SLOW_PATIENCE {
                let _ = conn.stream.write_all(&pong);
                return true;
            }
            let counter = if conn.ending(Duration::from_secs(5)) == Ending::Open {
                &c.slow_overdue
            } else {
                &c.slow_torn_down
            };
            counter.fetch_add(1, Ordering::Relaxed);
            false
        });
        while conns.len() < n {
            match open() {
                Some(conn) => conns.push(conn),
                None => break,
            }
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// The samples as CSV.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "t_s,rss_kib,fds,cpu_percent,published,delivered,p50_us,p99_us,idle_open,churn_cycles,slow_torn_down\n",
    );
    for s in samples {
        out.push_str(&format!(
            "{:.1},{},{},{:.1},{},{},{},{},{},{},{}\n",
            s.t_s,
            s.rss_kib,
            s.fds,
            s.cpu_percent,
            s.published,
            s.delivered,
            s.p50_us,
            s.p99_us,
            s.idle_open,
            s.churn_cycles,
            s.slow_torn_down
        ));
    }
    out
}

/// RSS, open files and subscriber p99 over time, one panel each.
pub fn plot(samples: &[Sample], path: &Path, title: &str) -> anyhow::Result<()> {
    type Series = (&'static str, fn(&Sample) -> f64);
    let panels: [Series; 3] = [
        ("server RSS (MiB)", |s| s.rss_kib as f64 / 1024.0),
        ("server open files", |s| s.fds as f64),
        ("subscriber p99 (ms)", |s| s.p99_us as f64 / 1000.0),
    ];
    let root = SVGBackend::new(path, (800, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let end = samples.last().map_or(1.0, |s| s.t_s / 60.0).max(0.1);
    for (area, (label, value)) in root.split_evenly((3, 1)).iter().zip(panels) {
        let top = samples.iter().map(value).fold(0.0, f64::max).max(1e-3) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc(label)
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s / 60.0, value(s))),
            RGBColor(214, 80, 40).stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The report as a Markdown summary.
pub fn markdown(r: &SoakReport) -> String {
    let j = &r.judgement;
    let verdict = super::verdict(&j.failures, &j.notes);
    let first = r.samples.get(r.samples.len() / 5);
    let last = r.samples.last();
    let span = |f: fn(&Sample) -> String| match (first, last) {
        (Some(a), Some(b)) => format!("{} → {}", f(a), f(b)),
        _ => "-".into(),
    };
    format!(
        "### Soak: {:.0} minutes of mixed load\n\n\
         {} idle connections answering pings; {} subscribers of one topic checking every \
         delivery; {} publishes/s of {} B; {} connect/subscribe/close cycles/s; {} subscribers with a \
         4 KiB window who never read, each replaced when the server tears it down. Server \
         (`--mode pubsub`, default limits) sampled every {:.0} s.\n\n\
         | figure | value |\n|---|---|\n\
         | published / delivered | {} / {} |\n\
         | lost / out of order | {} / {} |\n\
         | idle clients dropped | {} |\n\
         | churn cycles (failed) | {} ({}) |\n\
         | slow consumers torn down (overdue) | {} ({}) |\n\
         | RSS KiB after warm-up → end | {} (trend {:+.0} KiB) |\n\
         | open files after warm-up → end | {} (trend {:+.0}) |\n\
         | subscriber p99, first third → last third | {} µs → {} µs |\n\
         | result | {} |\n",
        r.duration_s / 60.0,
        r.options.idle,
        r.options.subscribers,
        r.options.rate,
        r.options.size,
        r.options.churn_rate,
        r.options.slow,
        r.samples.first().map_or(0.0, |s| s.t_s),
        r.published,
        r.delivered,
        r.lost,
        r.disorder,
        r.idle_dropped,
        r.churn_cycles,
        r.churn_failures,
        r.slow_torn_down,
        r.slow_overdue,
        span(|s| s.rss_kib.to_string()),
        j.rss_trend_kib,
        span(|s| s.fds.to_string()),
        j.fds_trend,
        j.p99_early_us,
        j.p99_late_us,
        verdict
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trend_is_growth_over_the_span() {
        let flat: Vec<_> = (0..10).map(|t| (t as f64, 5.0)).collect();
        assert_eq!(trend(&flat), 0.0);
        let rising: Vec<_> = (0..=10).map(|t| (t as f64, 2.0 * t as f64 + 1.0)).collect();
        assert!((trend(&rising) - 20.0).abs() < 1e-9);
        let noisy = [(0.0, 10.0), (1.0, 12.0), (2.0, 10.0), (3.0, 12.0)];
        assert!(trend(&noisy).abs() < 2.0);
        assert_eq!(trend(&[(1.0, 1.0)]), 0.0);
    }

    #[test]
    fn the_judge_names_each_failure() {
        let sample = |t: f64, rss: u64, p99: u64| Sample {
            t_s: t,
            rss_kib: rss,
            fds: 50,
            cpu_percent: 0.0,
            published: 0,
            delivered: 0,
            p50_us: 0,
            p99_us: p99,
            idle_open: 0,
            churn_cycles: 0,
            slow_torn_down: 0,
        };
        let mut r = SoakReport {
            options: SoakOptions {
                duration: Duration::from_secs(100),
                sample: Duration::from_secs(5),
                idle: 0,
                subscribers: 1,
                rate: 1,
                size: 64,
                churn_rate: 1,
                slow: 0,
                latency_advisory: false,
            },
            duration_s: 100.0,
            published: 10,
            delivered: 10,
            lost: 0,
            disorder: 0,
            idle_dropped: 0,
            idle_unexpected: 0,
            churn_cycles: 5,
            churn_failures: 0,
            slow_torn_down: 0,
            slow_overdue: 0,
            judgement: Judgement::default(),
            samples: (0..20).map(|t| sample(t as f64, 10_000, 300)).collect(),
        };
        let flat = judge(&r, true, None);
        assert!(flat.failures.is_empty(), "{:?}", flat.failures);

        // Memory climbing 1 MiB a sample, latency ten times higher in the second half, one loss.
        r.samples = (0..20)
            .map(|t| sample(t as f64, 10_000 + 1024 * t, if t < 10 { 300 } else { 3000 }))
            .collect();
        r.lost = 1;
        let j = judge(&r, true, None);
        let all = j.failures.join("; ");
        assert!(all.contains("1 deliveries lost"), "{all}");
        assert!(all.contains("RSS grew"), "{all}");
        assert!(all.contains("p99 rose"), "{all}");
        assert_eq!(j.failures.len(), 3, "{all}");

        // Advisory latency: reported, not counted.
        r.options.latency_advisory = true;
        let j = judge(&r, true, None);
        assert_eq!(j.failures.len(), 2, "{:?}", j.failures);
        assert!(
            j.notes.iter().any(|n| n.contains("p99 rose")),
            "{:?}",
            j.notes
        );
    }
}
