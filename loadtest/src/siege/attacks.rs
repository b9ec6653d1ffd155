//! The attacks: each one opens a bounded number of hostile connections against the server,
//! does one kind of harm for a bounded time, and reports what every attacker saw and whether
//! that is the answer the server documents. Not the measuring around them (`siege::run`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use corecast::ws::frame::Inbound;

use super::auth::{self, BigTopic, Tokens};
use super::client::{self, Conn, Ending};
use super::server::Limits;

/// Where and under which limits an attack runs.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub limits: Limits,
    /// The server's `--client-message-rate` (`Setup::message_rate`).
    pub message_rate: Option<u32>,
    /// The signing key and tokens, when the server authenticates (`Setup::auth`).
    pub tokens: Option<Arc<Tokens>>,
    /// The server's HTTP API, for `/metrics` (when it authenticates).
    pub api: Option<SocketAddr>,
    /// The big topic's subscribers (`Setup::big_topic`).
    pub big_topic: Option<Arc<BigTopic>>,
}

/// What the attackers saw, counted by kind, and how many of them got the documented answer.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub attackers: usize,
    pub documented: usize,
    pub answers: BTreeMap<String, usize>,
    /// Goals beyond each attacker's answer that were missed, in words: the server's own
    /// counters disagreeing with what the attackers saw, bystanders the server dropped.
    pub failures: Vec<String>,
}

impl Seen {
    pub(super) fn add(&mut self, answer: impl Into<String>, documented: bool) {
        self.attackers += 1;
        self.documented += usize::from(documented);
        *self.answers.entry(answer.into()).or_default() += 1;
    }

    /// Records a missed goal that is no attacker's answer.
    pub(super) fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    pub fn merge(&mut self, other: Seen) {
        self.attackers += other.attackers;
        self.documented += other.documented;
        for (answer, n) in other.answers {
            *self.answers.entry(answer).or_default() += n;
        }
        self.failures.extend(other.failures);
    }

    /// "close 1009 ×50, reset ×2".
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .answers
            .iter()
            .map(|(a, n)| format!("{a} ×{n}"))
            .collect();
        parts.join(", ")
    }
}

/// One attack of the suite.
pub struct Attack {
    pub name: &'static str,
    pub what: &'static str,
    /// The answer each attacker should get, as docs/reliability.md documents it (the
    /// "documented answer" column of its table of attacks).
    pub expected: &'static str,
    /// The server it runs against.
    pub setup: Setup,
    pub run: fn(&Target) -> Seen,
}

/// What the server runs (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Relay,
    Pubsub,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Relay => "relay",
            Mode::Pubsub => "pubsub",
        }
    }
}

/// The server an attack runs against, beyond the siege's limits.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub mode: Mode,
    /// Clients need a token (`--jwt-secret-file`, HS256): the warm-up and the healthy client
    /// carry a valid one, and `/metrics` is served for the attack to read.
    pub auth: bool,
    /// `--client-message-rate`; `None`: no inbound limit (see `ServerProcess::start`).
    pub message_rate: Option<u32>,
    /// 2,000 clients subscribe to one topic (`auth::BigTopic`) before the baseline and
    /// stay until after the measurements: bystanders the attack fans out to.
    pub big_topic: bool,
    /// Topics with slow-consumer policies (`topics::SERVER_ARGS`), and `/metrics` served.
    pub slow_consumers: bool,
}

/// Most attacks: `--mode echo`, anyone may connect, no inbound limit.
const ECHO: Setup = Setup {
    mode: Mode::Echo,
    auth: false,
    message_rate: None,
    big_topic: false,
    slow_consumers: false,
};

/// `--mode echo` with tokens.
const AUTH: Setup = Setup { auth: true, ..ECHO };

