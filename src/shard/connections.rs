//! A shard's connections and what they share: the slab, the readiness set, the timer heap,
//! the flush list, the read buffer, the topic index and the listener cache. Not one
//! connection's glue (`conn.rs`) nor the shard's lifecycle (`state.rs`).

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::Timer;
use slab::Slab;

use super::coalescing::{Coalescing, Pass};
use super::conn::Conn;
use super::handle::EventPayload;
use super::link::ShardLinks;
use super::notify::LocalNotify;
use super::readiness::{self, Readiness};
use super::socket;
use super::timers::Timers;
use crate::auth::{RefusalLimit, Verifier};
use crate::backend::link::BackendLink;
use crate::cluster::handle::ClusterHandle;
use crate::event::{ListenerMap, ListenerRegistry, ServerListener};
use crate::history::{self, Histories, HistoryRules, Position};
use crate::metrics::ShardMetrics;
use crate::registry::{ConnId, Registry, ShardId};
use crate::topics::{self, PublishReport, SlowConsumerPolicy, TopicIndex, TopicRules, TopicTable};
use crate::ws::queue::{Displace, Droppable, FrameBytes, Push};

/// Size of the shard's read buffer: the most one `recv` takes.
pub(crate) const SCRATCH: usize = 64 << 10;

/// A shard's connections and what they share. Lives on the shard's thread only.
pub(crate) struct Connections {
    pub(crate) id: ShardId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) links: Arc<ShardLinks>,
    listeners: Arc<ListenerRegistry<EventPayload>>,
    /// This shard's copy of the server-wide listeners, re-read when their version moves.
    listener_cache: RefCell<(u64, Arc<ListenerMap<EventPayload>>)>,
    slab: RefCell<Slab<Rc<Conn>>>,
    next_generation: Cell<u64>,
    pub(crate) timers: Timers,
    /// One read buffer for every connection of the shard: a connection holds bytes only for
    /// an incomplete frame, never a buffer of its own while idle.
    pub(crate) scratch: RefCell<Box<[u8]>>,
    /// Where a write's short frames are copied together (`socket::gather`); borrowed only
    /// for the length of one write.
    pub(crate) gather: RefCell<Box<[u8]>>,
    /// Reports which open connections have bytes to read.
    pub(crate) readiness: Readiness,
    /// Signalled after every teardown.
    pub(crate) teardowns: LocalNotify,
    /// Connections with something queued since the last flush pass.
    dirty: RefCell<Vec<Rc<Conn>>>,
    flush_wanted: LocalNotify,
    /// Signalled after each round of work that may have queued frames (an inbox burst, a
    /// round of reads): a pass waiting for the rest of a burst looks again.
    queued_round: LocalNotify,
    /// Parked connections that need a task again, with their sockets (`Conn::wake`).
    resumes: RefCell<Vec<(Rc<Conn>, OwnedFd)>>,
    resume_wanted: LocalNotify,
    /// This shard's subscriptions, by slab slot.
    pub(crate) topics: RefCell<TopicIndex>,
    /// Which shards hold subscribers of each topic, shared by all shards.
    pub(crate) topic_table: Arc<TopicTable>,
    /// This node's NATS link, in cluster mode.
    pub(crate) cluster: Option<Arc<ClusterHandle>>,
    /// `Builder::authenticate`'s verifier: refreshed tokens are verified with it, and its
    /// grace bounds an expired token's connection.
    pub(crate) auth: Option<Arc<Verifier>>,
    /// Token refusals by client address, when the verifier limits them.
    pub(crate) token_refusals: Option<RefCell<RefusalLimit>>,
    /// `Builder::backend`: this shard's side of the application's backend.
    pub(crate) backend: Option<Rc<BackendLink>>,
    /// `Builder::history`: which topics keep history.
    pub(crate) history_rules: Option<Arc<HistoryRules>>,
    /// `Builder::slow_consumers`: what full queues do with each topic's publications.
    pub(crate) slow_consumers: Option<Arc<TopicRules<SlowConsumerPolicy>>>,
    /// The histories of the topics this shard is home to.
    pub(crate) histories: RefCell<Histories>,
}

