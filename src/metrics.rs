//! Counters each shard keeps about its own traffic, and their Prometheus text rendering. Not a
//! metrics framework: plain relaxed atomics, one cache line set per shard so shards never
//! contend on a counter.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// Why a message was dropped instead of sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCause {
    /// It waited past the retry window for room in a full queue.
    QueueFull = 0,
    /// Its connection was closing or gone.
    Closed = 1,
}

const DROP_CAUSES: [&str; 2] = ["queue_full", "closed"];

/// Why a connection went before its upgrade was answered, with no HTTP answer to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// The handshake timeout passed (a slow or stalled client).
    Timeout = 0,
    /// The TLS handshake failed (not TLS, a bad record, no common cipher suite).
    Tls = 1,
    /// The client closed or reset the connection.
    Closed = 2,
}

const HANDSHAKE_FAILURES: [&str; 3] = ["timeout", "tls", "closed"];

/// Why a connection was torn down (label values of `corecast_teardowns_total`).
const TEARDOWN_CAUSES: [&str; 11] = [
    "clean",
    "peer_error",
    "io",
    "idle_timeout",
    "write_timeout",
    "protocol",
    "too_large",
    "callback_panic",
    "forced",
    "ping_flood",
    "other",
];

fn teardown_index(error: Option<&Error>) -> usize {
    match error {
        None => 0,
        Some(Error::PeerClosed { .. }) => 1,
        Some(Error::Io(_)) => 2,
        Some(Error::IdleTimeout(_)) => 3,
        Some(Error::WriteTimeout(_)) => 4,
        Some(Error::Protocol(_)) => 5,
        Some(Error::MessageTooLarge) => 6,
        Some(Error::CallbackPanic) => 7,
        Some(Error::Timeout) => 8,
        Some(Error::PingFlood) => 9,
        Some(_) => 10,
    }
}

/// Statuses counted one by one; any other refusal counts as "other".
const REJECT_STATUSES: [u16; 10] = [400, 401, 403, 404, 409, 426, 431, 500, 503, 0];

