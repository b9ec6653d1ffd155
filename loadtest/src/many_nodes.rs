//! What `corecast-many-nodes` reads and writes, apart from the processes it runs: a node's
//! `/metrics` text, one request to its HTTP API, the "corecast serving" log line with its
//! addresses, and the run's result as JSON and Markdown. Not the orchestration (that is the
//! binary, `src/bin/corecast-many-nodes.rs`).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node's `/metrics`, parsed: every sample as (name, labels as written, value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: Vec<(String, String, f64)>,
}

impl Metrics {
    /// Parses Prometheus text; comments and lines that are not samples are skipped.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.trim().rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                Some((name.to_string(), labels.to_string(), value))
            })
            .collect();
        Metrics { samples }
    }

    /// The sum of every series of `name` (over shards, causes).
    pub fn sum(&self, name: &str) -> u64 {
        let total: f64 = self
            .samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .sum();
        total.round() as u64
    }

    /// The series of `name` by the value of `label`, summed over its other labels.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.samples {
            if n != name {
                continue;
            }
            if let Some(value) = label_value(labels, label) {
                *out.entry(value.to_string()).or_insert(0.0) += v;
            }
        }
        out.into_iter()
            .map(|(k, v)| (k, v.round() as u64))
            .collect()
    }
}

/// The value of `label` in `a="x",b="y"`.
fn label_value<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == label).then(|| v.trim().trim_matches('"'))
    })
}

/// What grew from `before` to `after`, by key; keys that did not grow are left out.
pub fn growth(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, &v)| {
            let grew = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (grew > 0).then(|| (k.clone(), grew))
        })
        .collect()
}

/// One HTTP/1.1 request to the API (one request per connection, as it serves them): the
/// status and body of the answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {:.80}", text)))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// The WebSocket and API addresses of the binary's "corecast serving" log line (its colours
/// taken out); `None` for any other line.
pub fn serving_addresses(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let plain = strip_ansi(line);
    if !plain.contains("corecast serving") {
        return None;
    }
    let field = |name: &str| -> Option<SocketAddr> {
        plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    Some((field("listen")?, field("api")))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The machine a run was made on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Host {
    pub cpu: String,
    pub cpus: usize,
    pub linux: String,
    pub open_files_limit: u64,
    pub nats_server: String,
}

/// The run's parameters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Parameters {
    pub nodes: usize,
    pub clients_per_node: usize,
    pub hold_seconds: f64,
    pub send_every_seconds: f64,
    pub topic: String,
    /// Each node's flags beyond its addresses, cluster URL and id.
    pub node_flags: Vec<String>,
}

/// CPU and memory of one process over the hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessUse {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the hold's seconds, as a share of one core.
    pub cpu_percent: f64,
    pub rss_kib: u64,
    /// The most file descriptors it held when sampled (every progress line).
    pub max_open_files: usize,
}

/// One node over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeResult {
    pub id: String,
    pub listen: String,
    pub api: String,
    pub connections_at_start: u64,
    pub connections_at_end: u64,
    pub subscriptions_at_end: u64,
    pub upgrades: u64,
    /// Connections torn down during the hold, by cause (none: empty).
    pub teardowns_in_hold: BTreeMap<String, u64>,
    /// Messages dropped during the hold, by cause.
    pub dropped_in_hold: BTreeMap<String, u64>,
    /// Messages written to clients during the hold, and publication deliveries among them.
    pub messages_out_in_hold: u64,
    pub publish_deliveries_in_hold: u64,
    /// Cross-node messages lost or not sent during the hold.
    pub cluster_dropped_in_hold: u64,
    pub usage: ProcessUse,
    /// RSS once it served, before any client came.
    pub rss_kib_before: u64,
    /// The node's CPU over the hold per connection held per second, in µs: keep-alive and
    /// the few deliveries together.
    pub cpu_us_per_connection_second: f64,
    /// RSS at the end of the hold, less `rss_kib_before`, per connection held.
    pub rss_bytes_per_connection: f64,
}

/// One generator over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GeneratorResult {
    pub node: String,
    pub exit_code: Option<i32>,
    pub usage: ProcessUse,
    /// Its report (`listen::ListenReport`) as it wrote it.
    pub report: Option<serde_json::Value>,
}

/// What this program reads of a generator's report (`listen::ListenReport` as JSON).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Counted {
    pub ok: bool,
    pub fault_count: u64,
    pub faults: Vec<String>,
    pub broadcasts: StreamCounted,
    pub publications: StreamCounted,
}

