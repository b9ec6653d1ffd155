//! Topic history and the recovery seam, with a virtual clock.

use super::*;

const EPOCH: Epoch = Epoch(0xabcd_0001);

fn history(size: usize, ttl_s: u64) -> TopicHistory {
    TopicHistory::new(
        EPOCH,
        Retention {
            size,
            ttl: Duration::from_secs(ttl_s),
        },
    )
}

fn publish(h: &mut TopicHistory, n: u64, now: Instant) {
    for i in 0..n {
        h.append(Bytes::from(format!("p{i}")), false, now);
    }
}

fn offsets(kept: &[Kept]) -> Vec<u64> {
    kept.iter().map(|k| k.offset).collect()
}

fn at(offset: u64) -> Position {
    Position {
        offset,
        epoch: EPOCH,
    }
}

#[test]
fn offsets_grow_by_one_from_one_and_the_epoch_prints_as_8_hex_digits() {
    let t0 = Instant::now();
    let mut h = history(10, 60);
    assert_eq!(h.last(), at(0));
    assert_eq!(h.append(Bytes::from("a"), false, t0), at(1));
    assert_eq!(h.append(Bytes::from("b"), true, t0), at(2));
    assert_eq!(h.last(), at(2));
    assert_eq!(EPOCH.to_string(), "abcd0001");
    assert_eq!(Epoch::parse("abcd0001"), Some(EPOCH));
    assert_eq!(Epoch::parse("abcd001"), None);
    assert_eq!(Epoch::parse("abcd000g"), None);
}

#[test]
fn recovery_gives_everything_after_the_position_in_order() {
    let t0 = Instant::now();
    let mut h = history(10, 60);
    publish(&mut h, 5, t0);
    let missed = h.since(at(2), t0).unwrap();
    assert_eq!(offsets(&missed), [3, 4, 5]);
    assert_eq!(missed[0].data, Bytes::from("p2"));
    // Up to date: nothing missed. From the start: all.
    assert!(h.since(at(5), t0).unwrap().is_empty());
    assert_eq!(offsets(&h.since(at(0), t0).unwrap()), [1, 2, 3, 4, 5]);
}

#[test]
fn a_history_keeps_its_size_and_a_position_before_it_is_too_old() {
    let t0 = Instant::now();
    let mut h = history(3, 60);
    publish(&mut h, 5, t0);
    assert_eq!(h.window(t0), Some((3, 5)));
    // After 2: 3, 4, 5 are all kept.
    assert_eq!(offsets(&h.since(at(2), t0).unwrap()), [3, 4, 5]);
    // After 1: 2 is gone.
    assert_eq!(h.since(at(1), t0), Err(NotRecovered::TooOld));
}

#[test]
fn publications_older_than_the_ttl_are_dropped() {
    let t0 = Instant::now();
    let mut h = history(100, 10);
    publish(&mut h, 2, t0);
    publish(&mut h, 2, t0 + Duration::from_secs(5));
    let t1 = t0 + Duration::from_secs(11);
    assert_eq!(h.window(t1), Some((3, 4)));
    assert_eq!(h.since(at(1), t1), Err(NotRecovered::TooOld));
    assert_eq!(offsets(&h.since(at(2), t1).unwrap()), [3, 4]);
    // All expired: nothing kept, but a subscriber that saw the last one missed nothing.
    let t2 = t0 + Duration::from_secs(16);
    assert_eq!(h.window(t2), None);
    assert!(h.since(at(4), t2).unwrap().is_empty());
    assert_eq!(h.since(at(3), t2), Err(NotRecovered::TooOld));
}

#[test]
fn another_epoch_or_a_future_offset_is_not_recovered() {
    let t0 = Instant::now();
    let mut h = history(10, 60);
    publish(&mut h, 3, t0);
    let other = Position {
        offset: 1,
        epoch: Epoch(7),
    };
    assert_eq!(h.since(other, t0), Err(NotRecovered::EpochChanged));
    assert_eq!(h.since(at(4), t0), Err(NotRecovered::Unknown));
    assert_eq!(NotRecovered::TooOld.reason(), "position too old");
}

fn delivered(out: &[(Position, Bytes, bool)]) -> Vec<u64> {
    out.iter().map(|(p, _, _)| p.offset).collect()
}

#[test]
fn the_seam_joins_recovered_and_live_without_gap_or_duplicate() {
    let t0 = Instant::now();
    let mut h = history(10, 60);
    publish(&mut h, 6, t0);
    // The subscriber saw 2; while its recovery was fetched, 5, 6 and 7 arrived live (5 and 6
    // are also in the recovery).
    let mut seam = Seam::default();
    for o in [5, 6, 7] {
        seam.hold(at(o), Bytes::from(format!("live{o}")), false);
    }
    let recovered = h.since(at(2), t0).unwrap();
    let out = seam.join(Some(EPOCH), 2, recovered);
    assert_eq!(delivered(&out), [3, 4, 5, 6, 7]);
    // The recovered copy of 5 went out, and the live 7.
    assert_eq!(out[2].1, Bytes::from("p4"));
    assert_eq!(out[4].1, Bytes::from("live7"));
}

#[test]
fn a_seam_without_recovery_delivers_what_came_after_the_start() {
    let mut seam = Seam::default();
    for o in [4, 3, 5] {
        seam.hold(at(o), Bytes::new(), false);
    }
    assert_eq!(delivered(&seam.join(None, 3, vec![])), [4, 5]);
    assert!(Seam::default().join(None, 0, vec![]).is_empty());
}

