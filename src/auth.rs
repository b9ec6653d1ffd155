//! Who a client is and what it may do: verifying its token (a JWT), and the topic rules its
//! grants follow. Pure: no I/O and no clock; `now` is passed in, in seconds since the epoch.
//!
//! For servers that let clients in on a token (`Builder::authenticate`) and for listeners that
//! check a connection's grants ([`Identity::may_subscribe`], [`Identity::may_publish`]). The
//! signature and algorithm checks are `jsonwebtoken`'s (with ring, which rustls already
//! links); the time checks are here, against the `now` given. docs/security.md covers the
//! token, its claims and the rules.
//!
//! A [`Verifier`] holds one key, and the key alone decides which algorithms it accepts: an HMAC
//! secret takes HS256, HS384 and HS512; an RSA public key RS256, RS384 and RS512; an EC P-256
//! key ES256; an Ed25519 key EdDSA. The token's header never widens that set, so `alg: none`
//! and a token signed with HMAC using a public key's bytes are refused.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::ws::session::RateLimit;
use crate::Error;

/// The leeway a [`Verifier`] allows on `exp` and `nbf` unless told otherwise: clocks of the
/// token's issuer and of this server may differ by this much.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// How long a connection whose token expired may stay open to present a fresh one
/// (`Websocket::refresh_token`) unless told otherwise ([`Verifier::refresh_grace`]).
pub const DEFAULT_REFRESH_GRACE: Duration = Duration::from_secs(30);

/// Where a live connection's token stands at some moment: the rule [`expiry`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The token has no `exp`: nothing to enforce.
    Never,
    /// Valid until `until` (its `exp`, seconds since the epoch), when the connection is told.
    Valid {
        /// The token's `exp`.
        until: u64,
    },
    /// Expired, within the grace: the connection is closed at `until` (`exp` plus the grace)
    /// unless a fresh token comes first.
    Grace {
        /// `exp` plus the grace.
        until: u64,
    },
    /// Past `exp` plus the grace: the connection is closed (1008 "token expired").
    Over,
}

/// The rule for a token on a live connection, at `now` (seconds since the epoch), for a token
/// that expires at `expires` (its `exp`) and a grace of `grace` seconds: valid before `exp`;
/// from `exp` on the connection is told, and has until `exp + grace` to refresh; from then on
/// it is over. The leeway plays no part here: it is the verification's, at the upgrade and
/// at each refresh.
pub fn expiry(now: u64, expires: Option<u64>, grace: u64) -> Expiry {
    let Some(exp) = expires else {
        return Expiry::Never;
    };
    let until = exp.saturating_add(grace);
    if now < exp {
        Expiry::Valid { until: exp }
    } else if now < until {
        Expiry::Grace { until }
    } else {
        Expiry::Over
    }
}

/// Why a token was refused. Each cause is counted (`corecast_auth_refusals_total{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthRefusal {
    /// No token: neither a `token` query parameter nor an `Authorization: Bearer` header.
    Missing = 0,
    /// Not a JWT, claims of the wrong type, or no `sub`.
    Malformed = 1,
    /// The signature does not match the key.
    BadSignature = 2,
    /// The header names an algorithm the key does not take (`none`, HMAC against a public key).
    WrongAlgorithm = 3,
    /// `exp` is past (beyond the leeway).
    Expired = 4,
    /// `nbf` is still to come (beyond the leeway).
    NotYetValid = 5,
    /// `aud` is missing, or does not name the audience the verifier requires.
    WrongAudience = 6,
    /// `iss` is missing, or is not the issuer the verifier requires.
    WrongIssuer = 7,
}

impl AuthRefusal {
    /// Every cause, in the order of their values.
    pub const ALL: [AuthRefusal; 8] = [
        AuthRefusal::Missing,
        AuthRefusal::Malformed,
        AuthRefusal::BadSignature,
        AuthRefusal::WrongAlgorithm,
        AuthRefusal::Expired,
        AuthRefusal::NotYetValid,
        AuthRefusal::WrongAudience,
        AuthRefusal::WrongIssuer,
    ];