/// One stream of `Counted`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct StreamCounted {
    pub delivered: u64,
    pub latency: LatencyCounted,
}

/// What this program reads of a stream's latency.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct LatencyCounted {
    pub p99_us: u64,
    pub max_us: u64,
}

/// What was sent through the API and what the generators counted of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deliveries {
    pub broadcasts_sent: u64,
    pub publications_sent: u64,
    pub broadcasts_expected: u64,
    pub broadcasts_counted: u64,
    pub publications_expected: u64,
    pub publications_counted: u64,
    /// The slowest first delivery of any broadcast or publication, API call to client, in
    /// µs, and the worst p99 of any generator.
    pub broadcast_max_us: u64,
    pub broadcast_p99_us: u64,
    pub publication_max_us: u64,
    pub publication_p99_us: u64,
}

impl Deliveries {
    /// The generators' counts summed, against what was sent to `clients` connections.
    pub fn of(broadcasts: u64, publications: u64, clients: u64, reports: &[Counted]) -> Deliveries {
        let counted =
            |f: fn(&Counted) -> &StreamCounted| reports.iter().map(|r| f(r).delivered).sum::<u64>();
        let worst = |f: fn(&Counted) -> &StreamCounted, g: fn(&LatencyCounted) -> u64| {
            reports.iter().map(|r| g(&f(r).latency)).max().unwrap_or(0)
        };
        Deliveries {
            broadcasts_sent: broadcasts,
            publications_sent: publications,
            broadcasts_expected: broadcasts * clients,
            broadcasts_counted: counted(|r| &r.broadcasts),
            publications_expected: publications * clients,
            publications_counted: counted(|r| &r.publications),
            broadcast_max_us: worst(|r| &r.broadcasts, |l| l.max_us),
            broadcast_p99_us: worst(|r| &r.broadcasts, |l| l.p99_us),
            publication_max_us: worst(|r| &r.publications, |l| l.max_us),
            publication_p99_us: worst(|r| &r.publications, |l| l.p99_us),
        }
    }
}

/// The whole run, as written to `<date>-many-nodes.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ManyNodesResult {
    pub id: String,
    pub date: String,
    pub commit: String,
    /// Files of the library and the binary (`src/`, `bin/`) that differed from `commit` in
    /// the working tree the binaries were built from.
    pub uncommitted: Vec<String>,
    pub host: Host,
    pub parameters: Parameters,
    /// From the generators' start until every one held its connections.
    pub connect_seconds: f64,
    pub hold_seconds: f64,
    pub nodes: Vec<NodeResult>,
    pub nats: ProcessUse,
    pub generators: Vec<GeneratorResult>,
    pub deliveries: Deliveries,
    pub ok: bool,
    /// Why not, each in a sentence.
    pub failures: Vec<String>,
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    // The leading group holds what is left over after groups of three.
    let lead = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = digits[..lead.min(digits.len())].to_string();
    for group in digits.as_bytes()[lead.min(digits.len())..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

/// A duration in words: `10 minutes`, `90 s`.
fn span(seconds: f64) -> String {
    let s = seconds.round() as u64;
    let m = s / 60;
    if m > 0 && m * 60 == s {
        format!("{m} minute{}", if m == 1 { "" } else { "s" })
    } else {
        format!("{s} s")
    }
}

/// `idle_timeout 12, io 3` (causes at 0 left out), or `none`.
pub fn causes(map: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, &v)| v > 0)
        .map(|(k, v)| format!("{k} {}", thousands(*v)))
        .collect();
    if parts.is_empty() {
        return "none".into();
    }
    parts.join(", ")
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1e3)
}

