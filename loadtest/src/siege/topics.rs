//! The attack of slow consumers on topics, under each slow-consumer policy: clients that never
//! read and clients that read slowly subscribe to a topic published to steadily, beside healthy
//! subscribers; what each sees is judged against the policy's documented answer. Not the
//! other attacks (`attacks`) nor the measuring around them.

use std::collections::BTreeMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use corecast::ws::frame::Inbound;
use serde_json::{json, Value};

use super::attacks::{Seen, Target, BOUND};
use super::client::{self, Conn, Ending};
use super::server;

/// The topics, one per policy, and the server flag that sets their policies.
const TOPICS: [(&str, &str); 3] = [
    ("siege.slow.teardown", "teardown"),
    ("siege.slow.drop", "drop-oldest"),
    ("siege.slow.latest", "keep-latest"),
];
/// With the kernel's send buffer capped, as docs/behaviour.md advises with these policies, so
/// a slow reader's backlog is in its send queue, where the policy acts.
pub const SERVER_ARGS: [&str; 4] = [
    "--slow-consumers",
    "siege.slow.drop=drop-oldest,siege.slow.latest=keep-latest",
    "--socket-send-buffer",
    "64KiB",
];

/// Keys the keep-latest topic is published with, in turn.
const KEYS: usize = 8;

/// The publisher publishes to each topic every `EVERY` for `PUBLISH_FOR`: 250 a second per
/// topic, far more than a slow reader takes.
const EVERY: Duration = Duration::from_millis(4);
const PUBLISH_FOR: Duration = Duration::from_secs(4);
const PAYLOAD: usize = 1024;

/// Per topic: clients that never read, clients that read one message every `SLOW_READ`, and
/// healthy ones.
const NEVER_READERS: usize = 3;
const SLOW_READERS: usize = 3;
const HEALTHY: usize = 2;
const SLOW_READ: Duration = Duration::from_millis(10);

/// What a subscriber is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Never,
    Slow,
    Healthy,
}

/// What a reader got: publications by number with their key, and notices' missed counts.
#[derive(Default)]
struct Got {
    seqs: Vec<(u64, usize)>,
    missed: u64,
    ending: Option<Ending>,
}

/// Publication `seq` of a topic: its number, its key, padding.
fn payload(seq: u64) -> String {
    let head = format!("{seq:08} {} ", seq as usize % KEYS);
    format!("{head}{}", "x".repeat(PAYLOAD - head.len()))
}

