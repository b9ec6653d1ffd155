//! Tests of the topic index and table, including random sequences checked against a model.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

#[test]
fn names_are_checked() {
    assert!(check_name("scores").is_ok());
    assert!(check_name(&"x".repeat(MAX_TOPIC_LEN)).is_ok());
    assert!(matches!(check_name(""), Err(Error::InvalidTopic)));
    assert!(matches!(
        check_name(&"x".repeat(MAX_TOPIC_LEN + 1)),
        Err(Error::InvalidTopic)
    ));
    // 256 bytes, not 256 characters: 86 three-byte characters are 258 bytes.
    assert!(matches!(
        check_name(&"€".repeat(86)),
        Err(Error::InvalidTopic)
    ));
    let mut index = TopicIndex::default();
    assert!(matches!(
        index.subscribe(1, "", 10),
        Err(Error::InvalidTopic)
    ));
    assert_eq!(index.topics_of(1).count(), 0);
}

#[test]
fn subscribe_twice_is_one_subscription() {
    let mut index = TopicIndex::default();
    let name = index.subscribe(7, "a", 10).unwrap().unwrap();
    assert_eq!(&*name, "a");
    assert_eq!(index.subscribe(7, "a", 10).unwrap(), None);
    assert_eq!(index.count("a"), 1);
    // The second member shares the first one's name.
    let again = index.subscribe(8, "a", 10).unwrap().unwrap();
    assert!(Arc::ptr_eq(&name, &again));
    assert!(index.unsubscribe(7, "a"));
    assert!(!index.unsubscribe(7, "a"));
    assert_eq!(index.members("a").collect::<Vec<_>>(), vec![8]);
}

#[test]
fn the_limit_counts_a_members_topics() {
    let mut index = TopicIndex::default();
    for t in ["a", "b", "c"] {
        index.subscribe(1, t, 3).unwrap();
    }
    assert!(matches!(
        index.subscribe(1, "d", 3),
        Err(Error::TooManyTopics)
    ));
    // Subscribing again to one it holds is not past the limit.
    assert_eq!(index.subscribe(1, "b", 3).unwrap(), None);
    // Another member is not affected.
    assert!(index.subscribe(2, "d", 3).unwrap().is_some());
    index.unsubscribe(1, "a");
    assert!(index.subscribe(1, "d", 3).unwrap().is_some());
    let mine: Vec<&str> = index.topics_of(1).map(|t| &**t).collect();
    assert_eq!(mine, ["b", "c", "d"]);
}

#[test]
fn removing_a_member_leaves_nothing_behind() {
    let mut index = TopicIndex::default();
    index.subscribe(1, "a", 10).unwrap();
    index.subscribe(1, "b", 10).unwrap();
    index.subscribe(2, "b", 10).unwrap();
    let left: Vec<String> = index
        .remove_member(1)
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(left, ["a", "b"]);
    assert_eq!(index.count("a"), 0);
    assert_eq!(index.count("b"), 1);
    assert!(index.remove_member(1).is_empty());
    index.remove_member(2);
    assert!(index.is_empty());
}

#[test]
fn the_table_counts_per_shard_and_forgets_empty_topics() {
    let table = TopicTable::new(3, 4);
    let a: Arc<str> = "a".into();
    assert!(table.add(&a, ShardId(0)), "the first subscriber anywhere");
    assert!(!table.add(&a, ShardId(2)));
    assert!(!table.add(&a, ShardId(2)));
    assert_eq!(table.shards_with("a"), vec![ShardId(0), ShardId(2)]);
    assert_eq!(table.count("a"), 3);
    assert_eq!(table.count_on("a", ShardId(2)), 2);
    assert!(!table.remove("a", ShardId(2), 2));
    assert_eq!(table.shards_with("a"), vec![ShardId(0)]);
    assert_eq!(table.list(), vec![("a".to_string(), 1)]);
    assert!(
        table.remove("a", ShardId(0), 1),
        "the last subscriber anywhere"
    );
    assert!(table.shards_with("a").is_empty());
    assert!(table.list().is_empty());
    // Removing what is not there changes nothing.
    table.remove("a", ShardId(0), 1);
    assert_eq!(table.count("a"), 0);
}

