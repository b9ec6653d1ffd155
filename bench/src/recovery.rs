//! The recovery benchmark: `corecast-load recovery`'s reconnect storm against corecast
//! (`--mode pubsub --history`) and Socket.IO with connection-state recovery, side by side and
//! in turns, two ways of reconnecting; writes `<date>-recovery.json`, `.md` and `.svg`. Not the
//! storm itself (`corecast_load::recovery`) nor the other scenarios' tables (`output`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use corecast_load::recovery::{self, Protocol, RecoveryOptions, RecoveryReport};
use corecast_load::ws::Target;
use serde::Serialize;

use crate::output;
use crate::peers::{self, Peer};

/// The scenario's id: `--only recovery`, and its files' names.
pub const ID: &str = "recovery";

/// How long each server keeps what a client may come back for: corecast's history TTL and
/// Socket.IO's `maxDisconnectionDuration` (its default) are the same two minutes.
const KEEP: &str = "rec.*=10000/120s";

/// How the dropped clients come back.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Storm {
    pub name: &'static str,
    pub reconnect_delay_ms: u64,
    pub jitter_ms: u64,
    /// Not-recovered answers are counted (and what they lose), not failures.
    pub stale_ok: bool,
}

/// The two storms: every client straight back, and back after socket.io-client's default
/// reconnection delay (1 s, randomised by ±50%).
pub const STORMS: [Storm; 2] = [
    Storm {
        name: "at once",
        reconnect_delay_ms: 0,
        jitter_ms: 0,
        stale_ok: true,
    },
    Storm {
        name: "after 0.5-1.5 s",
        reconnect_delay_ms: 500,
        jitter_ms: 1000,
        stale_ok: false,
    },
];

/// The run's size, quick or full.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Params {
    pub clients: usize,
    pub topics: usize,
    /// Publications a second over all topics.
    pub rate: f64,
    pub storm_at_s: u64,
    pub after_s: u64,
    /// Each (storm, server) runs this many times, taking turns.
    pub rounds: usize,
}

/// Quick: 1,000 clients on 10 topics, so each publication reaches 100 and the stream is 20,000
/// deliveries a second, which both servers carry on one core; full: twice the clients on
/// twice the topics, the same stream, longer.
pub fn params(full: bool) -> Params {
    if full {
        Params {
            clients: 2000,
            topics: 20,
            rate: 200.0,
            storm_at_s: 10,
            after_s: 10,
            rounds: 3,
        }
    } else {
        Params {
            clients: 1000,
            topics: 10,
            rate: 200.0,
            storm_at_s: 5,
            after_s: 5,
            rounds: 2,
        }
    }
}

/// One storm against one server.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub server: String,
    pub storm: String,
    pub round: usize,
    /// The 1-minute load average before the run: the machine is shared.
    pub load_average: Option<f64>,
    pub report: Option<RecoveryReport>,
    pub error: Option<String>,
}

/// Everything written for the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryResult {
    pub id: String,
    pub title: String,
    pub machine: serde_json::Value,
    pub parameters: serde_json::Value,
    pub note: String,
    pub outcomes: Vec<Outcome>,
}

fn title(p: &Params) -> String {
    format!(
        "Reconnect storm: {} subscribers of {} topics with history drop their connections and recover, {} publications/s",
        corecast_load::report::thousands(p.clients as f64),
        p.topics,
        p.rate
    )
}

const NOTE: &str = "corecast: `--mode pubsub --history 'rec.*=10000/120s'`, clients subscribing \
with `\"positions\":true` and coming back with `\"since\"`. Socket.IO 4.8 \
(`bench/peers/socketio-recovery-server.js`): `connectionStateRecovery` (two minutes, its default) \
with the in-memory adapter, one node, rooms as topics; a client comes back with its session id \
and last offset. One node on purpose: Socket.IO's Redis pub/sub adapter (the `cluster-broadcast` \
peer) keeps neither sessions nor packets, so its clients cannot recover at all. At the storm every \
client closes its TCP connection without a close frame. `at once`: each reconnects immediately; a \
not-recovered answer is counted with what it lost, and everything else is checked exactly. \
`after 0.5-1.5 s`: each waits 500 ms plus its share of 1 s (socket.io-client's default \
reconnection delay), and a not-recovered answer fails the run. Reconnect → recovered: from the \
client's connect until it has the answer and every publication it missed. Server CPU per \
reconnect: the server's CPU from the drop until every client is back, less what that window's \
live deliveries cost at the CPU per delivery before the storm, over the clients that dropped \
(the handshake, the subscription and the recovery, recovered publications included). Live p99: publish to receipt of the live stream (recovered publications not \
included). Load average: the machine's, read before each run (others' work shared it).";

