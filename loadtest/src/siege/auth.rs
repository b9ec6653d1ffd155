//! The attacks on authentication and on the inbound rate limit, against a server that verifies
//! tokens: a flood of invalid tokens, tokens too big for a request head, and a client that
//! publishes to a big topic as fast as it can. Also the key and the tokens they use, and the
//! check of each against the server's own counters in `/metrics`. Not the other attacks
//! (`attacks`), which need no token.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use corecast::ws::frame::Inbound;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use super::attacks::{spread, Seen, Target, BOUND, PACE, RAMP};
use super::client::{self, Conn, Ending};
use super::server;
use crate::token::{unix_now, Claims, Signing, TokenKey};

/// The topic the healthy client publishes to and receives from in `--mode pubsub`.
pub const HEALTHY_TOPIC: &str = "siege.healthy";

/// The signing key of a server that authenticates, and the healthy client's token.
pub struct Tokens {
    key: TokenKey,
    /// The HMAC secret as the server reads it, for the tokens `TokenKey::mint` cannot make.
    secret: Vec<u8>,
    /// A valid token for the warm-up and the healthy client: user `siege`, granted
    /// `HEALTHY_TOPIC` to subscribe and to publish.
    pub healthy: String,
    dir: PathBuf,
}

impl Tokens {
    /// A fresh HS256 key, written in a folder of its own (removed when dropped).
    pub fn generate() -> anyhow::Result<Tokens> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("corecast-siege-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("making {dir:?}"))?;
        let key = TokenKey::generate(Signing::Hs256, &dir)?;
        let [_, file] = key.server_args();
        let secret = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
        let healthy = key.mint_for("siege", 3600, &[HEALTHY_TOPIC], &[HEALTHY_TOPIC])?;
        Ok(Tokens {
            key,
            secret,
            healthy,
            dir,
        })
    }

    /// The server arguments that make it verify these tokens.
    pub fn server_args(&self) -> Vec<String> {
        self.key.server_args().to_vec()
    }

