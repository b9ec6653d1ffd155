//! `corecast-bench`: runs every scenario against corecast and its peers in one run on one
//! machine, server and generator pinned to different CPUs, and writes `bench/results/`:
//! JSON per scenario, a Markdown table with ratios to corecast, and an SVG chart.
//! Use `bench/run`, which builds and installs everything first.

mod output;
mod peers;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Parser;
use corecast_load::topics::TopicPlan;
use corecast_load::ws::Target;
use corecast_load::{Options, Scenario};
use output::{Outcome, ScenarioResult};
use peers::Peer;

#[derive(Parser, Debug)]
#[command(name = "corecast-bench")]
struct Args {
    /// The long run (about 20 minutes on 2 cores); default is the quick one (about 5 minutes)
    #[arg(long)]
    full: bool,
    /// Comma-separated peers: corecast, bun, node-ws, tokio-tungstenite
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "corecast,bun,node-ws,tokio-tungstenite"
    )]
    peers: Vec<String>,
    /// Comma-separated scenario ids to run (default: all)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// CPUs for the server under test [default: 0]
    #[arg(long, value_delimiter = ',')]
    server_cpus: Vec<usize>,
    /// CPUs for the load generator, one generator thread each [default: 1; none on one CPU]
    #[arg(long, value_delimiter = ',')]
    load_cpus: Vec<usize>,
    /// Where to write results
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Repository root
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

/// A parameter that differs between the quick run and the full one.
#[derive(Debug, Clone, Copy)]
struct QuickFull<T> {
    quick: T,
    full: T,
}

impl<T: Copy> QuickFull<T> {
    /// The same in both runs.
    const fn both(v: T) -> QuickFull<T> {
        QuickFull { quick: v, full: v }
    }

    fn pick(self, full: bool) -> T {
        if full {
            self.full
        } else {
            self.quick
        }
    }
}

/// One benchmark scenario: what the servers do, what the load generator does, and how the
/// results are read.
struct Plan {
    /// The scenario's id: `--only` picks by it, result files are named by it.
    id: &'static str,
    title: &'static str,
    /// What the headline number counts.
    metric: &'static str,
    higher_is_better: bool,
    /// What the servers do with client messages: their `--mode`.
    mode: &'static str,
    scenario: Scenario,
    /// Connections (the shootout: the most to try).
    clients: QuickFull<usize>,
    /// Messages to publish; `None`: until the duration ends.
    messages: Option<QuickFull<u64>>,
    /// How long to run, in seconds.
    duration_s: QuickFull<u64>,
    /// Messages a sender may have in flight.
    in_flight: usize,
    /// Shootout: clients added per step.
    step: usize,
    /// Shootout: broadcasts timed per step.
    sample: QuickFull<usize>,
    /// Topics scenarios: the plan; unused elsewhere.
    topics: TopicPlan,
    /// A cluster scenario: run against single-node corecast and a two-node cluster (the
    /// clients split evenly) instead of the peers.
    cluster: bool,
    /// Clients offer permessage-deflate and messages are JSON; peers that cannot compress
    /// (tokio-tungstenite) sit it out.
    deflate: bool,
    /// Payload bytes per message.
    size: usize,
    /// Over TLS (wss): servers get a certificate made for the run; peers without TLS sit out.
    tls: bool,
    /// Run only with `--full`.
    full_only: bool,
}

/// What a plan has unless it says otherwise: no shootout steps, no topics, one node, no
/// compression, 64-byte messages over plain TCP, in both runs. Every plan names the rest.
const USUAL: Plan = Plan {
    id: "",
    title: "",
    metric: "",
    higher_is_better: true,
    mode: "",
    scenario: Scenario::Broadcast,
    clients: QuickFull::both(0),
    messages: None,
    duration_s: QuickFull::both(0),
    in_flight: 1,
    step: 0,
    sample: QuickFull::both(0),
    topics: TopicPlan {
        topics: 0,
        per_client: 0,
        publishers: 0,
        publish_topics: 0,
    },
    cluster: false,
    deflate: false,
    size: 64,
    tls: false,
    full_only: false,
};