/// Every attack, in the order the suite runs them.
pub const ALL: &[Attack] = &[
    Attack {
        name: "slowloris",
        what: "300 connections (1 ms apart) send an upgrade request a byte every 100 ms, never finishing",
        expected: "dropped without an answer at the handshake timeout",
        setup: ECHO,
        run: slowloris,
    },
    Attack {
        name: "header-bomb",
        what: "100 upgrade requests with 100 KB of headers",
        expected: "HTTP 431",
        setup: ECHO,
        run: header_bomb,
    },
    Attack {
        name: "dribble",
        what: "20 clients send a valid 10 KB frame one byte per millisecond",
        expected: "served: the whole frame echoed",
        setup: ECHO,
        run: dribble,
    },
    Attack {
        name: "absurd-length",
        what: "75 frames declaring 2^63-1 bytes, max_message_size+1 bytes, or a length with the top bit set",
        expected: "close 1009 (too big), close 1002 (top bit set)",
        setup: ECHO,
        run: absurd_length,
    },
    Attack {
        name: "fragment-flood",
        what: "one-byte continuation frames: 60,000 (under the 64 KiB limit) and 100,000 (over), 3 clients each, 50 ms between floods",
        expected: "under: the message echoed; over: close 1009",
        setup: ECHO,
        run: fragment_flood,
    },
    Attack {
        name: "ping-flood",
        what: "10 clients with a 4 KiB receive window send ten 125-byte pings every millisecond and never read",
        expected: "torn down once their unread replies stall the writes for write_timeout",
        setup: ECHO,
        run: ping_flood,
    },
    Attack {
        name: "garbage",
        what: "80 clients: unmasked, reserved opcode, RSV1, invalid UTF-8, bad close codes, fragmented ping, stray continuation",
        expected: "close 1002 (protocol), close 1007 (UTF-8)",
        setup: ECHO,
        run: garbage,
    },
    Attack {
        name: "churn",
        what: "2,000 connect/upgrade/close cycles from 8 threads, 10 ms apart on each",
        expected: "101, then close 1000 echoed",
        setup: ECHO,
        run: churn,
    },
    Attack {
        name: "slow-consumers",
        what: "relay mode: 20 clients with a 4 KiB receive window send 1 KB every 50 ms (relayed to all) and never read",
        expected: "torn down at write_timeout (WriteTimeout); others unaffected",
        setup: Setup {
            mode: Mode::Relay,
            ..ECHO
        },
        run: slow_consumers,
    },
    Attack {
        name: "half-open",
        what: "200 upgraded clients (1 ms apart) fall silent: no reads, no pongs, no close",
        expected: "torn down at read_idle_timeout (IdleTimeout)",
        setup: ECHO,
        run: half_open,
    },
    Attack {
        name: "bad-tokens",
        what: "8 threads, each from an address of its own, 2 ms apart on each (about 3,000 a second), upgrade with invalid tokens of ten kinds (none, not a JWT, no sub, altered signature, another key, alg none, alg RS256, expired, not yet valid, a foreign audience), in the query and in Authorization: Bearer",
        expected: "HTTP 401 with the cause as the body while the address has token refusals left (20 a second, bursts of 20), then 429 \"too many refused tokens\"; each counted in /metrics by cause and status",
        setup: AUTH,
        run: auth::bad_tokens,
    },
    Attack {
        name: "huge-tokens",
        what: "4 threads, each from an address of its own, upgrade with a 64 KB or 1 MB token, in the query and in Authorization: Bearer; and with a 7 KB one (a bad signature) under the head limit",
        expected: "HTTP 431 (the head is over 8 KiB), before any token is read; the 7 KB one verified: 401",
        setup: AUTH,
        run: auth::huge_tokens,
    },
    Attack {
        name: "publish-flood",
        what: "pubsub, --client-message-rate 100: 2,000 subscribers of one topic; a client granted publish to it publishes as fast as it can, a new connection each second",
        expected: "at most the burst plus the rate × its time of its publications reach the subscribers (each of them), the rest refused ({\"error\":\"rate limit\"}; each counted), then close 1008 \"rate limit\"",
        setup: Setup {
            mode: Mode::Pubsub,
            auth: true,
            message_rate: Some(auth::FLOOD_RATE),
            big_topic: true,
            slow_consumers: false,
        },
        run: auth::publish_flood,
    },
    Attack {
        name: "slow-topic-consumers",
        what: "pubsub: three topics published to 250 times a second each (1 KB) for 4 s, --socket-send-buffer 64KiB, one per slow-consumer policy (teardown, drop-oldest, keep-latest with 8 keys); on each, 3 clients with a 4 KiB window that never read, 3 that read a message every 10 ms, and 2 healthy subscribers",
        expected: "never-readers torn down at write_timeout under every policy; slow readers under teardown lose what waits past the retry window (queue_full, not told) or are torn down once their queue stays full for write_timeout, and are kept under drop-oldest and keep-latest with the newest publication (the latest of every key), and {\"missed\":N} notices that add up with what they got to what was published; healthy subscribers get every publication in order; the publisher is never slowed",
        setup: Setup {
            mode: Mode::Pubsub,
            slow_consumers: true,
            ..ECHO
        },
        run: super::topics::slow_topic_consumers,
    },
];