impl Connections {
    pub(crate) fn new(
        id: ShardId,
        registry: Arc<Registry>,
        links: Arc<ShardLinks>,
        listeners: Arc<ListenerRegistry<EventPayload>>,
        topic_table: Arc<TopicTable>,
        cluster: Option<Arc<ClusterHandle>>,
        readiness: Readiness,
    ) -> Connections {
        let cache = listeners.snapshot();
        Connections {
            id,
            registry,
            links,
            listeners,
            listener_cache: RefCell::new(cache),
            slab: RefCell::new(Slab::new()),
            next_generation: Cell::new(0),
            timers: Timers::default(),
            scratch: RefCell::new(vec![0; SCRATCH].into_boxed_slice()),
            gather: RefCell::new(vec![0; socket::GATHER].into_boxed_slice()),
            readiness,
            teardowns: LocalNotify::default(),
            dirty: RefCell::new(Vec::new()),
            flush_wanted: LocalNotify::default(),
            queued_round: LocalNotify::default(),
            resumes: RefCell::new(Vec::new()),
            resume_wanted: LocalNotify::default(),
            topics: RefCell::default(),
            topic_table,
            cluster,
            auth: None,
            token_refusals: None,
            backend: None,
            history_rules: None,
            slow_consumers: None,
            histories: RefCell::default(),
        }
    }