/// Server memory per idle connection; idle-tls is the same over TLS, so the two compare.
const IDLE_10K: Plan = Plan {
    id: "idle-10k",
    title: "10,000 idle connections: server memory",
    metric: "server bytes per connection",
    higher_is_better: false,
    mode: "echo",
    scenario: Scenario::Idle,
    clients: QuickFull::both(10_000),
    messages: None,
    duration_s: QuickFull { quick: 2, full: 5 },
    in_flight: 1,
    ..USUAL
};

/// Every scenario, in the order they run.
const PLANS: [Plan; 17] = [
    Plan {
        id: "broadcast-1k",
        title: "Broadcast to 1,000 clients, 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(1000),
        messages: Some(QuickFull {
            quick: 3000,
            full: 20_000,
        }),
        duration_s: QuickFull { quick: 8, full: 30 },
        in_flight: 8,
        ..USUAL
    },
    Plan {
        id: "broadcast-10k",
        title: "Broadcast to 10,000 clients, 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(10_000),
        messages: Some(QuickFull {
            quick: 300,
            full: 2000,
        }),
        duration_s: QuickFull { quick: 8, full: 30 },
        in_flight: 8,
        ..USUAL
    },
    Plan {
        id: "chat-100",
        title: "Chat, 100 clients all publishing",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Chat,
        clients: QuickFull::both(100),
        messages: None,
        duration_s: QuickFull { quick: 5, full: 20 },
        in_flight: 1,
        ..USUAL
    },
    Plan {
        id: "chat-300",
        title: "Chat, 300 clients all publishing",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Chat,
        clients: QuickFull::both(300),
        messages: None,
        duration_s: QuickFull { quick: 5, full: 20 },
        in_flight: 1,
        ..USUAL
    },
    Plan {
        id: "echo-50",
        title: "Echo, 50 clients, closed loop",
        metric: "round trips/s",
        higher_is_better: true,
        mode: "echo",
        scenario: Scenario::Echo,
        clients: QuickFull::both(50),
        messages: None,
        duration_s: QuickFull { quick: 5, full: 20 },
        in_flight: 1,
        ..USUAL
    },
    IDLE_10K,
    Plan {
        id: "topics-10k",
        title: "Topics: 10,000 clients on 100 topics, 4 publishers × 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "pubsub",
        scenario: Scenario::Topics,
        clients: QuickFull::both(10_000),
        messages: None,
        duration_s: QuickFull { quick: 8, full: 30 },
        in_flight: 8,
        topics: TopicPlan {
            topics: 100,
            per_client: 1,
            publishers: 4,
            publish_topics: 0,
        },
        ..USUAL
    },
    // Ten topics per client: each publish still reaches 1,000 subscribers of 10,000.
    Plan {
        id: "topics-10k-x10",
        title: "Topics: 10,000 clients on 10 of 1,000 topics each, 4 publishers × 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "pubsub",
        scenario: Scenario::Topics,
        clients: QuickFull::both(10_000),
        messages: None,
        duration_s: QuickFull { quick: 8, full: 30 },
        in_flight: 8,
        topics: TopicPlan {
            topics: 1000,
            per_client: 10,
            publishers: 4,
            publish_topics: 0,
        },
        full_only: true,
        ..USUAL
    },
    Plan {
        id: "topic-hot",
        title: "One topic of 100 subscribers among 10,000 clients, 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "pubsub",
        scenario: Scenario::Topics,
        clients: QuickFull::both(10_000),
        messages: None,
        duration_s: QuickFull { quick: 6, full: 20 },
        in_flight: 8,
        topics: TopicPlan {
            topics: 100,
            per_client: 1,
            publishers: 1,
            publish_topics: 1,
        },
        ..USUAL
    },
    Plan {
        id: "broadcast-100",
        title: "Broadcast to 100 clients, 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(100),
        messages: Some(QuickFull {
            quick: 40_000,
            full: 200_000,
        }),
        duration_s: QuickFull { quick: 6, full: 20 },
        in_flight: 8,
        ..USUAL
    },
    Plan {
        id: "subs-100k",
        title: "100,000 subscriptions (10,000 clients × 10 of 1,000 topics): server memory",
        metric: "server bytes per connection",
        higher_is_better: false,
        mode: "pubsub",
        scenario: Scenario::Topics,
        clients: QuickFull::both(10_000),
        messages: None,
        duration_s: QuickFull { quick: 2, full: 5 },
        in_flight: 1,
        topics: TopicPlan {
            topics: 1000,
            per_client: 10,
            publishers: 0,
            publish_topics: 0,
        },
        ..USUAL
    },
    Plan {
        id: "broadcast-deflate",
        title: "Broadcast of 1 KiB JSON to 1,000 clients with permessage-deflate, 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(1000),
        messages: Some(QuickFull {
            quick: 3000,
            full: 20_000,
        }),
        duration_s: QuickFull { quick: 8, full: 30 },
        in_flight: 8,
        deflate: true,
        size: 1024,
        ..USUAL
    },
    Plan {
        id: "broadcast-tls",
        title: "Broadcast to 1,000 clients over TLS, 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(1000),
        messages: Some(QuickFull {
            quick: 3000,
            full: 20_000,
        }),
        duration_s: QuickFull { quick: 8, full: 30 },
        in_flight: 8,
        tls: true,
        ..USUAL
    },
    Plan {
        id: "chat-tls",
        title: "Chat over TLS, 100 clients all publishing",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Chat,
        clients: QuickFull::both(100),
        messages: None,
        duration_s: QuickFull { quick: 5, full: 20 },
        in_flight: 1,
        tls: true,
        ..USUAL
    },
    Plan {
        id: "idle-tls",
        title: "10,000 idle TLS connections: server memory",
        tls: true,
        ..IDLE_10K
    },
    Plan {
        id: "cluster-broadcast",
        title: "Broadcast to 1,000 clients, one node against two nodes over NATS, 8 in flight",
        metric: "deliveries/s",
        higher_is_better: true,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(1000),
        messages: Some(QuickFull {
            quick: 3000,
            full: 20_000,
        }),
        duration_s: QuickFull { quick: 8, full: 30 },
        in_flight: 8,
        cluster: true,
        ..USUAL
    },
    Plan {
        id: "shootout",
        title: "websocket-shootout: most clients with broadcast p95 under 500 ms",
        metric: "clients",
        higher_is_better: true,
        mode: "shootout",
        scenario: Scenario::Shootout,
        clients: QuickFull {
            quick: 8000,
            full: 18_000,
        },
        messages: None,
        duration_s: QuickFull::both(5),
        in_flight: 1,
        step: 2000,
        sample: QuickFull {
            quick: 10,
            full: 20,
        },
        ..USUAL
    },
];

