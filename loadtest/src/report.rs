//! The result of one run: what was measured, in JSON and as a human summary. Not the
//! measuring itself.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    /// Summarises a histogram recorded in microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// The server's resource use over the measured window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServerUsage {
    pub pids: Vec<u32>,
    pub cpu_seconds: f64,
    pub cpu_us_per_delivery: Option<f64>,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_per_connection_bytes: Option<f64>,
    /// Scenarios that hold connections (idle, topics without publishers): the server's CPU
    /// per held connection per second of the window, in µs: what keep-alive costs.
    pub cpu_us_per_connection_second: Option<f64>,
}

/// The upgrades scenario's counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UpgradeStats {
    /// The answer every request should get: 101, or the refusal a run of refused requests
    /// is after.
    pub expected_status: u16,
    pub requests: u64,
    /// Requests answered with the expected status (after a 101, closed cleanly too).
    pub answered: u64,
    /// Answered requests per second of the window.
    pub per_second: f64,
    /// Answers by status; 0 counts requests that got none (refused connect, timeout).
    pub statuses: BTreeMap<u16, u64>,
    /// Upgrades whose close the server answered with its close frame and end of stream.
    pub clean_closes: u64,
    /// The server's CPU time over the window per answered request.
    pub server_cpu_us_per_request: Option<f64>,
}

/// One shootout step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShootoutStep {
    pub clients: usize,
    pub rtt: Latency,
}

/// Everything one run found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub clients: usize,
    pub threads: usize,
    pub payload_bytes: usize,
    pub in_flight: usize,
    pub connect_seconds: f64,
    pub connects_per_second: f64,
    pub window_seconds: f64,
    pub sent: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    /// Echo: completed round trips per second.
    pub round_trips_per_second: Option<f64>,
    /// Per recipient: send to receipt.
    pub latency: Latency,
    /// Broadcast: send until the last recipient has it.
    pub broadcast_latency: Option<Latency>,
    pub pings_answered: u64,
    pub client_rss_per_connection_bytes: Option<f64>,
    pub server: Option<ServerUsage>,
    pub shootout_steps: Vec<ShootoutStep>,
    /// Shootout: the most clients whose broadcast p95 stayed under the limit.
    pub shootout_max_clients: Option<usize>,
    /// Topics: subscriptions held (subscribers × topics each).
    pub subscriptions: Option<u64>,
    /// Upgrades: requests, answers and CPU per request (`latency` is the handshake's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrades: Option<UpgradeStats>,
    pub fault_count: u64,
    /// The first faults in full; after a receiver's, how many bytes the server had sent it
    /// that were still unread in its socket at the end (not a fault of its own: it tells a
    /// message the server never sent from one this side never read).
    pub faults: Vec<String>,
    pub ok: bool,
}

impl Report {
    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} against {}: {} clients on {} threads",
            self.scenario, self.url, self.clients, self.threads
        );
        // 0: the scenario's messages are not sized by --size (the shootout's protocol JSON).
        if self.payload_bytes > 0 {
            s += &format!(", {} B payloads", self.payload_bytes);
        }
        s += "\n";
        if self.upgrades.is_some() {
            // Connecting is what it measures: no separate connect phase.
            s += &format!("  window {:.2}s\n", self.window_seconds);
        } else {
            s += &format!(
                "  connect: {:.2}s ({:.0}/s); window {:.2}s\n",
                self.connect_seconds, self.connects_per_second, self.window_seconds
            );
        }
        if let Some(u) = &self.upgrades {
            let statuses: Vec<String> = u
                .statuses
                .iter()
                .map(|(s, n)| match s {
                    0 => format!("{n} unanswered"),
                    s => format!("{n} × {s}"),
                })
                .collect();
            s += &format!(
                "  upgrades: {} of {} requests answered {} ({:.0}/s); {}; {} closed cleanly\n",
                u.answered,
                u.requests,
                u.expected_status,
                u.per_second,
                statuses.join(", "),
                u.clean_closes
            );
        } else if self.expected_deliveries > 0 || self.deliveries > 0 {
            s += &format!(
                "  sent {}, delivered {}/{} ({:.0}/s)\n",
                self.sent, self.deliveries, self.expected_deliveries, self.deliveries_per_second
            );
        }
        if let Some(rt) = self.round_trips_per_second {
            s += &format!("  round trips: {rt:.0}/s\n");
        }
        let lat = |name: &str, l: &Latency| {
            format!(
                "  {name}: p50 {}µs  p99 {}µs  p99.9 {}µs  max {}µs\n",
                l.p50_us, l.p99_us, l.p999_us, l.max_us
            )
        };
        if self.latency.count > 0 {
            let name = if self.upgrades.is_some() {
                "handshake"
            } else {
                "latency per recipient"
            };
            s += &lat(name, &self.latency);
        }
        if let Some(b) = &self.broadcast_latency {
            s += &lat("whole broadcast", b);
        }
        if let Some(srv) = &self.server {
            s += &format!("  server: {:.2} CPU-s", srv.cpu_seconds);
            if let Some(c) = srv.cpu_us_per_delivery {
                let per = if self.upgrades.is_some() {
                    "request"
                } else {
                    "delivery"
                };
                s += &format!(", {c:.2} CPU-µs per {per}");
            }
            s += &format!(", RSS {} → {} KiB", srv.rss_before_kib, srv.rss_after_kib);
            if let Some(r) = srv.rss_per_connection_bytes {
                s += &format!(" ({r:.0} B per connection)");
            }
            s += "\n";
            if let Some(c) = srv.cpu_us_per_connection_second {
                s += &format!("  keep-alive: {c:.3} CPU-µs per connection per second\n");
            }
        }
        if let Some(c) = self.client_rss_per_connection_bytes {
            s += &format!("  generator memory: {c:.0} B per connection\n");
        }
        if self.pings_answered > 0 {
            s += &format!("  pings answered: {}\n", self.pings_answered);
        }
        for step in &self.shootout_steps {
            s += &format!(
                "  shootout {} clients: broadcast rtt p95 {}µs\n",
                step.clients, step.rtt.p95_us
            );
        }
        if let Some(m) = self.shootout_max_clients {
            s += &format!("  shootout: {m} clients under the limit\n");
        }
        if self.ok {
            s += if self.upgrades.is_some() {
                "  OK: every request answered as expected\n"
            } else {
                "  OK: every message delivered exactly once, in order\n"
            };
        } else {
            s += &format!("  FAILED: {} faults\n", self.fault_count);
            for f in &self.faults {
                s += &format!("    {f}\n");
            }
        }
        s
    }
}

/// `v` rounded to a whole number with its thousands grouped: `1,234,567`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{v:.0}");
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits.as_str()),
    };
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.6), "1,234,568");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }
}
