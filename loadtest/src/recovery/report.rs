//! What one recovery run found: the storm's figures (reconnect to recovered, time until every
//! client is back, messages recovered) and the live stream before, during and after it, with
//! the server's CPU for each; as JSON and as a summary for a person. Not the measuring.

use serde::Serialize;

use crate::report::{thousands, Latency};

/// The live stream over one part of the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Phase {
    /// `before` (publishing, nobody dropped yet), `during` (from the drop until every dropped
    /// client is back) or `after` (as long again as asked, everyone back).
    pub name: String,
    pub seconds: f64,
    /// Live deliveries that arrived in it: not the publications a client recovered.
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    /// Publish to receipt, of those live deliveries.
    pub latency: Latency,
    /// The server's user and system CPU time over the phase.
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
}

/// Everything one recovery run found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RecoveryReport {
    pub scenario: String,
    pub url: String,
    /// `corecast` (pubsub with positions) or `socket.io` (connection-state recovery).
    pub protocol: String,
    pub clients: usize,
    pub topics: usize,
    pub threads: usize,
    pub payload_bytes: usize,
    /// Publications a second, over all topics.
    pub rate: f64,
    pub storm_at_seconds: f64,
    pub drop_fraction: f64,
    /// Each dropped client waited the delay and its share of the jitter before reconnecting.
    pub reconnect_delay_ms: f64,
    pub jitter_ms: f64,
    pub connect_seconds: f64,
    /// Publications made, over all topics.
    pub published: u64,
    /// Every client owes every publication of its topic: first deliveries expected and made
    /// (live and recovered together).
    pub expected_deliveries: u64,
    pub deliveries: u64,
    /// Clients that dropped their connection at the storm.
    pub dropped: u64,
    /// Of those, the ones answered "recovered" with everything they missed.
    pub recovered: u64,
    pub not_recovered: u64,
    /// Reconnect attempts that failed and were tried again.
    pub reconnect_retries: u64,
    /// Publications the dropped clients got back through recovery.
    pub messages_recovered: u64,
    /// Publications given up by not-recovered answers (only with `--stale-ok`).
    pub messages_lost: u64,
    /// Per dropped client: from its reconnect's start (after any jitter) until it has the
    /// recovered answer and every publication it missed.
    pub reconnect_to_recovered: Latency,
    /// From the drop until the last dropped client was back.
    pub all_recovered_seconds: Option<f64>,
    /// before, during, after.
    pub phases: Vec<Phase>,
    /// The server's CPU during the storm beyond what its live deliveries cost at the CPU per
    /// delivery before it, per dropped client: what a reconnect costs the server, its
    /// recovered publications included.
    pub storm_cpu_us_per_reconnect: Option<f64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub fault_count: u64,
    pub faults: Vec<String>,
    pub ok: bool,
}

impl RecoveryReport {
    /// The phase named `name`.
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let topics = if self.topics == 1 { "topic" } else { "topics" };
        let mut s = format!(
            "recovery against {} ({}): {} clients on {} {topics}, {} publications/s, {} B payloads\n",
            self.url, self.protocol, self.clients, self.topics, self.rate, self.payload_bytes
        );
        s += &format!(
            "  connect and subscribe: {:.2}s; storm at {:.1}s: {} of {} clients dropped{}\n",
            self.connect_seconds,
            self.storm_at_seconds,
            self.dropped,
            self.clients,
            match (self.reconnect_delay_ms, self.jitter_ms) {
                (d, j) if d == 0.0 && j == 0.0 => ", reconnecting at once".to_string(),
                (d, j) => format!(", reconnecting after {d:.0} to {:.0} ms", d + j),
            }
        );
        let l = &self.reconnect_to_recovered;
        s += &format!(
            "  recovered {} (not {}, retries {}): reconnect to recovered p50 {}µs  p99 {}µs  max {}µs\n",
            self.recovered, self.not_recovered, self.reconnect_retries, l.p50_us, l.p99_us, l.max_us
        );
        if let Some(all) = self.all_recovered_seconds {
            s += &format!("  every client back {:.3}s after the drop\n", all);
        }
        s += &format!(
            "  messages recovered {}{}; delivered {}/{} of {} published\n",
            self.messages_recovered,
            if self.messages_lost > 0 {
                format!(", lost to not-recovered answers {}", self.messages_lost)
            } else {
                String::new()
            },
            self.deliveries,
            self.expected_deliveries,
            self.published
        );
        for p in &self.phases {
            s += &format!(
                "  {:<6} {:>6.2}s  live {:>9}/s  p50 {}µs  p99 {}µs  max {}µs",
                p.name,
                p.seconds,
                thousands(p.deliveries_per_second),
                p.latency.p50_us,
                p.latency.p99_us,
                p.latency.max_us
            );
            if let Some(c) = p.server_cpu_seconds {
                s += &format!("  server {c:.2} CPU-s");
            }
            if let Some(c) = p.server_cpu_us_per_delivery {
                s += &format!(" ({c:.2} µs per delivery)");
            }
            s += "\n";
        }
        if let Some(c) = self.storm_cpu_us_per_reconnect {
            s += &format!(
                "  storm: {c:.0} server CPU-µs per reconnect, its recovered publications included\n"
            );
        }
        if self.ok {
            s += "  OK: every publication delivered exactly once, in order, across the reconnect\n";
        } else {
            s += &format!("  FAILED: {} faults\n", self.fault_count);
            for f in &self.faults {
                s += &format!("    {f}\n");
            }
        }
        s
    }
}
