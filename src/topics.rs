//! Topics: the rule for a topic's name, one shard's subscription index, and the server-wide
//! table of which shards hold subscribers of each topic. Not delivery: a publish is framed by
//! the caller and handed to each shard in the table (`shard::state`), which walks its index.
//!
//! Public: the name rule only (`MAX_TOPIC_LEN`, `check_name`), so that code taking topic
//! names from outside (an HTTP API, a message) can refuse a bad one before it reaches
//! `subscribe` or `publish`, with the same answer. The index and the table are the server's;
//! users read them through `Server::subscriber_count` and `Server::topics`.
//!
//! Why two structures: the index is one shard's own (no locks; a publish walks only the
//! topic's members, never the slab), while the table is what any thread reads to decide which
//! shards a publish must wake. A subscribe updates both before it returns, so a publish called
//! after it, from any thread, reaches the new subscriber (docs/behaviour.md, "Topics").

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use slab::Slab;

use crate::registry::{bucket_index, ShardId};
use crate::Error;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Whether `topic` may be subscribed to: non-empty and at most `MAX_TOPIC_LEN` bytes (a
/// `&str` is UTF-8 already).
pub fn check_name(topic: &str) -> Result<(), Error> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(Error::InvalidTopic);
    }
    Ok(())
}

/// What a subscriber's full send queue does with a topic's publications
/// (`Builder::slow_consumers`; docs/behaviour.md, "Slow consumers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// A publication waits for room within the retry window, then is dropped (`error` with
    /// `QueueFull`); a queue full for `write_timeout` tears the connection down. The default,
    /// and what every other message gets.
    #[default]
    Teardown,
    /// The oldest queued publication of the topic is dropped to make room; the connection
    /// stays, and is told what it missed.
    DropOldest,
    /// Only the latest publication per key is kept (conflation): a new one takes the place of
    /// the queued one with the same key (the publisher's, `publish_keyed`), or else of the
    /// topic's oldest. The connection stays, and is told what it missed.
    KeepLatest,
}

impl SlowConsumerPolicy {
    /// The name the binary's flags and `/metrics` use: `teardown`, `drop-oldest`,
    /// `keep-latest`.
    pub fn name(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Teardown => "teardown",
            SlowConsumerPolicy::DropOldest => "drop-oldest",
            SlowConsumerPolicy::KeepLatest => "keep-latest",
        }
    }
}

impl std::str::FromStr for SlowConsumerPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            SlowConsumerPolicy::Teardown,
            SlowConsumerPolicy::DropOldest,
            SlowConsumerPolicy::KeepLatest,
        ]
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| {
            format!("{s:?} is not a slow-consumer policy: teardown, drop-oldest or keep-latest")
        })
    }
}

/// Settings chosen per topic by name pattern (an exact name, or a prefix ending in `*`): the
/// first pattern that matches wins.
#[derive(Debug, Clone)]
pub struct TopicRules<T> {
    rules: Vec<(String, T)>,
}

impl<T> Default for TopicRules<T> {
    fn default() -> Self {
        TopicRules { rules: Vec::new() }
    }
}