    /// The metrics label: `missing`, `malformed`, `bad_signature`, ...
    pub fn label(self) -> &'static str {
        match self {
            AuthRefusal::Missing => "missing",
            AuthRefusal::Malformed => "malformed",
            AuthRefusal::BadSignature => "bad_signature",
            AuthRefusal::WrongAlgorithm => "wrong_algorithm",
            AuthRefusal::Expired => "expired",
            AuthRefusal::NotYetValid => "not_yet_valid",
            AuthRefusal::WrongAudience => "wrong_audience",
            AuthRefusal::WrongIssuer => "wrong_issuer",
        }
    }

    /// The body of the 401 answer: short, and the same for every client.
    pub fn reason(self) -> &'static str {
        match self {
            AuthRefusal::Missing => "token required",
            AuthRefusal::Malformed => "malformed token",
            AuthRefusal::BadSignature => "bad token signature",
            AuthRefusal::WrongAlgorithm => "token algorithm not accepted",
            AuthRefusal::Expired => "token expired",
            AuthRefusal::NotYetValid => "token not yet valid",
            AuthRefusal::WrongAudience => "wrong token audience",
            AuthRefusal::WrongIssuer => "wrong token issuer",
        }
    }
}

impl fmt::Display for AuthRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Who a verified token says the client is, and what it may do with topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user: the token's `sub`.
    pub user: String,
    /// When the token expires (`exp`), in seconds since the epoch; `None` if it never does.
    /// Enforced on a live connection too: see [`expiry`] and `Websocket::refresh_token`.
    pub expires: Option<u64>,
    /// Topic patterns the client may subscribe to (`subscribe`).
    pub subscribe: Vec<String>,
    /// Topic patterns the client may publish to (`publish`).
    pub publish: Vec<String>,
}

impl Identity {
    /// Whether this user may subscribe to `topic`: a user-limited topic (see [`topic_users`])
    /// only if the user is one of its users, whatever the grants; any other topic if a
    /// `subscribe` pattern matches it.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        match topic_users(topic) {
            Some(mut users) => users.any(|u| u == self.user),
            None => grants(&self.subscribe, topic),
        }
    }

    /// Whether this user may publish to `topic`: if a `publish` pattern matches it (a
    /// user-limited topic too: publishing to `inbox#bob` needs a grant such as `inbox#*`).
    pub fn may_publish(&self, topic: &str) -> bool {
        grants(&self.publish, topic)
    }
}

/// Whether `pattern` matches `topic`: a pattern ending in `*` matches every topic that starts
/// with what comes before it (`scores.*` matches `scores.nba`; `*` matches every topic); any
/// other pattern only the topic of that exact name.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// Whether any of `patterns` matches `topic`.
fn grants(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, topic))
}

/// The users of a user-limited topic: in a name that contains `#`, the comma-separated names
/// after the last `#` (`inbox#alice` is alice's, `dialog#alice,bob` alice's and bob's). `None`
/// for a topic open to grants.
pub fn topic_users(topic: &str) -> Option<impl Iterator<Item = &str>> {
    let (_, users) = topic.rsplit_once('#')?;
    Some(users.split(',').filter(|u| !u.is_empty()))
}

