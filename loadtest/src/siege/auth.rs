//! The attacks on authentication, against a server that verifies tokens: a flood of invalid
//! tokens, and tokens too big for a request head. Also the key and the tokens they use, and the
//! check of each against the server's own counters in `/metrics`. Not the other attacks
//! (`attacks`), which need no token.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use super::attacks::{spread, Seen, Target, BOUND, PACE};
use super::client::{self, Ending};
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
}
