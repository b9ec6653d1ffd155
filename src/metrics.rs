//! Counters each shard keeps about its own traffic, and their Prometheus text rendering. Not a
//! metrics framework: plain relaxed atomics, one cache line set per shard so shards never
//! contend on a counter.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::auth::AuthRefusal;
use crate::Error;

/// Why a message was dropped instead of sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCause {
    /// It waited past the retry window for room in a full queue.
    QueueFull = 0,
    /// Its connection was closing or gone.
    Closed = 1,
    /// An inbound message past its connection's rate limit (`Config::client_message_rate`).
    RateLimited = 2,
    /// A publication a full queue dropped under its topic's slow-consumer policy.
    SlowConsumer = 3,
}

const DROP_CAUSES: [&str; 4] = ["queue_full", "closed", "rate_limited", "slow_consumer"];

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

/// The teardown cause label of `error` (`clean` for none): what a disconnect event says.
pub(crate) fn teardown_cause(error: Option<&Error>) -> &'static str {
    TEARDOWN_CAUSES[teardown_index(error)]
}

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

/// What became of an event for the backend (`corecast_backend_events_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendEvent {
    /// The webhook took it.
    WebhookDelivered = 0,
    /// The shard's webhook outbox was full: dropped at once.
    WebhookQueueFull = 1,
    /// Its delivery failed past the retries, or was refused: dropped.
    WebhookFailed = 2,
    /// Handed to the NATS connection.
    NatsSent = 3,
    /// The NATS queue was full or NATS refused it: dropped.
    NatsDropped = 4,
}

const BACKEND_EVENTS: [&str; 5] = [
    "webhook_delivered",
    "webhook_queue_full",
    "webhook_failed",
    "nats_sent",
    "nats_dropped",
];

/// How a hook call ended (`corecast_backend_hook_calls_total{hook,outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookOutcome {
    /// The backend allowed (or answered).
    Allowed = 0,
    /// The backend refused.
    Refused = 1,
    /// Not asked: the shard had its limit of calls in flight.
    Busy = 2,
    /// Down, slow, or an answer that is not the hook's JSON.
    Failed = 3,
}

const HOOK_OUTCOMES: [&str; 4] = ["allowed", "refused", "busy", "failed"];
const HOOKS: [&str; 4] = ["connect", "subscribe", "publish", "rpc"];

/// Statuses counted one by one; any other refusal counts as "other".
const REJECT_STATUSES: [u16; 11] = [400, 401, 403, 404, 409, 426, 429, 431, 500, 503, 0];