/// The claims read from a token; the registered ones `jsonwebtoken` checks (`aud`, `iss`) are
/// not repeated here.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Verifies client tokens against one key. Cheap to share: `Builder::authenticate` takes one
/// for every shard.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    /// What the key takes, and nothing else.
    algorithms: Vec<Algorithm>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
    refresh_grace: u64,
    refusals_per_address: u32,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("refresh_grace", &self.refresh_grace)
            .field("refusals_per_address", &self.refusals_per_address)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    fn with_key(key: DecodingKey, algorithms: Vec<Algorithm>) -> Self {
        Verifier {
            key,
            algorithms,
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY.as_secs(),
            refresh_grace: DEFAULT_REFRESH_GRACE.as_secs(),
            refusals_per_address: DEFAULT_REFUSALS_PER_ADDRESS,
        }
    }

    /// A verifier of HMAC tokens (HS256, HS384, HS512) signed with `secret`. An empty secret
    /// is an error: it would let anyone sign.
    pub fn hmac(secret: &[u8]) -> Result<Self, Error> {
        if secret.is_empty() {
            return Err(Error::Config("the HMAC secret is empty".into()));
        }
        Ok(Self::with_key(
            DecodingKey::from_secret(secret),
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        ))
    }

    /// A verifier of tokens signed with the private half of a PEM public key: RSA (RS256,
    /// RS384, RS512), EC P-256 (ES256) or Ed25519 (EdDSA). The key's type decides.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, Error> {
        // jsonwebtoken would take a private key's PEM too, and then verify nothing.
        let text = String::from_utf8_lossy(pem);
        if !(text.contains("-----BEGIN PUBLIC KEY-----")
            || text.contains("-----BEGIN RSA PUBLIC KEY-----"))
        {
            return Err(Error::Config(
                "not a PEM public key (BEGIN PUBLIC KEY)".into(),
            ));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            let algs = vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
            return Ok(Self::with_key(key, algs));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::with_key(key, vec![Algorithm::ES256]));
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return Ok(Self::with_key(key, vec![Algorithm::EdDSA]));
        }
        Err(Error::Config(
            "not a PEM public key of RSA, EC P-256 or Ed25519".into(),
        ))
    }

    /// Requires `aud` to name `audience`. Without this, a token that names any audience is
    /// refused (RFC 7519 §4.1.3: this server would not be among those it names).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Requires `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// How far `exp` and `nbf` may be off (`DEFAULT_LEEWAY` unless set), in whole seconds.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.as_secs();
        self
    }

    /// How long a connection whose token expired stays open for a fresh one
    /// (`DEFAULT_REFRESH_GRACE` unless set), in whole seconds: from the token's `exp` the
    /// connection is told (`event::TOKEN_EXPIRING`), and past `exp` plus this without a
    /// refresh it is closed with 1008 "token expired". Zero closes it at `exp`.
    pub fn refresh_grace(mut self, grace: Duration) -> Self {
        self.refresh_grace = grace.as_secs();
        self
    }

    /// Token refusals one client address may cause per second on one shard, in bursts of up to
    /// as many (`DEFAULT_REFUSALS_PER_ADDRESS` unless set; 0: no limit). Past it, the address's
    /// upgrades on that shard get 429 "too many refused tokens" (with `Retry-After: 1`) and no
    /// token check until a refusal's worth of time has passed, so a flood of forged tokens
    /// costs what a flood of 404s does, whatever the signature algorithm. Clients behind one
    /// address (a NAT) share its allowance.
    pub fn refusals_per_address(mut self, n: u32) -> Self {
        self.refusals_per_address = n;
        self
    }

    /// The limit set by [`Verifier::refusals_per_address`].
    pub fn refusal_limit(&self) -> u32 {
        self.refusals_per_address
    }

    /// The grace set by [`Verifier::refresh_grace`], in seconds.
    pub fn grace(&self) -> u64 {
        self.refresh_grace
    }

    /// The algorithms this verifier takes, from its key.
    pub fn algorithms(&self) -> Vec<String> {
        self.algorithms.iter().map(|a| format!("{a:?}")).collect()
    }

    /// Verifies `token` at `now` (seconds since the epoch): its signature and algorithm, its
    /// time claims within the leeway, `aud` and `iss` where required, and a non-empty `sub`.
    ///
    /// The claims are read and checked before the signature: a token refused for them costs
    /// no signature check (56 µs for ES256 here, against 2 µs for HS256), so an expired or
    /// misdirected token is as cheap to refuse as a 404. A token whose claims pass is refused
    /// for its signature only after the full check.
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthRefusal> {
        self.check_claims_first(token, now)?;
        let mut validation = Validation::new(self.algorithms[0]);
        validation.algorithms = self.algorithms.clone();
        // The clock is the caller's: `exp` and `nbf` are checked below, against `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = HashSet::new();
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map_err(|e| refusal_of(e.kind(), token))?;
        let claims = data.claims;
        let user = match claims.sub {
            Some(sub) if !sub.is_empty() => sub,
            _ => return Err(AuthRefusal::Malformed),
        };
        self.check_times(claims.exp, claims.nbf, now)?;
        Ok(Identity {
            user,
            expires: claims.exp,
            subscribe: claims.subscribe,
            publish: claims.publish,
        })
    }
}

