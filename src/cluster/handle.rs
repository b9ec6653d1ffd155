//! What a shard or a `Server` holds of this node's NATS link: a way to hand it cross-node work
//! without ever waiting on NATS, a way to ask for a cluster-wide UUID claim or for a topic's
//! history (answered within a bound), and what the link reports back (its state, the nodes it
//! hears, its counters). Not the link: `cluster::link`.
//!
//! What depends on time is decided by pure functions of the time read once by the caller
//! (`is_live`, `warning_due`), so the tests below move instants by hand.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::Timer;

use super::wire::Op;
use super::{ClusterView, NodeInfo};
use crate::history::{Epoch, HistoryRules, NotRecovered, Position, RecoverAnswer, Retention};
use crate::registry::ConnId;
use crate::topics::PublishReport;
use crate::Error;

/// Cross-node data, in the order it must arrive.
#[derive(Debug)]
pub(crate) enum Work {
    /// A node-wide operation.
    Op(Op),
    /// A framed message for a topic's subscribers on the other nodes. `key`: the conflation
    /// key's hash (0: none). With `report`, the link answers there once, for the other nodes
    /// together: what those that answered in time did, partial if a live one did not.
    Publish {
        topic: Arc<str>,
        frame: Bytes,
        key: u64,
        report: Option<flume::Sender<PublishReport>>,
    },
    /// A publication of a topic with history, for its JetStream stream, which orders it among
    /// every node's and gives it its position; every node (this one too) delivers it from
    /// there. `key` is the conflation key's hash (0: none); `except` is skipped.
    Record {
        topic: Arc<str>,
        frame: Bytes,
        key: u64,
        except: Option<ConnId>,
        retention: Retention,
    },
}

/// What the link takes in one go: one item of work, or what one round of a shard's work
/// handed over (`ClusterHandle::begin_round`), in order.
#[derive(Debug)]
pub(crate) enum Handover {
    One(Work),
    Batch(Vec<Work>),
}

impl Work {
    /// Counts work the link could not take as lost, where each kind is counted, and answers a
    /// reported publication's other nodes with nothing known.
    fn refused(self, handle: &ClusterHandle, why: &str) {
        match self {
            Work::Op(_) => handle.dropped(1, why),
            Work::Publish { report, .. } => {
                unknown_reach(report.as_ref());
                handle.dropped(1, why);
            }
            Work::Record { .. } => handle.history_lost(1, why),
        }
    }
}

thread_local! {
    /// The round open on this thread, if any (`ClusterHandle::begin_round`): the handle it is
    /// for, by address, and the work it queued.
    static ROUND: RefCell<Option<(usize, Vec<Work>)>> = const { RefCell::new(None) };
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
    /// What a subscriber of a topic with history that last saw `since` missed, read from the
    /// topic's stream; answered within the history timeout, whatever happens.
    Recover {
        topic: Arc<str>,
        retention: Retention,
        since: Option<Position>,
        done: flume::Sender<RecoverAnswer>,
    },
    /// The kept window of a topic's stream: first and last offsets, epoch.
    Window {
        topic: Arc<str>,
        done: flume::Sender<Option<(u64, u64, Epoch)>>,
    },
    /// End the link.
    Stop,
}

/// Answers a reported publication's other nodes with nothing known: partial.
fn unknown_reach(report: Option<&flume::Sender<PublishReport>>) {
    if let Some(report) = report {
        let _ = report.send(PublishReport {
            partial: true,
            ..PublishReport::default()
        });
    }
}

/// The link's end of the channels.
pub(crate) struct LinkInbox {
    pub(crate) work: flume::Receiver<Handover>,
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
    /// Connections made to NATS so far: what was learnt of JetStream on an earlier one (a
    /// topic's stream exists) is checked again on the next.
    pub(crate) connects: AtomicU64,
    /// Publications of topics with history that no stream took: NATS unreachable, the link
    /// behind, or JetStream refused or did not confirm them.
    pub(crate) history_lost: AtomicU64,
}