/// Where and how the harness runs: what every scenario shares.
pub struct Setting<'a> {
    pub root: &'a Path,
    pub out: &'a Path,
    pub date: &'a str,
    pub machine: &'a serde_json::Value,
    pub server_cpus: &'a [usize],
    pub load_cpus: &'a [usize],
    pub full: bool,
    /// When the harness started, for the progress lines.
    pub started: Instant,
}

/// Runs every storm against corecast and Socket.IO, writes the files, returns the Markdown.
pub fn run(s: &Setting) -> anyhow::Result<String> {
    let Setting {
        root,
        out,
        date,
        machine,
        server_cpus,
        load_cpus,
        full,
        started,
    } = *s;
    let p = params(full);
    let mut outcomes = Vec::new();
    for round in 1..=p.rounds {
        for storm in STORMS {
            for peer in [Peer::Corecast, Peer::SocketIoRecovery] {
                eprintln!(
                    "[{:>5.0}s] {ID} / {} / {} ({round})",
                    started.elapsed().as_secs_f64(),
                    peer.name(),
                    storm.name
                );
                let load_average = load_average();
                let outcome = match one(root, peer, storm, &p, server_cpus, load_cpus) {
                    Ok(r) => {
                        eprintln!(
                            "         {} of {} recovered, every client back after {} {}",
                            r.recovered,
                            r.dropped,
                            r.all_recovered_seconds
                                .map_or("–".into(), |s| format!("{s:.3}s")),
                            if r.ok { "" } else { "(FAULTS)" }
                        );
                        Outcome {
                            server: peer.name().into(),
                            storm: storm.name.into(),
                            round,
                            load_average,
                            report: Some(r),
                            error: None,
                        }
                    }
                    Err(e) => Outcome {
                        server: peer.name().into(),
                        storm: storm.name.into(),
                        round,
                        load_average,
                        report: None,
                        error: Some(format!("{e:#}")),
                    },
                };
                outcomes.push(outcome);
                // Let the kernel finish tearing down the last run's sockets.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let res = RecoveryResult {
        id: ID.into(),
        title: title(&p),
        machine: machine.clone(),
        parameters: serde_json::json!({
            "mode": if full { "full" } else { "quick" },
            "params": p,
            "storms": STORMS,
            "corecast_history": KEEP,
            "payload_bytes": 64,
            "server_cpus": server_cpus,
            "load_cpus": load_cpus,
        }),
        note: NOTE.into(),
        outcomes,
    };
    let base = out.join(format!("{date}-{ID}"));
    let md = markdown(&res);
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&res)? + "\n",
    )
    .context("writing the recovery JSON")?;
    std::fs::write(base.with_extension("md"), &md).context("writing the recovery table")?;
    if let Err(e) = chart(&res, &base.with_extension("svg")) {
        eprintln!("corecast-bench: chart for {ID}: {e:#}");
    }
    Ok(md)
}