/// A small deterministic generator (xorshift64*), so a failing sequence can be replayed from
/// its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Random subscribe / unsubscribe / publish / close sequences over two shards, checked after
/// every step against a model that is just a set of (member, topic) pairs.
#[test]
fn random_sequences_match_a_model() {
    const SHARDS: usize = 2;
    const MEMBERS: u64 = 12;
    const TOPICS: [&str; 5] = ["a", "b", "c", "d", "e"];
    const LIMIT: usize = 3;
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let table = TopicTable::new(SHARDS, 2);
        let mut shards: Vec<TopicIndex> = (0..SHARDS).map(|_| TopicIndex::default()).collect();
        // (shard, member) -> topics, in subscribe order.
        let mut model: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
        for step in 0..300 {
            let shard = rng.below(SHARDS as u64) as usize;
            let member = rng.below(MEMBERS) as usize;
            let topic = TOPICS[rng.below(TOPICS.len() as u64) as usize];
            let index = &mut shards[shard];
            let mine = model.entry((shard, member)).or_default();
            let ctx = format!("seed {seed} step {step}");
            match rng.below(10) {
                0..=3 => {
                    let got = index.subscribe(member, topic, LIMIT);
                    if mine.contains(&topic) {
                        assert_eq!(got.unwrap(), None, "{ctx}");
                    } else if mine.len() >= LIMIT {
                        assert!(matches!(got, Err(Error::TooManyTopics)), "{ctx}");
                    } else {
                        let name = got.unwrap().expect(&ctx);
                        table.add(&name, ShardId(shard));
                        mine.push(topic);
                    }
                }
                4..=6 => {
                    let was = mine.iter().position(|t| *t == topic);
                    assert_eq!(index.unsubscribe(member, topic), was.is_some(), "{ctx}");
                    if let Some(at) = was {
                        mine.remove(at);
                        table.remove(topic, ShardId(shard), 1);
                    }
                }
                7 => {
                    let left = index.remove_member(member);
                    let left: Vec<&str> = left.iter().map(|t| &**t).collect();
                    assert_eq!(&left, mine, "{ctx}");
                    for t in mine.drain(..) {
                        table.remove(t, ShardId(shard), 1);
                    }
                }
                _ => {
                    // A publish: exactly the model's subscribers, on exactly the model's shards.
                    let want_shards: BTreeSet<usize> = model
                        .iter()
                        .filter(|(_, ts)| ts.contains(&topic))
                        .map(|((s, _), _)| *s)
                        .collect();
                    let got_shards: BTreeSet<usize> =
                        table.shards_with(topic).iter().map(|s| s.0).collect();
                    assert_eq!(got_shards, want_shards, "{ctx}");
                    for (s, index) in shards.iter().enumerate() {
                        let want: BTreeSet<usize> = model
                            .iter()
                            .filter(|((ms, _), ts)| *ms == s && ts.contains(&topic))
                            .map(|((_, m), _)| *m)
                            .collect();
                        let got: BTreeSet<usize> = index.members(topic).collect();
                        assert_eq!(got, want, "{ctx}");
                    }
                }
            }
            for ((s, m), ts) in &model {
                let got: Vec<&str> = shards[*s].topics_of(*m).map(|t| &**t).collect();
                assert_eq!(&got, ts, "{ctx}");
            }
            for t in TOPICS {
                let want = model.values().filter(|ts| ts.contains(&t)).count();
                assert_eq!(table.count(t), want, "{ctx}");
            }
        }
        // Every member leaving leaves nothing behind, in the index or the table.
        for ((s, m), ts) in &model {
            for t in shards[*s].remove_member(*m) {
                table.remove(&t, ShardId(*s), 1);
            }
            assert!(ts.len() <= LIMIT);
        }
        assert!(shards.iter().all(TopicIndex::is_empty), "seed {seed}");
        assert!(table.list().is_empty(), "seed {seed}");
    }
}