    /// `claims` signed with the server's key (HS256).
    fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let key = EncodingKey::from_secret(&self.secret);
        encode(&Header::new(Algorithm::HS256), claims, &key).context("signing a token")
    }

    /// One invalid token of each kind, with the 401 the server documents for it
    /// (docs/security.md, "Refusals on the wire").
    fn bad_tokens(&self) -> anyhow::Result<Vec<BadToken>> {
        let now = unix_now();
        let valid = self.key.mint_for("mallory", 600, &[], &[])?;
        let (signed, signature) = valid.rsplit_once('.').context("a token without dots")?;
        let (_, payload) = signed.split_once('.').context("a token without dots")?;
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "mallory", "exp": now + 600 }),
            &EncodingKey::from_secret(b"a key that is not the server's"),
        )?;
        let expired = self.key.mint(&Claims {
            sub: "mallory",
            exp: now - 3600,
            subscribe: &[],
            publish: &[],
        })?;
        let bad = |kind, token: Option<String>, reason, cause| BadToken {
            kind,
            token,
            reason,
            cause,
        };
        Ok(vec![
            bad("no token", None, "token required", "missing"),
            bad(
                "not a JWT",
                Some("not-a-jwt".into()),
                "malformed token",
                "malformed",
            ),
            bad(
                "no sub",
                Some(self.sign(&json!({ "exp": now + 600 }))?),
                "malformed token",
                "malformed",
            ),
            bad(
                "altered signature",
                Some(altered(&valid)?),
                "bad token signature",
                "bad_signature",
            ),
            bad(
                "another key",
                Some(other_key),
                "bad token signature",
                "bad_signature",
            ),
            bad(
                "alg none",
                Some(format!("{ALG_NONE}.{payload}.")),
                "token algorithm not accepted",
                "wrong_algorithm",
            ),
            bad(
                "alg RS256",
                Some(format!("{ALG_RS256}.{payload}.{signature}")),
                "token algorithm not accepted",
                "wrong_algorithm",
            ),
            bad("expired", Some(expired), "token expired", "expired"),
            bad(
                "not yet valid",
                Some(
                    self.sign(&json!({ "sub": "mallory", "nbf": now + 3600, "exp": now + 7200 }))?,
                ),
                "token not yet valid",
                "not_yet_valid",
            ),
            bad(
                "foreign audience",
                Some(
                    self.sign(&json!({ "sub": "mallory", "exp": now + 600, "aud": "elsewhere" }))?,
                ),
                "wrong token audience",
                "wrong_audience",
            ),
        ])
    }

    /// A token of about `UNDER_LIMIT` bytes, so that its request head stays under the 8 KiB
    /// limit: signed with the server's key, then altered, so it is read whole and refused for
    /// its signature.
    fn under_the_limit(&self) -> anyhow::Result<String> {
        // Base64 makes 4 bytes of every 3; the header, the signature and `sub` take the rest.
        let pad = "p".repeat(UNDER_LIMIT * 3 / 4 - 100);
        altered(&self.sign(&json!({ "sub": "mallory", "pad": pad }))?)
    }

    /// A token for the big topic's subscribers.
    fn subscriber(&self) -> anyhow::Result<String> {
        self.key
            .mint_for("siege-subscriber", 3600, &[BIG_TOPIC], &[])
    }

    /// A token for a client granted publish to the big topic.
    fn publisher(&self) -> anyhow::Result<String> {
        self.key
            .mint_for("siege-publisher", 3600, &[], &[BIG_TOPIC])
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `token` with another first character of its signature: still base64url, still read whole,
/// no longer the signature.
fn altered(token: &str) -> anyhow::Result<String> {
    let (signed, signature) = token.rsplit_once('.').context("a token without dots")?;
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    Ok(format!("{signed}.{first}{}", &signature[1..]))
}

/// `{"alg":"none","typ":"JWT"}`, base64url.
const ALG_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
/// `{"alg":"RS256","typ":"JWT"}`, base64url: an algorithm an HMAC key does not take.
const ALG_RS256: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";

/// An invalid token of one kind, and the 401 the server documents for it.
struct BadToken {
    kind: &'static str,
    /// `None`: no token at all.
    token: Option<String>,
    /// The body of the 401 (`AuthRefusal::reason`).
    reason: &'static str,
    /// Its `cause` in `corecast_auth_refusals_total`.
    cause: &'static str,
}

/// An upgrade request for `/ws` carrying `token` in the query, or in `Authorization: Bearer`.
fn request_with(token: Option<&str>, in_header: bool) -> Vec<u8> {
    match (token, in_header) {
        (Some(t), true) => {
            client::upgrade_request("/ws", &format!("Authorization: Bearer {t}\r\n"))
        }
        (token, _) => client::upgrade_request(&client::with_token("/ws", token), ""),
    }
}

/// The series `corecast_auth_refusals_total{cause="<cause>"}`.
fn refusals_of(cause: &str) -> String {
    format!("corecast_auth_refusals_total{{cause=\"{cause}\"}}")
}

/// The series `corecast_upgrade_rejections_total{status="<status>"}`.
fn rejections_of(status: u16) -> String {
    format!("corecast_upgrade_rejections_total{{status=\"{status}\"}}")
}

/// The server's counters now, or why not (recorded as a missed goal).
fn counters(target: &Target, seen: &mut Seen) -> Option<BTreeMap<String, u64>> {
    let Some(api) = target.api else {
        seen.fail("the server serves no /metrics to check");
        return None;
    };
    match server::metrics(api) {
        Ok(m) => Some(m),
        Err(e) => {
            seen.fail(format!("reading /metrics: {e}"));
            None
        }
    }
}

/// Checks that each series of `expected` grew by as much between `before` and the server's
/// counters now; each that did not is a missed goal.
fn check_counted(
    target: &Target,
    before: Option<BTreeMap<String, u64>>,
    expected: &BTreeMap<String, u64>,
    seen: &mut Seen,
) {
    let (Some(before), Some(after)) = (before, counters(target, seen)) else {
        return;
    };
    for (series, want) in expected {
        let of = |m: &BTreeMap<String, u64>| m.get(series).copied().unwrap_or(0);
        let counted = of(&after).saturating_sub(of(&before));
        if counted != *want {
            seen.fail(format!(
                "/metrics counted {counted} in {series}, the attackers got {want}"
            ));
        }
    }
}

/// Upgrades each bad-token run sends, from how many threads, and the pause between two of
/// one thread: far more often than the other attacks repeat, as a token-guessing tool would.
const BAD_TOKEN_UPGRADES: usize = 2_000;
const BAD_TOKEN_THREADS: usize = 8;
const BAD_TOKEN_PACE: Duration = Duration::from_millis(2);

/// Token refusals one address may cause a second, in bursts of as many: the server's default
/// (`Verifier::refusals_per_address`), which the siege leaves as it is.
const REFUSALS_PER_ADDRESS: u32 = corecast::auth::DEFAULT_REFUSALS_PER_ADDRESS;

/// The body of the 429 an address gets once it has used up its token refusals.
const TOO_MANY_REFUSALS: &str = "too many refused tokens";

/// The address attacker thread `thread` connects from: one of its own, as from another
/// machine, and none the healthy client's (127.0.0.1), whose allowance of refusals stays whole.
fn attacker_address(thread: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (thread % 250) as u8))
}

