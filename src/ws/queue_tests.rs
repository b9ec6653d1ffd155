//! The outbound queue's rules, byte for byte: order across partial writes, the retry window,
//! close, pongs, pings ahead of data, the slow-consumer drops and their notices.

use super::*;
use std::time::Duration;

const W: Duration = Duration::from_millis(100);

fn written(q: &OutboundQueue) -> Vec<u8> {
    let mut s: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
    let n = q.slices(&mut s);
    s[..n].concat()
}

#[test]
fn keeps_order_across_partial_writes() {
    let now = Instant::now();
    let mut q = OutboundQueue::new(10);
    q.push_data(Bytes::from_static(b"abc"), now, W);
    q.push_control(Bytes::from_static(b"P"));
    q.push_data(Bytes::from_static(b"de"), now, W);
    assert_eq!(written(&q), b"abcPde");
    q.advance(2);
    assert_eq!(written(&q), b"cPde");
    assert_eq!(q.front(), Some(&b"c"[..]));
    q.advance(2);
    assert_eq!(written(&q), b"de");
    assert_eq!(q.len(), 1);
    q.advance(2);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn full_queue_waits_then_expires() {
    let t0 = Instant::now();
    let mut q = OutboundQueue::new(2);
    assert_eq!(q.push_data(Bytes::from_static(b"1"), t0, W), Push::Queued);
    assert_eq!(q.push_data(Bytes::from_static(b"2"), t0, W), Push::Queued);
    assert_eq!(
        q.push_data(Bytes::from_static(b"3"), t0, W),
        Push::Waiting { deadline: t0 + W }
    );
    // Control frames never wait.
    assert_eq!(q.push_control(Bytes::from_static(b"P")), Push::Queued);
    assert_eq!(q.full_since(), Some(t0));
    assert_eq!(q.len(), 3);
    assert!(q.expire(t0 + W / 2).is_empty());
    let dropped = q.expire(t0 + W);
    assert_eq!(dropped, vec![Bytes::from_static(b"3")]);
    assert_eq!(q.next_expiry(), None);
    assert_eq!(written(&q), b"12P");
}

#[test]
fn room_lets_waiting_messages_in_order() {
    let t0 = Instant::now();
    let mut q = OutboundQueue::new(1);
    q.push_data(Bytes::from_static(b"a"), t0, W);
    q.push_data(Bytes::from_static(b"b"), t0, W);
    q.push_data(Bytes::from_static(b"c"), t0, W);
    assert_eq!(written(&q), b"a");
    q.advance(1);
    assert_eq!(written(&q), b"b");
    assert!(q.full_since().is_some());
    q.advance(1);
    assert_eq!(written(&q), b"c");
    assert_eq!(q.full_since(), None);
    // A new message after the queue has room again is queued, not waiting.
    q.advance(1);
    assert_eq!(q.push_data(Bytes::from_static(b"d"), t0, W), Push::Queued);
}

#[test]
fn close_goes_last_and_shuts_the_queue() {
    let t0 = Instant::now();
    let mut q = OutboundQueue::new(1);
    q.push_data(Bytes::from_static(b"a"), t0, W);
    q.push_data(Bytes::from_static(b"b"), t0, W);
    q.push_close(Bytes::from_static(b"X"));
    assert_eq!(written(&q), b"abX");
    assert!(q.is_closed());
    assert_eq!(q.push_data(Bytes::from_static(b"c"), t0, W), Push::Closed);
    assert_eq!(q.push_control(Bytes::from_static(b"P")), Push::Closed);
    assert_eq!(q.push_close(Bytes::from_static(b"Y")), Push::Closed);
}

#[test]
fn pongs_past_the_limit_replace_the_newest_unwritten_one() {
    let mut q = OutboundQueue::new(4);
    for i in 0..MAX_QUEUED_PONGS {
        assert!(q.push_pong(Bytes::from(vec![b'a' + i as u8])));
    }
    assert_eq!(q.pongs(), MAX_QUEUED_PONGS);
    assert!(!q.push_pong(Bytes::from_static(b"Z")));
    assert!(!q.push_pong(Bytes::from_static(b"Y")));
    assert_eq!(q.pongs(), MAX_QUEUED_PONGS);
    let mut expected: Vec<u8> = (0..MAX_QUEUED_PONGS as u8 - 1).map(|i| b'a' + i).collect();
    expected.push(b'Y');
    assert_eq!(written(&q), expected);
    q.advance(expected.len());
    assert_eq!(q.pongs(), 0);
    assert!(q.is_empty());
}

#[test]
fn a_started_pong_is_never_rewritten() {
    let mut q = OutboundQueue::new(4);
    q.push_pong(Bytes::from_static(b"ab"));
    for _ in 1..MAX_QUEUED_PONGS {
        q.push_pong(Bytes::from_static(b"pp"));
    }
    q.advance(1);
    assert!(!q.push_pong(Bytes::from_static(b"n")));
    let mut expected = b"b".to_vec();
    expected.extend(b"pp".repeat(MAX_QUEUED_PONGS - 2));
    expected.push(b'n');
    assert_eq!(written(&q), expected);
}

#[test]
fn slices_stop_at_the_iovec_limit() {
    let t0 = Instant::now();
    let mut q = OutboundQueue::new(1000);
    for _ in 0..(MAX_IOVECS + 5) {
        q.push_data(Bytes::from_static(b"x"), t0, W);
    }
    let mut s: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
    assert_eq!(q.slices(&mut s), MAX_IOVECS);
}

#[test]
fn compact_frees_idle_buffers() {
    let t0 = Instant::now();
    let mut q = OutboundQueue::new(4);
    q.push_data(Bytes::from_static(b"x"), t0, W);
    q.advance(1);
    q.compact();
    assert!(q.frames.rest.is_none(), "one frame never spills");
    assert!(q.is_empty());
    // A burst spills past the inline frame; once written, compact frees the spill.
    for _ in 0..3 {
        q.push_data(Bytes::from_static(b"y"), t0, W);
    }
    assert!(q
        .frames
        .rest
        .as_ref()
        .is_some_and(|rest| rest.capacity() > 0));
    assert_eq!(written(&q), b"yyy");
    q.advance(3);
    q.compact();
    assert!(q.frames.rest.is_none());
    assert!(q.full.is_none());
    // What every open connection holds for its queue.
    assert_eq!(std::mem::size_of::<OutboundQueue>(), 96);
}

const A: u64 = 0xa;
const B: u64 = 0xb;

fn pub_(topic: u64, key: u64) -> Droppable {
    Droppable { topic, key }
}

fn drop_oldest(q: &mut OutboundQueue, bytes: &'static [u8], topic: u64) -> Push {
    q.push_droppable(
        Bytes::from_static(bytes).into(),
        pub_(topic, 0),
        Displace::Oldest,
    )
}

#[test]
fn a_full_queue_drops_the_oldest_publication_of_the_topic() {
    let mut q = OutboundQueue::new(3);
    assert_eq!(drop_oldest(&mut q, b"1", A), Push::Queued);
    assert_eq!(drop_oldest(&mut q, b"x", B), Push::Queued);
    assert_eq!(drop_oldest(&mut q, b"2", A), Push::Queued);
    assert_eq!(drop_oldest(&mut q, b"3", A), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"x23");
    assert_eq!(drop_oldest(&mut q, b"4", A), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"x34");
    // Nothing waits, so a full queue of droppable publications is not "full" for teardown.
    assert_eq!(q.full_since(), None);
    assert_eq!(q.len(), 3);
}

#[test]
fn a_topic_with_nothing_queued_displaces_the_oldest_droppable_of_another() {
    let mut q = OutboundQueue::new(2);
    drop_oldest(&mut q, b"1", A);
    drop_oldest(&mut q, b"2", A);
    assert_eq!(drop_oldest(&mut q, b"y", B), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"2y");
}

#[test]
fn a_queue_full_of_plain_messages_drops_the_new_publication() {
    let t0 = Instant::now();
    let mut q = OutboundQueue::new(1);
    q.push_data(Bytes::from_static(b"m"), t0, W);
    assert_eq!(drop_oldest(&mut q, b"1", A), Push::Dropped);
    assert_eq!(written(&q), b"m");
    assert_eq!(q.full_since(), None);
}

#[test]
fn keep_latest_replaces_the_same_key_and_moves_it_last() {
    let mut q = OutboundQueue::new(3);
    let latest = |q: &mut OutboundQueue, b: &'static [u8], key| {
        q.push_droppable(
            Bytes::from_static(b).into(),
            pub_(A, key),
            Displace::SameKey,
        )
    };
    latest(&mut q, b"a1", 1);
    latest(&mut q, b"b1", 2);
    latest(&mut q, b"c1", 3);
    assert_eq!(latest(&mut q, b"a2", 1), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"b1c1a2");
    assert_eq!(latest(&mut q, b"c2", 3), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"b1a2c2");
    // A key with nothing queued takes the place of the topic's oldest.
    assert_eq!(latest(&mut q, b"d1", 4), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"a2c2d1");
}