impl<T: Copy> TopicRules<T> {
    /// Adds a rule after the others.
    pub fn add(&mut self, pattern: impl Into<String>, value: T) {
        self.rules.push((pattern.into(), value));
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The setting of the first rule matching `topic`.
    pub fn get(&self, topic: &str) -> Option<T> {
        self.rules
            .iter()
            .find(|(p, _)| crate::auth::pattern_matches(p, topic))
            .map(|(_, v)| *v)
    }
}

/// FNV-1a of `bytes`: how a name becomes a 64-bit number where a stable, fast hash is wanted
/// (a topic's home shard, a queued publication's topic and key).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A conflation key as a queued publication holds it: never 0, which stands for no key.
pub(crate) fn key_hash(key: &str) -> u64 {
    fnv1a(key.as_bytes()).max(1)
}

/// The in-band notice of publications of `topic` dropped for a connection under the topic's
/// slow-consumer policy: `{"topic":"t","missed":N}`, a text frame (RFC 6455 §5.6).
pub(crate) fn missed_notice(topic: &str, missed: u64) -> bytes::Bytes {
    let topic = serde_json::to_string(topic).unwrap_or_default();
    let text = format!(r#"{{"topic":{topic},"missed":{missed}}}"#);
    crate::ws::frame::encode(crate::ws::frame::OpCode::Text, text.as_bytes())
}

/// What one publish reached, summed over the shards of this node and, in cluster mode, of the
/// other nodes that answered in time (`Server::publish_reported`,
/// `Websocket::publish_reported`; docs/behaviour.md, "Publish reports").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Subscribers it was offered to (the sender left out).
    pub subscribers: u64,
    /// Those that accepted it into their send queue (or held it while catching up on the
    /// topic's history).
    pub queued: u64,
    /// Those skipped because they were closing or gone.
    pub closed: u64,
    /// Those whose full send queue dropped a publication of the topic on its arrival, under
    /// the topic's slow-consumer policy: an older one to make room for it, or it (then it is
    /// not counted in `queued`).
    pub dropped: u64,
    /// Shards that answered.
    pub shards: usize,
    /// Nodes whose shards' answers are summed: 1 on one node; in cluster mode this node and
    /// each other node that answered in time.
    pub nodes: usize,
    /// Whether something is missing: a shard's inbox refused the publication, a shard or (in
    /// cluster mode) a live node did not answer within the bound, NATS was unreachable, or
    /// the topic keeps history in cluster mode, where delivery comes later, from JetStream.
    pub partial: bool,
}

impl PublishReport {
    /// Adds another shard's part.
    pub(crate) fn add(&mut self, part: &PublishReport) {
        self.subscribers += part.subscribers;
        self.queued += part.queued;
        self.closed += part.closed;
        self.dropped += part.dropped;
        self.shards += part.shards;
        self.nodes += part.nodes;
        self.partial |= part.partial;
    }
}

/// One shard's subscriptions. Members are the slab slots of live connections: a connection
/// leaves the index (`remove_member`) before its slot can be reused. No I/O, no clock.
///
/// Kept small, since a fan-out server holds millions of subscriptions: a topic's name is
/// stored once, and both directions hold 4-byte ids (a member's topic list is sized exactly).
#[derive(Debug, Default)]
pub(crate) struct TopicIndex {
    ids: HashMap<Arc<str>, u32>,
    topics: Slab<Topic>,
    /// Each member's topic ids, in the order it subscribed.
    by_member: HashMap<u32, Box<[u32]>>,
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    members: HashSet<u32>,
}

/// A slab slot as a member id. Slots count live connections, far below 2^32; a larger one
/// would be a broken slab, not input.
fn member_id(slot: usize) -> u32 {
    u32::try_from(slot).expect("slab slot fits in 32 bits")
}

impl TopicIndex {
    /// Subscribes `member` to `topic`, unless it already holds `limit` other topics. The
    /// topic's shared name when it was added; `None` when it was subscribed already.
    pub(crate) fn subscribe(
        &mut self,
        member: usize,
        topic: &str,
        limit: usize,
    ) -> Result<Option<Arc<str>>, Error> {
        check_name(topic)?;
        let member = member_id(member);
        let existing = self.ids.get(topic).copied();
        if let Some(id) = existing {
            if self.topics[id as usize].members.contains(&member) {
                return Ok(None);
            }
        }
        let mine = self.by_member.get(&member).map_or(&[][..], |t| &t[..]);
        if mine.len() >= limit {
            return Err(Error::TooManyTopics);
        }
        let id = existing.unwrap_or_else(|| {
            let name: Arc<str> = Arc::from(topic);
            let id = self.topics.insert(Topic {
                name: Arc::clone(&name),
                members: HashSet::new(),
            });
            let id = u32::try_from(id).expect("fewer than 2^32 topics on a shard");
            self.ids.insert(name, id);
            id
        });
        let grown: Box<[u32]> = mine.iter().copied().chain([id]).collect();
        self.by_member.insert(member, grown);
        let t = &mut self.topics[id as usize];
        t.members.insert(member);
        Ok(Some(Arc::clone(&t.name)))
    }

    /// Unsubscribes `member` from `topic`; false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, member: usize, topic: &str) -> bool {
        let member = member_id(member);
        let Some(&id) = self.ids.get(topic) else {
            return false;
        };
        let Entry::Occupied(mut mine) = self.by_member.entry(member) else {
            return false;
        };
        if !mine.get().contains(&id) {
            return false;
        }
        let rest: Box<[u32]> = mine.get().iter().copied().filter(|&t| t != id).collect();
        if rest.is_empty() {
            mine.remove();
        } else {
            mine.insert(rest);
        }
        self.leave(member, id);
        true
    }

    /// Takes `member` out of topic `id`, dropping the topic when it empties.
    fn leave(&mut self, member: u32, id: u32) {
        let t = &mut self.topics[id as usize];
        t.members.remove(&member);
        if t.members.is_empty() {
            let t = self.topics.remove(id as usize);
            self.ids.remove(&t.name);
        }
    }

    /// Removes every subscription of `member`; returns the topics it left.
    pub(crate) fn remove_member(&mut self, member: usize) -> Vec<Arc<str>> {
        let member = member_id(member);
        let ids = self.by_member.remove(&member).unwrap_or_default();
        ids.iter()
            .map(|&id| {
                let name = Arc::clone(&self.topics[id as usize].name);
                self.leave(member, id);
                name
            })
            .collect()
    }

    fn topic(&self, name: &str) -> Option<&Topic> {
        self.ids.get(name).map(|&id| &self.topics[id as usize])
    }