fn parse(text: &str) -> Option<(u64, usize)> {
    let mut words = text.split(' ');
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Slow consumers on three topics, one per policy: every subscriber must get its policy's
/// documented answer, and the publisher must never be slowed.
pub fn slow_topic_consumers(target: &Target) -> Seen {
    let mut seen = Seen::default();
    let before = target.api.and_then(|api| server::metrics(api).ok());
    // Everyone subscribes first, then the publisher starts: each counts from publication 0.
    let mut readers = Vec::new();
    for (topic, policy) in TOPICS {
        for (kind, n) in [
            (Kind::Never, NEVER_READERS),
            (Kind::Slow, SLOW_READERS),
            (Kind::Healthy, HEALTHY),
        ] {
            for _ in 0..n {
                match subscribe(target, topic, kind) {
                    Ok(conn) => readers.push((topic, policy, kind, conn)),
                    Err(e) => seen.add(format!("{topic}: subscribing failed: {e}"), false),
                }
            }
        }
    }
    let mut publisher = match client::open(target.addr, "/ws", BOUND) {
        Ok(conn) => conn,
        Err(e) => {
            seen.fail(format!("the publisher could not connect: {e}"));
            return seen;
        }
    };
    thread::scope(|s| {
        let publishing = s.spawn(move || publish(&mut publisher));
        let handles: Vec<_> = readers
            .into_iter()
            .map(|(topic, policy, kind, conn)| {
                s.spawn(move || (topic, policy, kind, read(conn, kind)))
            })
            .collect();
        let total = match publishing.join() {
            Ok(Ok((total, late))) => {
                if late > Duration::from_secs(1) {
                    seen.fail(format!(
                        "the publisher was slowed: its last publication went {late:?} late"
                    ));
                }
                total
            }
            Ok(Err(e)) => {
                seen.fail(format!("the publisher failed: {e}"));
                0
            }
            Err(_) => {
                seen.fail("the publisher panicked");
                0
            }
        };
        let mut missed_by_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for h in handles {
            let Ok((topic, policy, kind, got)) = h.join() else {
                seen.fail("a reader panicked");
                continue;
            };
            if kind == Kind::Slow {
                *missed_by_topic.entry(topic).or_default() += got.missed;
            }
            let (answer, documented) = judge(policy, kind, &got, total);
            seen.add(format!("{policy}, {answer}"), documented);
        }
        check_counted(target, before, &missed_by_topic, &mut seen);
    });
    seen
}

/// A subscriber of `topic`: small-windowed unless healthy; answered `{"subscribed":..}`.
fn subscribe(target: &Target, topic: &str, kind: Kind) -> std::io::Result<Conn> {
    let mut conn = match kind {
        Kind::Healthy => client::open(target.addr, "/ws", BOUND)?,
        _ => client::upgrade(
            client::connect_small_window(target.addr, 4096, BOUND)?,
            "/ws",
        )?,
    };
    let request = json!({ "subscribe": topic }).to_string();
    conn.stream
        .write_all(&client::frame(0x1, request.as_bytes()))?;
    match conn.next_message()? {
        Some(Inbound::Message { data, .. }) if data.starts_with(b"{\"subscribed\"") => Ok(conn),
        other => Err(std::io::Error::other(format!(
            "subscribe answered {other:?}"
        ))),
    }
}

/// Publishes `payload(seq)` to every topic every `EVERY` for `PUBLISH_FOR` (keyed on the
/// keep-latest topic); returns how many each topic got and how late the last one went.
fn publish(conn: &mut Conn) -> std::io::Result<(u64, Duration)> {
    let started = Instant::now();
    let count = (PUBLISH_FOR.as_millis() / EVERY.as_millis()) as u64;
    let mut late = Duration::ZERO;
    for seq in 0..count {
        let due = started + EVERY * seq as u32;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        late = Instant::now().saturating_duration_since(due);
        let mut batch = Vec::new();
        for (topic, policy) in TOPICS {
            let mut request = json!({ "publish": topic, "data": payload(seq) });
            if policy == "keep-latest" {
                request["key"] = Value::from(format!("k{}", seq as usize % KEYS));
            }
            batch.extend(client::frame(0x1, request.to_string().as_bytes()));
        }
        conn.stream.write_all(&batch)?;
    }
    Ok((count, late))
}

/// Reads as `kind` does until the publisher must be done and everything due is accounted
/// for, or the connection ends, or the bound passes.
fn read(mut conn: Conn, kind: Kind) -> Got {
    let mut got = Got::default();
    if kind == Kind::Never {
        // Its end, after the publishing, bounded by how long the server may take.
        thread::sleep(PUBLISH_FOR);
        got.ending = Some(conn.ending(BOUND * 2));
        return got;
    }
    let started = Instant::now();
    let total = (PUBLISH_FOR.as_millis() / EVERY.as_millis()) as u64;
    let end = started + PUBLISH_FOR + BOUND * 2;
    while Instant::now() < end && got.seqs.len() as u64 + got.missed < total {
        if kind == Kind::Slow && started.elapsed() < PUBLISH_FOR {
            thread::sleep(SLOW_READ);
        }
        let left = end.saturating_duration_since(Instant::now());
        let _ = conn
            .stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))));
        // One item at a time, pings included (answered on the way), so the bound is checked
        // between them: the server pings every second, and a read that skipped pings inside
        // would wait past it for data that never comes.
        match conn.next_item() {
            Ok(Some(Inbound::Message { data, .. })) => {
                let text = String::from_utf8_lossy(&data);
                if text.starts_with("{\"topic\"") {
                    let notice: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    got.missed += notice["missed"].as_u64().unwrap_or(0);
                } else if let Some(p) = parse(&text) {
                    got.seqs.push(p);
                }
            }
            Ok(Some(Inbound::Close { code, .. })) => {
                got.ending = Some(Ending::Close(code.unwrap_or(1005)));
                return got;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                got.ending = Some(Ending::Eof);
                return got;
            }
            Err(e) if client::is_timeout(&e) => break,
            Err(_) => {
                got.ending = Some(Ending::Reset);
                return got;
            }
        }
    }
    got
}

