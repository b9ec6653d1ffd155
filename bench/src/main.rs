//! `corecast-bench`: runs every scenario against corecast and its peers in one run on one
//! machine, server and generator pinned to different CPUs, and writes `bench/results/`:
//! JSON per scenario, a Markdown table with ratios to corecast, and an SVG chart; the
//! recovery scenario (`recovery`) has tables of its own.
//! Use `bench/run`, which builds and installs everything first.

mod idle;
mod output;
mod peers;
mod recovery;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Parser;
use corecast_load::token::{Signing, TokenKey};
use corecast_load::topics::TopicPlan;
use corecast_load::upgrades::spoil;
use corecast_load::ws::{Target, Tokens};
use corecast_load::{Options, Scenario};
use output::{Outcome, ScenarioResult};
use peers::Peer;

#[derive(Parser, Debug)]
#[command(name = "corecast-bench")]
struct Args {
    /// The long run (about three times the quick one); default is the quick one (about 16
    /// minutes on 2 cores)
    #[arg(long)]
    full: bool,
    /// Comma-separated peers: corecast, bun, node-ws, tokio-tungstenite, floor
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "corecast,bun,node-ws,tokio-tungstenite,floor"
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
    /// The corecast binary to run [default: <root>/target/release/corecast]
    #[arg(long)]
    corecast_bin: Option<PathBuf>,
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
    /// Broadcast: the publisher's messages per second, whatever comes back (an open loop);
    /// `None`: as fast as the window opens.
    rate: Option<f64>,
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
    /// corecast started in these ways, each a row of its own, in place of plain corecast
    /// (empty: plain corecast among the peers).
    variants: &'static [Variant],
    /// With variants: times each variant runs, the variants in turn (A B A B), so the rows
    /// show the run-to-run noise beside the difference.
    rounds: QuickFull<usize>,
    /// With variants: the other peers run too (once each), as they would with none.
    with_peers: bool,
    /// A sentence under the table: what the variants' rows are.
    note: &'static str,
    /// Connections held idle: the kernel's memory per connection is read beside the server's,
    /// and the server's keep-alive CPU over a window of `duration_s` in its steady state
    /// (corecast at its binary's keep-alive defaults, each peer at its own).
    keepalive: bool,
}

/// How a variant's clients ask: what they request and what the server should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The plan's scenario as usual, with a valid token when the variant verifies tokens: 101.
    Upgrade,
    /// An upgrade with no token at a server that needs one: 401.
    NoToken,
    /// An upgrade with a token of the server's key whose signature is spoiled, so the server
    /// verifies it in full and refuses it: 401.
    BadToken,
    /// A path the server does not serve (with the same valid token): 404.
    NotFound,
}

impl Ask {
    /// The answer the upgrades scenario counts.
    fn status(self) -> u16 {
        match self {
            Ask::Upgrade => 101,
            Ask::NoToken | Ask::BadToken => 401,
            Ask::NotFound => 404,
        }
    }
}

/// corecast started one way: its row's name, the tokens it verifies, how its clients ask.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    /// The server verifies client tokens signed so (`--jwt-secret-file` or
    /// `--jwt-public-key-file`), and every client sends one in its query, minted before the
    /// run.
    auth: Option<Signing>,
    /// Topic patterns each token grants for subscribe and for publish.
    grants: &'static [&'static str],
    ask: Ask,
    /// More corecast flags for this row.
    flags: &'static [&'static str],
}

/// Tokens for at most this many connections are minted; more connections take them in turn.
const MAX_TOKENS: usize = 20_000;

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
    rate: None,
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
    variants: &[],
    rounds: QuickFull::both(1),
    with_peers: false,
    note: "",
    keepalive: false,
};

/// Plain corecast.
const PLAIN: Variant = Variant {
    name: "corecast",
    auth: None,
    grants: &[],
    ask: Ask::Upgrade,
    flags: &[],
};

/// What every token of the authentication plans grants: a pattern, so the check matches it
/// against each topic rather than comparing names.
const GRANTS: &[&str] = &["t*"];