/// One shard's counters, padded so two shards never share a cache line.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct ShardMetrics {
    upgrades: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    drops: [AtomicU64; 2],
    teardowns: [AtomicU64; TEARDOWN_CAUSES.len()],
    rejections: [AtomicU64; 10],
    handshake_failures: [AtomicU64; HANDSHAKE_FAILURES.len()],
    fanout_nanos: AtomicU64,
    fanouts: AtomicU64,
    publishes: AtomicU64,
    publish_deliveries: AtomicU64,
    publish_nanos: AtomicU64,
    subscriptions: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl ShardMetrics {
    pub(crate) fn upgraded(&self) {
        add(&self.upgrades, 1);
    }
    pub(crate) fn received(&self, bytes: usize) {
        add(&self.messages_in, 1);
        add(&self.bytes_in, bytes as u64);
    }
    pub(crate) fn queued(&self) {
        add(&self.messages_out, 1);
    }
    pub(crate) fn written(&self, bytes: usize) {
        add(&self.bytes_out, bytes as u64);
    }
    pub(crate) fn dropped(&self, cause: DropCause) {
        add(&self.drops[cause as usize], 1);
    }
    pub(crate) fn torn_down(&self, error: Option<&Error>) {
        add(&self.teardowns[teardown_index(error)], 1);
    }
    pub(crate) fn rejected(&self, status: u16) {
        let i = REJECT_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(REJECT_STATUSES.len() - 1);
        add(&self.rejections[i], 1);
    }
    pub(crate) fn handshake_failed(&self, cause: HandshakeFailure) {
        add(&self.handshake_failures[cause as usize], 1);
    }
    pub(crate) fn fanned_out(&self, nanos: u64) {
        add(&self.fanout_nanos, nanos);
        add(&self.fanouts, 1);
    }
    /// One publish reached this shard and was queued for `deliveries` subscribers.
    pub(crate) fn published(&self, deliveries: u64, nanos: u64) {
        add(&self.publishes, 1);
        add(&self.publish_deliveries, deliveries);
        add(&self.publish_nanos, nanos);
    }
    pub(crate) fn subscribed(&self, n: u64) {
        add(&self.subscriptions, n);
    }
    pub(crate) fn unsubscribed(&self, n: u64) {
        self.subscriptions.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A copy of every shard's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Live connections per shard.
    pub connections: Vec<u64>,
    /// Completed upgrades per shard.
    pub upgrades: Vec<u64>,
    /// Messages received per shard.
    pub messages_in: Vec<u64>,
    /// Payload bytes received per shard.
    pub bytes_in: Vec<u64>,
    /// Messages accepted into send queues per shard.
    pub messages_out: Vec<u64>,
    /// Bytes written to sockets per shard (frames, handshakes and control frames included).
    pub bytes_out: Vec<u64>,
    /// Dropped messages by cause, summed over shards.
    pub drops: Vec<(&'static str, u64)>,
    /// Teardowns by cause, summed over shards.
    pub teardowns: Vec<(&'static str, u64)>,
    /// Refused upgrades by HTTP status ("other" for the rest), summed over shards.
    pub rejections: Vec<(String, u64)>,
    /// Connections that went before their upgrade without an HTTP answer, by cause
    /// ("timeout", "tls", "closed"), summed over shards.
    pub handshake_failures: Vec<(&'static str, u64)>,
    /// Time spent queueing broadcasts to a shard's connections, in nanoseconds, and how many.
    pub fanout_nanos: u64,
    /// Number of per-shard broadcast fan-outs measured.
    pub fanouts: u64,
    /// Publishes handled per shard (one per publish that reached a shard with subscribers).
    pub publishes: Vec<u64>,
    /// Messages queued for topic subscribers per shard.
    pub publish_deliveries: Vec<u64>,
    /// Time spent queueing publishes to subscribers, in nanoseconds, summed over shards.
    pub publish_nanos: u64,
    /// Subscriptions held per shard.
    pub subscriptions: Vec<u64>,
    /// Cluster mode: the NATS link's counters; `None` without cluster mode.
    pub cluster: Option<ClusterMetrics>,
}

/// The NATS link's counters (cluster mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Cross-node messages published.
    pub messages_out: u64,
    /// Cross-node messages received.
    pub messages_in: u64,
    /// Cross-node messages dropped: not sent (NATS down, link behind) or lost by NATS.
    pub dropped: u64,
    /// The last measured round trip to the NATS server.
    pub nats_rtt: std::time::Duration,
    /// Nodes in this node's view, itself included.
    pub nodes: usize,
    /// Whether the link to NATS is up.
    pub connected: bool,
}

impl MetricsSnapshot {
    pub(crate) fn collect(shards: &[&ShardMetrics], live: &[u64]) -> MetricsSnapshot {
        let load = |f: fn(&ShardMetrics) -> &AtomicU64| -> Vec<u64> {
            shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .collect()
        };
        let sum = |f: &dyn Fn(&ShardMetrics) -> u64| shards.iter().map(|s| f(s)).sum::<u64>();
        // Each label with its counter summed over shards.
        let by_label = |labels: &[&'static str], f: fn(&ShardMetrics) -> &[AtomicU64]| {
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (*l, sum(&|s| f(s)[i].load(Ordering::Relaxed))))
                .collect()
        };
        MetricsSnapshot {
            connections: live.to_vec(),
            upgrades: load(|s| &s.upgrades),
            messages_in: load(|s| &s.messages_in),
            bytes_in: load(|s| &s.bytes_in),
            messages_out: load(|s| &s.messages_out),
            bytes_out: load(|s| &s.bytes_out),
            drops: by_label(&DROP_CAUSES, |s| &s.drops),
            teardowns: by_label(&TEARDOWN_CAUSES, |s| &s.teardowns),
            handshake_failures: by_label(&HANDSHAKE_FAILURES, |s| &s.handshake_failures),
            rejections: REJECT_STATUSES
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    let label = if *st == 0 {
                        "other".to_string()
                    } else {
                        st.to_string()
                    };
                    (label, sum(&|s| s.rejections[i].load(Ordering::Relaxed)))
                })
                .collect(),
            fanout_nanos: sum(&|s| s.fanout_nanos.load(Ordering::Relaxed)),
            fanouts: sum(&|s| s.fanouts.load(Ordering::Relaxed)),
            publishes: load(|s| &s.publishes),
            publish_deliveries: load(|s| &s.publish_deliveries),
            publish_nanos: sum(&|s| s.publish_nanos.load(Ordering::Relaxed)),
            subscriptions: load(|s| &s.subscriptions),
            cluster: None,
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let per_shard = |out: &mut String, name: &str, kind: &str, help: &str, v: &[u64]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, n) in v.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {n}");
            }
        };
        per_shard(
            &mut out,
            "corecast_connections",
            "gauge",
            "Live connections.",
            &self.connections,
        );
        per_shard(
            &mut out,
            "corecast_upgrades_total",
            "counter",
            "Completed WebSocket upgrades.",
            &self.upgrades,
        );
        per_shard(
            &mut out,
            "corecast_messages_in_total",
            "counter",
            "Messages received from clients.",
            &self.messages_in,
        );
        per_shard(
            &mut out,
            "corecast_bytes_in_total",
            "counter",
            "Payload bytes received from clients.",
            &self.bytes_in,
        );
        per_shard(
            &mut out,
            "corecast_messages_out_total",
            "counter",
            "Messages queued for clients.",
            &self.messages_out,
        );
        per_shard(
            &mut out,
            "corecast_bytes_out_total",
            "counter",
            "Bytes written to client sockets.",
            &self.bytes_out,
        );
        let labelled =
            |out: &mut String, name: &str, help: &str, label: &str, v: &[(String, u64)]| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (l, n) in v {
                    let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {n}");
                }
            };
        let own = |v: &[(&'static str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(l, n)| (l.to_string(), *n)).collect()
        };
        labelled(
            &mut out,
            "corecast_dropped_messages_total",
            "Messages dropped instead of sent.",
            "cause",
            &own(&self.drops),
        );
        labelled(
            &mut out,
            "corecast_teardowns_total",
            "Connections torn down.",
            "cause",
            &own(&self.teardowns),
        );
        labelled(
            &mut out,
            "corecast_upgrade_rejections_total",
            "Upgrades refused.",
            "status",
            &self.rejections,
        );
        labelled(
            &mut out,
            "corecast_handshake_failures_total",
            "Connections that went before their upgrade, with no HTTP answer to give.",
            "cause",
            &own(&self.handshake_failures),
        );
        let _ = writeln!(
            out,
            "# HELP corecast_broadcast_fanout_seconds Time to queue one broadcast on one shard's connections.\n\
             # TYPE corecast_broadcast_fanout_seconds summary\n\
             corecast_broadcast_fanout_seconds_sum {}\n\
             corecast_broadcast_fanout_seconds_count {}",
            self.fanout_nanos as f64 / 1e9,
            self.fanouts
        );
        per_shard(
            &mut out,
            "corecast_subscriptions",
            "gauge",
            "Topic subscriptions held.",
            &self.subscriptions,
        );
        per_shard(
            &mut out,
            "corecast_publishes_total",
            "counter",
            "Publishes that reached a shard with subscribers.",
            &self.publishes,
        );
        per_shard(
            &mut out,
            "corecast_publish_deliveries_total",
            "counter",
            "Messages queued for topic subscribers.",
            &self.publish_deliveries,
        );
        let publishes: u64 = self.publishes.iter().sum();
        let _ = writeln!(
            out,
            "# HELP corecast_publish_fanout_seconds Time to queue one publish on one shard's subscribers.\n\
             # TYPE corecast_publish_fanout_seconds summary\n\
             corecast_publish_fanout_seconds_sum {}\n\
             corecast_publish_fanout_seconds_count {publishes}\n\
             # HELP corecast_publish_recipients Subscribers one publish reached on one shard.\n\
             # TYPE corecast_publish_recipients summary\n\
             corecast_publish_recipients_sum {}\n\
             corecast_publish_recipients_count {publishes}",
            self.publish_nanos as f64 / 1e9,
            self.publish_deliveries.iter().sum::<u64>(),
        );
        if let Some(c) = &self.cluster {
            let _ = writeln!(
                out,
                "# HELP corecast_cluster_messages_out_total Cross-node messages published to NATS.\n\
                 # TYPE corecast_cluster_messages_out_total counter\n\
                 corecast_cluster_messages_out_total {}\n\
                 # HELP corecast_cluster_messages_in_total Cross-node messages received from NATS.\n\
                 # TYPE corecast_cluster_messages_in_total counter\n\
                 corecast_cluster_messages_in_total {}\n\
                 # HELP corecast_cluster_messages_dropped_total Cross-node messages not sent or lost.\n\
                 # TYPE corecast_cluster_messages_dropped_total counter\n\
                 corecast_cluster_messages_dropped_total {}\n\
                 # HELP corecast_cluster_nats_rtt_seconds Last round trip to the NATS server.\n\
                 # TYPE corecast_cluster_nats_rtt_seconds gauge\n\
                 corecast_cluster_nats_rtt_seconds {}\n\
                 # HELP corecast_cluster_nodes Nodes in this node's view, itself included.\n\
                 # TYPE corecast_cluster_nodes gauge\n\
                 corecast_cluster_nodes {}\n\
                 # HELP corecast_cluster_connected Whether the link to NATS is up.\n\
                 # TYPE corecast_cluster_connected gauge\n\
                 corecast_cluster_connected {}",
                c.messages_out,
                c.messages_in,
                c.dropped,
                c.nats_rtt.as_secs_f64(),
                c.nodes,
                u8::from(c.connected)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_render() {
        let shards = [ShardMetrics::default(), ShardMetrics::default()];
        shards[0].received(5);
        shards[1].received(7);
        shards[1].dropped(DropCause::QueueFull);
        shards[0].torn_down(None);
        shards[1].torn_down(Some(&Error::IdleTimeout(std::time::Duration::from_secs(3))));
        shards[0].rejected(503);
        shards[0].rejected(418);
        shards[0].handshake_failed(HandshakeFailure::Tls);
        shards[1].handshake_failed(HandshakeFailure::Tls);
        shards[1].handshake_failed(HandshakeFailure::Timeout);
        shards[1].fanned_out(2_000_000);
        shards[0].subscribed(3);
        shards[0].unsubscribed(1);
        shards[1].published(40, 1_000);
        shards[1].published(2, 1_000);
        let shards: Vec<&ShardMetrics> = shards.iter().collect();
        let m = MetricsSnapshot::collect(&shards, &[3, 4]);
        assert_eq!(m.bytes_in, vec![5, 7]);
        assert_eq!(m.drops[0], ("queue_full", 1));
        assert_eq!(m.teardowns[0], ("clean", 1));
        assert_eq!(m.teardowns[3], ("idle_timeout", 1));
        let text = m.to_prometheus();
        assert!(
            text.contains("corecast_connections{shard=\"1\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("corecast_bytes_in_total{shard=\"0\"} 5\n"));
        assert!(text.contains("corecast_upgrade_rejections_total{status=\"503\"} 1\n"));
        assert!(text.contains("corecast_upgrade_rejections_total{status=\"other\"} 1\n"));
        assert_eq!(
            m.handshake_failures,
            vec![("timeout", 1), ("tls", 2), ("closed", 0)]
        );
        assert!(text.contains("corecast_handshake_failures_total{cause=\"tls\"} 2\n"));
        assert!(text.contains("corecast_broadcast_fanout_seconds_sum 0.002\n"));
        assert!(text.contains("corecast_broadcast_fanout_seconds_count 1"));
        assert_eq!(m.subscriptions, vec![2, 0]);
        assert!(text.contains("corecast_subscriptions{shard=\"0\"} 2\n"));
        assert!(text.contains("corecast_publishes_total{shard=\"1\"} 2\n"));
        assert!(text.contains("corecast_publish_deliveries_total{shard=\"1\"} 42\n"));
        assert!(text.contains("corecast_publish_recipients_sum 42\n"));
        assert!(text.contains("corecast_publish_recipients_count 2"));
    }
}