pub(super) const BOUND: Duration = Duration::from_secs(5);

/// Pause between one attacker's cycles where an attack repeats quickly: the attackers share
/// this machine's cores with the server and the healthy client, and an attacker that takes
/// all the CPU measures the machine, not the server.
pub(super) const PACE: Duration = Duration::from_millis(10);

/// Gap between the connections of an attack that holds hundreds open: they arrive over a
/// fraction of a second, as from a real tool, not in one instant.
pub(super) const RAMP: Duration = Duration::from_millis(1);

/// Runs `each(i)` on `threads` threads over `0..n` and merges what they saw.
pub(super) fn spread(n: usize, threads: usize, each: impl Fn(usize, &mut Seen) + Sync) -> Seen {
    let mut seen = Seen::default();
    thread::scope(|s| {
        let each = &each;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut seen = Seen::default();
                    for i in (t..n).step_by(threads) {
                        each(i, &mut seen);
                    }
                    seen
                })
            })
            .collect();
        for h in handles {
            seen.merge(h.join().unwrap_or_default());
        }
    });
    seen
}

/// Opens an upgraded connection or records why not.
fn open_or_note(target: &Target, seen: &mut Seen) -> Option<Conn> {
    match client::open(target.addr, "/ws", BOUND) {
        Ok(conn) => Some(conn),
        Err(e) => {
            seen.add(format!("upgrade failed: {e}"), false);
            None
        }
    }
}