/// One shard's counters, padded so two shards never share a cache line.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct ShardMetrics {
    upgrades: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    socket_writes: AtomicU64,
    held_passes: AtomicU64,
    drops: [AtomicU64; DROP_CAUSES.len()],
    teardowns: [AtomicU64; TEARDOWN_CAUSES.len()],
    rejections: [AtomicU64; REJECT_STATUSES.len()],
    handshake_failures: [AtomicU64; HANDSHAKE_FAILURES.len()],
    auth_refusals: [AtomicU64; AuthRefusal::ALL.len()],
    fanout_nanos: AtomicU64,
    fanouts: AtomicU64,
    publishes: AtomicU64,
    publish_deliveries: AtomicU64,
    publish_nanos: AtomicU64,
    subscriptions: AtomicU64,
    connection_tasks: AtomicU64,
    inbox_refusals: AtomicU64,
    backend_events: [AtomicU64; BACKEND_EVENTS.len()],
    /// By hook (`backend::Hook` order), then outcome.
    hook_calls: [[AtomicU64; HOOK_OUTCOMES.len()]; HOOKS.len()],
    /// Publications dropped under a slow-consumer policy, by topic, with the policy's name.
    /// Locked only when something was dropped, once per topic per publish.
    topic_drops: std::sync::Mutex<HashMap<Arc<str>, (&'static str, u64)>>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// `add` for a counter that only its shard's thread writes (those counted per message or per
/// write): a load and a store, without the locked instruction of `fetch_add`. Counting each
/// queued message with one took 9% of the server's CPU in a chat among 300 clients, waiting
/// for the stores of the frames queued before it. Readers on other threads may see a value an
/// increment behind.
fn add_own(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl ShardMetrics {
    pub(crate) fn upgraded(&self) {
        add(&self.upgrades, 1);
    }
    pub(crate) fn received(&self, bytes: usize) {
        add_own(&self.messages_in, 1);
        add_own(&self.bytes_in, bytes as u64);
    }
    /// Messages queued so far (what `queued` counts), for the flush pass's frames per pass.
    pub(crate) fn messages_queued(&self) -> u64 {
        self.messages_out.load(Ordering::Relaxed)
    }
    pub(crate) fn queued(&self) {
        add_own(&self.messages_out, 1);
    }
    pub(crate) fn written(&self, bytes: usize) {
        add_own(&self.bytes_out, bytes as u64);
        add_own(&self.socket_writes, 1);
    }
    /// A flush pass was held to gather more per write (`shard::coalescing`).
    pub(crate) fn held_pass(&self) {
        add(&self.held_passes, 1);
    }
    pub(crate) fn dropped(&self, cause: DropCause) {
        add(&self.drops[cause as usize], 1);
    }
    /// `n` publications of `topic` dropped under its slow-consumer policy `policy`.
    pub(crate) fn dropped_by_policy(&self, topic: &str, policy: &'static str, n: u64) {
        add(&self.drops[DropCause::SlowConsumer as usize], n);
        if let Ok(mut drops) = self.topic_drops.lock() {
            match drops.get_mut(topic) {
                Some(entry) => entry.1 += n,
                None => {
                    drops.insert(Arc::from(topic), (policy, n));
                }
            }
        }
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
    /// An upgrade refused for its token (it counts as a 401 rejection too).
    pub(crate) fn auth_refused(&self, cause: AuthRefusal) {
        add(&self.auth_refusals[cause as usize], 1);
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
    /// A connection task started (a handshake, or a parked connection taken up again).
    pub(crate) fn task_started(&self) {
        add(&self.connection_tasks, 1);
    }
    pub(crate) fn task_ended(&self) {
        self.connection_tasks.fetch_sub(1, Ordering::Relaxed);
    }
    /// The shard's inbox was full and refused a message for its connections.
    pub(crate) fn inbox_refused(&self) {
        add(&self.inbox_refusals, 1);
    }
    /// `n` events for the backend had `outcome`.
    pub(crate) fn backend_events(&self, outcome: BackendEvent, n: usize) {
        add(&self.backend_events[outcome as usize], n as u64);
    }
    /// A call to hook number `hook` (`backend::Hook as usize`) ended with `outcome`.
    pub(crate) fn hook_called(&self, hook: usize, outcome: HookOutcome) {
        add(&self.hook_calls[hook][outcome as usize], 1);
    }
    #[cfg(test)]
    pub(crate) fn inbox_refusals(&self) -> u64 {
        self.inbox_refusals.load(Ordering::Relaxed)
    }
}

/// A counter family by label: name, help, label name, and the count of each label value.
type Labelled<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, u64)]);

/// A copy of every shard's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Live connections per shard.
    pub connections: Vec<u64>,
    /// Completed upgrades per shard.
    pub upgrades: Vec<u64>,
    /// Messages received per shard.
    pub messages_in: Vec<u64>,
    /// Message payload bytes received per shard, counted after inflation (what listeners get).
    pub bytes_in: Vec<u64>,
    /// Messages accepted into send queues per shard.
    pub messages_out: Vec<u64>,
    /// Bytes written to sockets per shard: frames as sent (compressed where permessage-deflate
    /// is on), handshakes and control frames included.
    pub bytes_out: Vec<u64>,
    /// Writes to client sockets per shard (each one `sendmsg`, or one TLS write): messages
    /// out ÷ writes is how many messages a write carried.
    pub socket_writes: Vec<u64>,
    /// Flush passes a shard held to gather more per write (`Builder::write_coalescing`).
    pub held_passes: Vec<u64>,
    /// Dropped messages by cause, summed over shards.
    pub drops: Vec<(&'static str, u64)>,
    /// Teardowns by cause, summed over shards.
    pub teardowns: Vec<(&'static str, u64)>,
    /// Refused upgrades by HTTP status ("other" for the rest), summed over shards.
    pub rejections: Vec<(String, u64)>,
    /// Connections that went before their upgrade without an HTTP answer, by cause
    /// ("timeout", "tls", "closed"), summed over shards.
    pub handshake_failures: Vec<(&'static str, u64)>,
    /// Upgrades refused for their token, by cause (`AuthRefusal::label`), summed over shards.
    pub auth_refusals: Vec<(&'static str, u64)>,
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
    /// Connection tasks running per shard: handshakes, closes, writes waiting for room, TLS
    /// connections. An open plain connection with nothing waiting has none (it is parked).
    pub connection_tasks: Vec<u64>,
    /// Messages for connections that a shard's full inbox refused, per shard.
    pub inbox_refusals: Vec<u64>,
    /// Events for the backend by outcome (`webhook_delivered`, `webhook_queue_full`,
    /// `webhook_failed`, `nats_sent`, `nats_dropped`), summed over shards.
    pub backend_events: Vec<(&'static str, u64)>,
    /// Hook calls by hook (`connect`, `subscribe`, `publish`, `rpc`) and outcome (`allowed`,
    /// `refused`, `busy`, `failed`), summed over shards.
    pub hook_calls: Vec<(&'static str, &'static str, u64)>,
    /// Publications dropped under a topic's slow-consumer policy (`drop-oldest`,
    /// `keep-latest`), by topic, with the policy's name, summed over shards, by topic name.
    pub topic_drops: Vec<(String, &'static str, u64)>,
    /// Cluster mode: the NATS link's counters; `None` without cluster mode.
    pub cluster: Option<ClusterMetrics>,
}

/// Every shard's drops by topic, summed, in topic order.
fn topic_drops(shards: &[&ShardMetrics]) -> Vec<(String, &'static str, u64)> {
    let mut all: BTreeMap<String, (&'static str, u64)> = BTreeMap::new();
    for shard in shards {
        let Ok(drops) = shard.topic_drops.lock() else {
            continue;
        };
        for (topic, (policy, n)) in drops.iter() {
            all.entry(topic.to_string()).or_insert((policy, 0)).1 += n;
        }
    }
    all.into_iter().map(|(t, (p, n))| (t, p, n)).collect()
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
fn label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
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
    /// Publications of topics with history that no JetStream stream took (NATS unreachable,
    /// the link behind, or JetStream refused them): delivered nowhere, kept nowhere.
    pub history_lost: u64,
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
            socket_writes: load(|s| &s.socket_writes),
            held_passes: load(|s| &s.held_passes),
            drops: by_label(&DROP_CAUSES, |s| &s.drops),
            teardowns: by_label(&TEARDOWN_CAUSES, |s| &s.teardowns),
            handshake_failures: by_label(&HANDSHAKE_FAILURES, |s| &s.handshake_failures),
            auth_refusals: AuthRefusal::ALL
                .iter()
                .map(|c| {
                    let n = sum(&|s| s.auth_refusals[*c as usize].load(Ordering::Relaxed));
                    (c.label(), n)
                })
                .collect(),
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
            connection_tasks: load(|s| &s.connection_tasks),
            inbox_refusals: load(|s| &s.inbox_refusals),
            backend_events: by_label(&BACKEND_EVENTS, |s| &s.backend_events),
            hook_calls: HOOKS
                .iter()
                .enumerate()
                .flat_map(|(h, hook)| {
                    HOOK_OUTCOMES.iter().enumerate().map(move |(o, outcome)| {
                        let n = sum(&|s| s.hook_calls[h][o].load(Ordering::Relaxed));
                        (*hook, *outcome, n)
                    })
                })
                .collect(),
            topic_drops: topic_drops(shards),
            cluster: None,
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let per_shard: [(&str, &str, &str, &[u64]); 13] = [
            (
                "corecast_connections",
                "gauge",
                "Live connections.",
                &self.connections,
            ),
            (
                "corecast_upgrades_total",
                "counter",
                "Completed WebSocket upgrades.",
                &self.upgrades,
            ),
            (
                "corecast_messages_in_total",
                "counter",
                "Messages received from clients.",
                &self.messages_in,
            ),
            (
                "corecast_bytes_in_total",
                "counter",
                "Message payload bytes received from clients, after inflation.",
                &self.bytes_in,
            ),
            (
                "corecast_messages_out_total",
                "counter",
                "Messages queued for clients.",
                &self.messages_out,
            ),
            (
                "corecast_bytes_out_total",
                "counter",
                "Bytes written to client sockets, as sent (compressed where deflate is on).",
                &self.bytes_out,
            ),
            (
                "corecast_socket_writes_total",
                "counter",
                "Writes to client sockets; messages out per write is what each carried.",
                &self.socket_writes,
            ),
            (
                "corecast_held_flushes_total",
                "counter",
                "Flush passes held to gather more messages per write (--write-coalescing).",
                &self.held_passes,
            ),
            (
                "corecast_subscriptions",
                "gauge",
                "Topic subscriptions held.",
                &self.subscriptions,
            ),
            (
                "corecast_connection_tasks",
                "gauge",
                "Connection tasks: handshakes, closes, writes waiting for room, TLS; none for an open, idle plain connection.",
                &self.connection_tasks,
            ),
            (
                "corecast_publishes_total",
                "counter",
                "Publishes that reached a shard with subscribers.",
                &self.publishes,
            ),
            (
                "corecast_publish_deliveries_total",
                "counter",
                "Messages queued for topic subscribers.",
                &self.publish_deliveries,
            ),
            (
                "corecast_inbox_refused_total",
                "counter",
                "Messages for connections refused by the shard's full inbox.",
                &self.inbox_refusals,
            ),
        ];
        for (name, kind, help, values) in per_shard {
            head(&mut out, name, kind, help);
            for (shard, n) in values.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {n}");
            }
        }
        let rejections: Vec<(&str, u64)> = self
            .rejections
            .iter()
            .map(|(l, n)| (l.as_str(), *n))
            .collect();
        let labelled: [Labelled; 6] = [
            (
                "corecast_dropped_messages_total",
                "Messages dropped instead of sent, or (rate_limited) instead of delivered.",
                "cause",
                &self.drops,
            ),
            (
                "corecast_teardowns_total",
                "Connections torn down.",
                "cause",
                &self.teardowns,
            ),
            (
                "corecast_upgrade_rejections_total",
                "Upgrades refused.",
                "status",
                &rejections,
            ),
            (
                "corecast_handshake_failures_total",
                "Connections that went before their upgrade, with no HTTP answer to give.",
                "cause",
                &self.handshake_failures,
            ),
            (
                "corecast_auth_refusals_total",
                "Upgrades refused for their token (401), by cause.",
                "cause",
                &self.auth_refusals,
            ),
            (
                "corecast_backend_events_total",
                "Events for the backend: delivered, or dropped and why.",
                "outcome",
                &self.backend_events,
            ),
        ];
        for (name, help, label, values) in labelled {
            head(&mut out, name, "counter", help);
            for (value, n) in values {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
            }
        }
        let name = "corecast_topic_dropped_total";
        head(
            &mut out,
            name,
            "counter",
            "Publications dropped under the topic's slow-consumer policy.",
        );
        for (topic, policy, n) in &self.topic_drops {
            let topic = label_value(topic);
            let _ = writeln!(out, "{name}{{topic=\"{topic}\",policy=\"{policy}\"}} {n}");
        }
        let name = "corecast_backend_hook_calls_total";
        head(
            &mut out,
            name,
            "counter",
            "Calls to the backend's hooks, by outcome.",
        );
        for (hook, outcome, n) in &self.hook_calls {
            let _ = writeln!(out, "{name}{{hook=\"{hook}\",outcome=\"{outcome}\"}} {n}");
        }
        let publishes: u64 = self.publishes.iter().sum();
        let summaries = [
            (
                "corecast_broadcast_fanout_seconds",
                "Time to queue one broadcast on one shard's connections.",
                self.fanout_nanos as f64 / 1e9,
                self.fanouts,
            ),
            (
                "corecast_publish_fanout_seconds",
                "Time to queue one publish on one shard's subscribers.",
                self.publish_nanos as f64 / 1e9,
                publishes,
            ),
            (
                "corecast_publish_recipients",
                "Subscribers one publish reached on one shard.",
                self.publish_deliveries.iter().sum::<u64>() as f64,
                publishes,
            ),
        ];
        for (name, help, sum, count) in summaries {
            head(&mut out, name, "summary", help);
            let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        }
        if let Some(c) = &self.cluster {
            let gauges = [
                (
                    "corecast_cluster_messages_out_total",
                    "counter",
                    "Cross-node messages published to NATS.",
                    c.messages_out as f64,
                ),
                (
                    "corecast_cluster_messages_in_total",
                    "counter",
                    "Cross-node messages received from NATS.",
                    c.messages_in as f64,
                ),
                (
                    "corecast_cluster_messages_dropped_total",
                    "counter",
                    "Cross-node messages not sent or lost.",
                    c.dropped as f64,
                ),
                (
                    "corecast_cluster_history_lost_total",
                    "counter",
                    "Publications of topics with history that no JetStream stream took.",
                    c.history_lost as f64,
                ),
                (
                    "corecast_cluster_nats_rtt_seconds",
                    "gauge",
                    "Last round trip to the NATS server.",
                    c.nats_rtt.as_secs_f64(),
                ),
                (
                    "corecast_cluster_nodes",
                    "gauge",
                    "Nodes in this node's view, itself included.",
                    c.nodes as f64,
                ),
                (
                    "corecast_cluster_connected",
                    "gauge",
                    "Whether the link to NATS is up.",
                    f64::from(u8::from(c.connected)),
                ),
            ];
            for (name, kind, help, value) in gauges {
                head(&mut out, name, kind, help);
                let _ = writeln!(out, "{name} {value}");
            }
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
        shards[0].auth_refused(AuthRefusal::Expired);
        shards[1].auth_refused(AuthRefusal::Expired);
        shards[1].auth_refused(AuthRefusal::Missing);
        shards[0].subscribed(3);
        shards[0].unsubscribed(1);
        shards[0].task_started();
        shards[0].task_started();
        shards[0].task_ended();
        shards[1].published(40, 1_000);
        shards[1].published(2, 1_000);
        shards[0].dropped(DropCause::RateLimited);
        shards[1].dropped(DropCause::RateLimited);
        let shards: Vec<&ShardMetrics> = shards.iter().collect();
        let m = MetricsSnapshot::collect(&shards, &[3, 4]);
        assert_eq!(m.bytes_in, vec![5, 7]);
        assert_eq!(m.drops[0], ("queue_full", 1));
        assert_eq!(m.drops[2], ("rate_limited", 2));
        assert_eq!(m.teardowns[0], ("clean", 1));
        assert_eq!(m.teardowns[3], ("idle_timeout", 1));
        let text = m.to_prometheus();
        assert!(
            text.contains("corecast_connections{shard=\"1\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("corecast_bytes_in_total{shard=\"0\"} 5\n"));
        assert!(text.contains("corecast_dropped_messages_total{cause=\"rate_limited\"} 2\n"));
        assert!(text.contains("corecast_upgrade_rejections_total{status=\"503\"} 1\n"));
        assert!(text.contains("corecast_upgrade_rejections_total{status=\"other\"} 1\n"));
        assert_eq!(
            m.handshake_failures,
            vec![("timeout", 1), ("tls", 2), ("closed", 0)]
        );
        assert!(text.contains("corecast_handshake_failures_total{cause=\"tls\"} 2\n"));
        assert_eq!(m.auth_refusals[0], ("missing", 1));
        assert!(text.contains("corecast_auth_refusals_total{cause=\"expired\"} 2\n"));
        assert!(text.contains("corecast_auth_refusals_total{cause=\"bad_signature\"} 0\n"));
        assert!(text.contains("corecast_broadcast_fanout_seconds_sum 0.002\n"));
        assert!(text.contains("corecast_broadcast_fanout_seconds_count 1"));
        assert_eq!(m.subscriptions, vec![2, 0]);
        assert!(text.contains("corecast_subscriptions{shard=\"0\"} 2\n"));
        assert_eq!(m.connection_tasks, vec![1, 0]);
        assert!(text.contains("corecast_connection_tasks{shard=\"0\"} 1\n"));
        assert!(text.contains("corecast_publishes_total{shard=\"1\"} 2\n"));
        assert!(text.contains("corecast_publish_deliveries_total{shard=\"1\"} 42\n"));
        assert!(text.contains("corecast_publish_recipients_sum 42\n"));
        assert!(text.contains("corecast_publish_recipients_count 2"));
        shards[0].inbox_refused();
        let text = MetricsSnapshot::collect(&shards, &[3, 4]).to_prometheus();
        assert!(text.contains("corecast_inbox_refused_total{shard=\"0\"} 1\n"));
        assert!(text.contains("corecast_inbox_refused_total{shard=\"1\"} 0\n"));
        // Every series has its HELP and TYPE lines once.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{line}"
            );
        }
    }
}