/// The most token refusals (401) one address may get in `elapsed`: a full bucket, and what
/// refills meanwhile.
fn refusals_bound(elapsed: Duration) -> u64 {
    let rate = f64::from(REFUSALS_PER_ADDRESS);
    u64::from(REFUSALS_PER_ADDRESS) + (rate * elapsed.as_secs_f64()).ceil() as u64
}

/// Connects attacker thread `thread` from its own address, or records why not.
fn connect_as(target: &Target, thread: usize, seen: &mut Seen) -> Option<TcpStream> {
    match client::connect_from(target.addr, attacker_address(thread), BOUND) {
        Ok(stream) => Some(stream),
        Err(e) => {
            seen.add(format!("connect failed: {e}"), false);
            None
        }
    }
}

/// Upgrades with invalid tokens of every kind, in the query and in the header, each thread
/// from an address of its own: each must get 401 with its cause as the body while its address
/// has token refusals left, 429 past that; no address may get more 401s than its allowance,
/// and the server must count each answer under its cause.
pub fn bad_tokens(target: &Target) -> Seen {
    let mut seen = Seen::default();
    let Some(tokens) = &target.tokens else {
        seen.fail("bad-tokens needs a server that authenticates");
        return seen;
    };
    let kinds = match tokens.bad_tokens() {
        Ok(kinds) => kinds,
        Err(e) => {
            seen.fail(format!("making the tokens: {e:#}"));
            return seen;
        }
    };
    // Each kind in the query, then each in the header (where there is a token to put there).
    let requests: Vec<(&BadToken, Vec<u8>)> = [false, true]
        .iter()
        .flat_map(|&in_header| {
            kinds
                .iter()
                .filter(move |k| !in_header || k.token.is_some())
                .map(move |k| (k, request_with(k.token.as_deref(), in_header)))
        })
        .collect();
    // The 401s of each attacker thread, that is of each address.
    let unauthorized: Vec<AtomicU64> = (0..BAD_TOKEN_THREADS).map(|_| AtomicU64::new(0)).collect();
    let before = counters(target, &mut seen);
    let started = Instant::now();
    seen.merge(spread(BAD_TOKEN_UPGRADES, BAD_TOKEN_THREADS, |i, seen| {
        let (kind, request) = &requests[i % requests.len()];
        let thread = i % BAD_TOKEN_THREADS;
        let Some(mut stream) = connect_as(target, thread, seen) else {
            return;
        };
        if let Err(e) = stream.write_all(request) {
            return seen.add(format!("{}: write failed: {e}", kind.kind), false);
        }
        match client::http_answer(&mut stream, BOUND) {
            (Ending::Status(401), body) if body == kind.reason => {
                unauthorized[thread].fetch_add(1, Ordering::Relaxed);
                seen.add(format!("HTTP 401 {body:?}"), true)
            }
            (Ending::Status(429), body) if body == TOO_MANY_REFUSALS => {
                seen.add(format!("HTTP 429 {body:?}"), true)
            }
            (Ending::Status(status), body) => {
                seen.add(format!("{}: HTTP {status} {body:?}", kind.kind), false)
            }
            (ending, _) => seen.add(format!("{}: {ending}", kind.kind), false),
        }
        thread::sleep(BAD_TOKEN_PACE);
    }));
    let bound = refusals_bound(started.elapsed());
    for (thread, n) in unauthorized.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        if n > bound {
            seen.fail(format!(
                "{} got {n} token refusals in one run, more than its {bound}",
                attacker_address(thread)
            ));
        }
    }
    // What the server should have counted: each documented answer under its kind's cause.
    let answered = |answer: String| seen.answers.get(&answer).copied().unwrap_or(0) as u64;
    let mut expected = BTreeMap::new();
    let mut all_unauthorized = 0;
    for kind in &kinds {
        let n = answered(format!("HTTP 401 {:?}", kind.reason));
        // Kinds that share a reason share a cause, and the answers are counted once.
        if expected.insert(refusals_of(kind.cause), n).is_none() {
            all_unauthorized += n;
        }
    }
    expected.insert(rejections_of(401), all_unauthorized);
    expected.insert(
        rejections_of(429),
        answered(format!("HTTP 429 {TOO_MANY_REFUSALS:?}")),
    );
    check_counted(target, before, &expected, &mut seen);
    seen
}