fn slowloris(target: &Target) -> Seen {
    struct Slow {
        stream: TcpStream,
        sent: usize,
        opened: Instant,
        ended: Option<(Ending, Duration)>,
    }
    let mut head = client::upgrade_request("/ws", "");
    head.truncate(head.len() - 2); // never the blank line
    head.extend_from_slice(b"X-Slow: ");
    let mut seen = Seen::default();
    let mut slow = Vec::new();
    for _ in 0..300 {
        match client::connect(target.addr, BOUND) {
            Ok(stream) => {
                let _ = stream.set_nonblocking(true);
                slow.push(Slow {
                    stream,
                    sent: 0,
                    opened: Instant::now(),
                    ended: None,
                });
            }
            Err(e) => seen.add(format!("connect failed: {e}"), false),
        }
        thread::sleep(RAMP);
    }
    let timeout = target.limits.handshake_timeout;
    let give_up = Instant::now() + timeout + BOUND;
    while Instant::now() < give_up && slow.iter().any(|s| s.ended.is_none()) {
        for s in slow.iter_mut().filter(|s| s.ended.is_none()) {
            let byte = head.get(s.sent).copied().unwrap_or(b'a');
            let mut probe = [0u8; 256];
            let ending = match s.stream.read(&mut probe) {
                Ok(0) => Some(Ending::Eof),
                Ok(_) => Some(client::http_ending(&mut s.stream, BOUND)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match s.stream.write(&[byte]) {
                    Ok(_) => {
                        s.sent += 1;
                        None
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(_) => Some(Ending::Reset),
                },
                Err(_) => Some(Ending::Reset),
            };
            s.ended = ending.map(|e| (e, s.opened.elapsed()));
        }
        thread::sleep(Duration::from_millis(100));
    }
    // Dropped at the handshake timeout: not before it, and not much after.
    let window =
        timeout.saturating_sub(Duration::from_millis(100))..timeout + Duration::from_millis(1500);
    for s in slow {
        match s.ended {
            Some((ending @ (Ending::Eof | Ending::Reset), after)) => {
                let on_time = window.contains(&after);
                let when = if on_time {
                    "at the timeout"
                } else {
                    "off the timeout"
                };
                seen.add(format!("{ending} {when}"), on_time);
            }
            Some((ending, _)) => seen.add(ending.to_string(), false),
            None => seen.add(Ending::Open.to_string(), false),
        }
    }
    seen
}

fn header_bomb(target: &Target) -> Seen {
    let mut request = client::upgrade_request("/ws", "");
    request.truncate(request.len() - 2);
    for i in 0..100 {
        request.extend_from_slice(format!("X-Bomb-{i}: {}\r\n", "b".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    spread(100, 4, |_, seen| {
        let mut stream = match client::connect(target.addr, BOUND) {
            Ok(s) => s,
            Err(e) => return seen.add(format!("connect failed: {e}"), false),
        };
        // The server answers after its limit and closes: the rest of the write may fail.
        let _ = stream.write_all(&request);
        let ending = client::http_ending(&mut stream, BOUND);
        let documented = ending == Ending::Status(431);
        seen.add(ending.to_string(), documented);
        thread::sleep(PACE);
    })
}

fn dribble(target: &Target) -> Seen {
    let payload: Vec<u8> = (0..10_240u32).map(|i| (i % 251) as u8).collect();
    let frame = client::frame(0x2, &payload);
    spread(20, 20, |_, seen| {
        let Some(mut conn) = open_or_note(target, seen) else {
            return;
        };
        for byte in &frame {
            if let Err(e) = conn.stream.write_all(std::slice::from_ref(byte)) {
                return seen.add(format!("write failed: {e}"), false);
            }
            thread::sleep(Duration::from_millis(1));
        }
        let answer = match conn.next_message() {
            Ok(Some(Inbound::Message { data, .. })) if data[..] == payload[..] => {
                return seen.add("echoed in full", true)
            }
            Ok(Some(other)) => format!("unexpected {other:?}"),
            Ok(None) => Ending::Eof.to_string(),
            Err(e) => format!("read failed: {e}"),
        };
        seen.add(answer, false);
    })
}

fn absurd_length(target: &Target) -> Seen {
    let max = target.limits.max_message_size as u64;
    let cases: [(u64, u16); 3] = [(u64::MAX >> 1, 1009), (max + 1, 1009), (1 << 63, 1002)];
    spread(75, 3, |i, seen| {
        let (declared, code) = cases[i % 3];
        let Some(mut conn) = open_or_note(target, seen) else {
            return;
        };
        let _ = conn
            .stream
            .write_all(&client::raw_frame(0x82, declared, &[7; 100], true));
        let ending = conn.ending(BOUND);
        seen.add(ending.to_string(), ending == Ending::Close(code));
        thread::sleep(PACE);
    })
}

fn fragment_flood(target: &Target) -> Seen {
    let limit = target.limits.max_message_size;
    // Under: just below the limit; over: 100,000 bytes, well past a 64 KiB limit.
    let under = limit.min(60_000) - 1;
    let over = 100_000.max(limit + 1);
    let flood = |fragments: usize| {
        let mut bytes = client::raw_frame(0x02, 1, b"f", true);
        for _ in 1..fragments - 1 {
            bytes.extend_from_slice(&client::raw_frame(0x00, 1, b"f", true));
        }
        bytes.extend_from_slice(&client::raw_frame(0x80, 1, b"f", true));
        bytes
    };
    let (small, big) = (flood(under), flood(over));
    spread(6, 6, |i, seen| {
        let Some(mut conn) = open_or_note(target, seen) else {
            return;
        };
        if i % 2 == 0 {
            if let Err(e) = conn.stream.write_all(&small) {
                return seen.add(format!("write failed: {e}"), false);
            }
            match conn.next_message() {
                Ok(Some(Inbound::Message { data, .. })) if data.len() == under => {
                    seen.add("under: echoed", true)
                }
                other => seen.add(format!("under: {other:?}"), false),
            }
        } else {
            // The server stops reading at the limit: the rest of the write may fail.
            let _ = conn.stream.write_all(&big);
            let ending = conn.ending(BOUND);
            seen.add(format!("over: {ending}"), ending == Ending::Close(1009));
        }
        thread::sleep(PACE * 5);
    })
}

/// An upgraded client with a 4 KiB receive window (see `client::connect_small_window`).
fn open_small_window(target: &Target, seen: &mut Seen) -> Option<Conn> {
    match client::connect_small_window(target.addr, 4096, BOUND)
        .and_then(|s| client::upgrade(s, "/ws"))
    {
        Ok(conn) => Some(conn),
        Err(e) => {
            seen.add(format!("upgrade failed: {e}"), false);
            None
        }
    }
}

/// Writes `burst` every `every` and never reads, until the server stops taking it or `bound`
/// passes; then records whether the server tore the connection down.
fn send_unread(conn: &mut Conn, burst: &[u8], every: Duration, bound: Duration, seen: &mut Seen) {
    let start = Instant::now();
    let mut refused = false;
    while start.elapsed() < bound {
        if conn.stream.write_all(burst).is_err() {
            refused = true;
            break;
        }
        thread::sleep(every);
    }
    let ending = conn.ending(BOUND);
    let torn_down = refused || ending != Ending::Open;
    let answer = if torn_down {
        "torn down"
    } else {
        "still served after the bound"
    };
    seen.add(format!("{answer} ({ending})"), torn_down);
}

/// `clients` attackers with small windows that send `burst` every `every` and never read.
fn never_reading(target: &Target, clients: usize, burst: &[u8], every: Duration) -> Seen {
    let bound = target.limits.write_timeout * 4 + BOUND;
    spread(clients, clients, |_, seen| {
        let Some(mut conn) = open_small_window(target, seen) else {
            return;
        };
        send_unread(&mut conn, burst, every, bound, seen);
    })
}

fn ping_flood(target: &Target) -> Seen {
    let pings = client::frame(0x9, &[0x70; 125]).repeat(10);
    never_reading(target, 10, &pings, Duration::from_millis(1))
}

fn garbage(target: &Target) -> Seen {
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", client::raw_frame(0x81, 2, b"hi", false), 1002),
        (
            "reserved opcode",
            client::raw_frame(0x83, 2, b"hi", true),
            1002,
        ),
        ("RSV1", client::raw_frame(0xC1, 2, b"hi", true), 1002),
        (
            "invalid UTF-8",
            client::frame(0x1, &[0xff, 0xfe, 0xfd]),
            1007,
        ),
        (
            "close 1005",
            client::frame(0x8, &1005u16.to_be_bytes()),
            1002,
        ),
        ("close 999", client::frame(0x8, &999u16.to_be_bytes()), 1002),
        (
            "fragmented ping",
            client::raw_frame(0x09, 2, b"hi", true),
            1002,
        ),
        (
            "stray continuation",
            client::raw_frame(0x80, 2, b"hi", true),
            1002,
        ),
    ];
    spread(80, 4, |i, seen| {
        let (name, bytes, code) = &cases[i % cases.len()];
        let Some(mut conn) = open_or_note(target, seen) else {
            return;
        };
        let _ = conn.stream.write_all(bytes);
        let ending = conn.ending(BOUND);
        seen.add(format!("{name}: {ending}"), ending == Ending::Close(*code));
        thread::sleep(PACE);
    })
}

fn churn(target: &Target) -> Seen {
    let close = client::frame(0x8, &1000u16.to_be_bytes());
    spread(2_000, 8, |_, seen| {
        let Some(mut conn) = open_or_note(target, seen) else {
            return;
        };
        let _ = conn.stream.write_all(&close);
        let ending = conn.ending(BOUND);
        seen.add(ending.to_string(), ending == Ending::Close(1000));
        thread::sleep(PACE);
    })
}

fn slow_consumers(target: &Target) -> Seen {
    // Relayed to everyone, so it reaches every attacker's small window; and talking all
    // along means only the stalled writes can end them, not idleness.
    let message = client::frame(0x2, &[0x5a; 1024]);
    never_reading(target, 20, &message, Duration::from_millis(50))
}

fn half_open(target: &Target) -> Seen {
    let mut seen = Seen::default();
    let mut silent = Vec::new();
    for _ in 0..200 {
        if let Some(conn) = open_or_note(target, &mut seen) {
            silent.push(conn);
        }
        thread::sleep(RAMP);
    }
    let opened = Instant::now();
    let bound = target.limits.read_idle_timeout + BOUND;
    // Look only once the idle timeout has passed: until then they are silent.
    thread::sleep(target.limits.read_idle_timeout);
    for mut conn in silent {
        let left = bound
            .saturating_sub(opened.elapsed())
            .max(Duration::from_millis(100));
        let ending = conn.ending(left);
        let torn_down = ending != Ending::Open;
        seen.add(ending.to_string(), torn_down);
    }
    seen
}