/// The answer a subscriber got, and whether its policy documents it.
fn judge(policy: &str, kind: Kind, got: &Got, total: u64) -> (String, bool) {
    let in_order = got.seqs.windows(2).all(|w| w[0].0 < w[1].0);
    let received = got.seqs.len() as u64;
    match (kind, policy) {
        (Kind::Never, _) => match &got.ending {
            Some(e) if *e != Ending::Open => (format!("never reads: torn down ({e})"), true),
            _ => ("never reads: still served after the bound".into(), false),
        },
        (Kind::Healthy, _) if received == total && in_order && got.missed == 0 => {
            (format!("healthy: all {total} in order"), true)
        }
        (Kind::Healthy, _) => (
            format!(
                "healthy: {received} of {total}, {} missed, in order: {in_order}",
                got.missed
            ),
            false,
        ),
        // The queue policy: what waits past the retry window is dropped (counted as
        // `queue_full`, not told to the client), and a queue full for `write_timeout` is torn
        // down; a reader that keeps taking a little keeps its connection.
        (Kind::Slow, "teardown") => match &got.ending {
            Some(e) if *e != Ending::Open => (format!("reads slowly: torn down ({e})"), true),
            _ if received < total && got.missed == 0 && in_order => (
                "reads slowly: kept, what waited past the retry window dropped, not told".into(),
                true,
            ),
            _ => (
                format!(
                    "reads slowly: kept, {received} of {total}, {} told missed, in order {in_order}",
                    got.missed
                ),
                false,
            ),
        },
        (Kind::Slow, _) => {
            let stayed = got.ending.is_none();
            let accounted = received + got.missed == total;
            let newest = got.seqs.last().map(|s| s.0) == Some(total - 1);
            let latest_kept = policy != "keep-latest" || latest_of_every_key(&got.seqs, total);
            if stayed && accounted && newest && in_order && latest_kept && got.missed > 0 {
                let what = if policy == "keep-latest" {
                    "the latest of every key, "
                } else {
                    ""
                };
                (
                    format!(
                        "reads slowly: stayed, got {what}the newest, received + missed = published"
                    ),
                    true,
                )
            } else {
                (
                    format!(
                        "reads slowly: stayed {stayed}, {received} received + {} missed of {total}, newest {newest}, in order {in_order}, latest per key {latest_kept}",
                        got.missed
                    ),
                    false,
                )
            }
        }
    }
}

fn latest_of_every_key(seqs: &[(u64, usize)], total: u64) -> bool {
    (0..KEYS).all(|key| {
        let published = (0..total).rev().find(|s| *s as usize % KEYS == key);
        let received = seqs.iter().rev().find(|(_, k)| *k == key).map(|s| s.0);
        published == received
    })
}

/// `/metrics` must have counted at least what the slow readers were told they missed (those
/// that never read were dropped from too, and were never told).
fn check_counted(
    target: &Target,
    before: Option<BTreeMap<String, u64>>,
    missed: &BTreeMap<&str, u64>,
    seen: &mut Seen,
) {
    let (Some(api), Some(before)) = (target.api, before) else {
        seen.fail("the server serves no /metrics to check");
        return;
    };
    let after = match server::metrics(api) {
        Ok(m) => m,
        Err(e) => {
            seen.fail(format!("reading /metrics: {e}"));
            return;
        }
    };
    for (topic, policy) in TOPICS {
        let series =
            format!("corecast_topic_dropped_total{{topic=\"{topic}\",policy=\"{policy}\"}}");
        let of = |m: &BTreeMap<String, u64>| m.get(&series).copied().unwrap_or(0);
        let counted = of(&after).saturating_sub(of(&before));
        let told = missed.get(topic).copied().unwrap_or(0);
        if counted < told {
            seen.fail(format!(
                "/metrics counted {counted} drops of {topic}, its slow readers were told of {told}"
            ));
        }
    }
}