    /// Whether `member` is subscribed to `topic`.
    pub(crate) fn is_subscribed(&self, member: usize, topic: &str) -> bool {
        self.topic(topic)
            .is_some_and(|t| t.members.contains(&member_id(member)))
    }

    /// `member`'s topics, in the order it subscribed.
    pub(crate) fn topics_of(&self, member: usize) -> impl Iterator<Item = &Arc<str>> + '_ {
        let ids = self.by_member.get(&member_id(member));
        ids.into_iter()
            .flat_map(|ids| ids.iter())
            .map(|&id| &self.topics[id as usize].name)
    }

    /// The members subscribed to `topic` on this shard.
    pub(crate) fn members(&self, topic: &str) -> impl Iterator<Item = usize> + '_ {
        self.topic(topic)
            .into_iter()
            .flat_map(|t| t.members.iter())
            .map(|&m| m as usize)
    }

    /// How many members `topic` has on this shard.
    #[cfg(test)]
    pub(crate) fn count(&self, topic: &str) -> usize {
        self.topic(topic).map_or(0, |t| t.members.len())
    }

    /// Whether nothing is subscribed at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.topics.is_empty() && self.by_member.is_empty()
    }
}

/// Subscribers per shard of every topic with at least one, shared by all shards and every
/// `Server` clone. Split into independently locked buckets by topic, so publishes to different
/// topics rarely meet on one lock; a publish takes a read lock, a subscribe a write lock.
pub(crate) struct TopicTable {
    shards: usize,
    buckets: Box<[RwLock<Bucket>]>,
}

type Bucket = HashMap<Arc<str>, Box<[u32]>>;

impl TopicTable {
    /// A table for `shards` shards, with `buckets` locks (rounded up to a power of two).
    pub(crate) fn new(shards: usize, buckets: usize) -> TopicTable {
        let n = buckets.max(1).next_power_of_two();
        TopicTable {
            shards,
            buckets: (0..n).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn bucket(&self, topic: &str) -> &RwLock<Bucket> {
        &self.buckets[bucket_index(topic, self.buckets.len())]
    }

    // Every change is one counter move under the lock, so a poisoned lock still guards a
    // consistent map.
    fn read(&self, topic: &str) -> RwLockReadGuard<'_, Bucket> {
        self.bucket(topic).read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, topic: &str) -> RwLockWriteGuard<'_, Bucket> {
        self.bucket(topic)
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// One more subscriber of `topic` on `shard`; true when it is the topic's first anywhere.
    pub(crate) fn add(&self, topic: &Arc<str>, shard: ShardId) -> bool {
        let mut bucket = self.write(topic);
        let mut first = false;
        let counts = bucket.entry(Arc::clone(topic)).or_insert_with(|| {
            first = true;
            vec![0; self.shards].into_boxed_slice()
        });
        counts[shard.0] += 1;
        first
    }

    /// `n` fewer subscribers of `topic` on `shard`; the topic goes when none is left anywhere,
    /// and then this returns true.
    pub(crate) fn remove(&self, topic: &str, shard: ShardId, n: u32) -> bool {
        let mut bucket = self.write(topic);
        let Some(counts) = bucket.get_mut(topic) else {
            return false;
        };
        counts[shard.0] = counts[shard.0].saturating_sub(n);
        if counts.iter().all(|&c| c == 0) {
            bucket.remove(topic);
            return true;
        }
        false
    }

    /// The shards that hold a subscriber of `topic`. Collected, so that no lock is held while
    /// the caller hands them the message (a shard may run it inline).
    pub(crate) fn shards_with(&self, topic: &str) -> Vec<ShardId> {
        self.read(topic).get(topic).map_or_else(Vec::new, |counts| {
            (0..counts.len())
                .filter(|&i| counts[i] > 0)
                .map(ShardId)
                .collect()
        })
    }

    /// Subscribers of `topic` on every shard.
    pub(crate) fn count(&self, topic: &str) -> usize {
        self.read(topic)
            .get(topic)
            .map_or(0, |c| c.iter().map(|&n| n as usize).sum())
    }

    /// Subscribers of `topic` on `shard`.
    #[cfg(test)]
    pub(crate) fn count_on(&self, topic: &str, shard: ShardId) -> usize {
        self.read(topic)
            .get(topic)
            .map_or(0, |c| c[shard.0] as usize)
    }

    /// Every topic with a subscriber, with its count, sorted by name.
    pub(crate) fn list(&self) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .buckets
            .iter()
            .flat_map(|b| {
                let bucket = b.read().unwrap_or_else(|e| e.into_inner());
                bucket
                    .iter()
                    .map(|(t, c)| (t.to_string(), c.iter().map(|&n| n as usize).sum()))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
#[path = "topics_tests.rs"]
mod tests;
