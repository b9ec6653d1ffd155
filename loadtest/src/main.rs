//! `corecast-load`: command line over the load engine. Prints a progress line while it runs,
//! a summary at the end, and the JSON report with `--json`. Exits 1 when a message was lost,
//! duplicated or reordered (recovery: also on a not-recovered answer).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use corecast::units::parse_duration;
use corecast_load::listen::{self, ListenOptions};
use corecast_load::recovery::{self, Protocol, RecoveryOptions};
use corecast_load::token::{Signing, TokenKey};
use corecast_load::topics::TopicPlan;
use corecast_load::upgrades::spoil;
use corecast_load::ws::{Target, TokenPlace, Tokens};
use corecast_load::{Options, Scenario};

/// Loads a WebSocket server and counts every delivery, or opens connections as fast as it
/// takes them (upgrades).
#[derive(Parser, Debug)]
#[command(name = "corecast-load", version)]
struct Args {
    /// broadcast: one publisher, everyone receives; chat: everyone publishes to everyone;
    /// echo: closed-loop round trips; idle: hold connections; shootout: grow until p95 > limit;
    /// topics: subscribers on topics, publishers cycling through them (pubsub protocol);
    /// upgrades: connect, upgrade (or be refused, --expect) and close, --clients at a time;
    /// recovery: a reconnect storm, subscribers of topics with history drop at once and come
    /// back for what they missed (corecast pubsub positions, or Socket.IO's connection-state
    /// recovery with --socket-io); listen: hold connections subscribed to --topic and count
    /// the broadcasts and publications sent through the server's HTTP API, each exactly once
    /// and in order up to its end message (corecast-many-nodes sends them)
    scenario: Scenario,
    /// Server URL, e.g. ws://127.0.0.1:8080/ws; several, comma-separated, spread the clients
    /// over a cluster's nodes (connection i goes to URL i mod n; the first publishes)
    #[arg(long)]
    url: String,
    /// Connections (shootout: the most to try; topics: subscribers, publishers come on top;
    /// upgrades: requests at a time) [default: 100; recovery: 1000]
    #[arg(long)]
    clients: Option<usize>,
    /// Broadcast: messages to publish [default: 1000]; chat and echo: per client, topics: per
    /// publisher, upgrades: requests in all [default: until --duration]
    #[arg(long)]
    messages: Option<u64>,
    /// How long to run (broadcast: the most to publish for, then in-flight messages drain;
    /// listen: the most to hold, waiting for the ends)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Messages a sender may have in flight
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Payload size in bytes
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Generator threads (one glommio executor each)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Comma-separated CPUs to pin generator threads to
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// The server's pid (comma-separated: all of a cluster's processes): report its CPU-µs
    /// per delivery and memory per connection, summed
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Write the report as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line
    #[arg(long)]
    quiet: bool,
    /// Shootout: clients added per step
    #[arg(long, default_value_t = 1000)]
    step: usize,
    /// Shootout: broadcasts timed per step
    #[arg(long, default_value_t = 20)]
    sample: usize,
    /// Shootout: broadcasts in flight while timing
    #[arg(long, default_value_t = 4)]
    concurrent: usize,
    /// Shootout: the broadcast p95 limit
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    limit: Duration,
    /// Topics and recovery: topics in all [default: 100; recovery: 1]
    #[arg(long)]
    topics: Option<usize>,
    /// Topics: topics each subscriber joins
    #[arg(long, default_value_t = 1)]
    per_client: usize,
    /// Topics: publishing connections; 0 holds the subscriptions only (for memory)
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Speak Socket.IO (Engine.IO v4 over WebSocket): messages travel as `m` events
    #[arg(long)]
    socket_io: bool,
    /// Offer permessage-deflate as browsers do (the run fails if the server declines), inflate
    /// what arrives, and pad messages with JSON records instead of `x`
    #[arg(long)]
    deflate: bool,
    /// Topics: publishers cycle through only the first N topics [default: all]
    #[arg(long)]
    publish_topics: Option<usize>,
    /// Connection tokens, one JWT a line (from --mint-tokens, or your issuer): connection i
    /// sends line i mod n
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Where tokens travel: query (`?token=`) or header (`Authorization: Bearer`)
    #[arg(long, default_value = "query", value_parser = token_place)]
    token_in: TokenPlace,
    /// Spoil every token's signature, for a run of refused requests (with --expect 401)
    #[arg(long)]
    bad_tokens: bool,
    /// Upgrades: the answer every request should get: 101, or a refusal's status (401 for
    /// --bad-tokens or no token, 404 for a path the server does not serve)
    #[arg(long, default_value_t = 101)]
    expect: u16,
    /// Make a signing key in DIR, write there the file the server verifies with and
    /// DIR/tokens (--clients tokens, users load-0, load-1, ...), print the server's flags, and
    /// exit: start the server with them, then run with --tokens DIR/tokens
    #[arg(long, value_name = "DIR")]
    mint_tokens: Option<PathBuf>,
    /// --mint-tokens: hs256 or es256
    #[arg(long, default_value = "hs256", value_parser = signing)]
    token_signing: Signing,
    /// --mint-tokens: comma-separated topic patterns the tokens may subscribe to (`t*`)
    #[arg(long, value_delimiter = ',')]
    grant_subscribe: Vec<String>,
    /// --mint-tokens: comma-separated topic patterns the tokens may publish to
    #[arg(long, value_delimiter = ',')]
    grant_publish: Vec<String>,
    /// --mint-tokens: how long the tokens live
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    token_ttl: Duration,
    /// Recovery: publications a second, over all topics (round robin), from one connection
    /// [default: 50]. Broadcast: messages a second from the publisher whatever comes back, an
    /// open loop as a feed publishes (raise --in-flight so the window does not hold it back)
    /// [default: as fast as --in-flight allows]
    #[arg(long)]
    rate: Option<f64>,
    /// Recovery: how long after publishing starts the clients drop
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    storm_at: Duration,
    /// Recovery: how long publishing goes on once every dropped client is back
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    after: Duration,
    /// Recovery: the share of the clients that drop, 0 to 1
    #[arg(long, default_value_t = 1.0)]
    drop_fraction: f64,
    /// Recovery: each dropped client waits this long before reconnecting [default: 0]
    #[arg(long, value_parser = parse_duration)]
    reconnect_delay: Option<Duration>,
    /// Recovery: and its own share of up to this on top [default: 0]
    #[arg(long, value_parser = parse_duration)]
    jitter: Option<Duration>,
    /// Recovery: a not-recovered answer is counted, not a failure; the client takes the live
    /// stream from there
    #[arg(long)]
    stale_ok: bool,
    /// Listen: the topic every client subscribes to at its upgrade
    #[arg(long, default_value = "everyone")]
    topic: String,
}