/// Token sizes past the request head limit (8 KiB), and one under it.
const HUGE: [(usize, &str); 2] = [(64 << 10, "64 KB"), (1 << 20, "1 MB")];
const UNDER_LIMIT: usize = 7_000;

/// Upgrades of each huge-tokens run, and the threads they come from.
const HUGE_UPGRADES: usize = 50;
const HUGE_THREADS: usize = 4;

/// Upgrades whose token is far past the request head limit, in the query and in the header:
/// each must get 431 before the token is looked at. A token just under the limit is verified
/// as any other (here: a bad signature, 401).
pub fn huge_tokens(target: &Target) -> Seen {
    let mut seen = Seen::default();
    let Some(tokens) = &target.tokens else {
        seen.fail("huge-tokens needs a server that authenticates");
        return seen;
    };
    // A token of `size` bytes: a real header, `size` bytes of payload, a signature.
    let huge = |size: usize| format!("{ALG_RS256}.{}.c2ln", "A".repeat(size));
    let mut cases: Vec<(String, Vec<u8>, u16)> = Vec::new();
    for (size, name) in HUGE {
        for (in_header, via) in [(false, "query"), (true, "header")] {
            let request = request_with(Some(&huge(size)), in_header);
            cases.push((format!("{name} in the {via}"), request, 431));
        }
    }
    let under = match tokens.under_the_limit() {
        Ok(token) => token,
        Err(e) => {
            seen.fail(format!("making the tokens: {e:#}"));
            return seen;
        }
    };
    let under_name = format!("{:.1} KB in the header", under.len() as f64 / 1000.0);
    cases.push((under_name, request_with(Some(&under), true), 401));
    let before = counters(target, &mut seen);
    seen.merge(spread(HUGE_UPGRADES, HUGE_THREADS, |i, seen| {
        let (name, request, status) = &cases[i % cases.len()];
        // From an address per thread: each sends its 7 KB token well within the address's
        // allowance of token refusals.
        let Some(mut stream) = connect_as(target, i % HUGE_THREADS, seen) else {
            return;
        };
        // The server answers at its limit and closes: the rest of the write may fail.
        let _ = stream.write_all(request);
        let (ending, body) = client::http_answer(&mut stream, BOUND);
        let documented =
            ending == Ending::Status(*status) && (*status != 401 || body == "bad token signature");
        seen.add(format!("{name}: {ending}"), documented);
        thread::sleep(PACE);
    }));
    let count = |status: u16| {
        seen.answers
            .iter()
            .filter(|(a, _)| a.ends_with(&format!(": HTTP {status}")))
            .map(|(_, n)| *n as u64)
            .sum::<u64>()
    };
    let expected = BTreeMap::from([
        (rejections_of(431), count(431)),
        (rejections_of(401), count(401)),
        (refusals_of("bad_signature"), count(401)),
    ]);
    check_counted(target, before, &expected, &mut seen);
    seen
}