/// Sixteen patterns, the one that matches last: a check that scans them all.
const GRANTS_16: &[&str] = &[
    "a0.*", "a1.*", "a2.*", "a3.*", "a4.*", "a5.*", "a6.*", "a7.*", "a8.*", "a9.*", "a10.*",
    "a11.*", "a12.*", "a13.*", "a14.*", "t*",
];

/// corecast verifying HS256 tokens.
const HS256: Variant = Variant {
    name: "corecast-hs256",
    auth: Some(Signing::Hs256),
    grants: GRANTS,
    ask: Ask::Upgrade,
    flags: &[],
};

/// What an idle connection costs: server memory in user space and in the kernel, and the
/// server's keep-alive CPU; idle-tls is the same over TLS, so the two compare.
const IDLE_10K: Plan = Plan {
    id: "idle-10k",
    title: "10,000 idle connections: server memory and keep-alive CPU",
    metric: "server user-space bytes per connection",
    higher_is_better: false,
    mode: "echo",
    scenario: Scenario::Idle,
    clients: QuickFull::both(10_000),
    messages: None,
    // The keep-alive window; the hold is longer by the server's settling time (26 s for
    // corecast, one ping interval and a second) and 3 s of slack.
    duration_s: QuickFull { quick: 5, full: 30 },
    in_flight: 1,
    note: "User space: the server's resident memory after the connections opened less before, \
           over connections. Kernel: the slab objects and TCP buffer pages of the server's end \
           of each connection, from /proc/slabinfo and /proc/net/sockstat before and after the \
           connections opened (both ends are on this machine: each socket's objects are \
           halved, epoll registrations are the server's, io_uring requests the server's beyond \
           the generator's one per connection; docs/benchmarks.md, \"Idle memory\"). \
           Keep-alive: the server's CPU clock over the window, which starts once the \
           connections are up, the server is quiet and its keep-alive is in its steady state, \
           over connections and seconds. Each server keeps idle connections alive as its users \
           get by default: corecast pings every 25 s, spread over the interval (the binary's \
           defaults; the window starts 26 s after the connections are up, so every \
           connection's pings fall at their steady rate); Bun (idleTimeout 120 s, sendPings) \
           pings only after 104 s of silence, past the window: its figure is its idle \
           timer, which visits every socket each 4 s; Node ws and tokio-tungstenite send no \
           pings; the floor none.",
    keepalive: true,
    ..USUAL
};