fn token_place(s: &str) -> Result<TokenPlace, String> {
    match s {
        "query" => Ok(TokenPlace::Query),
        "header" => Ok(TokenPlace::Header),
        _ => Err(format!("{s:?}: expected query or header")),
    }
}

fn signing(s: &str) -> Result<Signing, String> {
    match s.to_ascii_lowercase().as_str() {
        "hs256" => Ok(Signing::Hs256),
        "es256" => Ok(Signing::Es256),
        _ => Err(format!("{s:?}: expected hs256 or es256")),
    }
}

/// `--mint-tokens`: the key, the server's file and the tokens in `dir`; prints the flags.
fn mint(a: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = TokenKey::generate(a.token_signing, dir)?;
    let subscribe: Vec<&str> = a.grant_subscribe.iter().map(String::as_str).collect();
    let publish: Vec<&str> = a.grant_publish.iter().map(String::as_str).collect();
    let clients = a.clients.unwrap_or(100).max(1);
    let mut out = String::new();
    for i in 0..clients {
        let sub = format!("load-{i}");
        out += &key.mint_for(&sub, a.token_ttl.as_secs(), &subscribe, &publish)?;
        out.push('\n');
    }
    let file = dir.join("tokens");
    std::fs::write(&file, out).with_context(|| format!("writing {}", file.display()))?;
    let [flag, path] = key.server_args();
    println!("{flag} {path}");
    eprintln!(
        "corecast-load: {} tokens in {}; start the server with the flag above",
        clients,
        file.display()
    );
    Ok(())
}