/// `--client-message-rate` of the server `publish_flood` runs against: the binary's default.
pub const FLOOD_RATE: u32 = 100;

/// The big topic and its subscribers.
const BIG_TOPIC: &str = "siege.big";
const SUBSCRIBERS: usize = 2_000;

/// One flooding connection is opened every `FLOOD_EVERY`, for `FLOOD_FOR`.
const FLOOD_EVERY: Duration = Duration::from_secs(1);
const FLOOD_FOR: Duration = Duration::from_secs(10);

/// Publications per write of the flooding client.
const FLOOD_BATCH: usize = 16;

/// How long the subscribers must have received nothing before a flood counts as fanned out.
const QUIET: Duration = Duration::from_millis(300);

/// A client granted publish to the big topic (`Target::big_topic`, `SUBSCRIBERS` subscribers)
/// publishes to it as fast as it can, one new connection a second. Each connection's
/// publications that reach the subscribers must stay within its bucket (the burst, plus the
/// rate times how long it lasted) and reach every subscriber, and the connection must be
/// refused past that and closed with 1008 "rate limit"; the server must count each refusal.
pub fn publish_flood(target: &Target) -> Seen {
    let mut seen = Seen::default();
    let (Some(tokens), Some(rate), Some(subscribers)) =
        (&target.tokens, target.message_rate, &target.big_topic)
    else {
        seen.fail(
            "publish-flood needs a server that authenticates, with a message rate and a big topic",
        );
        return seen;
    };
    let publisher = match tokens.publisher() {
        Ok(token) => token,
        Err(e) => {
            seen.fail(format!("making the tokens: {e:#}"));
            return seen;
        }
    };
    let before = counters(target, &mut seen);
    let started = Instant::now();
    let mut floods = Vec::new();
    let mut attacker = 0;
    while started.elapsed() < FLOOD_FOR {
        let cycle = Instant::now();
        floods.push(flood(target, &publisher, attacker, rate, subscribers));
        attacker += 1;
        thread::sleep(FLOOD_EVERY.saturating_sub(cycle.elapsed()));
    }
    // The documented answers under one range of fan-outs (each is within its own bound).
    let fanned = floods.iter().flatten().filter(|f| f.documented());
    let least = fanned.clone().map(|f| f.most).min().unwrap_or(0);
    let most = fanned.map(|f| f.most).max().unwrap_or(0);
    let mut refused = 0;
    for flooded in &floods {
        match flooded {
            Ok(f) if f.documented() => seen.add(
                format!(
                    "{least}..{most} fanned out to all {SUBSCRIBERS}, {} refused, close 1008 \"rate limit\"",
                    f.answers.refused
                ),
                true,
            ),
            Ok(f) => seen.add(
                format!(
                    "{}..{} fanned out (at most {} due), {} refused, {} other answers, {} {:?}",
                    f.least,
                    f.most,
                    f.bound,
                    f.answers.refused,
                    f.answers.other,
                    f.answers.ending,
                    f.answers.reason
                ),
                false,
            ),
            Err(why) => seen.add(why.clone(), false),
        }
        refused += flooded.as_ref().map_or(0, Flooded::counted_refusals);
    }
    let series = "corecast_dropped_messages_total{cause=\"rate_limited\"}".to_string();
    check_counted(
        target,
        before,
        &BTreeMap::from([(series, refused)]),
        &mut seen,
    );
    seen
}

/// The attacker number of the publications of `BigTopic::open`, and its bursts.
const IN_USE: u32 = u32::MAX;
const IN_USE_BURSTS: u64 = 2;

/// A publication to the big topic, numbered as `publication` reads it back.
fn publication_frame(attacker: u32, seq: u64) -> Vec<u8> {
    let publish = json!({ "publish": BIG_TOPIC, "data": format!("flood {attacker} {seq}") });
    client::frame(0x1, publish.to_string().as_bytes())
}

/// What one flooding connection got.
struct Flooded {
    /// Its publications each subscriber received: the fewest and the most.
    least: u64,
    most: u64,
    /// The most its bucket allowed: the burst, plus the rate times how long it lasted.
    bound: u64,
    answers: Answers,
}