/// Every scenario, in the order they run.
const PLANS: [Plan; 22] = [
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
    // An open loop: the same messages per second to every server, so what differs is the CPU
    // each spends on them; the load write coalescing is for (docs/behaviour.md).
    Plan {
        id: "broadcast-100-paced",
        title: "Broadcast to 100 clients at 2,000 messages/s (open loop)",
        metric: "server CPU-µs per delivery",
        higher_is_better: false,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(100),
        messages: Some(QuickFull {
            quick: 16_000,
            full: 60_000,
        }),
        duration_s: QuickFull {
            quick: 15,
            full: 45,
        },
        in_flight: 1_000_000,
        rate: Some(2000.0),
        variants: &[
            PLAIN,
            Variant {
                name: "corecast-no-coalescing",
                flags: &["--write-coalescing", "0"],
                ..PLAIN
            },
        ],
        rounds: QuickFull { quick: 2, full: 3 },
        with_peers: true,
        note: "One publisher sends 2,000 messages a second whatever comes back, each to all \
               100 clients: every server gets the same work, so the figure to compare is the \
               CPU each spends on it. corecast holds a fan-out shard's writes for up to 1 ms \
               (`--write-coalescing`, its default) so messages share writes; \
               corecast-no-coalescing writes every pass at once. `(2)`: the same server again, \
               the two taking turns.",
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
        title: "10,000 idle TLS connections: server memory and keep-alive CPU",
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
    // The same plan as an open loop: the same messages per second to one node and to two,
    // so the figure is what the second node and the NATS hop cost per delivery, free of the
    // closed loop's pacing (a window released by the slower node's deliveries).
    Plan {
        id: "cluster-broadcast-paced",
        title: "Broadcast to 1,000 clients at 50 messages/s (open loop), one node against two nodes over NATS",
        metric: "server CPU-µs per delivery",
        higher_is_better: false,
        mode: "relay",
        scenario: Scenario::Broadcast,
        clients: QuickFull::both(1000),
        messages: Some(QuickFull {
            quick: 500,
            full: 1500,
        }),
        duration_s: QuickFull { quick: 15, full: 40 },
        in_flight: 1_000_000,
        rate: Some(50.0),
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
    Plan {
        id: "upgrades",
        title: "Upgrades: connect, upgrade and close, 64 at a time, without and with tokens",
        metric: "upgrades/s",
        higher_is_better: true,
        mode: "echo",
        scenario: Scenario::Upgrades,
        clients: QuickFull::both(64),
        messages: None,
        duration_s: QuickFull { quick: 5, full: 15 },
        variants: &[
            PLAIN,
            HS256,
            Variant {
                name: "corecast-es256",
                auth: Some(Signing::Es256),
                ..HS256
            },
        ],
        rounds: QuickFull { quick: 2, full: 3 },
        with_peers: true,
        note: "corecast-hs256 and corecast-es256: corecast verifying an HS256 or ES256 token \
               (granting `t*`) that each connection sends in its query, minted before the run. \
               p99 is the handshake's: connect until the 101's head is in. Each connection \
               closes with a close frame and waits for the server's close frame and end of \
               stream. `(2)`, `(3)`: the same server again, the variants taking turns.",
        ..USUAL
    },
    Plan {
        id: "upgrades-refused",
        title: "Refused upgrades: a bad token's 401 against a 404, 64 at a time",
        metric: "server CPU-µs per request",
        higher_is_better: false,
        mode: "echo",
        scenario: Scenario::Upgrades,
        clients: QuickFull::both(64),
        messages: None,
        duration_s: QuickFull { quick: 4, full: 10 },
        variants: &[
            Variant {
                name: "404 not found",
                ask: Ask::NotFound,
                ..HS256
            },
            Variant {
                name: "401 bad token (HS256)",
                ask: Ask::BadToken,
                ..HS256
            },
            Variant {
                name: "401 bad token (ES256)",
                auth: Some(Signing::Es256),
                ask: Ask::BadToken,
                ..HS256
            },
            Variant {
                name: "401 no token",
                ask: Ask::NoToken,
                ..HS256
            },
        ],
        rounds: QuickFull { quick: 2, full: 3 },
        note: "corecast verifying tokens (HS256, or ES256 for that row). 404: an upgrade \
               request with a valid token for a path the server does not serve; 401 bad \
               token: a token of the server's key with one character of its signature changed, \
               so it is verified in full and refused; 401 no token: an upgrade request without \
               one. Each request is a connection of its own, closed after the answer. The \
               per-address refusal limit (--jwt-max-refusals) is off here: with it on, an \
               address past 20 refusals a second gets 429 with no token check.",
        ..USUAL
    },
    Plan {
        id: "topics-10k-auth",
        title: "Topics with permission checks: topics-10k with and without tokens",
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
        variants: &[
            PLAIN,
            Variant {
                name: "corecast-auth",
                ..HS256
            },
            Variant {
                name: "corecast-auth-16",
                grants: GRANTS_16,
                ..HS256
            },
        ],
        rounds: QuickFull { quick: 2, full: 3 },
        note: "`topics-10k` (10,000 subscribers on 100 topics, 4 publishers × 8 in flight) \
               against plain corecast and corecast-auth: corecast verifying HS256 tokens, each \
               client's granting subscribe and publish on `t*`, so its `?topics=` subscription \
               and every publish are checked against the pattern. corecast-auth-16: the same \
               with 16 patterns per grant, `t*` the last, so every check scans all 16. `(2)`, \
               `(3)`: the same server again, the three taking turns.",
        ..USUAL
    },
];

/// The plans of the quick run, or of the full one.
fn plans(full: bool) -> impl Iterator<Item = &'static Plan> {
    PLANS.iter().filter(move |p| full || !p.full_only)
}

/// The rows of a plan: the table's name, the server, and the corecast variant it runs.
fn rows(plan: &Plan, peers: &[Peer], full: bool) -> Vec<(String, Peer, Option<Variant>)> {
    let one = |p: Peer| (p.name().to_string(), p, None);
    if plan.cluster {
        if !peers.contains(&Peer::Corecast) {
            return Vec::new();
        }
        return [Peer::Corecast, Peer::CorecastCluster, Peer::SocketIoRedis]
            .into_iter()
            .map(one)
            .collect();
    }
    let eligible: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| !p.is_cluster() && !p.is_recovery_only())
        .filter(|p| !plan.deflate || p.has_deflate())
        .filter(|p| !plan.tls || p.has_tls())
        .collect();
    if plan.variants.is_empty() {
        return eligible.into_iter().map(one).collect();
    }
    let mut rows = Vec::new();
    if eligible.contains(&Peer::Corecast) {
        for round in 1..=plan.rounds.pick(full).max(1) {
            for v in plan.variants {
                let name = if round == 1 {
                    v.name.to_string()
                } else {
                    format!("{} ({round})", v.name)
                };
                rows.push((name, Peer::Corecast, Some(*v)));
            }
        }
    }
    if plan.with_peers {
        rows.extend(
            eligible
                .into_iter()
                .filter(|p| *p != Peer::Corecast)
                .map(one),
        );
    }
    rows
}