#[test]
fn keep_latest_drops_a_superseded_value_before_any_key_s_latest() {
    let mut q = OutboundQueue::new(3);
    let latest = |q: &mut OutboundQueue, b: &'static [u8], key| {
        q.push_droppable(
            Bytes::from_static(b).into(),
            pub_(A, key),
            Displace::SameKey,
        )
    };
    // Queued while there was room: key 1 twice.
    latest(&mut q, b"a1", 1);
    latest(&mut q, b"b1", 2);
    latest(&mut q, b"a2", 1);
    // Key 3 has nothing queued: a1, superseded by a2, goes, not b1, key 2's latest.
    assert_eq!(latest(&mut q, b"c1", 3), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"b1a2c1");
}

#[test]
fn a_started_publication_is_never_dropped() {
    let mut q = OutboundQueue::new(2);
    drop_oldest(&mut q, b"11", A);
    drop_oldest(&mut q, b"22", A);
    q.advance(1);
    assert_eq!(drop_oldest(&mut q, b"33", A), Push::Displaced { topic: A });
    assert_eq!(written(&q), b"133");
    q.advance(3);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn a_ping_goes_ahead_of_the_data_not_yet_started() {
    let t0 = Instant::now();
    let mut q = OutboundQueue::new(10);
    q.push_control(Bytes::from_static(b"H"));
    q.push_data(Bytes::from_static(b"ab"), t0, W);
    q.push_data(Bytes::from_static(b"cd"), t0, W);
    // Behind the handshake, ahead of the data.
    q.push_ping(Bytes::from_static(b"1"));
    assert_eq!(written(&q), b"H1abcd");
    q.advance(3);
    // A started frame stays first; a second ping goes behind the first one's place.
    assert_eq!(q.push_ping(Bytes::from_static(b"2")), Push::Queued);
    assert_eq!(written(&q), b"b2cd");
    q.advance(4);
    assert!(q.is_empty());
    q.push_ping(Bytes::from_static(b"3"));
    assert_eq!(written(&q), b"3");
    q.push_close(Bytes::from_static(b"X"));
    assert_eq!(q.push_ping(Bytes::from_static(b"4")), Push::Closed);
}

#[test]
fn a_queued_frame_is_56_bytes() {
    // What docs/behaviour.md ("Slow consumers") says a frame costs; one is held inline in
    // every connection.
    assert_eq!(std::mem::size_of::<Frame>(), 56);
}

#[test]
fn notices_add_up_until_one_is_started() {
    let mut q = OutboundQueue::new(1);
    let make = |n: u64| Bytes::from(format!("<{n}>"));
    q.push_notice(A, 2, make);
    q.push_notice(B, 1, make);
    q.push_notice(A, 3, make);
    assert_eq!(written(&q), b"<5><1>");
    q.advance(1);
    // A started notice stays as it is; the next drops get a notice of their own.
    q.push_notice(A, 1, make);
    assert_eq!(written(&q), b"5><1><1>");
    // Notices do not count against the capacity.
    assert_eq!(drop_oldest(&mut q, b"x", A), Push::Queued);
    q.push_close(Bytes::from_static(b"X"));
    q.push_notice(B, 1, make);
    assert_eq!(written(&q), b"5><1><1>xX");
    assert_eq!(drop_oldest(&mut q, b"y", A), Push::Closed);
}

#[test]
fn a_shared_frame_costs_a_queue_no_more_than_a_bytes() {
    // Every connection holds its first queued frame inline: the enum must not grow it.
    assert_eq!(
        std::mem::size_of::<FrameBytes>(),
        std::mem::size_of::<Bytes>()
    );
    let shared = FrameBytes::shared(Bytes::from_static(b"\x81\x02hi"));
    let mut a = OutboundQueue::new(4);
    let mut b = OutboundQueue::new(4);
    let now = Instant::now();
    let window = std::time::Duration::from_secs(1);
    assert_eq!(
        a.push_data_from(shared.clone(), None, now, window),
        Push::Queued
    );
    assert_eq!(b.push_data_from(shared, None, now, window), Push::Queued);
    let mut out: [&[u8]; 2] = [&[]; 2];
    assert_eq!(a.slices(&mut out), 1);
    assert_eq!(out[0], b"\x81\x02hi");
    assert_eq!(b.slices(&mut out), 1);
    assert_eq!(out[0], b"\x81\x02hi");
}