impl Flooded {
    /// Within its bucket, delivered to every subscriber, refused past it and closed.
    fn documented(&self) -> bool {
        self.closed_for_rate()
            && self.answers.refused > 0
            && self.answers.other == 0
            && self.most <= self.bound
            && self.least == self.most
    }

    fn closed_for_rate(&self) -> bool {
        self.answers.ending == Ending::Close(1008) && self.answers.reason == "rate limit"
    }

    /// Its refusals as the server counts them: those it answered, and the one that closed
    /// the connection, which is not answered (docs/operating.md, pubsub).
    fn counted_refusals(&self) -> u64 {
        self.answers.refused + u64::from(self.closed_for_rate())
    }
}

/// One flooding connection: publishes to the big topic as fast as it can until the server
/// closes it, then waits for the subscribers to have received what was fanned out. An error
/// says why it could not flood.
fn flood(
    target: &Target,
    token: &str,
    attacker: u32,
    rate: u32,
    subscribers: &BigTopic,
) -> Result<Flooded, String> {
    let path = client::with_token("/ws", Some(token));
    let mut conn =
        client::open(target.addr, &path, BOUND).map_err(|e| format!("upgrade failed: {e}"))?;
    // The writer below owns the socket's writes: no pong may interleave with them.
    conn.answers_pings = false;
    let mut writer = conn
        .stream
        .try_clone()
        .map_err(|e| format!("socket: {e}"))?;
    let _ = writer.set_write_timeout(Some(Duration::from_secs(1)));
    let closed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let reader = {
        let closed = Arc::clone(&closed);
        thread::spawn(move || {
            let answers = read_answers(&mut conn);
            closed.store(true, Ordering::Release);
            (answers, started.elapsed())
        })
    };
    let mut seq = 0u64;
    let mut batch = Vec::new();
    while !closed.load(Ordering::Acquire) && started.elapsed() < BOUND {
        batch.clear();
        for _ in 0..FLOOD_BATCH {
            batch.extend_from_slice(&publication_frame(attacker, seq));
            seq += 1;
        }
        if writer.write_all(&batch).is_err() {
            break;
        }
    }
    let (answers, lasted) = reader
        .join()
        .map_err(|_| "the reader panicked".to_string())?;
    let counts = subscribers.settle(attacker);
    Ok(Flooded {
        least: counts.iter().copied().min().unwrap_or(0),
        most: counts.iter().copied().max().unwrap_or(0),
        bound: u64::from(rate) + (f64::from(rate) * lasted.as_secs_f64()).ceil() as u64,
        answers,
    })
}

/// What a flooding client was answered, until the server ended its connection.
struct Answers {
    /// `{"publish":"<topic>","error":"rate limit"}` answers.
    refused: u64,
    /// Any other message.
    other: u64,
    ending: Ending,
    /// The close frame's reason.
    reason: String,
}

fn read_answers(conn: &mut Conn) -> Answers {
    let mut answers = Answers {
        refused: 0,
        other: 0,
        ending: Ending::Open,
        reason: String::new(),
    };
    loop {
        match conn.next_item() {
            Ok(Some(Inbound::Message { data, .. })) => {
                let refusal = serde_json::from_slice::<serde_json::Value>(&data)
                    .is_ok_and(|v| v["publish"] == BIG_TOPIC && v["error"] == "rate limit");
                if refusal {
                    answers.refused += 1;
                } else {
                    answers.other += 1;
                }
            }
            Ok(Some(Inbound::Close { code, reason })) => {
                answers.ending = Ending::Close(code.unwrap_or(1005));
                answers.reason = reason;
                return answers;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                answers.ending = Ending::Eof;
                return answers;
            }
            Err(e) if client::is_timeout(&e) => {
                return answers;
            }
            Err(_) => {
                answers.ending = Ending::Reset;
                return answers;
            }
        }
    }
}

/// What the big topic's subscribers received.
#[derive(Default)]
struct Tally {
    /// For each flooding connection, how many of its publications each subscriber received.
    per_attacker: BTreeMap<u32, Vec<u64>>,
    /// When the last publication arrived.
    last: Option<Instant>,
    /// Publications out of order or twice at one subscriber.
    disorder: u64,
    /// Messages that were no publication of a flooding client.
    unexpected: u64,
    /// Subscribers whose connection the server ended.
    dropped: usize,
}