    /// This shard's traffic counters.
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.links.get(self.id).metrics
    }

    /// Server-wide listeners of `name`, from this shard's copy of the registry snapshot.
    pub(super) fn server_listeners(
        &self,
        name: &str,
    ) -> Option<Arc<[ServerListener<EventPayload>]>> {
        let version = self.listeners.version();
        if self.listener_cache.borrow().0 != version {
            *self.listener_cache.borrow_mut() = self.listeners.snapshot();
        }
        self.listener_cache.borrow().1.get(name).cloned()
    }

    /// A parked connection needs its task again (`Conn::wake`): the shard's resume task
    /// starts one with the socket.
    pub(super) fn resume(&self, conn: Rc<Conn>, fd: OwnedFd) {
        self.resumes.borrow_mut().push((conn, fd));
        self.resume_wanted.notify();
    }

    /// Waits for parked connections that need their task again and moves them into `out`.
    pub(crate) async fn next_resumes(&self, out: &mut Vec<(Rc<Conn>, OwnedFd)>) {
        while self.resumes.borrow().is_empty() {
            self.resume_wanted.wait().await;
        }
        std::mem::swap(out, &mut *self.resumes.borrow_mut());
    }

    /// A round of work that may queue frames begins (an inbox burst, a round of reads): the
    /// cross-node work it makes goes to the link in one hand-over at its end
    /// (`ClusterHandle::begin_round`).
    pub(crate) fn begin_round(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.begin_round();
        }
    }

    /// A round of work that may have queued frames ended (an inbox burst, a round of reads).
    pub(crate) fn round_done(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.end_round();
        }
        self.queued_round.notify();
    }

    /// Puts a connection on the flush list (see `Conn::mark_dirty`).
    pub(super) fn mark_dirty(&self, conn: Rc<Conn>) {
        let mut dirty = self.dirty.borrow_mut();
        dirty.push(conn);
        if dirty.len() == 1 {
            drop(dirty);
            self.flush_wanted.notify();
        }
    }

    /// The flush pass: writes every dirty connection's queue, then waits for more. Runs as one
    /// task per shard, after the tasks that queued messages have yielded, so each dirty
    /// connection's whole queue leaves in one write.
    ///
    /// A fan-out shard may hold a pass for a bounded time first, so that more frames share
    /// each write (`coalescing.rs`); the tasks that read and queue run meanwhile.
    pub(crate) async fn flush_dirty(&self, mut coalescing: Coalescing) {
        let mut batch = Vec::new();
        let mut queued_before = self.metrics().messages_queued();
        loop {
            if self.dirty.borrow().is_empty() {
                self.flush_wanted.wait().await;
            }
            // One clock read for the whole pass, and one more only after a hold.
            let woke = Instant::now();
            let mut now = woke;
            let holding = coalescing.hold_until(woke).is_some();
            let mut held = holding;
            let deadline = woke + coalescing.bound();
            // A held pass waits until it carries more than a frame per write, the first part of
            // a burst for the rest (`Coalescing::short`), looking again after each round of
            // work that may have queued more, within the bound.
            let frames = || self.metrics().messages_queued().wrapping_sub(queued_before);
            while now < deadline && coalescing.short(holding, self.dirty.borrow().len(), frames()) {
                held = true;
                let bound = Timer::new(deadline - now);
                future::or(self.queued_round.wait(), async {
                    let _ = bound.await;
                })
                .await;
                now = Instant::now();
            }
            if held {
                self.metrics().held_pass();
            }
            std::mem::swap(&mut batch, &mut *self.dirty.borrow_mut());
            let sockets = batch.len();
            for conn in batch.drain(..) {
                conn.flush_now(now);
            }
            let queued = self.metrics().messages_queued();
            let pass = Pass {
                sockets,
                frames: queued.wrapping_sub(queued_before),
                held,
            };
            queued_before = queued;
            coalescing.handle_pass(pass, Instant::now());
            glommio::yield_if_needed().await;
        }
    }

    /// The id the next inserted connection will get (nothing may be inserted in between).
    pub(crate) fn next_id(&self) -> ConnId {
        ConnId {
            shard: self.id,
            slot: self.slab.borrow().vacant_key(),
            generation: self.next_generation.get(),
        }
    }

    /// Adds a connection made with `next_id()` to the slab.
    pub(crate) fn insert(&self, conn: Rc<Conn>) {
        self.next_generation.set(conn.id.generation + 1);
        let expected = conn.id.slot;
        let slot = self.slab.borrow_mut().insert(conn);
        debug_assert_eq!(slot, expected);
        self.links.get(self.id).live.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn remove(&self, id: ConnId) {
        let mut slab = self.slab.borrow_mut();
        if slab.get(id.slot).is_some_and(|c| c.id == id) {
            slab.remove(id.slot);
            self.links.get(self.id).live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The live or closing connection with this id, if it is still there.
    pub(crate) fn get(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conn_at(id.slot, id.generation)
    }

    /// The connection a readiness key names, if it is still there.
    pub(crate) fn by_key(&self, key: u64) -> Option<Rc<Conn>> {
        self.slab
            .borrow()
            .get(readiness::slot_of(key))
            .filter(|c| readiness::key_of(c.id) == key)
            .cloned()
    }

    /// The connection at `slot`, if it is still the one of `generation`.
    pub(crate) fn conn_at(&self, slot: usize, generation: u64) -> Option<Rc<Conn>> {
        self.slab
            .borrow()
            .get(slot)
            .filter(|c| c.id.generation == generation)
            .cloned()
    }

    /// Every connection now in the slab (for work that may run listeners, which can change the
    /// slab while it goes).
    pub(crate) fn snapshot(&self) -> Vec<Rc<Conn>> {
        self.slab
            .borrow()
            .iter()
            .map(|(_, c)| Rc::clone(c))
            .collect()
    }

    /// Queues a publication for this shard's subscribers of `topic` (maybe but `except`),
    /// enveloped with its position for those that asked; under the topic's slow-consumer
    /// policy a full queue may drop one of the topic's publications (`key`, the conflation
    /// key's hash, picks which under `KeepLatest`), and the connection is told. Returns what
    /// it did, for a publish report.
    pub(crate) fn deliver_to_topic(
        &self,
        topic: &str,
        frame: &Bytes,
        key: u64,
        except: Option<ConnId>,
        position: Option<Position>,
    ) -> PublishReport {
        let now = Instant::now();
        let policy = self.policy_of(topic);
        let droppable = match policy {
            SlowConsumerPolicy::Teardown => None,
            SlowConsumerPolicy::DropOldest => Some((0, Displace::Oldest)),
            SlowConsumerPolicy::KeepLatest => Some((key, Displace::SameKey)),
        }
        .map(|(key, displace)| {
            let tag = Droppable {
                topic: topics::fnv1a(topic.as_bytes()),
                key,
            };
            (tag, displace)
        });
        let mut done = PublishReport::default();
        let mut held = 0u64;
        // Subscribers whose queue dropped a publication, with the dropped one's topic hash.
        let mut drops: Vec<(Rc<Conn>, u64)> = Vec::new();
        {
            let index = self.topics.borrow();
            let slab = self.slab.borrow();
            let shared = FrameBytes::shared(frame.clone());
            // Made once, for the first subscriber that asked for envelopes.
            let mut enveloped: Option<FrameBytes> = None;
            for slot in index.members(topic) {
                let conn = slab.get(slot);
                if conn.is_some_and(|c| Some(c.id) == except) {
                    continue;
                }
                done.subscribers += 1;
                let Some(c) = conn else {
                    done.closed += 1;
                    continue;
                };
                let out = match position {
                    Some(position) if c.hold_if_recovering(topic, position, frame) => {
                        // Held for the seam, sent when the catch-up ends: accepted, not yet
                        // queued.
                        held += 1;
                        done.queued += 1;
                        continue;
                    }
                    // Every publication in the envelope, with its position where it has one.
                    _ if c.wants_positions() => enveloped
                        .get_or_insert_with(|| {
                            let (payload, binary) = history::unframe(frame);
                            FrameBytes::shared(history::envelope(topic, position, &payload, binary))
                        })
                        .clone(),
                    _ => shared.clone(),
                };
                let push = match droppable {
                    Some((tag, displace)) => c.offer_droppable(out, tag, displace),
                    None if c.offer_frame(out, now) => Push::Queued,
                    None => Push::Closed,
                };
                match push {
                    Push::Queued | Push::Waiting { .. } => done.queued += 1,
                    Push::Closed => done.closed += 1,
                    Push::Displaced { topic } => {
                        done.queued += 1;
                        done.dropped += 1;
                        drops.push((Rc::clone(c), topic));
                    }
                    Push::Dropped => {
                        done.dropped += 1;
                        drops.extend(droppable.map(|(tag, _)| (Rc::clone(c), tag.topic)));
                    }
                }
            }
        }
        let nanos = u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.metrics().published(done.queued - held, nanos);
        if !drops.is_empty() {
            self.tell_dropped(topic, drops);
        }
        done
    }

    /// What full queues do with `topic`'s publications.
    fn policy_of(&self, topic: &str) -> SlowConsumerPolicy {
        self.slow_consumers
            .as_ref()
            .and_then(|rules| rules.get(topic))
            .unwrap_or_default()
    }

    /// Counts and tells the drops a publication of `topic` caused: counted once per topic,
    /// told to each connection. A dropped publication may be of another of the connection's
    /// topics (one with nothing queued takes the oldest droppable place): its name is found
    /// among the connection's topics by hash.
    fn tell_dropped(&self, topic: &str, drops: Vec<(Rc<Conn>, u64)>) {
        let hash = topics::fnv1a(topic.as_bytes());
        // `None`: the publication's own topic, the usual case, with nothing to look up.
        let named: Vec<(Rc<Conn>, Option<Arc<str>>, u64)> = {
            let index = self.topics.borrow();
            drops
                .into_iter()
                .filter_map(|(c, dropped)| {
                    if dropped == hash {
                        return Some((c, None, dropped));
                    }
                    let name = index
                        .topics_of(c.id.slot)
                        .find(|t| topics::fnv1a(t.as_bytes()) == dropped)?;
                    Some((c, Some(Arc::clone(name)), dropped))
                })
                .collect()
        };
        let own = named.iter().filter(|(_, other, _)| other.is_none()).count() as u64;
        if own > 0 {
            let policy = self.policy_of(topic).name();
            self.metrics().dropped_by_policy(topic, policy, own);
        }
        for (c, other, dropped) in named {
            let name = other.as_deref().unwrap_or(topic);
            if other.is_some() {
                let policy = self.policy_of(name).name();
                self.metrics().dropped_by_policy(name, policy, 1);
            }
            c.tell_dropped(name, dropped);
        }
    }

    /// One subscriber of `topic` on this shard left.
    pub(super) fn leave_topic(&self, topic: &str) {
        if self.topic_table.remove(topic, self.id, 1) {
            self.interest_changed(topic);
        }
    }

    /// A topic gained its first subscriber on this node, or lost its last: in cluster mode
    /// the NATS link takes or lets go of the topic's subject.
    pub(super) fn interest_changed(&self, topic: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.interest(topic);
        }
    }

    /// Runs `f` on every connection without copying the list; `f` must not run listeners.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Rc<Conn>)) {
        for (_, c) in self.slab.borrow().iter() {
            f(c);
        }
    }
}