/// The plans of the quick run, or of the full one.
fn plans(full: bool) -> impl Iterator<Item = &'static Plan> {
    PLANS.iter().filter(move |p| full || !p.full_only)
}

fn machine(root: &std::path::Path) -> serde_json::Value {
    let sh = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let ws_version = std::fs::read_to_string(root.join("bench/peers/node_modules/ws/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": sh("uname", &["-r"]),
        "rustc": sh("rustc", &["-V"]),
        "bun": sh(&root.join("bench/peers/node_modules/.bin/bun").to_string_lossy(), &["--version"]),
        "node": sh("node", &["--version"]),
        "ws": ws_version,
        "corecast": env!("CARGO_PKG_VERSION"),
    })
}

fn today() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output().ok();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "undated".into())
}

fn main() -> ExitCode {
    let mut a = Args::parse();
    // Server and generator on different CPUs where there are two; on one CPU, share it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if a.server_cpus.is_empty() {
        a.server_cpus = vec![0];
    }
    if a.load_cpus.is_empty() && cpus >= 2 {
        a.load_cpus = vec![1];
    }
    let peers: Vec<Peer> = match a.peers.iter().map(|p| Peer::parse(p).ok_or(p)).collect() {
        Ok(p) => p,
        Err(bad) => {
            eprintln!("corecast-bench: unknown peer {bad:?}: use corecast, bun, node-ws or tokio-tungstenite");
            return ExitCode::from(2);
        }
    };
    for p in &peers {
        let exe = p.executable(&a.root);
        if !exe.exists() {
            eprintln!("corecast-bench: {} is missing ({}); run bench/run, which builds and installs the peers", p.name(), exe.display());
            return ExitCode::from(2);
        }
    }
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        eprintln!("corecast-bench: cannot create {}: {e}", a.out.display());
        return ExitCode::FAILURE;
    }
    let tls = match peers::certificate(&a.root) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("corecast-bench: cannot make the TLS certificate: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let machine = machine(&a.root);
    let date = today();
    let selected: Vec<&Plan> = plans(a.full)
        .filter(|p| a.only.is_empty() || a.only.iter().any(|o| o == p.id))
        .collect();
    eprintln!(
        "corecast-bench ({} mode): {} scenarios × {} servers; server on CPUs {:?}, generator on {:?}",
        if a.full { "full, about 20 minutes" } else { "quick, about 5 minutes" },
        selected.len(),
        peers.len(),
        a.server_cpus,
        a.load_cpus
    );
    let started = Instant::now();
    let mut summary = format!(
        "## Benchmark results ({date}, {} mode)\n\nMachine: {}\n\n",
        if a.full { "full" } else { "quick" },
        machine
    );
    let mut results: Vec<ScenarioResult> = Vec::new();
    for plan in selected {
        let mut outcomes = Vec::new();
        let plan_peers: Vec<Peer> = if plan.cluster {
            if peers.contains(&Peer::Corecast) {
                vec![Peer::Corecast, Peer::CorecastCluster, Peer::SocketIoRedis]
            } else {
                Vec::new()
            }
        } else {
            peers
                .iter()
                .copied()
                .filter(|p| !p.is_cluster() && (!plan.deflate || p.has_deflate()))
                .filter(|p| !plan.tls || p.has_tls())
                .collect()
        };
        for peer in &plan_peers {
            eprintln!(
                "[{:>5.0}s] {} / {}",
                started.elapsed().as_secs_f64(),
                plan.id,
                peer.name()
            );
            let started_peer = peers::start(
                *peer,
                &a.root,
                plan.mode,
                plan.deflate,
                plan.tls.then_some(&tls),
                &a.server_cpus,
            );
            let outcome = match started_peer {
                Err(e) => Outcome {
                    peer: peer.name().into(),
                    report: None,
                    error: Some(format!("{e:#}")),
                },
                Ok(server) => {
                    let urls: Vec<String> = server
                        .addrs
                        .iter()
                        .map(|a| {
                            let scheme = if plan.tls { "wss" } else { "ws" };
                            format!("{scheme}://{a}{}", peer.path())
                        })
                        .collect();
                    let url = urls.join(",");
                    let opts = Options {
                        scenario: plan.scenario,
                        targets: urls
                            .iter()
                            .map(|u| Target {
                                deflate: plan.deflate,
                                ..Target::parse(u).expect("a valid URL")
                            })
                            .collect(),
                        url,
                        clients: plan.clients.pick(a.full),
                        messages: plan.messages.map(|m| m.pick(a.full)),
                        duration: Duration::from_secs(plan.duration_s.pick(a.full)),
                        in_flight: plan.in_flight,
                        size: plan.size,
                        threads: a.load_cpus.len().max(1),
                        cpus: a.load_cpus.clone(),
                        server_pids: server.pids(),
                        progress: false,
                        step: plan.step,
                        sample: plan.sample.pick(a.full),
                        concurrent: 4,
                        limit: Duration::from_millis(500),
                        topics: plan.topics,
                        socket_io: *peer == Peer::SocketIoRedis,
                        deflate: plan.deflate,
                    };
                    let result = corecast_load::run(opts);
                    drop(server);
                    match result {
                        Ok(r) => {
                            let head = output::headline(plan.id, &r)
                                .map(|v| format!("{v:.0}"))
                                .unwrap_or_default();
                            eprintln!(
                                "         {} {} {}",
                                head,
                                plan.metric,
                                if r.ok { "" } else { "(FAULTS)" }
                            );
                            Outcome {
                                peer: peer.name().into(),
                                report: Some(r),
                                error: None,
                            }
                        }
                        Err(e) => Outcome {
                            peer: peer.name().into(),
                            report: None,
                            error: Some(format!("{e:#}")),
                        },
                    }
                }
            };
            outcomes.push(outcome);
            // Let the kernel finish tearing down the last run's sockets.
            std::thread::sleep(Duration::from_millis(500));
        }
        let res = ScenarioResult {
            id: plan.id.into(),
            title: plan.title.into(),
            metric: plan.metric.into(),
            higher_is_better: plan.higher_is_better,
            machine: machine.clone(),
            parameters: serde_json::json!({
                "mode": if a.full { "full" } else { "quick" },
                "clients": plan.clients.pick(a.full), "messages": plan.messages.map(|m| m.pick(a.full)),
                "duration_s": plan.duration_s.pick(a.full) as f64,
                "in_flight": plan.in_flight, "payload_bytes": 64, "server_cpus": a.server_cpus, "load_cpus": a.load_cpus,
                "topics": plan.topics.topics, "topics_per_client": plan.topics.per_client,
                "publishers": plan.topics.publishers, "publish_topics": plan.topics.publish_topics,
            }),
            outcomes,
        };
        let base = a.out.join(format!("{date}-{}", plan.id));
        let md = output::markdown(&res);
        let written = std::fs::write(
            base.with_extension("json"),
            serde_json::to_string_pretty(&res).unwrap_or_default() + "\n",
        )
        .and_then(|_| std::fs::write(base.with_extension("md"), &md));
        if let Err(e) = written {
            eprintln!("corecast-bench: cannot write results: {e}");
            return ExitCode::FAILURE;
        }
        if let Err(e) = output::chart(&res, &base.with_extension("svg")) {
            eprintln!("corecast-bench: chart for {}: {e:#}", plan.id);
        }
        summary += &md;
        summary += "\n";
        results.push(res);
    }
    let by_id = |id: &str| results.iter().find(|r| r.id == id);
    if let (Some(idle), Some(subs)) = (by_id("idle-10k"), by_id("subs-100k")) {
        let md = output::subscription_memory(idle, subs);
        summary += &md;
        summary += "\n";
        if let Err(e) = std::fs::write(a.out.join(format!("{date}-subscription-memory.md")), &md) {
            eprintln!("corecast-bench: cannot write results: {e}");
            return ExitCode::FAILURE;
        }
    }
    // A run of some scenarios (--only) does not replace the day's summary of all of them.
    let summary_name = if a.only.is_empty() {
        format!("{date}-summary.md")
    } else {
        format!("{date}-summary-{}.md", a.only.join("-"))
    };
    let summary_path = a.out.join(summary_name);
    if let Err(e) = std::fs::write(&summary_path, &summary) {
        eprintln!(
            "corecast-bench: cannot write {}: {e}",
            summary_path.display()
        );
        return ExitCode::FAILURE;
    }
    println!("{summary}");
    eprintln!(
        "done in {:.0}s; results in {}",
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{plans, Plan};

    /// One plan in the quick or the full run, every field labelled, as a line to compare.
    fn describe(p: &Plan, full: bool) -> String {
        format!(
            "{} | {} | {} | higher is better {} | mode {} | {:?} | clients {} | messages {:?} | \
             {:?} | in flight {} | step {} | sample {} | {:?} | cluster {} | deflate {} | \
             size {} | tls {}",
            p.id,
            p.title,
            p.metric,
            p.higher_is_better,
            p.mode,
            p.scenario,
            p.clients.pick(full),
            p.messages.map(|m| m.pick(full)),
            Duration::from_secs(p.duration_s.pick(full)),
            p.in_flight,
            p.step,
            p.sample.pick(full),
            p.topics,
            p.cluster,
            p.deflate,
            p.size,
            p.tls
        )
    }

    fn describe_all(full: bool) -> String {
        plans(full).map(|p| describe(p, full) + "\n").collect()
    }

    /// The quick run's plans, every parameter spelled out: a change to any shows here.
    const QUICK: &str = "\
        broadcast-1k | Broadcast to 1,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-10k | Broadcast to 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 10000 | messages Some(300) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        chat-100 | Chat, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        chat-300 | Chat, 300 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 300 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        echo-50 | Echo, 50 clients, closed loop | round trips/s | higher is better true | mode echo | Echo | clients 50 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        idle-10k | 10,000 idle connections: server memory | server bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 2s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topics-10k | Topics: 10,000 clients on 100 topics, 4 publishers × 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topic-hot | One topic of 100 subscribers among 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 6s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 1, publish_topics: 1 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-100 | Broadcast to 100 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 100 | messages Some(40000) | 6s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        subs-100k | 100,000 subscriptions (10,000 clients × 10 of 1,000 topics): server memory | server bytes per connection | higher is better false | mode pubsub | Topics | clients 10000 | messages None | 2s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 1000, per_client: 10, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-deflate | Broadcast of 1 KiB JSON to 1,000 clients with permessage-deflate, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate true | size 1024 | tls false\n\
        broadcast-tls | Broadcast to 1,000 clients over TLS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        chat-tls | Chat over TLS, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        idle-tls | 10,000 idle TLS connections: server memory | server bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 2s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        cluster-broadcast | Broadcast to 1,000 clients, one node against two nodes over NATS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster true | deflate false | size 64 | tls false\n\
        shootout | websocket-shootout: most clients with broadcast p95 under 500 ms | clients | higher is better true | mode shootout | Shootout | clients 8000 | messages None | 5s | in flight 1 | step 2000 | sample 10 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        ";

    /// The full run's plans: longer, more messages, a bigger shootout, and topics-10k-x10.
    const FULL: &str = "\
        broadcast-1k | Broadcast to 1,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-10k | Broadcast to 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 10000 | messages Some(2000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        chat-100 | Chat, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        chat-300 | Chat, 300 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 300 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        echo-50 | Echo, 50 clients, closed loop | round trips/s | higher is better true | mode echo | Echo | clients 50 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        idle-10k | 10,000 idle connections: server memory | server bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topics-10k | Topics: 10,000 clients on 100 topics, 4 publishers × 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topics-10k-x10 | Topics: 10,000 clients on 10 of 1,000 topics each, 4 publishers × 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 1000, per_client: 10, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topic-hot | One topic of 100 subscribers among 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 20s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 1, publish_topics: 1 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-100 | Broadcast to 100 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 100 | messages Some(200000) | 20s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        subs-100k | 100,000 subscriptions (10,000 clients × 10 of 1,000 topics): server memory | server bytes per connection | higher is better false | mode pubsub | Topics | clients 10000 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 1000, per_client: 10, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-deflate | Broadcast of 1 KiB JSON to 1,000 clients with permessage-deflate, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate true | size 1024 | tls false\n\
        broadcast-tls | Broadcast to 1,000 clients over TLS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        chat-tls | Chat over TLS, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        idle-tls | 10,000 idle TLS connections: server memory | server bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        cluster-broadcast | Broadcast to 1,000 clients, one node against two nodes over NATS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster true | deflate false | size 64 | tls false\n\
        shootout | websocket-shootout: most clients with broadcast p95 under 500 ms | clients | higher is better true | mode shootout | Shootout | clients 18000 | messages None | 5s | in flight 1 | step 2000 | sample 20 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        ";

    #[test]
    fn quick_plans_keep_their_parameters() {
        assert_eq!(describe_all(false), QUICK);
    }

    #[test]
    fn full_plans_keep_their_parameters() {
        assert_eq!(describe_all(true), FULL);
    }
}