/// A variant's server flags and its clients' tokens: a fresh key (its verifying file under
/// `target/bench-tokens/`) and a token per connection, minted now, before anything is
/// measured, so signing never counts; spoiled or left out as the variant asks.
fn tokens_for(
    plan: &Plan,
    v: Variant,
    root: &std::path::Path,
    full: bool,
) -> anyhow::Result<(Vec<String>, Tokens)> {
    let Some(signing) = v.auth else {
        return Ok((Vec::new(), Tokens::default()));
    };
    let dir = root.join("target/bench-tokens").join(match signing {
        Signing::Hs256 => "hs256",
        Signing::Es256 => "es256",
    });
    std::fs::create_dir_all(&dir)?;
    let key = TokenKey::generate(signing, &dir)?;
    let connections = match plan.scenario {
        // Connections come and go: a thousand tokens, taken in turn.
        Scenario::Upgrades => 1000,
        Scenario::Topics => plan.clients.pick(full) + plan.topics.publishers,
        _ => plan.clients.pick(full),
    };
    let list = if v.ask == Ask::NoToken {
        Vec::new()
    } else {
        (0..connections.min(MAX_TOKENS))
            .map(|i| {
                let token = key.mint_for(&format!("load-{i}"), 3600, v.grants, v.grants)?;
                Ok(if v.ask == Ask::BadToken {
                    spoil(&token)
                } else {
                    token
                })
            })
            .collect::<anyhow::Result<Vec<String>>>()?
    };
    let mut args = key.server_args().to_vec();
    if matches!(v.ask, Ask::BadToken | Ask::NoToken) {
        // These runs measure what one refusal costs: every request comes from 127.0.0.1, and
        // the per-address limit would answer all but 20 a second with 429 unchecked.
        args.extend(["--jwt-max-refusals".to_string(), "0".to_string()]);
    }
    Ok((
        args,
        Tokens {
            list: list.into(),
            ..Tokens::default()
        },
    ))
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
    if let Some(bin) = a.corecast_bin.clone() {
        peers::use_corecast_binary(bin);
    }
    let peers: Vec<Peer> = match a.peers.iter().map(|p| Peer::parse(p).ok_or(p)).collect() {
        Ok(p) => p,
        Err(bad) => {
            eprintln!("corecast-bench: unknown peer {bad:?}: use corecast, bun, node-ws, tokio-tungstenite or floor");
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
    // The reconnect storm runs last, against corecast and Socket.IO with recovery.
    let storm = (a.only.is_empty() || a.only.iter().any(|o| o == recovery::ID))
        && peers.contains(&Peer::Corecast);
    eprintln!(
        "corecast-bench ({} mode): {} scenarios × {} servers; server on CPUs {:?}, generator on {:?}",
        if a.full { "full, about three times the quick run" } else { "quick, about 16 minutes" },
        selected.len() + usize::from(storm),
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
        for (row, peer, variant) in rows(plan, &peers, a.full) {
            eprintln!(
                "[{:>5.0}s] {} / {row}",
                started.elapsed().as_secs_f64(),
                plan.id,
            );
            let ask = variant.map_or(Ask::Upgrade, |v| v.ask);
            let prepared = match variant {
                Some(v) => tokens_for(plan, v, &a.root, a.full),
                None => Ok((Vec::new(), Tokens::default())),
            }
            .map(|(mut flags, tokens)| {
                flags.extend(variant.iter().flat_map(|v| v.flags).map(|f| f.to_string()));
                // Outside the idle scenarios corecast pings as the harness says.
                let corecast = matches!(peer, Peer::Corecast | Peer::CorecastCluster);
                if corecast && !plan.keepalive {
                    let ping = peers::HARNESS_PING.map(String::from);
                    flags.splice(0..0, ping);
                }
                (flags, tokens)
            });
            let started_peer = prepared.and_then(|(flags, tokens)| {
                let server = peers::start(
                    peer,
                    &a.root,
                    plan.mode,
                    plan.deflate,
                    plan.tls.then_some(&tls),
                    &a.server_cpus,
                    &flags,
                )?;
                Ok((server, tokens))
            });
            let outcome = match started_peer {
                Err(e) => Outcome::failed(row, format!("{e:#}")),
                Ok((server, tokens)) => {
                    let path = if ask == Ask::NotFound {
                        "/nope"
                    } else {
                        peer.path()
                    };
                    let urls: Vec<String> = server
                        .addrs
                        .iter()
                        .map(|a| {
                            let scheme = if plan.tls { "wss" } else { "ws" };
                            format!("{scheme}://{a}{path}")
                        })
                        .collect();
                    let url = urls.join(",");
                    // An idle plan holds the connections through the server's settling time,
                    // the keep-alive window and some slack.
                    let (keepalive, settle) = peer.keepalive();
                    let window = Duration::from_secs(plan.duration_s.pick(a.full));
                    let duration = if plan.keepalive {
                        settle + window + Duration::from_secs(3)
                    } else {
                        window
                    };
                    let opts = Options {
                        scenario: plan.scenario,
                        targets: urls
                            .iter()
                            .map(|u| Target {
                                deflate: plan.deflate,
                                tokens: tokens.clone(),
                                expect: ask.status(),
                                ..Target::parse(u).expect("a valid URL")
                            })
                            .collect(),
                        url,
                        clients: plan.clients.pick(a.full),
                        messages: plan.messages.map(|m| m.pick(a.full)),
                        duration,
                        in_flight: plan.in_flight,
                        rate: plan.rate,
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
                        socket_io: peer == Peer::SocketIoRedis,
                        deflate: plan.deflate,
                    };
                    let sampler = plan.keepalive.then(|| {
                        idle::Sampler::start(idle::SampleSpec {
                            pids: server.pids(),
                            connections: plan.clients.pick(a.full),
                            keepalive,
                            settle,
                            window,
                        })
                    });
                    let result = corecast_load::run(opts);
                    let sampled = sampler.map(idle::Sampler::finish).unwrap_or_default();
                    drop(server);
                    if let Some(why) = &sampled.missing {
                        eprintln!("         (kernel memory or keep-alive: {why})");
                    }
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
                                peer: row,
                                report: Some(r),
                                error: None,
                                kernel: sampled.kernel,
                                keepalive: sampled.keepalive,
                            }
                        }
                        Err(e) => Outcome::failed(row, format!("{e:#}")),
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
                "variants": plan.variants.iter().map(|v| v.name).collect::<Vec<_>>(),
                "rounds": if plan.variants.is_empty() { 1 } else { plan.rounds.pick(a.full) },
            }),
            note: plan.note.into(),
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
    if storm {
        let setting = recovery::Setting {
            root: &a.root,
            out: &a.out,
            date: &date,
            machine: &machine,
            server_cpus: &a.server_cpus,
            load_cpus: &a.load_cpus,
            full: a.full,
            started,
        };
        match recovery::run(&setting) {
            Ok(md) => {
                summary += &md;
                summary += "\n";
            }
            Err(e) => {
                eprintln!("corecast-bench: {}: {e:#}", recovery::ID);
                return ExitCode::FAILURE;
            }
        }
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

    use super::{plans, rows, Peer, Plan};

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
        ) + &variants(p, full)
            + &p.rate.map_or(String::new(), |r| format!(" | rate {r}/s"))
            + if p.keepalive {
                " | kernel memory and keep-alive window"
            } else {
                ""
            }
    }

    /// A plan's variants, spelled out, or nothing for a plan without.
    fn variants(p: &Plan, full: bool) -> String {
        if p.variants.is_empty() {
            return String::new();
        }
        let each: Vec<String> = p
            .variants
            .iter()
            .map(|v| {
                let flags = if v.flags.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", v.flags)
                };
                format!("{} {:?} {:?} {:?}{flags}", v.name, v.auth, v.grants, v.ask)
            })
            .collect();
        format!(
            " | variants [{}] × {} | with peers {}",
            each.join(", "),
            p.rounds.pick(full),
            p.with_peers
        )
    }

    fn describe_all(full: bool) -> String {
        plans(full).map(|p| describe(p, full) + "\n").collect()
    }

    /// The quick run's plans, every parameter spelled out: a change to any shows here.
    const QUICK: &str = "\
        broadcast-1k | Broadcast to 1,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-10k | Broadcast to 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 10000 | messages Some(300) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-100-paced | Broadcast to 100 clients at 2,000 messages/s (open loop) | server CPU-µs per delivery | higher is better false | mode relay | Broadcast | clients 100 | messages Some(16000) | 15s | in flight 1000000 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [corecast None [] Upgrade, corecast-no-coalescing None [] Upgrade [\"--write-coalescing\", \"0\"]] × 2 | with peers true | rate 2000/s\n\
        chat-100 | Chat, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        chat-300 | Chat, 300 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 300 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        echo-50 | Echo, 50 clients, closed loop | round trips/s | higher is better true | mode echo | Echo | clients 50 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        idle-10k | 10,000 idle connections: server memory and keep-alive CPU | server user-space bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | kernel memory and keep-alive window\n\
        topics-10k | Topics: 10,000 clients on 100 topics, 4 publishers × 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topic-hot | One topic of 100 subscribers among 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 6s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 1, publish_topics: 1 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-100 | Broadcast to 100 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 100 | messages Some(40000) | 6s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        subs-100k | 100,000 subscriptions (10,000 clients × 10 of 1,000 topics): server memory | server bytes per connection | higher is better false | mode pubsub | Topics | clients 10000 | messages None | 2s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 1000, per_client: 10, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-deflate | Broadcast of 1 KiB JSON to 1,000 clients with permessage-deflate, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate true | size 1024 | tls false\n\
        broadcast-tls | Broadcast to 1,000 clients over TLS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        chat-tls | Chat over TLS, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        idle-tls | 10,000 idle TLS connections: server memory and keep-alive CPU | server user-space bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true | kernel memory and keep-alive window\n\
        cluster-broadcast | Broadcast to 1,000 clients, one node against two nodes over NATS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(3000) | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster true | deflate false | size 64 | tls false\n\
        cluster-broadcast-paced | Broadcast to 1,000 clients at 50 messages/s (open loop), one node against two nodes over NATS | server CPU-µs per delivery | higher is better false | mode relay | Broadcast | clients 1000 | messages Some(500) | 15s | in flight 1000000 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster true | deflate false | size 64 | tls false | rate 50/s\n\
        shootout | websocket-shootout: most clients with broadcast p95 under 500 ms | clients | higher is better true | mode shootout | Shootout | clients 8000 | messages None | 5s | in flight 1 | step 2000 | sample 10 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        upgrades | Upgrades: connect, upgrade and close, 64 at a time, without and with tokens | upgrades/s | higher is better true | mode echo | Upgrades | clients 64 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [corecast None [] Upgrade, corecast-hs256 Some(Hs256) [\"t*\"] Upgrade, corecast-es256 Some(Es256) [\"t*\"] Upgrade] × 2 | with peers true\n\
        upgrades-refused | Refused upgrades: a bad token's 401 against a 404, 64 at a time | server CPU-µs per request | higher is better false | mode echo | Upgrades | clients 64 | messages None | 4s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [404 not found Some(Hs256) [\"t*\"] NotFound, 401 bad token (HS256) Some(Hs256) [\"t*\"] BadToken, 401 bad token (ES256) Some(Es256) [\"t*\"] BadToken, 401 no token Some(Hs256) [\"t*\"] NoToken] × 2 | with peers false\n\
        topics-10k-auth | Topics with permission checks: topics-10k with and without tokens | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 8s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [corecast None [] Upgrade, corecast-auth Some(Hs256) [\"t*\"] Upgrade, corecast-auth-16 Some(Hs256) [\"a0.*\", \"a1.*\", \"a2.*\", \"a3.*\", \"a4.*\", \"a5.*\", \"a6.*\", \"a7.*\", \"a8.*\", \"a9.*\", \"a10.*\", \"a11.*\", \"a12.*\", \"a13.*\", \"a14.*\", \"t*\"] Upgrade] × 2 | with peers false\n\
        ";

    /// The full run's plans: longer, more messages, a bigger shootout, and topics-10k-x10.
    const FULL: &str = "\
        broadcast-1k | Broadcast to 1,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-10k | Broadcast to 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 10000 | messages Some(2000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-100-paced | Broadcast to 100 clients at 2,000 messages/s (open loop) | server CPU-µs per delivery | higher is better false | mode relay | Broadcast | clients 100 | messages Some(60000) | 45s | in flight 1000000 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [corecast None [] Upgrade, corecast-no-coalescing None [] Upgrade [\"--write-coalescing\", \"0\"]] × 3 | with peers true | rate 2000/s\n\
        chat-100 | Chat, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        chat-300 | Chat, 300 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 300 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        echo-50 | Echo, 50 clients, closed loop | round trips/s | higher is better true | mode echo | Echo | clients 50 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        idle-10k | 10,000 idle connections: server memory and keep-alive CPU | server user-space bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 30s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | kernel memory and keep-alive window\n\
        topics-10k | Topics: 10,000 clients on 100 topics, 4 publishers × 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topics-10k-x10 | Topics: 10,000 clients on 10 of 1,000 topics each, 4 publishers × 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 1000, per_client: 10, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        topic-hot | One topic of 100 subscribers among 10,000 clients, 8 in flight | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 20s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 1, publish_topics: 1 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-100 | Broadcast to 100 clients, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 100 | messages Some(200000) | 20s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        subs-100k | 100,000 subscriptions (10,000 clients × 10 of 1,000 topics): server memory | server bytes per connection | higher is better false | mode pubsub | Topics | clients 10000 | messages None | 5s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 1000, per_client: 10, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        broadcast-deflate | Broadcast of 1 KiB JSON to 1,000 clients with permessage-deflate, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate true | size 1024 | tls false\n\
        broadcast-tls | Broadcast to 1,000 clients over TLS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        chat-tls | Chat over TLS, 100 clients all publishing | deliveries/s | higher is better true | mode relay | Chat | clients 100 | messages None | 20s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true\n\
        idle-tls | 10,000 idle TLS connections: server memory and keep-alive CPU | server user-space bytes per connection | higher is better false | mode echo | Idle | clients 10000 | messages None | 30s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls true | kernel memory and keep-alive window\n\
        cluster-broadcast | Broadcast to 1,000 clients, one node against two nodes over NATS, 8 in flight | deliveries/s | higher is better true | mode relay | Broadcast | clients 1000 | messages Some(20000) | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster true | deflate false | size 64 | tls false\n\
        cluster-broadcast-paced | Broadcast to 1,000 clients at 50 messages/s (open loop), one node against two nodes over NATS | server CPU-µs per delivery | higher is better false | mode relay | Broadcast | clients 1000 | messages Some(1500) | 40s | in flight 1000000 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster true | deflate false | size 64 | tls false | rate 50/s\n\
        shootout | websocket-shootout: most clients with broadcast p95 under 500 ms | clients | higher is better true | mode shootout | Shootout | clients 18000 | messages None | 5s | in flight 1 | step 2000 | sample 20 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false\n\
        upgrades | Upgrades: connect, upgrade and close, 64 at a time, without and with tokens | upgrades/s | higher is better true | mode echo | Upgrades | clients 64 | messages None | 15s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [corecast None [] Upgrade, corecast-hs256 Some(Hs256) [\"t*\"] Upgrade, corecast-es256 Some(Es256) [\"t*\"] Upgrade] × 3 | with peers true\n\
        upgrades-refused | Refused upgrades: a bad token's 401 against a 404, 64 at a time | server CPU-µs per request | higher is better false | mode echo | Upgrades | clients 64 | messages None | 10s | in flight 1 | step 0 | sample 0 | TopicPlan { topics: 0, per_client: 0, publishers: 0, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [404 not found Some(Hs256) [\"t*\"] NotFound, 401 bad token (HS256) Some(Hs256) [\"t*\"] BadToken, 401 bad token (ES256) Some(Es256) [\"t*\"] BadToken, 401 no token Some(Hs256) [\"t*\"] NoToken] × 3 | with peers false\n\
        topics-10k-auth | Topics with permission checks: topics-10k with and without tokens | deliveries/s | higher is better true | mode pubsub | Topics | clients 10000 | messages None | 30s | in flight 8 | step 0 | sample 0 | TopicPlan { topics: 100, per_client: 1, publishers: 4, publish_topics: 0 } | cluster false | deflate false | size 64 | tls false | variants [corecast None [] Upgrade, corecast-auth Some(Hs256) [\"t*\"] Upgrade, corecast-auth-16 Some(Hs256) [\"a0.*\", \"a1.*\", \"a2.*\", \"a3.*\", \"a4.*\", \"a5.*\", \"a6.*\", \"a7.*\", \"a8.*\", \"a9.*\", \"a10.*\", \"a11.*\", \"a12.*\", \"a13.*\", \"a14.*\", \"t*\"] Upgrade] × 3 | with peers false\n\
        ";

    #[test]
    fn variants_take_turns_and_peers_follow() {
        let plan = plans(false).find(|p| p.id == "upgrades").unwrap();
        let peers = [Peer::Corecast, Peer::Bun, Peer::Tokio];
        let names: Vec<String> = rows(plan, &peers, false).into_iter().map(|r| r.0).collect();
        assert_eq!(
            names,
            [
                "corecast",
                "corecast-hs256",
                "corecast-es256",
                "corecast (2)",
                "corecast-hs256 (2)",
                "corecast-es256 (2)",
                "bun",
                "tokio-tungstenite"
            ]
        );
        // Without corecast there is no variant to run.
        let rows = rows(plan, &[Peer::Bun], false);
        assert_eq!(rows.len(), 1);
        let refused = plans(false).find(|p| p.id == "upgrades-refused").unwrap();
        assert!(super::rows(refused, &peers, false)
            .iter()
            .all(|r| r.1 == Peer::Corecast));
    }

    #[test]
    fn quick_plans_keep_their_parameters() {
        assert_eq!(describe_all(false), QUICK);
    }

    #[test]
    fn full_plans_keep_their_parameters() {
        assert_eq!(describe_all(true), FULL);
    }
}