/// The big topic's `SUBSCRIBERS` subscribers: bystanders whose fan-out an attack drives, held
/// from before the baseline until after the measurements (`Setup::big_topic`), so the RSS and
/// open-file goals compare the server with them against the server with them. Read by one
/// thread that waits on all their sockets at once (`poll`) and answers their pings.
pub struct BigTopic {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl BigTopic {
    /// Opens the subscribers 1 ms apart, each subscribed at connect and read (its pings
    /// answered) from then on; then ordinary use: a client granted publish sends
    /// `IN_USE_BURSTS` bursts within its limit (as many publications as the rate, a second
    /// apart), each delivered to every subscriber, and leaves.
    pub fn open(target: &Target) -> anyhow::Result<BigTopic> {
        let tokens = target.tokens.as_ref().context("a big topic needs tokens")?;
        let rate = target
            .message_rate
            .context("a big topic needs a message rate")?;
        let big = BigTopic::subscribe(target, &tokens.subscriber()?)?;
        let rate = u64::from(rate);
        let path = client::with_token("/ws", Some(&tokens.publisher()?));
        let mut conn = client::open(target.addr, &path, BOUND)?;
        for burst in 0..IN_USE_BURSTS {
            let frames: Vec<u8> = (burst * rate..(burst + 1) * rate)
                .flat_map(|seq| publication_frame(IN_USE, seq))
                .collect();
            conn.stream.write_all(&frames)?;
            let deadline = Instant::now() + BOUND;
            while big.counts(IN_USE).iter().any(|&n| n < (burst + 1) * rate) {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "a burst within the limit did not reach every subscriber in {BOUND:?}"
                );
                thread::sleep(Duration::from_millis(20));
            }
            // The bucket full again.
            thread::sleep(Duration::from_secs(1));
        }
        conn.stream
            .write_all(&client::frame(0x8, &1000u16.to_be_bytes()))?;
        let ending = conn.ending(BOUND);
        anyhow::ensure!(
            ending == Ending::Close(1000),
            "the publisher's close: {ending}"
        );
        Ok(big)
    }

    fn subscribe(target: &Target, token: &str) -> anyhow::Result<BigTopic> {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (add, added) = mpsc::channel();
        let reader = {
            let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
            thread::spawn(move || read_subscribers(&added, &stop, &tally))
        };
        let big = BigTopic {
            stop,
            tally,
            reader: Mutex::new(Some(reader)),
        };
        let path = client::with_token(&format!("/ws?topics={BIG_TOPIC}"), Some(token));
        for _ in 0..SUBSCRIBERS {
            let mut conn = client::open(target.addr, &path, BOUND)?;
            match conn.next_message()? {
                Some(Inbound::Message { data, .. }) if data.starts_with(b"{\"subscribed\"") => {}
                other => anyhow::bail!("subscribing to {BIG_TOPIC} answered {other:?}"),
            }
            conn.stream.set_nonblocking(true)?;
            add.send(conn)?;
            thread::sleep(RAMP);
        }
        Ok(big)
    }

    /// Closes the subscribers; what went wrong for them (dropped by the server, publications
    /// out of order, messages that were none) are missed goals.
    pub fn finish(&self) -> Seen {
        self.stop_reading();
        let tally = std::mem::take(&mut *lock(&self.tally));
        let mut seen = Seen::default();
        if tally.dropped > 0 {
            seen.fail(format!("the server dropped {} subscribers", tally.dropped));
        }
        if tally.disorder > 0 {
            seen.fail(format!(
                "{} publications reached a subscriber out of order or twice",
                tally.disorder
            ));
        }
        if tally.unexpected > 0 {
            seen.fail(format!(
                "the subscribers got {} messages that were no publication",
                tally.unexpected
            ));
        }
        seen
    }

    fn stop_reading(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(reader) = lock(&self.reader).take() {
            let _ = reader.join();
        }
    }