/// `Verifier::refusals_per_address` when not set: a client that gets a token wrong retries a
/// few times a second at most; a forger sends thousands.
pub const DEFAULT_REFUSALS_PER_ADDRESS: u32 = 20;

/// Addresses one shard's `RefusalLimit` tracks at most; past it the buckets that refilled
/// are forgotten, and if none did, all are.
const MAX_ADDRESSES: usize = 4096;

/// One shard's count of token refusals per client address (`Verifier::refusals_per_address`):
/// a token bucket per address, refilled at the limit per second. Pure: the caller passes the
/// time.
#[derive(Debug)]
pub(crate) struct RefusalLimit {
    rate: u32,
    buckets: std::collections::HashMap<std::net::IpAddr, RateLimit>,
}

impl RefusalLimit {
    pub(crate) fn new(rate: u32) -> RefusalLimit {
        RefusalLimit {
            rate,
            buckets: std::collections::HashMap::new(),
        }
    }

    /// Whether `address` has no refusal left at `now`: its upgrades are answered 429.
    pub(crate) fn exhausted(&self, address: std::net::IpAddr, now: Instant) -> bool {
        self.buckets
            .get(&address)
            .is_some_and(|b| b.refill(self.rate, now).tokens == 0)
    }

    /// Counts a token refusal of `address` at `now`.
    pub(crate) fn refused(&mut self, address: std::net::IpAddr, now: Instant) {
        if self.buckets.len() >= MAX_ADDRESSES && !self.buckets.contains_key(&address) {
            let rate = self.rate;
            self.buckets
                .retain(|_, b| b.refill(rate, now).tokens < rate);
            if self.buckets.len() >= MAX_ADDRESSES {
                self.buckets.clear();
            }
        }
        let rate = self.rate;
        let bucket = self
            .buckets
            .entry(address)
            .or_insert_with(|| RateLimit::full(rate, now));
        *bucket = bucket.take(rate, now).0;
    }
}

/// The claims `Verifier::check_claims_first` reads, unverified.
#[derive(Deserialize)]
struct Unverified {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    aud: Option<serde_json::Value>,
    iss: Option<String>,
}