/// The result as Markdown: a `###` heading first (the results page takes it as the section's),
/// then the setup, the verdict, a table per node and the deliveries.
pub fn markdown(r: &ManyNodesResult) -> String {
    let p = &r.parameters;
    let clients = (p.nodes * p.clients_per_node) as u64;
    let mut out = format!(
        "### Many nodes: {} connections over {} cluster nodes on one machine, held {}\n\n",
        thousands(clients),
        p.nodes,
        span(p.hold_seconds)
    );
    out += &format!(
        "`corecast-many-nodes` ({}, commit {}{}): one nats-server (JetStream on), {} `corecast` \
         nodes (`{}`, the binary's keep-alive defaults) and {} `corecast-load listen` \
         generators of {} clients each, one per node, every client subscribed to `{}`; all on \
         127.0.0.1 of one {}-CPU {} machine (Linux {}, {} open files per process). Every {} \
         of the hold, and once at its end, one node's API sent a broadcast (`POST \
         /api/broadcast`) and a publication to the topic (`POST /api/publish/{}`); the \
         generators checked every one on every client, exactly once and in order. \
         Connecting took {:.1} s; the hold {:.1} s.\n\n",
        r.date,
        r.commit,
        if r.uncommitted.is_empty() {
            String::new()
        } else {
            format!(
                ", with uncommitted changes to {}",
                r.uncommitted
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        p.nodes,
        p.node_flags.join(" "),
        p.nodes,
        thousands(p.clients_per_node as u64),
        p.topic,
        r.host.cpus,
        r.host.cpu,
        r.host.linux,
        thousands(r.host.open_files_limit),
        span(p.send_every_seconds),
        p.topic,
        r.connect_seconds,
        r.hold_seconds,
    );
    if r.ok {
        out += &format!(
            "**Held:** every one of the {} connections for the whole hold, and every broadcast \
             and publication reached every client exactly once, in order.\n\n",
            thousands(clients)
        );
    } else {
        out += "**Failed:**\n\n";
        for f in &r.failures {
            out += &format!("* {f}\n");
        }
        out.push('\n');
    }
    out += "| node | held at start | held at end | upgrades | teardowns in the hold | \
            CPU in the hold | CPU-µs per connection per second | RSS at end | most open files |\n\
            |---|---:|---:|---:|---|---:|---:|---:|---:|\n";
    for n in &r.nodes {
        out += &format!(
            "| {} | {} | {} | {} | {} | {:.1} s ({:.1}%) | {:.2} | {:.0} MiB ({} B per connection) | {} |\n",
            n.id,
            thousands(n.connections_at_start),
            thousands(n.connections_at_end),
            thousands(n.upgrades),
            causes(&n.teardowns_in_hold),
            n.usage.cpu_seconds,
            n.usage.cpu_percent,
            n.cpu_us_per_connection_second,
            n.usage.rss_kib as f64 / 1024.0,
            thousands(n.rss_bytes_per_connection.round() as u64),
            thousands(n.usage.max_open_files as u64),
        );
    }
    out += &format!(
        "| nats-server | | | | | {:.1} s ({:.1}%) | | {:.0} MiB | {} |\n\n",
        r.nats.cpu_seconds,
        r.nats.cpu_percent,
        r.nats.rss_kib as f64 / 1024.0,
        thousands(r.nats.max_open_files as u64),
    );
    let d = &r.deliveries;
    out += "| stream | sent | deliveries expected | counted by the generators | \
            worst p99, API call to client | slowest |\n|---|---:|---:|---:|---:|---:|\n";
    out += &format!(
        "| broadcast | {} | {} | {} | {} | {} |\n",
        d.broadcasts_sent,
        thousands(d.broadcasts_expected),
        thousands(d.broadcasts_counted),
        ms(d.broadcast_p99_us),
        ms(d.broadcast_max_us),
    );
    out += &format!(
        "| publication | {} | {} | {} | {} | {} |\n",
        d.publications_sent,
        thousands(d.publications_expected),
        thousands(d.publications_counted),
        ms(d.publication_p99_us),
        ms(d.publication_max_us),
    );
    let gens: Vec<String> = r
        .generators
        .iter()
        .map(|g| {
            format!(
                "{:.1} s ({} open files at most)",
                g.usage.cpu_seconds,
                thousands(g.usage.max_open_files as u64)
            )
        })
        .collect();
    out += &format!(
        "\nGenerators' CPU in the hold: {}. RSS per connection is the node's growth from \
         before its clients came, user space only. Teardowns and drops come from each node's \
         `/metrics` (`corecast_teardowns_total`, `corecast_dropped_messages_total`); messages \
         dropped in the hold: {}.\n",
        gens.join(", "),
        {
            let mut all = BTreeMap::new();
            for n in &r.nodes {
                for (k, v) in &n.dropped_in_hold {
                    *all.entry(k.clone()).or_insert(0) += v;
                }
            }
            causes(&all)
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP corecast_connections open connections\n\
        # TYPE corecast_connections gauge\n\
        corecast_connections{shard=\"0\"} 7\n\
        corecast_connections{shard=\"1\"} 5\n\
        corecast_teardowns_total{cause=\"idle_timeout\"} 3\n\
        corecast_teardowns_total{cause=\"clean\"} 0\n\
        corecast_cluster_messages_dropped_total 2\n\
        corecast_broadcast_fanout_seconds{shard=\"0\",quantile=\"0.5\"} 0.000125\n\
        not a sample\n";

    #[test]
    fn metrics_sum_and_split_by_label() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.sum("corecast_connections"), 12);
        assert_eq!(m.sum("corecast_cluster_messages_dropped_total"), 2);
        assert_eq!(m.sum("corecast_nothing"), 0);
        let by = m.by("corecast_teardowns_total", "cause");
        assert_eq!(by.get("idle_timeout"), Some(&3));
        assert_eq!(by.get("clean"), Some(&0));
        let q = m.by("corecast_broadcast_fanout_seconds", "quantile");
        assert_eq!(q.keys().collect::<Vec<_>>(), ["0.5"]);
    }

    #[test]
    fn growth_keeps_what_grew() {
        let before = BTreeMap::from([("clean".to_string(), 4), ("io".to_string(), 1)]);
        let after = BTreeMap::from([
            ("clean".to_string(), 4),
            ("io".to_string(), 3),
            ("idle_timeout".to_string(), 9),
        ]);
        let grew = growth(&before, &after);
        assert_eq!(
            grew,
            BTreeMap::from([("idle_timeout".to_string(), 9), ("io".to_string(), 2)])
        );
        assert_eq!(causes(&grew), "idle_timeout 9, io 2");
        assert_eq!(causes(&BTreeMap::new()), "none");
        assert_eq!(causes(&BTreeMap::from([("clean".to_string(), 0)])), "none");
    }

    #[test]
    fn the_serving_line_gives_both_addresses() {
        let line = "2026-12-06T18:00:00Z  INFO corecast: corecast serving listen=127.0.0.1:4100 \
                    shards=1 mode=pubsub api=127.0.0.1:4101 tls=false";
        assert_eq!(
            serving_addresses(line),
            Some((
                "127.0.0.1:4100".parse().unwrap(),
                Some("127.0.0.1:4101".parse().unwrap())
            ))
        );
        let coloured = "\x1b[32m INFO\x1b[0m \x1b[2mcorecast\x1b[0m: corecast serving \
                        \x1b[3mlisten\x1b[0m\x1b[2m=\x1b[0m127.0.0.1:9 api=off";
        assert_eq!(
            serving_addresses(coloured),
            Some(("127.0.0.1:9".parse().unwrap(), None))
        );
        assert_eq!(serving_addresses("INFO something else"), None);
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(60_000), "60,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(span(600.0), "10 minutes");
        assert_eq!(span(60.0), "1 minute");
        assert_eq!(span(90.0), "90 s");
    }

    #[test]
    fn deliveries_sum_the_generators_against_what_was_sent() {
        // A generator's report as it writes it, read back.
        let mut report = crate::listen::ListenReport::default();
        report.broadcasts.delivered = 30;
        report.broadcasts.latency.max_us = 900;
        report.publications.delivered = 29;
        let json = serde_json::to_string(&report).unwrap();
        let a: Counted = serde_json::from_str(&json).unwrap();
        assert_eq!(a.broadcasts.latency.max_us, 900);
        let mut b = a.clone();
        b.broadcasts.latency.max_us = 1200;
        let d = Deliveries::of(3, 3, 20, &[a, b]);
        assert_eq!((d.broadcasts_expected, d.broadcasts_counted), (60, 60));
        assert_eq!((d.publications_expected, d.publications_counted), (60, 58));
        assert_eq!(d.broadcast_max_us, 1200);
    }

    #[test]
    fn markdown_opens_with_its_heading_and_states_failures() {
        let mut r = ManyNodesResult {
            parameters: Parameters {
                nodes: 4,
                clients_per_node: 15_000,
                hold_seconds: 600.0,
                send_every_seconds: 30.0,
                ..Parameters::default()
            },
            ok: true,
            nodes: vec![NodeResult::default()],
            ..ManyNodesResult::default()
        };
        let md = markdown(&r);
        assert!(md.starts_with(
            "### Many nodes: 60,000 connections over 4 cluster nodes on one machine, held 10 minutes\n"
        ));
        assert!(md.contains("**Held:**"), "{md}");
        r.ok = false;
        r.failures = vec!["node-1: 3 connections torn down in the hold: idle_timeout 3".into()];
        let md = markdown(&r);
        assert!(
            md.contains("**Failed:**\n\n* node-1: 3 connections"),
            "{md}"
        );
    }
}