    /// Once nothing has arrived for `QUIET` (at most `BOUND`), how many publications of
    /// `attacker` each subscriber received.
    fn settle(&self, attacker: u32) -> Vec<u64> {
        let deadline = Instant::now() + BOUND;
        loop {
            thread::sleep(QUIET / 3);
            let quiet = lock(&self.tally).last.is_none_or(|t| t.elapsed() >= QUIET);
            if quiet || Instant::now() > deadline {
                return self.counts(attacker);
            }
        }
    }

    /// How many publications of `attacker` each subscriber received so far.
    fn counts(&self, attacker: u32) -> Vec<u64> {
        lock(&self.tally)
            .per_attacker
            .get(&attacker)
            .cloned()
            .unwrap_or_else(|| vec![0; SUBSCRIBERS])
    }
}

impl Drop for BigTopic {
    fn drop(&mut self) {
        self.stop_reading();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads every subscriber `added` sends until `stop`, then drops them (which closes them).
fn read_subscribers(added: &mpsc::Receiver<Conn>, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let mut conns = Vec::with_capacity(SUBSCRIBERS);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(SUBSCRIBERS);
    // The last publication each subscriber received: (attacker, sequence number).
    let mut last: Vec<Option<(u32, u64)>> = Vec::with_capacity(SUBSCRIBERS);
    let mut got = Vec::new();
    while !stop.load(Ordering::Acquire) {
        for conn in added.try_iter() {
            fds.push(libc::pollfd {
                fd: conn.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            conns.push(conn);
            last.push(None);
        }
        // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()` pollfd structs;
        // poll writes only their `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
        if ready <= 0 {
            continue;
        }
        let (mut unexpected, mut dropped) = (0, 0);
        for (i, pfd) in fds.iter_mut().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            loop {
                match conns[i].next_item() {
                    Ok(Some(Inbound::Message { data, .. })) => match publication(&data) {
                        Some(p) => got.push((i, p)),
                        None => unexpected += 1,
                    },
                    Ok(Some(_)) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(None) | Err(_) => {
                        dropped += 1;
                        // Left out of the next polls.
                        pfd.fd = -1;
                        break;
                    }
                }
            }
        }
        let mut tally = lock(tally);
        tally.unexpected += unexpected;
        tally.dropped += dropped;
        if !got.is_empty() {
            tally.last = Some(Instant::now());
        }
        for (i, (attacker, seq)) in got.drain(..) {
            if last[i].is_some_and(|(a, s)| a == attacker && s >= seq) {
                tally.disorder += 1;
            }
            last[i] = Some((attacker, seq));
            let counts = tally
                .per_attacker
                .entry(attacker)
                .or_insert_with(|| vec![0; SUBSCRIBERS]);
            counts[i] += 1;
        }
    }
}

/// A flooding client's publication as a subscriber receives it: "flood <attacker> <seq>".
fn publication(data: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut fields = text.strip_prefix("flood ")?.split(' ');
    let attacker = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    Some((attacker, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tokens_are_refused_for_the_documented_cause() {
        let tokens = Tokens::generate().unwrap();
        let [_, file] = tokens.key.server_args();
        let verifier = corecast::auth::Verifier::hmac(&std::fs::read(file).unwrap()).unwrap();
        let now = unix_now();
        assert_eq!(verifier.verify(&tokens.healthy, now).unwrap().user, "siege");
        for bad in tokens.bad_tokens().unwrap() {
            let Some(token) = &bad.token else { continue };
            let refusal = verifier.verify(token, now).unwrap_err();
            assert_eq!(
                (refusal.reason(), refusal.label()),
                (bad.reason, bad.cause),
                "{}",
                bad.kind
            );
        }
        let under = tokens.under_the_limit().unwrap();
        assert!(
            (6_000..UNDER_LIMIT).contains(&under.len()),
            "{}",
            under.len()
        );
        assert!(request_with(Some(&under), true).len() < 8 << 10);
        let refusal = verifier.verify(&under, now).unwrap_err();
        assert_eq!(refusal.label(), "bad_signature");
        let dir = tokens.dir.clone();
        drop(tokens);
        assert!(!dir.exists());
    }

    #[test]
    fn publications_read_back() {
        assert_eq!(publication(b"flood 3 17"), Some((3, 17)));
        assert_eq!(publication(b"healthy 1 2 3"), None);
    }
}
