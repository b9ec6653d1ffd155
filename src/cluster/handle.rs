//! What a shard or a `Server` holds of this node's NATS link: a way to hand it cross-node work
//! without ever waiting on NATS, a way to ask for a cluster-wide UUID claim, and what the link
//! reports back (its state, the nodes it hears, its counters). Not the link: `crate::nats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::Timer;

use super::wire::Op;
use super::{ClusterView, NodeInfo};
use crate::Error;

/// Cross-node data, in the order it must arrive.
#[derive(Debug)]
pub(crate) enum Work {
    /// A node-wide operation.
    Op(Op),
    /// A framed message for a topic's subscribers on the other nodes.
    Publish { topic: Arc<str>, frame: Bytes },
}

/// Requests that must not be dropped.
#[derive(Debug)]
pub(crate) enum Control {
    /// A topic's local subscriber count went to or from zero: take or let go its subject.
    Interest(Arc<str>),
    /// Claim `uuid` for this node; answer with the claim's revision.
    Claim {
        uuid: Arc<str>,
        reply: flume::Sender<Result<u64, Error>>,
    },
    /// Give up a claim made at `revision` (the connection went, or took another UUID).
    Release { uuid: Arc<str>, revision: u64 },
    /// End the link.
    Stop,
}

/// The link's end of the channels.
pub(crate) struct LinkInbox {
    pub(crate) work: flume::Receiver<Work>,
    pub(crate) control: flume::Receiver<Control>,
}

/// Cross-node work waiting for the link at most; past it, more is dropped and counted.
const WORK_QUEUE: usize = 1 << 16;
/// Control requests waiting for the link at most; past it, a claim is refused and the other
/// requests wait for room on a task of their own (their shard goes on).
const CONTROL_QUEUE: usize = 1 << 12;
/// Least time between two warnings about dropped cross-node messages.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Counters of the link, read by `Server::metrics`.
#[derive(Debug, Default)]
pub(crate) struct LinkStats {
    pub(crate) out: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) rtt_nanos: AtomicU64,
    pub(crate) connected: AtomicBool,
}

pub(crate) struct ClusterHandle {
    pub(crate) name: String,
    pub(crate) node_id: Arc<str>,
    pub(crate) heartbeat: Duration,
    claim_timeout: Duration,
    work: flume::Sender<Work>,
    control: flume::Sender<Control>,
    pub(crate) stats: LinkStats,
    /// Other nodes by id: connections and when their last heartbeat came.
    nodes: Mutex<HashMap<String, (usize, Instant)>>,
    last_warning: Mutex<Option<Instant>>,
}

impl ClusterHandle {
    pub(crate) fn new(
        name: String,
        node_id: String,
        heartbeat: Duration,
        claim_timeout: Duration,
    ) -> (Arc<ClusterHandle>, LinkInbox) {
        let (work, work_rx) = flume::bounded(WORK_QUEUE);
        let (control, control_rx) = flume::bounded(CONTROL_QUEUE);
        let handle = Arc::new(ClusterHandle {
            name,
            node_id: node_id.into(),
            heartbeat,
            claim_timeout,
            work,
            control,
            stats: LinkStats::default(),
            nodes: Mutex::default(),
            last_warning: Mutex::default(),
        });
        let inbox = LinkInbox {
            work: work_rx,
            control: control_rx,
        };
        (handle, inbox)
    }

    /// Hands cross-node work to the link, or, when NATS is down or the link is this far
    /// behind, drops it and counts it: a shard never waits on NATS.
    pub(crate) fn send(&self, work: Work) {
        if !self.stats.connected.load(Ordering::Acquire) {
            return self.dropped(1, "NATS is not connected");
        }
        if self.work.try_send(work).is_err() {
            self.dropped(1, "the NATS link is behind");
        }
    }