pub(crate) struct ClusterHandle {
    pub(crate) name: String,
    pub(crate) node_id: Arc<str>,
    pub(crate) heartbeat: Duration,
    claim_timeout: Duration,
    work: flume::Sender<Handover>,
    control: flume::Sender<Control>,
    pub(crate) stats: LinkStats,
    /// Other nodes by id: connections and when their last heartbeat came.
    nodes: Mutex<HashMap<String, (usize, Instant)>>,
    last_warning: Mutex<Option<Instant>>,
    last_history_warning: Mutex<Option<Instant>>,
    /// Which topics keep history (set by the link as it starts): theirs go to their streams
    /// from their home shard (`record`), never as a plain cross-node publish.
    history: OnceLock<Arc<HistoryRules>>,
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
            last_history_warning: Mutex::default(),
            history: OnceLock::new(),
        });
        let inbox = LinkInbox {
            work: work_rx,
            control: control_rx,
        };
        (handle, inbox)
    }

    /// Hands cross-node work to the link, or, when NATS is down or the link is this far
    /// behind, drops it and counts it: a shard never waits on NATS. During a round of this
    /// thread's shard it waits for the round's end (`begin_round`).
    pub(crate) fn send(&self, work: Work) {
        if let Work::Publish { topic, report, .. } = &work {
            if self.keeps_history(topic) {
                // Its stream delivers it, later: what it reached is not known now.
                return unknown_reach(report.as_ref());
            }
        }
        if !self.stats.connected.load(Ordering::Acquire) {
            return work.refused(self, "NATS is not connected");
        }
        let work = ROUND.with(|round| match &mut *round.borrow_mut() {
            Some((handle, queued)) if *handle == self.round_key() => {
                queued.push(work);
                None
            }
            _ => Some(work),
        });
        if let Some(work) = work {
            self.hand_over(Handover::One(work));
        }
    }

    /// Opens a round of a shard's work (an inbox burst, a round of reads) on this thread: the
    /// cross-node work it hands over goes to the link in one hand-over, at `end_round`. Why:
    /// each hand-over may wake the link thread, and a link woken per message publishes per
    /// message; the node behind NATS then gets a burst one message at a time and writes each
    /// to its sockets in a pass of its own. One hand-over per round keeps a burst whole
    /// through NATS. Rounds never await, so nothing else of the thread's runs in between.
    pub(crate) fn begin_round(&self) {
        let me = self.round_key();
        ROUND.with(|round| {
            round.borrow_mut().get_or_insert_with(|| (me, Vec::new()));
        });
    }

    /// Ends this thread's round: what it queued goes to the link, in order, in one hand-over.
    pub(crate) fn end_round(&self) {
        let Some((_, mut work)) = ROUND.with(|round| round.borrow_mut().take()) else {
            return;
        };
        match work.len() {
            0 => {}
            1 => self.hand_over(Handover::One(work.remove(0))),
            _ => self.hand_over(Handover::Batch(work)),
        }
    }

    /// What names this handle in a thread's round: its address (a thread's shard serves one
    /// server, hence one handle, while a round is open).
    fn round_key(&self) -> usize {
        self as *const ClusterHandle as usize
    }

    fn hand_over(&self, work: Handover) {
        if let Err(refused) = self.work.try_send(work) {
            let why = "the NATS link is behind";
            match refused.into_inner() {
                Handover::One(work) => work.refused(self, why),
                Handover::Batch(items) => items.into_iter().for_each(|w| w.refused(self, why)),
            }
        }
    }

    /// Counts `n` cross-node messages that were not sent or not delivered, and warns at most
    /// once per `WARN_EVERY`.
    pub(crate) fn dropped(&self, n: u64, why: &str) {
        let total = self.stats.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let now = Instant::now();
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if warning_due(*last, now, WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                dropped_total = total,
                reason = why,
                "cross-node messages dropped"
            );
        }
    }

    /// Learns which topics keep history (`Builder::history`), once.
    pub(crate) fn set_history(&self, rules: Option<Arc<HistoryRules>>) {
        if let Some(rules) = rules {
            let _ = self.history.set(rules);
        }
    }

    /// Whether `topic` keeps history, hence lives in a JetStream stream.
    pub(crate) fn keeps_history(&self, topic: &str) -> bool {
        self.history
            .get()
            .is_some_and(|rules| rules.retention(topic).is_some())
    }

    /// Counts `n` publications of topics with history that no stream took, and warns at most
    /// once per `WARN_EVERY`.
    pub(crate) fn history_lost(&self, n: u64, why: &str) {
        let total = self.stats.history_lost.fetch_add(n, Ordering::Relaxed) + n;
        let now = Instant::now();
        let mut last = self
            .last_history_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if warning_due(*last, now, WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                lost_total = total,
                reason = why,
                "publications of topics with history lost: not delivered, not kept"
            );
        }
    }

    /// Asks the link what a subscriber of `topic` that last saw `since` missed; `done` hears
    /// the answer within the history timeout. At once, without asking, when NATS is down or
    /// the link's control queue is full: the history cannot be read, and the answer says so.
    pub(crate) fn recover(
        &self,
        topic: Arc<str>,
        retention: Retention,
        since: Option<Position>,
        done: flume::Sender<RecoverAnswer>,
    ) {
        if !self.stats.connected.load(Ordering::Acquire) {
            let _ = done.send((Err(NotRecovered::Unavailable), None));
            return;
        }
        let ask = Control::Recover {
            topic,
            retention,
            since,
            done,
        };
        if let Err(flume::TrySendError::Full(Control::Recover { done, .. })) =
            self.control.try_send(ask)
        {
            let _ = done.send((Err(NotRecovered::Unavailable), None));
        }
    }

    /// Asks the link for the kept window of `topic`'s stream; `done` hears it within the
    /// history timeout (`None` when NATS is down, or nothing is kept).
    pub(crate) fn window(&self, topic: Arc<str>, done: flume::Sender<Option<(u64, u64, Epoch)>>) {
        if !self.stats.connected.load(Ordering::Acquire) {
            let _ = done.send(None);
            return;
        }
        if let Err(flume::TrySendError::Full(Control::Window { done, .. })) =
            self.control.try_send(Control::Window { topic, done })
        {
            let _ = done.send(None);
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

    /// A heartbeat came from `node` at `now`.
    pub(crate) fn heard(&self, node: String, connections: usize, now: Instant) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.insert(node, (connections, now));
    }

    /// How long a silent node stays in the view: three heartbeats.
    pub(crate) fn node_timeout(&self) -> Duration {
        self.heartbeat * 3
    }

    /// Drops nodes not heard from within the node timeout before `now`.
    pub(crate) fn prune(&self, now: Instant) {
        let limit = self.node_timeout();
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|id, (_, seen)| {
            let keep = is_live(*seen, now, limit);
            if !keep {
                tracing::info!(node = %id, "node left the cluster view (no heartbeat)");
            }
            keep
        });
    }

    /// Whether `node` has been heard within the node timeout before `now`.
    pub(crate) fn is_live(&self, node: &str, now: Instant) -> bool {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .get(node)
            .is_some_and(|(_, seen)| is_live(*seen, now, self.node_timeout()))
    }

    /// The view as of now: every node heard recently, and this one with `local` connections.
    pub(crate) fn view(&self, local: usize) -> ClusterView {
        self.view_at(local, Instant::now())
    }

    /// The view at `now`: every node heard within the node timeout before it, and this one
    /// with `local` connections.
    pub(crate) fn view_at(&self, local: usize, now: Instant) -> ClusterView {
        let timeout = self.node_timeout();
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<NodeInfo> = nodes
            .iter()
            .filter(|(_, (_, seen))| is_live(*seen, now, timeout))
            .map(|(id, (connections, seen))| NodeInfo {
                id: id.clone(),
                connections: *connections,
                last_heartbeat: now.saturating_duration_since(*seen),
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

/// Whether a node last heard at `seen` still counts as live at `now`: heard less than `timeout`
/// before. A `seen` after `now` (the caller read the clock before the heartbeat was noted)
/// counts as just heard.
pub(crate) fn is_live(seen: Instant, now: Instant, timeout: Duration) -> bool {
    now.saturating_duration_since(seen) < timeout
}

/// Whether a warning may be given at `now` when the last one was at `last`: the first one
/// always, then at most one per `every`.
fn warning_due(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.map_or(true, |t| now.saturating_duration_since(t) >= every)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn handle(heartbeat: Duration) -> Arc<ClusterHandle> {
        ClusterHandle::new("c".into(), "me".into(), heartbeat, SECOND).0
    }

    #[test]
    fn a_node_is_live_until_exactly_the_timeout() {
        let seen = Instant::now();
        let timeout = 3 * SECOND;
        assert!(is_live(seen, seen, timeout));
        assert!(is_live(
            seen,
            seen + timeout - Duration::from_nanos(1),
            timeout
        ));
        assert!(!is_live(seen, seen + timeout, timeout));
        assert!(!is_live(seen, seen + 10 * timeout, timeout));
    }

    #[test]
    fn a_heartbeat_noted_after_now_counts_as_just_heard() {
        let now = Instant::now();
        assert!(is_live(now + SECOND, now, SECOND));
    }

    #[test]
    fn a_zero_timeout_keeps_no_node() {
        let now = Instant::now();
        assert!(!is_live(now, now, Duration::ZERO));
    }

    #[test]
    fn warnings_come_at_most_once_per_period() {
        let t0 = Instant::now();
        assert!(warning_due(None, t0, WARN_EVERY));
        assert!(!warning_due(Some(t0), t0, WARN_EVERY));
        assert!(!warning_due(
            Some(t0),
            t0 + WARN_EVERY - Duration::from_millis(1),
            WARN_EVERY
        ));
        assert!(warning_due(Some(t0), t0 + WARN_EVERY, WARN_EVERY));
        // A last warning stamped after `now` is not a reason to warn again.
        assert!(!warning_due(Some(t0 + SECOND), t0, WARN_EVERY));
    }

    #[test]
    fn the_node_timeout_is_three_heartbeats() {
        assert_eq!(handle(SECOND).node_timeout(), 3 * SECOND);
    }

    #[test]
    fn liveness_view_and_prune_follow_the_instant_given() {
        let h = handle(SECOND);
        let t0 = Instant::now();
        h.heard("b".into(), 7, t0);
        h.heard("a".into(), 2, t0 + SECOND);

        assert!(h.is_live("a", t0 + SECOND));
        assert!(h.is_live("b", t0 + SECOND));
        assert!(!h.is_live("nobody", t0));

        let at = t0 + 2 * SECOND;
        let view = h.view_at(5, at);
        let nodes = view.nodes();
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "me"]);
        assert_eq!(nodes[0].last_heartbeat, SECOND);
        assert_eq!(nodes[1].last_heartbeat, 2 * SECOND);
        assert!(nodes[2].this_node);
        assert_eq!(nodes[2].last_heartbeat, Duration::ZERO);
        assert_eq!(view.connections(), 14);

        // Three heartbeats after b's: b is out of the view, a is still in it.
        let at = t0 + 3 * SECOND;
        assert!(!h.is_live("b", at));
        assert!(h.is_live("a", at));
        let ids: Vec<String> = h.view_at(0, at).nodes().into_iter().map(|n| n.id).collect();
        assert_eq!(ids, ["a", "me"]);

        // Pruning at that instant forgets b, even when asked about an earlier instant later.
        h.prune(at);
        assert!(!h.is_live("b", t0));
        assert!(h.is_live("a", at));

        // A new heartbeat brings a node back.
        h.heard("b".into(), 1, at);
        assert!(h.is_live("b", at));
    }

    fn retention() -> Retention {
        Retention {
            size: 10,
            ttl: SECOND,
        }
    }

    fn frame() -> Bytes {
        Bytes::from_static(b"\x81\x01x")
    }

    fn record(key: u64) -> Work {
        Work::Record {
            topic: "t1".into(),
            frame: frame(),
            key,
            except: None,
            retention: retention(),
        }
    }

    #[test]
    fn with_nats_down_a_history_publication_is_counted_lost_and_a_recovery_unavailable() {
        let (h, inbox) = ClusterHandle::new("c".into(), "me".into(), SECOND, SECOND);
        h.send(record(0));
        assert_eq!(h.stats.history_lost.load(Ordering::Relaxed), 1);
        assert!(inbox.work.is_empty());
        // Answered at once, without asking the link: nothing can be told.
        let (done, answer) = flume::bounded(1);
        h.recover("t1".into(), retention(), None, done);
        assert_eq!(
            answer.try_recv().unwrap(),
            (Err(NotRecovered::Unavailable), None)
        );
        assert!(inbox.control.is_empty());
        let (done, window) = flume::bounded(1);
        h.window("t1".into(), done);
        assert_eq!(window.try_recv().unwrap(), None);
    }

    fn broadcast(byte: u8) -> Work {
        Work::Op(Op::Broadcast {
            frame: Bytes::from(vec![0x81, 1, byte]),
        })
    }

    fn frames(items: &[Work]) -> Vec<u8> {
        items
            .iter()
            .map(|w| match w {
                Work::Op(Op::Broadcast { frame }) => frame[2],
                other => panic!("not a broadcast: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_round_hands_its_work_over_once_in_order_and_only_its_own_handles() {
        let (h, inbox) = ClusterHandle::new("c".into(), "me".into(), SECOND, SECOND);
        let (other, other_inbox) = ClusterHandle::new("c".into(), "you".into(), SECOND, SECOND);
        h.stats.connected.store(true, Ordering::Release);
        other.stats.connected.store(true, Ordering::Release);
        h.begin_round();
        for byte in 1..=3 {
            h.send(broadcast(byte));
        }
        // Another server's handle on the same thread is not in this round.
        other.send(broadcast(9));
        assert!(matches!(other_inbox.work.try_recv(), Ok(Handover::One(_))));
        assert!(inbox.work.is_empty(), "held for the round's end");
        h.end_round();
        match inbox.work.try_recv() {
            Ok(Handover::Batch(items)) => assert_eq!(frames(&items), [1, 2, 3]),
            other => panic!("one batch expected, got {other:?}"),
        }
        assert!(inbox.work.is_empty());
        // After the round, and on other threads, work goes at once.
        h.send(broadcast(4));
        assert!(matches!(inbox.work.try_recv(), Ok(Handover::One(_))));
        h.begin_round();
        let h2 = Arc::clone(&h);
        std::thread::spawn(move || h2.send(broadcast(5)))
            .join()
            .unwrap();
        assert!(matches!(inbox.work.try_recv(), Ok(Handover::One(_))));
        // A round of one item hands it over alone; an empty one hands nothing.
        h.send(broadcast(6));
        h.end_round();
        assert!(matches!(inbox.work.try_recv(), Ok(Handover::One(_))));
        h.begin_round();
        h.end_round();
        assert!(inbox.work.is_empty());
    }

    #[test]
    fn a_refused_round_counts_each_item_where_its_kind_is_counted() {
        let (h, inbox) = ClusterHandle::new("c".into(), "me".into(), SECOND, SECOND);
        h.stats.connected.store(true, Ordering::Release);
        // Fill the link's queue.
        while h.work.try_send(Handover::One(broadcast(0))).is_ok() {}
        let (report, part) = flume::bounded(1);
        h.begin_round();
        h.send(broadcast(1));
        h.send(record(0));
        h.send(Work::Publish {
            topic: "t".into(),
            frame: frame(),
            key: 0,
            report: Some(report),
        });
        h.end_round();
        assert_eq!(h.stats.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(h.stats.history_lost.load(Ordering::Relaxed), 1);
        let part = part.try_recv().expect("answered at once");
        assert!(part.partial && part.nodes == 0, "{part:?}");
        assert_eq!(inbox.work.len(), WORK_QUEUE);
    }

    #[test]
    fn a_topic_with_history_goes_to_its_stream_never_as_a_plain_publish() {
        let (h, inbox) = ClusterHandle::new("c".into(), "me".into(), SECOND, SECOND);
        h.stats.connected.store(true, Ordering::Release);
        let mut rules = HistoryRules::default();
        rules.add("t*", retention());
        h.set_history(Some(Arc::new(rules)));
        let publish = |topic: &str| Work::Publish {
            topic: topic.into(),
            frame: frame(),
            key: 0,
            report: None,
        };
        h.send(publish("t1"));
        assert!(inbox.work.is_empty(), "its home shard records it instead");
        // Reported, its reach on the other nodes is unknown now: partial.
        let (report, part) = flume::bounded(1);
        h.send(Work::Publish {
            topic: "t2".into(),
            frame: frame(),
            key: 0,
            report: Some(report),
        });
        assert!(inbox.work.is_empty());
        let part = part.try_recv().expect("answered at once");
        assert!(part.partial && part.nodes == 0, "{part:?}");
        h.send(publish("other"));
        assert!(
            matches!(inbox.work.try_recv(), Ok(Handover::One(Work::Publish { topic, .. })) if &*topic == "other")
        );
        h.send(record(7));
        assert!(matches!(
            inbox.work.try_recv(),
            Ok(Handover::One(Work::Record { topic, key: 7, .. })) if &*topic == "t1"
        ));
        assert_eq!(h.stats.history_lost.load(Ordering::Relaxed), 0);
        // A recovery is asked of the link.
        let (done, _answer) = flume::bounded(1);
        h.recover("t1".into(), retention(), None, done);
        assert!(matches!(
            inbox.control.try_recv(),
            Ok(Control::Recover { topic, .. }) if &*topic == "t1"
        ));
    }
}
