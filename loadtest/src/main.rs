//! `corecast-load`: command line over the load engine. Prints a progress line while it runs,
//! a summary at the end, and the JSON report with `--json`. Exits 1 when a message was lost,
//! duplicated or reordered.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use corecast::units::parse_duration;
use corecast_load::topics::TopicPlan;
use corecast_load::ws::Target;
use corecast_load::{Options, Scenario};

/// Loads a WebSocket server and counts every delivery.
#[derive(Parser, Debug)]
#[command(name = "corecast-load", version)]
struct Args {
    /// broadcast: one publisher, everyone receives; chat: everyone publishes to everyone;
    /// echo: closed-loop round trips; idle: hold connections; shootout: grow until p95 > limit;
    /// topics: subscribers on topics, publishers cycling through them (pubsub protocol)
    scenario: Scenario,
    /// Server URL, e.g. ws://127.0.0.1:8080/ws; several, comma-separated, spread the clients
    /// over a cluster's nodes (connection i goes to URL i mod n; the first publishes)
    #[arg(long)]
    url: String,
    /// Connections (shootout: the most to try; topics: subscribers, publishers come on top)
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Broadcast: messages to publish [default: 1000]; chat and echo: per client, topics: per
    /// publisher [default: until --duration]
    #[arg(long)]
    messages: Option<u64>,
    /// How long to run (broadcast: the most to publish for, then in-flight messages drain)
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
    /// Topics: topics in all
    #[arg(long, default_value_t = 100)]
    topics: usize,
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
}

fn main() -> ExitCode {
    let a = Args::parse();
    let targets = match a
        .url
        .split(',')
        .map(|url| {
            Target::parse(url).map(|t| Target {
                deflate: a.deflate,
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
        clients: a.clients,
        messages: a.messages,
        duration: a.duration,
        in_flight: a.in_flight,
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
            topics: a.topics,
            per_client: a.per_client,
            publishers: a.publishers,
            // TopicPlan's 0 stands for all topics, as `--publish-topics 0` always has.
            publish_topics: a.publish_topics.unwrap_or(0),
        },
        socket_io: a.socket_io,
        deflate: a.deflate,
    };
    let report = match corecast_load::run(opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corecast-load: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.summary());
    if let Some(path) = a.json {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, json + "\n") {
            eprintln!("corecast-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
        let to = rest.find("\n  -").unwrap_or(rest.len());
        rest[..to].to_string()
    }

    #[test]
    fn publish_topics_shows_one_default() {
        let help = help_of("--publish-topics");
        assert_eq!(help.matches("[default:").count(), 1, "{help}");
        assert!(help.contains("[default: all]"), "{help}");
    }
}