#[test]
fn held_publications_of_a_new_epoch_follow_the_recovered_ones_in_their_order() {
    // While the subscriber caught up on EPOCH, the history was started again (cluster mode: its
    // stream was made again): 2 and 1 of the new epoch arrived live, after 4 of the old one.
    let new = Epoch(0xabcd_0002);
    let mut seam = Seam::default();
    seam.hold(at(4), Bytes::from("old4"), false);
    seam.hold(
        Position {
            offset: 1,
            epoch: new,
        },
        Bytes::from("new1"),
        false,
    );
    seam.hold(
        Position {
            offset: 2,
            epoch: new,
        },
        Bytes::from("new2"),
        false,
    );
    let recovered = vec![Kept::read_back(3, Bytes::from("old3"), false)];
    let out = seam.join(Some(EPOCH), 2, recovered);
    let got: Vec<(u64, Epoch)> = out.iter().map(|(p, _, _)| (p.offset, p.epoch)).collect();
    assert_eq!(got, [(3, EPOCH), (4, EPOCH), (1, new), (2, new)]);
}

#[test]
fn an_unavailable_history_says_so() {
    assert_eq!(NotRecovered::Unavailable.reason(), "history unavailable");
}

#[test]
fn rules_pick_the_first_matching_pattern() {
    let mut rules = HistoryRules::default();
    let short = Retention {
        size: 10,
        ttl: Duration::from_secs(1),
    };
    let long = Retention {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    rules.add("scores.live", short);
    rules.add("scores.*", long);
    assert_eq!(rules.retention("scores.live"), Some(short));
    assert_eq!(rules.retention("scores.nba"), Some(long));
    assert_eq!(rules.retention("chat"), None);
}

#[test]
fn a_topic_has_one_home_among_the_shards() {
    assert_eq!(home_shard("t", 1), 0);
    let homes: std::collections::HashSet<usize> = (0..64)
        .map(|i| home_shard(&format!("topic{i}"), 4))
        .collect();
    assert_eq!(homes.len(), 4, "64 topics spread over every shard");
    assert_eq!(home_shard("scores", 4), home_shard("scores", 4));
}

#[test]
fn unframe_gives_the_payload_of_every_header_length() {
    use crate::ws::frame::{encode, OpCode};
    for len in [0, 125, 126, 65_535, 65_536] {
        let payload = vec![b'x'; len];
        let (data, binary) = unframe(&encode(OpCode::Binary, &payload));
        assert_eq!((data.len(), binary), (len, true), "{len}");
    }
    assert_eq!(
        unframe(&encode(OpCode::Text, b"hi")),
        (Bytes::from("hi"), false)
    );
}

#[test]
fn the_envelope_names_topic_position_and_data() {
    let frame = envelope("t\"1", Some(at(7)), b"hello", false);
    let (text, binary) = unframe(&frame);
    assert!(!binary);
    assert_eq!(
        text,
        Bytes::from(r#"{"topic":"t\"1","offset":7,"epoch":"abcd0001","data":"hello"}"#)
    );
    let (text, _) = unframe(&envelope("t", Some(at(1)), &[0, 255], true));
    assert_eq!(
        text,
        Bytes::from(r#"{"topic":"t","offset":1,"epoch":"abcd0001","binary":"AP8="}"#)
    );
    // A topic without history: no position.
    let (text, _) = unframe(&envelope("t", None, b"x", false));
    assert_eq!(text, Bytes::from(r#"{"topic":"t","data":"x"}"#));
}

#[test]
fn histories_start_an_epoch_per_topic_and_forget_what_expired() {
    use crate::ws::frame::{encode, OpCode};
    let t0 = Instant::now();
    let retention = Retention {
        size: 10,
        ttl: Duration::from_secs(5),
    };
    let mut hs = Histories::default();
    let topic: std::sync::Arc<str> = "t".into();
    let p1 = hs.append(&topic, retention, encode(OpCode::Text, b"a"), t0);
    let p2 = hs.append(&topic, retention, encode(OpCode::Text, b"b"), t0);
    assert_eq!((p1.offset, p2.offset, p1.epoch), (1, 2, p2.epoch));
    let (missed, now) = hs.recover("t", Some(p1), t0);
    let missed = missed.unwrap();
    assert_eq!(offsets(&missed), [2]);
    assert_eq!(missed[0].data, Bytes::from("b"));
    assert_eq!(now, Some(p2));
    assert_eq!(hs.window("t", t0), Some((1, 2, p1.epoch)));
    // A fresh subscriber learns the position; a topic never published has none.
    assert_eq!(hs.recover("t", None, t0), (Ok(vec![]), Some(p2)));
    assert_eq!(hs.recover("u", None, t0), (Ok(vec![]), None));
    assert_eq!(
        hs.recover("u", Some(p1), t0).0,
        Err(NotRecovered::EpochChanged)
    );
    // Expired and swept: the next publication starts a new epoch.
    let later = t0 + Duration::from_secs(6);
    hs.sweep(later);
    assert!(hs.is_empty());
    let p3 = hs.append(&topic, retention, encode(OpCode::Text, b"c"), later);
    assert_eq!(p3.offset, 1);
    assert_ne!(p3.epoch, p1.epoch);
}