/// One storm against one server, started for it and stopped after.
fn one(
    root: &Path,
    peer: Peer,
    storm: Storm,
    p: &Params,
    server_cpus: &[usize],
    load_cpus: &[usize],
) -> anyhow::Result<RecoveryReport> {
    let extra: Vec<String> = if peer == Peer::Corecast {
        let ping = peers::HARNESS_PING.iter().map(|f| f.to_string());
        ping.chain(["--history".into(), KEEP.into()]).collect()
    } else {
        Vec::new()
    };
    let server = peers::start(peer, root, "pubsub", false, None, server_cpus, &extra)?;
    let url = format!("ws://{}{}", server.addrs[0], peer.path());
    let target = Target::parse(&url).map_err(anyhow::Error::msg)?;
    let protocol = if peer == Peer::Corecast {
        Protocol::Corecast
    } else {
        Protocol::SocketIo
    };
    let opts = RecoveryOptions {
        clients: p.clients,
        topics: p.topics,
        rate: p.rate,
        size: 64,
        storm_at: Duration::from_secs(p.storm_at_s),
        after: Duration::from_secs(p.after_s),
        drop_fraction: 1.0,
        reconnect_delay: Duration::from_millis(storm.reconnect_delay_ms),
        jitter: Duration::from_millis(storm.jitter_ms),
        stale_ok: storm.stale_ok,
        threads: load_cpus.len().max(1),
        cpus: load_cpus.to_vec(),
        server_pids: server.pids(),
        progress: false,
        ..RecoveryOptions::new(target, url, protocol)
    };
    let report = recovery::run(opts);
    drop(server);
    report
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn num(v: f64) -> String {
    corecast_load::report::thousands(v)
}

/// The table of every run, then corecast against Socket.IO per storm, means over the rounds.
pub fn markdown(res: &RecoveryResult) -> String {
    let mut md = format!("### {}\n\n", res.title);
    md += "| server | storm | round | recovered (not) | reconnect → recovered p50 / p99 | every client back after | messages recovered (lost) | live deliveries/s before / during / after | live p99 before / during / after | server CPU-µs per reconnect | load average | exact delivery |\n";
    md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
    for o in &res.outcomes {
        let Some(r) = &o.report else {
            let _ = writeln!(
                md,
                "| {} | {} | {} | failed: {} | | | | | | | | |",
                o.server,
                o.storm,
                o.round,
                o.error.as_deref().unwrap_or("?")
            );
            continue;
        };
        let phases = |f: &dyn Fn(&recovery::Phase) -> String| -> String {
            ["before", "during", "after"]
                .iter()
                .map(|n| r.phase(n).map_or("–".into(), f))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let exact = if r.ok {
            "yes".to_string()
        } else {
            format!("no ({} faults)", r.fault_count)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} ({}) | {} / {} ms | {} | {} ({}) | {} | {} ms | {} | {} | {} |",
            o.server,
            o.storm,
            o.round,
            num(r.recovered as f64),
            r.not_recovered,
            ms(r.reconnect_to_recovered.p50_us),
            ms(r.reconnect_to_recovered.p99_us),
            r.all_recovered_seconds
                .map_or("–".into(), |s| format!("{s:.3} s")),
            num(r.messages_recovered as f64),
            num(r.messages_lost as f64),
            phases(&|p| num(p.deliveries_per_second)),
            phases(&|p| ms(p.latency.p99_us)),
            r.storm_cpu_us_per_reconnect
                .map_or("–".into(), |c| format!("{c:.0}")),
            o.load_average.map_or("–".into(), |l| format!("{l:.2}")),
            exact
        );
    }
    md += &ratios(res);
    md += &format!("\n{}\n", res.note);
    md
}

/// corecast against Socket.IO, per storm: the mean over the rounds of each figure, and
/// Socket.IO's ÷ corecast's (every figure here is lower-is-better, so above 1 favours
/// corecast).
fn ratios(res: &RecoveryResult) -> String {
    /// A figure's name, how it is read from a report, and the decimals it is shown with.
    type Figure = (&'static str, fn(&RecoveryReport) -> Option<f64>, usize);
    let figures: [Figure; 5] = [
        (
            "every client back after (s)",
            |r| r.all_recovered_seconds,
            3,
        ),
        (
            "reconnect → recovered p50 (ms)",
            |r| Some(r.reconnect_to_recovered.p50_us as f64 / 1000.0),
            1,
        ),
        (
            "reconnect → recovered p99 (ms)",
            |r| Some(r.reconnect_to_recovered.p99_us as f64 / 1000.0),
            1,
        ),
        (
            "live p99 during the storm (ms)",
            |r| r.phase("during").map(|p| p.latency.p99_us as f64 / 1000.0),
            1,
        ),
        (
            "server CPU-µs per reconnect",
            |r| r.storm_cpu_us_per_reconnect,
            0,
        ),
    ];
    let mean = |server: &str, storm: &str, f: fn(&RecoveryReport) -> Option<f64>| {
        let v: Vec<f64> = res
            .outcomes
            .iter()
            .filter(|o| o.server == server && o.storm == storm)
            .filter_map(|o| f(o.report.as_ref()?))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let sum = |server: &str, storm: &str, f: fn(&RecoveryReport) -> u64| -> u64 {
        res.outcomes
            .iter()
            .filter(|o| o.server == server && o.storm == storm)
            .filter_map(|o| o.report.as_ref().map(f))
            .sum()
    };
    let (ours, theirs) = (Peer::Corecast.name(), Peer::SocketIoRecovery.name());
    let mut md = String::from(
        "\nMeans over the rounds; Socket.IO ÷ corecast, so above 1 favours corecast (every \
         figure is lower-is-better).\n\n| storm | measure | corecast | Socket.IO | Socket.IO ÷ corecast |\n|---|---|---:|---:|---:|\n",
    );
    let fmt = |v: Option<f64>, decimals: usize| match v {
        Some(v) if decimals == 0 => num(v),
        Some(v) => format!("{v:.decimals$}"),
        None => "–".into(),
    };
    for storm in STORMS {
        for (name, f, decimals) in figures {
            let (a, b) = (mean(ours, storm.name, f), mean(theirs, storm.name, f));
            let ratio = match (a, b) {
                (Some(a), Some(b)) if a > 0.0 => format!("{:.2}×", b / a),
                _ => "–".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {name} | {} | {} | {ratio} |",
                storm.name,
                fmt(a, decimals),
                fmt(b, decimals)
            );
        }
        let _ = writeln!(
            md,
            "| {} | not recovered, all rounds (publications lost) | {} ({}) | {} ({}) | – |",
            storm.name,
            sum(ours, storm.name, |r| r.not_recovered),
            sum(ours, storm.name, |r| r.messages_lost),
            sum(theirs, storm.name, |r| r.not_recovered),
            sum(theirs, storm.name, |r| r.messages_lost),
        );
    }
    md
}

/// A bar per run: the seconds until every dropped client was back.
fn chart(res: &RecoveryResult, path: &Path) -> anyhow::Result<()> {
    let bars: Vec<(String, f64, bool)> = res
        .outcomes
        .iter()
        .filter_map(|o| {
            let s = o.report.as_ref()?.all_recovered_seconds?;
            let label = format!("{} {} ({})", o.server, o.storm, o.round);
            Some((label, s, o.server == Peer::Corecast.name()))
        })
        .collect();
    output::bar_chart(
        path,
        &output::BarChart {
            title: "Reconnect storm: seconds until every dropped client is back",
            y_desc: "seconds",
            size: (900, 440),
            caption_size: 18,
            x_label_area: 250,
            y_label_area: 70,
            rotate_labels: true,
            bar_margin: 8,
            y_floor: 0.01,
            y_format: &|v| format!("{v:.2}"),
        },
        &bars,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_load::recovery::Phase;
    use corecast_load::report::Latency;

    fn report(back: f64, cpu: f64, not: u64) -> RecoveryReport {
        let phase = |name: &str| Phase {
            name: name.into(),
            seconds: 1.0,
            deliveries: 20_000,
            deliveries_per_second: 20_000.0,
            latency: Latency {
                p99_us: 4_000,
                ..Latency::default()
            },
            ..Phase::default()
        };
        RecoveryReport {
            dropped: 1000,
            recovered: 1000 - not,
            not_recovered: not,
            all_recovered_seconds: Some(back),
            reconnect_to_recovered: Latency {
                p50_us: 2_000,
                p99_us: 10_000,
                ..Latency::default()
            },
            phases: vec![phase("before"), phase("during"), phase("after")],
            storm_cpu_us_per_reconnect: Some(cpu),
            ok: true,
            ..RecoveryReport::default()
        }
    }

    #[test]
    fn the_table_names_every_run_and_the_ratios_favour_the_faster() {
        let outcome = |server: &str, storm: &str, round, r| Outcome {
            server: server.into(),
            storm: storm.into(),
            round,
            load_average: Some(1.5),
            report: Some(r),
            error: None,
        };
        let res = RecoveryResult {
            id: ID.into(),
            title: title(&params(false)),
            machine: serde_json::Value::Null,
            parameters: serde_json::Value::Null,
            note: "What the rows are.".into(),
            outcomes: vec![
                outcome("corecast", "at once", 1, report(0.1, 50.0, 0)),
                outcome("socket.io", "at once", 1, report(1.0, 600.0, 12)),
                outcome("corecast", "at once", 2, report(0.3, 70.0, 0)),
                outcome("socket.io", "at once", 2, report(1.0, 400.0, 0)),
            ],
        };
        let md = markdown(&res);
        assert!(
            md.starts_with("### Reconnect storm: 1,000 subscribers of 10 topics"),
            "{md}"
        );
        assert!(
            md.contains("| socket.io | at once | 1 | 988 (12) | 2.0 / 10.0 ms | 1.000 s |"),
            "{md}"
        );
        assert!(
            md.contains("| at once | every client back after (s) | 0.200 | 1.000 | 5.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| at once | server CPU-µs per reconnect | 60 | 500 | 8.33× |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| at once | not recovered, all rounds (publications lost) | 0 (0) | 12 (0) | – |"
            ),
            "{md}"
        );
        // No run of the other storm: its rows say so rather than divide by nothing.
        assert!(md.contains("| after 0.5-1.5 s | every client back after (s) | – | – | – |"));
        assert!(md.ends_with("\nWhat the rows are.\n"));
        assert!(md.lines().all(|l| !l.starts_with([' ', '\t'])), "{md}");
    }

    #[test]
    fn quick_and_full_keep_their_parameters() {
        assert_eq!(
            format!("{:?}", params(false)),
            "Params { clients: 1000, topics: 10, rate: 200.0, storm_at_s: 5, after_s: 5, rounds: 2 }"
        );
        assert_eq!(
            format!("{:?}", params(true)),
            "Params { clients: 2000, topics: 20, rate: 200.0, storm_at_s: 10, after_s: 10, rounds: 3 }"
        );
        assert_eq!(
            format!("{STORMS:?}"),
            "[Storm { name: \"at once\", reconnect_delay_ms: 0, jitter_ms: 0, stale_ok: true }, \
             Storm { name: \"after 0.5-1.5 s\", reconnect_delay_ms: 500, jitter_ms: 1000, stale_ok: false }]"
        );
    }
}