/// The tokens of `--tokens`, spoiled with `--bad-tokens`.
fn read_tokens(a: &Args) -> anyhow::Result<Tokens> {
    let Some(path) = &a.tokens else {
        return Ok(Tokens::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let list: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|t| {
            if a.bad_tokens {
                spoil(t)
            } else {
                t.to_string()
            }
        })
        .collect();
    if list.is_empty() {
        anyhow::bail!("{} holds no token", path.display());
    }
    Ok(Tokens {
        list: list.into(),
        place: a.token_in,
    })
}

/// `corecast-load recovery`: the storm against the one server of `--url`.
fn recovery_run(a: &Args) -> ExitCode {
    let target = match Target::parse(&a.url) {
        Ok(t) if !a.url.contains(',') => t,
        Ok(_) => {
            eprintln!("corecast-load: recovery runs against the one server of --url");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("corecast-load: {e}");
            return ExitCode::from(2);
        }
    };
    let protocol = if a.socket_io {
        Protocol::SocketIo
    } else {
        Protocol::Corecast
    };
    let defaults = RecoveryOptions::new(target, a.url.clone(), protocol);
    let opts = RecoveryOptions {
        clients: a.clients.unwrap_or(defaults.clients),
        topics: a.topics.unwrap_or(defaults.topics),
        rate: a.rate.unwrap_or(50.0),
        size: a.size,
        storm_at: a.storm_at,
        after: a.after,
        drop_fraction: a.drop_fraction,
        reconnect_delay: a.reconnect_delay.unwrap_or_default(),
        jitter: a.jitter.unwrap_or_default(),
        stale_ok: a.stale_ok,
        threads: a.threads,
        cpus: a.cpus.clone(),
        server_pids: a.server_pid.clone(),
        progress: !a.quiet,
        ..defaults
    };
    finish(
        recovery::run(opts),
        |r| r.summary(),
        |r| r.ok,
        a.json.as_deref(),
    )
}

/// `corecast-load listen`: clients held on `--topic`, counting what the API sends.
fn listen_run(a: &Args) -> ExitCode {
    let defaults = match ListenOptions::new(&a.url, a.clients.unwrap_or(100)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("corecast-load: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = ListenOptions {
        topic: a.topic.clone(),
        duration: a.duration,
        threads: a.threads,
        cpus: a.cpus.clone(),
        progress: !a.quiet,
        ..defaults
    };
    finish(
        listen::run(opts),
        |r| r.summary(),
        |r| r.ok,
        a.json.as_deref(),
    )
}

/// The end of a run: its summary printed, its report written as JSON where asked, and the
/// exit status of its verdict (failure for a run that could not be made).
fn finish<R: serde::Serialize>(
    run: anyhow::Result<R>,
    summary: impl Fn(&R) -> String,
    ok: impl Fn(&R) -> bool,
    json: Option<&std::path::Path>,
) -> ExitCode {
    let report = match run {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corecast-load: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", summary(&report));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("corecast-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if ok(&report) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.scenario == Scenario::Recovery {
        return recovery_run(&a);
    }
    if a.scenario == Scenario::Listen {
        return listen_run(&a);
    }
    if let Some(dir) = &a.mint_tokens {
        return match mint(&a, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("corecast-load: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let tokens = match read_tokens(&a) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("corecast-load: {e:#}");
            return ExitCode::from(2);
        }
    };
    let targets = match a
        .url
        .split(',')
        .map(|url| {
            Target::parse(url).map(|t| Target {
                deflate: a.deflate,
                tokens: tokens.clone(),
                expect: a.expect,
                ..t
            })
        })
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("corecast-load: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        scenario: a.scenario,
        targets,
        url: a.url.clone(),
        clients: a.clients.unwrap_or(100),
        messages: a.messages,
        duration: a.duration,
        in_flight: a.in_flight,
        rate: a.rate.filter(|r| *r > 0.0),
        size: a.size,
        threads: a.threads,
        cpus: a.cpus,
        server_pids: a.server_pid,
        progress: !a.quiet,
        step: a.step,
        sample: a.sample,
        concurrent: a.concurrent,
        limit: a.limit,
        topics: TopicPlan {
            topics: a.topics.unwrap_or(100),
            per_client: a.per_client,
            publishers: a.publishers,
            // TopicPlan's 0 stands for all topics, as `--publish-topics 0` always has.
            publish_topics: a.publish_topics.unwrap_or(0),
        },
        socket_io: a.socket_io,
        deflate: a.deflate,
    };
    finish(
        corecast_load::run(opts),
        |r| r.summary(),
        |r| r.ok,
        a.json.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Args;

    /// What `--help` says about `--flag`: from its line to the next option's, however wrapped.
    fn help_of(flag: &str) -> String {
        let help = Args::command().render_long_help().to_string();
        let from = help.find(flag).expect("the flag is in --help");
        let rest = &help[from..];
        // The next option's line: `  -h, --help`, or `      --name` for one without a short.
        let to = ["\n  -", "\n      --"]
            .iter()
            .filter_map(|next| rest.find(next))
            .min()
            .unwrap_or(rest.len());
        rest[..to].to_string()
    }

    #[test]
    fn token_flags_parse() {
        use clap::Parser as _;
        let a = Args::try_parse_from([
            "corecast-load",
            "upgrades",
            "--url",
            "ws://127.0.0.1:1/nope",
            "--token-in",
            "header",
            "--token-signing",
            "ES256",
            "--expect",
            "404",
            "--grant-subscribe",
            "t*,news.*",
        ])
        .unwrap();
        assert_eq!(a.token_in, super::TokenPlace::Header);
        assert_eq!(a.token_signing, super::Signing::Es256);
        assert_eq!(a.expect, 404);
        assert_eq!(a.grant_subscribe, ["t*", "news.*"]);
        let a = Args::try_parse_from(["corecast-load", "upgrades", "--url", "ws://x:1/"]).unwrap();
        assert_eq!((a.token_in, a.expect), (super::TokenPlace::Query, 101));
        assert!(
            Args::try_parse_from(["x", "upgrades", "--url", "u", "--token-in", "cookie"]).is_err()
        );
    }

    #[test]
    fn publish_topics_shows_one_default() {
        let help = help_of("--publish-topics");
        assert_eq!(help.matches("[default:").count(), 1, "{help}");
        assert!(help.contains("[default: all]"), "{help}");
    }
}