impl Verifier {
    /// The checks that need no signature: the algorithm is this key's, `sub` is there, the
    /// time claims hold at `now`, `aud` and `iss` are the required ones. A token that cannot
    /// even be read here is left to the full check, which names its refusal.
    fn check_claims_first(&self, token: &str, now: u64) -> Result<(), AuthRefusal> {
        if let Ok(header) = jsonwebtoken::decode_header(token) {
            if !self.algorithms.contains(&header.alg) {
                return Err(AuthRefusal::WrongAlgorithm);
            }
        }
        let Some(payload) = token.split('.').nth(1) else {
            return Ok(());
        };
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
            return Ok(());
        };
        let Ok(claims) = serde_json::from_slice::<Unverified>(&bytes) else {
            return Ok(());
        };
        if claims.sub.as_deref().map_or(true, str::is_empty) {
            return Err(AuthRefusal::Malformed);
        }
        self.check_times(claims.exp, claims.nbf, now)?;
        if let Some(want) = &self.audience {
            let names = |v: &serde_json::Value| v.as_str() == Some(want.as_str());
            let named = match &claims.aud {
                Some(serde_json::Value::Array(list)) => list.iter().any(names),
                Some(one) => names(one),
                None => false,
            };
            if !named {
                return Err(AuthRefusal::WrongAudience);
            }
        }
        if let Some(want) = &self.issuer {
            if claims.iss.as_deref() != Some(want.as_str()) {
                return Err(AuthRefusal::WrongIssuer);
            }
        }
        Ok(())
    }

    /// `exp` and `nbf` against `now`, within the leeway.
    fn check_times(&self, exp: Option<u64>, nbf: Option<u64>, now: u64) -> Result<(), AuthRefusal> {
        if exp.is_some_and(|exp| exp.saturating_add(self.leeway) < now) {
            return Err(AuthRefusal::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(AuthRefusal::NotYetValid);
        }
        Ok(())
    }
}

/// The cause of a `jsonwebtoken` error.
fn refusal_of(kind: &ErrorKind, token: &str) -> AuthRefusal {
    match kind {
        ErrorKind::InvalidSignature => AuthRefusal::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthRefusal::WrongAlgorithm
        }
        ErrorKind::ExpiredSignature => AuthRefusal::Expired,
        ErrorKind::ImmatureSignature => AuthRefusal::NotYetValid,
        ErrorKind::InvalidAudience => AuthRefusal::WrongAudience,
        ErrorKind::InvalidIssuer => AuthRefusal::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthRefusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthRefusal::WrongIssuer,
        // A header whose `alg` is no algorithm jsonwebtoken knows (`none`) fails as JSON.
        ErrorKind::Json(_)
            if jsonwebtoken::decode_header(token).is_err() && names_an_algorithm(token) =>
        {
            AuthRefusal::WrongAlgorithm
        }
        _ => AuthRefusal::Malformed,
    }
}

/// Whether the token's header, read only to name a refusal, is a JSON object with a string
/// `alg`.
fn names_an_algorithm(token: &str) -> bool {
    let Some((header, _)) = token.split_once('.') else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .is_some_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string))
}

/// The subprotocol a client names to carry its token: `corecast.token.<token>`. A browser
/// cannot set headers on a WebSocket, and a token in the URL ends up in access logs; a JWT's
/// characters are all allowed in a subprotocol name (RFC 6455 §4.1, RFC 7230 §3.2.6).
pub const TOKEN_PROTOCOL_PREFIX: &str = "corecast.token.";

/// The subprotocol the server answers with when a client that carries its token in a
/// subprotocol also offers it and the route chose none of its own: a browser fails a
/// handshake whose answer names none of the subprotocols it offered.
pub const TOKEN_CARRIER_PROTOCOL: &str = "corecast";

/// The token of a request, as `Builder::authenticate` finds it, the first of: the
/// `Authorization: Bearer` header's (the scheme in any case); an offered subprotocol
/// `corecast.token.<token>` (`protocols`, the `Sec-WebSocket-Protocol` items); the `token`
/// query parameter's.
pub fn token_from<'a>(
    authorization: Option<&'a str>,
    protocols: impl IntoIterator<Item = &'a str>,
    query: Option<&'a str>,
) -> Option<&'a str> {
    bearer(authorization)
        .or_else(|| {
            protocols
                .into_iter()
                .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
                .filter(|t| !t.is_empty())
        })
        .or(query.filter(|t| !t.is_empty()))
}

/// The credentials of an `Authorization: Bearer <credentials>` header; the scheme is matched
/// in any case (RFC 9110 §11.1). `None` for another scheme or empty credentials.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, credentials) = authorization?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