    /// Counts `n` cross-node messages that were not sent or not delivered, and warns at most
    /// once per `WARN_EVERY`.
    pub(crate) fn dropped(&self, n: u64, why: &str) {
        let total = self.stats.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.map_or(true, |t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                dropped_total = total,
                reason = why,
                "cross-node messages dropped"
            );
        }
    }

    /// A topic's local interest may have changed; the link reads the topic table to see.
    /// Called on a shard thread.
    pub(crate) fn interest(&self, topic: &str) {
        self.send_control(Control::Interest(topic.into()));
    }

    /// Hands the link a request that must not be lost, from a shard thread: at once, or, when
    /// the link is this far behind, from a task that waits for room while the shard goes on.
    fn send_control(&self, request: Control) {
        if let Err(flume::TrySendError::Full(request)) = self.control.try_send(request) {
            let control = self.control.clone();
            glommio::spawn_local(async move {
                let _ = control.send_async(request).await;
            })
            .detach();
        }
    }

    /// Claims `uuid` across the cluster: the answer (one NATS round trip) within the claim
    /// timeout, `UuidDuplication` if another connection holds it on any node. Awaited by a
    /// shard task, it holds up that task only.
    pub(crate) async fn claim(&self, uuid: &str) -> Result<u64, Error> {
        let (reply, answer) = flume::bounded(1);
        let request = Control::Claim {
            uuid: uuid.into(),
            reply,
        };
        if self.control.try_send(request).is_err() {
            return Err(Error::Cluster(
                "the NATS link is behind: UUID claim refused".into(),
            ));
        }
        future::or(
            async {
                answer
                    .recv_async()
                    .await
                    .unwrap_or_else(|_| Err(Error::Cluster("the NATS link has stopped".into())))
            },
            async {
                Timer::new(self.claim_timeout).await;
                Err(Error::Timeout)
            },
        )
        .await
    }

    /// Gives up a claim (a connection that held it went, or renamed itself).
    /// Called on a shard thread.
    pub(crate) fn release(&self, uuid: &str, revision: u64) {
        self.send_control(Control::Release {
            uuid: uuid.into(),
            revision,
        });
    }

    /// Called off the shards (`Server::join`): waits for room.
    pub(crate) fn stop(&self) {
        let _ = self.control.send(Control::Stop);
    }

    /// A heartbeat came from `node`.
    pub(crate) fn heard(&self, node: String, connections: usize) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.insert(node, (connections, Instant::now()));
    }

    /// How long a silent node stays in the view: three heartbeats.
    pub(crate) fn node_timeout(&self) -> Duration {
        self.heartbeat * 3
    }

    /// Drops nodes not heard from within the node timeout.
    pub(crate) fn prune(&self) {
        let limit = self.node_timeout();
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|id, (_, seen)| {
            let keep = seen.elapsed() < limit;
            if !keep {
                tracing::info!(node = %id, "node left the cluster view (no heartbeat)");
            }
            keep
        });
    }

    /// Whether `node` has been heard within the node timeout.
    pub(crate) fn is_live(&self, node: &str) -> bool {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .get(node)
            .is_some_and(|(_, seen)| seen.elapsed() < self.node_timeout())
    }

    /// The view: every node heard recently, and this one with `local` connections.
    pub(crate) fn view(&self, local: usize) -> ClusterView {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<NodeInfo> = nodes
            .iter()
            .filter(|(_, (_, seen))| seen.elapsed() < self.node_timeout())
            .map(|(id, (connections, seen))| NodeInfo {
                id: id.clone(),
                connections: *connections,
                last_heartbeat: seen.elapsed(),
                this_node: false,
            })
            .collect();
        list.push(NodeInfo {
            id: self.node_id.to_string(),
            connections: local,
            last_heartbeat: Duration::ZERO,
            this_node: true,
        });
        list.sort_by(|a, b| a.id.cmp(&b.id));
        ClusterView {
            nodes: list,
            connected: self.stats.connected.load(Ordering::Acquire),
            name: self.name.clone(),
        }
    }
}
