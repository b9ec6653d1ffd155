//! The `corecast` binary's settings: flags, `CORECAST_*` environment variables and an optional
//! TOML file, merged with flags first, then the environment, then the file. Not the server:
//! this only decides what to start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::service::Mode;
use clap::Parser;
use corecast::backend::{Backend, EventSet, Hook};
use corecast::{Config, Deflate, SlowConsumerPolicy, TlsConfig, Verifier};

use corecast::units::{parse_duration, parse_size};

/// `--client-message-rate` when not set: 100 messages a second per client. A fan-out server's
/// clients mostly listen; subscribing, publishing and acknowledging stay far below this, while
/// one client can no longer make the server fan out more than this many of its messages.
pub const DEFAULT_CLIENT_MESSAGE_RATE: u32 = 100;

/// `--client-byte-rate` when not set: 1 MiB of payload a second per client, in bursts of as
/// much, so a client may still send one message of the default `--max-message-size` at once.
pub const DEFAULT_CLIENT_BYTE_RATE: u32 = 1 << 20;

/// Command-line flags; each also reads `CORECAST_<NAME>` from the environment.
#[derive(Parser, Debug, Default)]
#[command(
    name = "corecast",
    version,
    about = "A thread-per-core io_uring WebSocket event server.",
    long_about = "A thread-per-core io_uring WebSocket event server.\n\n\
        Clients connect to ws://<listen>/ws or /ws/<id> (wss:// with --tls-cert; the id becomes the connection's UUID). \
        Backends push through the HTTP API on --api-listen: POST /api/broadcast, \
        /api/emit/<uuid>, /api/fire/<event>, /api/close/<uuid>, /api/publish/<topic>, \
        POST and DELETE /api/subscriptions/<uuid>/<topic>; GET /api/connections, /api/topics, \
        /api/topics/<topic>, /metrics, /healthz.\n\n\
        Every flag can also be set with its environment variable or in the --config file \
        (same names, e.g. ping-interval = \"5s\"); flags win over the environment, which wins \
        over the file.",
    // In after_help so that -h shows it too.
    after_help = "Durations take ms, s, m or h (500ms, 5s, 2m); a bare number is seconds. \
        Sizes take B, KiB, MiB, GiB (or KB, MB, GB); a bare number is bytes."
)]
pub struct Args {
    /// Address for WebSocket clients [default: 0.0.0.0:8080]
    #[arg(long, env = "CORECAST_LISTEN", value_name = "ADDR", value_parser = parse_addr)]
    pub listen: Option<SocketAddr>,
    /// Number of shards (pinned executors) [default: one per allowed CPU]
    #[arg(long, env = "CORECAST_SHARDS", value_name = "N", value_parser = parse_shards)]
    pub shards: Option<u16>,
    /// What to do with client messages: echo, relay, shootout, pubsub or push [default: push]
    #[arg(long, env = "CORECAST_MODE", value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// Address of the HTTP API, or "off" [default: 127.0.0.1:8081]
    #[arg(long, env = "CORECAST_API_LISTEN", value_name = "ADDR|off", value_parser = parse_api_listen)]
    pub api_listen: Option<ApiListen>,
    /// Bearer token every /api/* request must carry [default: none]
    #[arg(
        long,
        env = "CORECAST_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Clients need a JWT signed with the HMAC secret in this file (its bytes, one trailing
    /// newline ignored): HS256, HS384 or HS512 [default: clients are not authenticated]
    #[arg(long, env = "CORECAST_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Clients need a JWT signed with the private half of this PEM public key: RSA (RS256,
    /// RS384, RS512), EC P-256 (ES256) or Ed25519 (EdDSA) [default: clients are not authenticated]
    #[arg(long, env = "CORECAST_JWT_PUBLIC_KEY_FILE", value_name = "FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// The audience client tokens must name in "aud" [default: none; a token naming one is refused]
    #[arg(long, env = "CORECAST_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// The issuer client tokens must name in "iss" [default: any]
    #[arg(long, env = "CORECAST_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Clock difference allowed on a token's "exp" and "nbf" [default: 5s]
    #[arg(long, env = "CORECAST_JWT_LEEWAY", value_name = "DURATION", value_parser = parse_duration)]
    pub jwt_leeway: Option<Duration>,
    /// How long a connection whose token expired stays open for a fresh one ({"refresh":..}
    /// in pubsub mode) before it is closed with 1008 [default: 30s]
    #[arg(long, env = "CORECAST_JWT_REFRESH_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub jwt_refresh_grace: Option<Duration>,
    /// Token refusals one client address may cause per second on one shard; past it the
    /// address gets 429 without a token check; 0: no limit [default: 20]
    #[arg(long, env = "CORECAST_JWT_MAX_REFUSALS", value_name = "N", value_parser = parse_number::<u32>)]
    pub jwt_max_refusals: Option<u32>,
    /// Comma-separated Origin values allowed to connect [default: any]
    #[arg(long, env = "CORECAST_ORIGINS", value_name = "LIST")]
    pub origins: Option<String>,
    /// Comma-separated subprotocols the routes speak, most preferred first; a client offering
    /// one gets the first of these it offered [default: none]
    #[arg(long, env = "CORECAST_SUBPROTOCOLS", value_name = "LIST", value_parser = parse_subprotocols)]
    pub subprotocols: Option<String>,
    /// permessage-deflate for clients that offer it: on or off [default: on]
    #[arg(long, env = "CORECAST_DEFLATE", value_name = "on|off", value_parser = parse_switch)]
    pub deflate: Option<bool>,
    /// Compression level, 0 (fastest) to 9 (smallest) [default: 1]
    #[arg(long, env = "CORECAST_DEFLATE_LEVEL", value_name = "N", value_parser = parse_level)]
    pub deflate_level: Option<u32>,
    /// Messages shorter than this go out uncompressed [default: 128B]
    #[arg(long, env = "CORECAST_DEFLATE_MIN_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub deflate_min_size: Option<usize>,
    /// Serve wss:// with this PEM certificate chain (with --tls-key); SIGHUP reloads both
    #[arg(long, env = "CORECAST_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "CORECAST_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Upgrades beyond this many open connections get 503 [default: no limit]
    #[arg(long, env = "CORECAST_MAX_CONNECTIONS", value_name = "N", value_parser = parse_number::<usize>)]
    pub max_connections: Option<usize>,
    /// After SIGINT/SIGTERM, how long to keep answering 503 (new upgrades and /healthz)
    /// before closing clients [default: 0s]
    #[arg(long, env = "CORECAST_DRAIN_DELAY", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_delay: Option<Duration>,
    /// Time to close every client on SIGINT/SIGTERM [default: 10s]
    #[arg(long, env = "CORECAST_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Time a client has to complete its upgrade request [default: 5s]
    #[arg(long, env = "CORECAST_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// How often each client is pinged; each client's pings fall at a point of their own
    /// within the interval [default: 25s, for many idle clients; the library's is 1s]
    #[arg(long, env = "CORECAST_PING_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Silence after which a client is dropped; silence while the server itself was behind
    /// is not held against it [default: 3 × ping interval, 75s]
    #[arg(long, env = "CORECAST_READ_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub read_idle_timeout: Option<Duration>,
    /// Longest a write may stall before the client is dropped [default: 10s]
    #[arg(long, env = "CORECAST_WRITE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub write_timeout: Option<Duration>,
    /// Largest message a client may send; bigger ones get close 1009 [default: 1MiB]
    #[arg(long, env = "CORECAST_MAX_MESSAGE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub max_message_size: Option<usize>,
    /// Messages a client may have undelivered before new ones wait [default: 100]
    #[arg(long, env = "CORECAST_SEND_QUEUE_SIZE", value_name = "N", value_parser = parse_number::<usize>)]
    pub send_queue_size: Option<usize>,
    /// The kernel's send buffer per client socket (SO_SNDBUF), e.g. 64KiB, so a slow reader's
    /// backlog waits in its send queue, where --slow-consumers applies, not in the kernel
    /// [default: the kernel's, which grows up to net.ipv4.tcp_wmem's maximum]
    #[arg(long, env = "CORECAST_SOCKET_SEND_BUFFER", value_name = "SIZE", value_parser = parse_size)]
    pub socket_send_buffer: Option<usize>,
    /// Longest a shard holds its writes so that more messages share each one; it holds only
    /// while writing many clients a message or so each, and only while that gathers more per
    /// write; 0 writes at once [default: 1ms]
    #[arg(long, env = "CORECAST_WRITE_COALESCING", value_name = "DURATION", value_parser = parse_coalescing)]
    pub write_coalescing: Option<Duration>,
    /// Topics one connection may subscribe to at once (pubsub mode) [default: 1000]
    #[arg(long, env = "CORECAST_MAX_TOPICS", value_name = "N", value_parser = parse_number::<usize>)]
    pub max_topics: Option<usize>,
    /// Topics that keep their last publications, so a client that comes back gets what it
    /// missed (pubsub mode): comma-separated PATTERN=SIZE/TTL rules, PATTERN an exact topic or
    /// a prefix ending in *, e.g. scores.*=100/60s,chat.lobby=1000/10m; the first matching
    /// rule wins [default: none]
    #[arg(long, env = "CORECAST_HISTORY", value_name = "LIST", value_parser = parse_history)]
    pub history: Option<HistoryRules>,
    /// What a client's full send queue does with a topic's publications (pubsub mode):
    /// comma-separated PATTERN=POLICY rules, POLICY one of teardown (wait, then drop the
    /// client), drop-oldest, keep-latest (one per publisher's key), e.g.
    /// prices.*=keep-latest,feed=drop-oldest; the first matching rule wins [default: teardown
    /// for every topic]
    #[arg(long, env = "CORECAST_SLOW_CONSUMERS", value_name = "LIST", value_parser = parse_slow_consumers)]
    pub slow_consumers: Option<SlowConsumerRules>,
    /// Messages per second one client may send, in bursts of up to as many; past it messages
    /// are refused, and a client that keeps on is closed with 1008; 0: no limit [default: 100]
    #[arg(long, env = "CORECAST_CLIENT_MESSAGE_RATE", value_name = "N", value_parser = parse_number::<u32>)]
    pub client_message_rate: Option<u32>,
    /// Payload bytes per second one client may send, in bursts of up to as many (a larger
    /// message needs a full bucket); past it messages are refused like past
    /// --client-message-rate; 0: no limit [default: 1MiB]
    #[arg(long, env = "CORECAST_CLIENT_BYTE_RATE", value_name = "SIZE", value_parser = parse_byte_rate)]
    pub client_byte_rate: Option<u32>,
    /// Retry periods a message waits for room in a full queue [default: 5]
    #[arg(long, env = "CORECAST_MAX_SEND_RETRY", value_name = "N", value_parser = parse_number::<u32>)]
    pub max_send_retry: Option<u32>,
    /// Length of one retry period [default: 20ms]
    #[arg(long, env = "CORECAST_RETRY_SEND_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub retry_send_timeout: Option<Duration>,
    /// Cluster mode: the NATS server nodes share, e.g. nats://127.0.0.1:4222 [default: off]
    #[arg(long, env = "CORECAST_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// Cluster mode: the cluster's name (NATS subject prefix) [default: corecast]
    #[arg(long, env = "CORECAST_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Cluster mode: this node's id [default: host name and port]
    #[arg(long, env = "CORECAST_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// Backend: POST client events to this URL (http://host:port/path), in batches, retried
    /// while it fails [default: none]
    #[arg(long, env = "CORECAST_WEBHOOK", value_name = "URL")]
    pub webhook: Option<String>,
    /// Backend: the events --webhook gets, comma-separated: connect, disconnect, message,
    /// subscribe, unsubscribe, or all [default: all]
    #[arg(long, env = "CORECAST_WEBHOOK_EVENTS", value_name = "LIST", value_parser = parse_events)]
    pub webhook_events: Option<EventSet>,
    /// Backend: the events published to NATS, each on PREFIX.TYPE (--nats-events-subject), named as for
    /// --webhook-events [default: none]
    #[arg(long, env = "CORECAST_NATS_EVENTS", value_name = "LIST", value_parser = parse_events)]
    pub nats_events: Option<EventSet>,
    /// Backend: the NATS server --nats-events go to [default: the --cluster URL]
    #[arg(long, env = "CORECAST_NATS_EVENTS_URL", value_name = "URL")]
    pub nats_events_url: Option<String>,
    /// Backend: the subject prefix of --nats-events [default: CLUSTER-NAME.events, i.e.
    /// corecast.events]
    #[arg(long, env = "CORECAST_NATS_EVENTS_SUBJECT", value_name = "PREFIX")]
    pub nats_events_subject: Option<String>,
    /// Backend: ask this URL about every upgrade: who the client is and what it may do, or a
    /// refusal [default: none]
    #[arg(long, env = "CORECAST_HOOK_CONNECT", value_name = "URL")]
    pub hook_connect: Option<String>,
    /// Backend: ask this URL before a client joins a topic (pubsub mode) [default: none]
    #[arg(long, env = "CORECAST_HOOK_SUBSCRIBE", value_name = "URL")]
    pub hook_subscribe: Option<String>,
    /// Backend: ask this URL before a client's publish goes out: allow, refuse or replace the
    /// data (pubsub mode) [default: none]
    #[arg(long, env = "CORECAST_HOOK_PUBLISH", value_name = "URL")]
    pub hook_publish: Option<String>,
    /// Backend: send clients' {"rpc":..} requests to this URL (pubsub mode) [default: none]
    #[arg(long, env = "CORECAST_HOOK_RPC", value_name = "URL")]
    pub hook_rpc: Option<String>,
    /// Backend: how long one call may take, connecting included; a hook past it is answered
    /// "backend unavailable", a webhook delivery is retried [default: 2s]
    #[arg(long, env = "CORECAST_BACKEND_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub backend_timeout: Option<Duration>,
    /// Backend: hook calls one shard may have waiting; past it clients are answered "backend
    /// busy" [default: 256]
    #[arg(long, env = "CORECAST_BACKEND_MAX_IN_FLIGHT", value_name = "N", value_parser = parse_positive)]
    pub backend_max_in_flight: Option<usize>,
    /// Backend: events one shard holds for the webhook; past it new events are dropped and
    /// counted [default: 10000]
    #[arg(long, env = "CORECAST_BACKEND_QUEUE", value_name = "N", value_parser = parse_positive)]
    pub backend_queue: Option<usize>,
    /// Backend: every webhook and hook call carries "Authorization: Bearer SECRET", the
    /// secret being this file's bytes, one trailing newline ignored [default: none]
    #[arg(long, env = "CORECAST_BACKEND_SECRET_FILE", value_name = "FILE")]
    pub backend_secret_file: Option<PathBuf>,
    /// A TOML file with any of these settings
    #[arg(long, env = "CORECAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where the HTTP API listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiListen {
    /// No HTTP API.
    Off,
    /// On this address.
    On(SocketAddr),
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn parse_api_listen(s: &str) -> Result<ApiListen, String> {
    if matches!(s, "off" | "none" | "") {
        return Ok(ApiListen::Off);
    }
    s.parse()
        .map(ApiListen::On)
        .map_err(|_| format!("invalid address {s:?}: expected IP:PORT or \"off\""))
}

/// An IP address and port; a host name is not looked up.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("invalid address {s:?}: expected IP:PORT, like 0.0.0.0:8080 or [::1]:8080")
    })
}

fn parse_number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("invalid number {s:?}: expected a whole number, like 100"))
}

/// A byte rate: a size (`64KiB`, `1MiB`, `0`) a client may send each second, at most 4 GiB - 1.
fn parse_byte_rate(s: &str) -> Result<u32, String> {
    let size = parse_size(s)?;
    u32::try_from(size)
        .map_err(|_| format!("invalid byte rate {s:?}: at most 4GiB a second (or 0 for no limit)"))
}

/// The items of a comma-separated flag, trimmed, empty ones dropped.
fn list(flag: &Option<String>) -> Vec<String> {
    flag.iter()
        .flat_map(|o| o.split(','))
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect()
}

/// A list of backend events: `message,connect`, or `all`; at least one.
fn parse_events(s: &str) -> Result<EventSet, String> {
    let events = EventSet::parse(s)?;
    if events.is_empty() {
        return Err(format!(
            "invalid event list {s:?}: expected connect, disconnect, message, subscribe, \
             unsubscribe or all, comma-separated"
        ));
    }
    Ok(events)
}

/// A duration over zero.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!(
            "invalid duration {s:?}: must be more than 0, like 2s"
        )),
        d => Ok(d),
    }
}

/// The most a shard may hold its writes: 0 (off) to 100 ms. Longer would be a latency no
/// event stream wants, and gathers little more than 100 ms does.
fn parse_coalescing(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d > Duration::from_millis(100) => Err(format!(
            "invalid duration {s:?}: at most 100ms, like 1ms (0 writes at once)"
        )),
        d => Ok(d),
    }
}

/// A whole number over zero.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid number {s:?}: expected a whole number from 1, like 100"
        )),
    }
}

/// One `--history` rule: topics matching `pattern` keep their last `size` publications, each
/// for at most `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// An exact topic name, or a prefix ending in `*`.
    pub pattern: String,
    /// Publications kept, at least 1.
    pub size: usize,
    /// How long one is kept, more than 0.
    pub ttl: Duration,
}

/// The `--history` rules, in the order given (the first matching one wins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryRules(pub Vec<HistoryRule>);

/// The `--slow-consumers` rules, in the order given (the first matching one wins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlowConsumerRules(pub Vec<(String, SlowConsumerPolicy)>);

/// What a `--history` rule looks like, for the errors.
const HISTORY_FORM: &str = "expected PATTERN=SIZE/TTL, like scores.*=100/60s";

/// What a `--slow-consumers` rule looks like, for the errors.
const SLOW_CONSUMERS_FORM: &str = "expected PATTERN=POLICY, like prices.*=keep-latest";

/// `--history`: comma-separated `PATTERN=SIZE/TTL` rules, at least one.
fn parse_history(s: &str) -> Result<HistoryRules, String> {
    let rules = parse_rules(s, "history", HISTORY_FORM, |item, setting| {
        parse_retention(item, setting)
    })?;
    let rules = rules
        .into_iter()
        .map(|(pattern, (size, ttl))| HistoryRule { pattern, size, ttl });
    Ok(HistoryRules(rules.collect()))
}

/// `--slow-consumers`: comma-separated `PATTERN=POLICY` rules, at least one.
fn parse_slow_consumers(s: &str) -> Result<SlowConsumerRules, String> {
    let rules = parse_rules(s, "slow-consumers", SLOW_CONSUMERS_FORM, |item, policy| {
        policy
            .trim()
            .parse::<SlowConsumerPolicy>()
            .map_err(|e| format!("invalid slow-consumers rule {item:?}: {e}"))
    })?;
    Ok(SlowConsumerRules(rules))
}

/// Comma-separated `PATTERN=SETTING` rules, at least one, no pattern twice; `what` names the
/// flag and `form` shows a rule in the errors.
fn parse_rules<T>(
    s: &str,
    what: &str,
    form: &str,
    setting: impl Fn(&str, &str) -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    let mut rules: Vec<(String, T)> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| format!("invalid {what} rule {item:?}: {why}");
        let (pattern, value) = item.rsplit_once('=').ok_or_else(|| bad(form))?;
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(bad("the pattern is empty"));
        }
        if pattern.trim_end_matches('*').contains('*') || pattern.ends_with("**") {
            return Err(bad("a * may only end the pattern, as in scores.*"));
        }
        if pattern.len() > corecast::topics::MAX_TOPIC_LEN {
            return Err(bad(&format!(
                "the pattern is over {} bytes, the longest topic name",
                corecast::topics::MAX_TOPIC_LEN
            )));
        }
        if rules.iter().any(|(p, _)| p == pattern) {
            return Err(bad(&format!("the pattern {pattern:?} is given twice")));
        }
        rules.push((pattern.to_string(), setting(item, value)?));
    }
    if rules.is_empty() {
        return Err(format!(
            "invalid {what} list {s:?}: {form}, comma-separated"
        ));
    }
    Ok(rules)
}

/// A `--history` rule's `SIZE/TTL`.
fn parse_retention(item: &str, retention: &str) -> Result<(usize, Duration), String> {
    let bad = |why: &str| format!("invalid history rule {item:?}: {why}");
    let (size, ttl) = retention.split_once('/').ok_or_else(|| bad(HISTORY_FORM))?;
    let size = match size.trim().parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => return Err(bad("SIZE must be a whole number from 1, like 100")),
    };
    let ttl = parse_duration(ttl).map_err(|e| bad(&format!("TTL: {e}")))?;
    if ttl.is_zero() {
        return Err(bad("TTL must be more than 0, like 60s"));
    }
    Ok((size, ttl))
}

fn parse_subprotocols(s: &str) -> Result<String, String> {
    match s
        .split(',')
        .map(str::trim)
        .find(|p| !p.is_empty() && !corecast::http::is_token(p))
    {
        Some(bad) => Err(format!(
            "invalid subprotocol {bad:?}: expected an HTTP token such as chat.v2"
        )),
        None => Ok(s.to_string()),
    }
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

fn parse_level(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(level @ 0..=9) => Ok(level),
        _ => Err(format!(
            "expected a compression level from 0 to 9, got {s:?}"
        )),
    }
}

fn parse_shards(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid shards {s:?}: expected a number from 1 to 65535"
        )),
    }
}

/// Everything the binary needs, defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub shards: Option<usize>,
    pub mode: Mode,
    pub api_listen: ApiListen,
    pub api_token: Option<String>,
    /// Client tokens: the verifier, from --jwt-secret-file or --jwt-public-key-file; `None`
    /// lets clients in unauthenticated.
    pub auth: Option<Verifier>,
    pub origins: Vec<String>,
    /// `SO_SNDBUF` of client sockets (`Builder::socket_send_buffer`).
    pub socket_send_buffer: Option<usize>,
    /// `Builder::write_coalescing`: the most a shard holds its writes.
    pub write_coalescing: Duration,
    pub max_connections: Option<usize>,
    /// After the first SIGINT/SIGTERM: time spent draining (503s) before the shutdown starts.
    pub drain_delay: Duration,
    pub shutdown_timeout: Duration,
    pub handshake_timeout: Duration,
    pub config: Config,
    /// Cluster mode: the NATS URL, the cluster's name, this node's id.
    pub cluster: Option<ClusterSettings>,
    /// wss://: the certificate chain and key files.
    pub tls: Option<TlsConfig>,
    /// The application's backend: the webhook, events to NATS, the hooks; `None` when none
    /// of them is set.
    pub backend: Option<Backend>,
    /// Topics that keep history (`Builder::history`), in order: the first matching rule wins.
    pub history: Vec<HistoryRule>,
    /// Topics whose full queues drop publications (`Builder::slow_consumers`), in order.
    pub slow_consumers: Vec<(String, SlowConsumerPolicy)>,
}

/// Cluster mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub url: String,
    pub name: String,
    pub node_id: String,
}

impl Settings {
    /// Reads flags and environment, then the file they name, and applies defaults.
    /// Every error is one line: the value, and what is allowed.
    pub fn load() -> Result<Settings, String> {
        Self::load_from(std::env::args_os().collect()).map_err(|e| one_line(&e))
    }

    fn load_from(argv: Vec<std::ffi::OsString>) -> Result<Settings, String> {
        let mut args = match Args::try_parse_from(&argv) {
            Ok(args) => args,
            // --help and --version: the answer on stdout and status 0, as clap prints them.
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => return Err(clap_error_line(&e, &argv)),
        };
        if let Some(path) = args.config.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            fill_from_file(&mut args, &text)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
        match (&args.tls_cert, &args.tls_key) {
            (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
            _ => {}
        }
        let auth = verifier(&args)?;
        let backend = backend(&args)?;
        Ok(Settings {
            auth,
            backend,
            ..Settings::from_args(args)
        })
    }

    fn from_args(a: Args) -> Settings {
        let listen = a
            .listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
        let cluster = a
            .cluster
            .filter(|url| !url.is_empty())
            .map(|url| ClusterSettings {
                url,
                name: a.cluster_name.unwrap_or_else(|| "corecast".into()),
                // Port 0 is picked at start, so the process id tells such nodes apart.
                node_id: a.node_id.unwrap_or_else(|| match listen.port() {
                    0 => format!(
                        "{}-pid{}",
                        corecast::cluster::host_name(),
                        std::process::id()
                    ),
                    port => format!("{}-{port}", corecast::cluster::host_name()),
                }),
            });
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)),
            _ => None,
        };
        Settings {
            listen,
            cluster,
            tls,
            shards: a.shards.map(usize::from),
            mode: a.mode.unwrap_or(Mode::Push),
            api_listen: a
                .api_listen
                .unwrap_or(ApiListen::On(SocketAddr::from(([127, 0, 0, 1], 8081)))),
            api_token: a.api_token.filter(|t| !t.is_empty()),
            auth: None,
            backend: None,
            history: a.history.map(|h| h.0).unwrap_or_default(),
            slow_consumers: a.slow_consumers.map(|r| r.0).unwrap_or_default(),
            origins: list(&a.origins),
            max_connections: a.max_connections.filter(|n| *n > 0),
            socket_send_buffer: a.socket_send_buffer.filter(|n| *n > 0),
            write_coalescing: a
                .write_coalescing
                .unwrap_or(corecast::DEFAULT_WRITE_COALESCING),
            drain_delay: a.drain_delay.unwrap_or(Duration::ZERO),
            shutdown_timeout: a.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
            handshake_timeout: a.handshake_timeout.unwrap_or(Duration::from_secs(5)),
            // Zero fields take the library's defaults, as in Go.
            config: Config {
                // A fan-out server's keep-alive, not the Go helper's 1 s (docs/operating.md);
                // the idle timeout follows it (3 ×) unless set.
                ping_interval: a.ping_interval.unwrap_or(Config::FAN_OUT_PING_INTERVAL),
                read_idle_timeout: a.read_idle_timeout.unwrap_or_default(),
                write_timeout: a.write_timeout.unwrap_or_default(),
                max_message_size: a.max_message_size.unwrap_or_default(),
                send_queue_size: a.send_queue_size.unwrap_or_default(),
                max_send_retry: a.max_send_retry.unwrap_or_default(),
                retry_send_timeout: a.retry_send_timeout.unwrap_or_default(),
                max_topics: a.max_topics.unwrap_or_default(),
                client_message_rate: a.client_message_rate.unwrap_or(DEFAULT_CLIENT_MESSAGE_RATE),
                client_byte_rate: a.client_byte_rate.unwrap_or(DEFAULT_CLIENT_BYTE_RATE),
                recover_handler: None,
                subprotocols: list(&a.subprotocols),
                deflate: a.deflate.unwrap_or(true).then(|| Deflate {
                    level: a.deflate_level.unwrap_or(Deflate::DEFAULT_LEVEL),
                    min_size: a.deflate_min_size.unwrap_or(Deflate::DEFAULT_MIN_SIZE),
                }),
            },
        }
    }
}

/// The client-token verifier the `--jwt-*` settings describe, reading its key file.
fn verifier(a: &Args) -> Result<Option<Verifier>, String> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let verifier = match (&a.jwt_secret_file, &a.jwt_public_key_file) {
        (Some(_), Some(_)) => {
            return Err(
                "--jwt-secret-file and --jwt-public-key-file exclude each other: give one".into(),
            )
        }
        (Some(path), None) => {
            Verifier::hmac(&read_secret(path)?).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, Some(path)) => Verifier::public_key_pem(&read(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        (None, None) => {
            if a.jwt_audience.is_some()
                || a.jwt_issuer.is_some()
                || a.jwt_leeway.is_some()
                || a.jwt_refresh_grace.is_some()
                || a.jwt_max_refusals.is_some()
            {
                return Err("--jwt-audience, --jwt-issuer, --jwt-leeway, --jwt-refresh-grace and --jwt-max-refusals need --jwt-secret-file or --jwt-public-key-file".into());
            }
            return Ok(None);
        }
    };
    let mut verifier = verifier
        .leeway(a.jwt_leeway.unwrap_or(corecast::auth::DEFAULT_LEEWAY))
        .refresh_grace(
            a.jwt_refresh_grace
                .unwrap_or(corecast::auth::DEFAULT_REFRESH_GRACE),
        )
        .refusals_per_address(
            a.jwt_max_refusals
                .unwrap_or(corecast::auth::DEFAULT_REFUSALS_PER_ADDRESS),
        );
    if let Some(aud) = a.jwt_audience.as_ref().filter(|s| !s.is_empty()) {
        verifier = verifier.audience(aud);
    }
    if let Some(iss) = a.jwt_issuer.as_ref().filter(|s| !s.is_empty()) {
        verifier = verifier.issuer(iss);
    }
    Ok(Some(verifier))
}

/// Reads a secret file: its bytes, one trailing newline (LF or CRLF) dropped.
fn read_secret(path: &PathBuf) -> Result<Vec<u8>, String> {
    let mut secret =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    Ok(secret)
}

/// The backend the `--webhook`, `--nats-events*`, `--hook-*` and `--backend-*` settings
/// describe, reading its secret file; `None` when nothing sends to it.
fn backend(a: &Args) -> Result<Option<Backend>, String> {
    let config = |flag: &str, e: corecast::Error| match e {
        corecast::Error::Config(why) => format!("{flag}: {why}"),
        other => format!("{flag}: {other}"),
    };
    let mut backend = Backend::new();
    let mut used = false;
    if let Some(url) = &a.webhook {
        let events = a.webhook_events.unwrap_or(EventSet::ALL);
        backend = backend
            .webhook(url, events)
            .map_err(|e| config("--webhook", e))?;
        used = true;
    } else if a.webhook_events.is_some() {
        return Err("--webhook-events needs --webhook".into());
    }
    match a.nats_events {
        Some(events) => {
            let cluster = a.cluster.as_ref().filter(|u| !u.is_empty());
            let Some(url) = a.nats_events_url.as_ref().or(cluster) else {
                return Err(
                    "--nats-events needs --nats-events-url, or --cluster to send to its NATS server"
                        .into(),
                );
            };
            let subject = match &a.nats_events_subject {
                Some(subject) => subject.clone(),
                None => format!("{}.events", a.cluster_name.as_deref().unwrap_or("corecast")),
            };
            backend = backend
                .nats_events(url, &subject, events)
                .map_err(|e| config("--nats-events-subject", e))?;
            used = true;
        }
        None if a.nats_events_url.is_some() || a.nats_events_subject.is_some() => {
            return Err("--nats-events-url and --nats-events-subject need --nats-events".into())
        }
        None => {}
    }
    let hooks = [
        (Hook::Connect, "--hook-connect", &a.hook_connect),
        (Hook::Subscribe, "--hook-subscribe", &a.hook_subscribe),
        (Hook::Publish, "--hook-publish", &a.hook_publish),
        (Hook::Rpc, "--hook-rpc", &a.hook_rpc),
    ];
    for (hook, flag, url) in hooks {
        if let Some(url) = url {
            backend = backend.hook(hook, url).map_err(|e| config(flag, e))?;
            used = true;
        }
    }
    if !used {
        if a.backend_timeout.is_some()
            || a.backend_max_in_flight.is_some()
            || a.backend_queue.is_some()
            || a.backend_secret_file.is_some()
        {
            return Err(
                "--backend-timeout, --backend-max-in-flight, --backend-queue and \
                        --backend-secret-file need --webhook, --nats-events or a --hook-* URL"
                    .into(),
            );
        }
        return Ok(None);
    }
    if let Some(path) = &a.backend_secret_file {
        let secret = read_secret(path)?;
        let secret = String::from_utf8(secret)
            .ok()
            .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
            .ok_or_else(|| {
                format!(
                    "{}: the secret must be one non-empty line of text without control characters",
                    path.display()
                )
            })?;
        backend = backend.authorization(format!("Bearer {secret}"));
    }
    backend = backend
        .timeout(a.backend_timeout.unwrap_or(Backend::DEFAULT_TIMEOUT))
        .max_in_flight(
            a.backend_max_in_flight
                .unwrap_or(Backend::DEFAULT_MAX_IN_FLIGHT),
        )
        .queue_capacity(a.backend_queue.unwrap_or(Backend::DEFAULT_QUEUE_CAPACITY));
    Ok(Some(backend))
}

/// A clap error as one line: clap's own message (its first line), with the flag it suggests,
/// and the environment variable in place of the flag when the value came from there. Without
/// clap's usage block, which the docs promise not to print.
fn clap_error_line(e: &clap::Error, argv: &[std::ffi::OsString]) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;

    let text = e.render().to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid arguments");
    let mut line = first
        .strip_prefix("error:")
        .unwrap_or(first)
        .trim()
        .to_string();
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    if let Some(suggested) = context(ContextKind::SuggestedArg) {
        line.push_str(&format!(" (did you mean '{suggested}'?)"));
    } else if e.kind() == ErrorKind::UnknownArgument {
        line.push_str(" (corecast --help lists every flag)");
    }
    // "--write-timeout <DURATION>" names the flag even when CORECAST_WRITE_TIMEOUT set it.
    if let Some(arg) = context(ContextKind::InvalidArg) {
        let flag = arg.split_whitespace().next().unwrap_or(arg);
        let on_command_line = argv.iter().skip(1).any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        });
        let env = Args::command()
            .get_arguments()
            .find(|a| {
                a.get_long()
                    .is_some_and(|l| flag.strip_prefix("--") == Some(l))
            })
            .and_then(|a| a.get_env().map(|v| v.to_string_lossy().into_owned()));
        if let (false, Some(env)) = (on_command_line, env) {
            line = line.replacen(&format!("'{arg}'"), &env, 1);
        }
    }
    line
}

/// Joins a message that spans lines (a file's error, say) into one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fills every setting still unset (by flag or environment) from the TOML text. Keys are the
/// flag names, with `-` or `_`; an unknown key is an error, so a typo is not silently ignored.
fn fill_from_file(args: &mut Args, text: &str) -> Result<(), String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The message alone does not say where; the line does.
        match e.span() {
            Some(span) => {
                let line = 1 + text.get(..span.start).unwrap_or("").matches('\n').count();
                format!("line {line}: {}", e.message())
            }
            None => e.message().to_string(),
        }
    })?;
    for (key, value) in &table {
        let raw = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{key}: expected a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => return Err(format!("{key}: unsupported value {}", other.type_str())),
        };
        let at = |e: String| format!("{key}: {e}");
        macro_rules! fill {
            ($field:ident, $parse:expr) => {
                if args.$field.is_none() {
                    args.$field = Some($parse(&raw).map_err(at)?);
                }
            };
        }
        match key.replace('_', "-").as_str() {
            "listen" => fill!(listen, parse_addr),
            "shards" => fill!(shards, parse_shards),
            "mode" => fill!(mode, parse_mode),
            "api-listen" => fill!(api_listen, parse_api_listen),
            "api-token" => fill!(api_token, |s: &str| Ok::<_, String>(s.to_string())),
            "origins" => fill!(origins, |s: &str| Ok::<_, String>(s.to_string())),
            "jwt-secret-file" => {
                fill!(jwt_secret_file, |s: &str| Ok::<_, String>(PathBuf::from(s)))
            }
            "jwt-public-key-file" => {
                fill!(jwt_public_key_file, |s: &str| Ok::<_, String>(
                    PathBuf::from(s)
                ))
            }
            "jwt-audience" => fill!(jwt_audience, |s: &str| Ok::<_, String>(s.to_string())),
            "jwt-issuer" => fill!(jwt_issuer, |s: &str| Ok::<_, String>(s.to_string())),
            "jwt-leeway" => fill!(jwt_leeway, parse_duration),
            "jwt-refresh-grace" => fill!(jwt_refresh_grace, parse_duration),
            "jwt-max-refusals" => fill!(jwt_max_refusals, parse_number::<u32>),
            "subprotocols" => fill!(subprotocols, parse_subprotocols),
            "deflate" => fill!(deflate, parse_switch),
            "deflate-level" => fill!(deflate_level, parse_level),
            "deflate-min-size" => fill!(deflate_min_size, parse_size),
            "tls-cert" => fill!(tls_cert, |s: &str| Ok::<_, String>(PathBuf::from(s))),
            "tls-key" => fill!(tls_key, |s: &str| Ok::<_, String>(PathBuf::from(s))),
            "max-connections" => fill!(max_connections, parse_number::<usize>),
            "socket-send-buffer" => fill!(socket_send_buffer, parse_size),
            "write-coalescing" => fill!(write_coalescing, parse_coalescing),
            "drain-delay" => fill!(drain_delay, parse_duration),
            "shutdown-timeout" => fill!(shutdown_timeout, parse_duration),
            "handshake-timeout" => fill!(handshake_timeout, parse_duration),
            "ping-interval" => fill!(ping_interval, parse_duration),
            "read-idle-timeout" => fill!(read_idle_timeout, parse_duration),
            "write-timeout" => fill!(write_timeout, parse_duration),
            "max-message-size" => fill!(max_message_size, parse_size),
            "send-queue-size" => fill!(send_queue_size, parse_number::<usize>),
            "max-topics" => fill!(max_topics, parse_number::<usize>),
            "history" => fill!(history, parse_history),
            "slow-consumers" => fill!(slow_consumers, parse_slow_consumers),
            "client-message-rate" => fill!(client_message_rate, parse_number::<u32>),
            "client-byte-rate" => fill!(client_byte_rate, parse_byte_rate),
            "max-send-retry" => fill!(max_send_retry, parse_number::<u32>),
            "retry-send-timeout" => fill!(retry_send_timeout, parse_duration),
            "cluster" => fill!(cluster, |s: &str| Ok::<_, String>(s.to_string())),
            "cluster-name" => fill!(cluster_name, |s: &str| Ok::<_, String>(s.to_string())),
            "node-id" => fill!(node_id, |s: &str| Ok::<_, String>(s.to_string())),
            "webhook" => fill!(webhook, |s: &str| Ok::<_, String>(s.to_string())),
            "webhook-events" => fill!(webhook_events, parse_events),
            "nats-events" => fill!(nats_events, parse_events),
            "nats-events-url" => fill!(nats_events_url, |s: &str| Ok::<_, String>(s.to_string())),
            "nats-events-subject" => {
                fill!(nats_events_subject, |s: &str| Ok::<_, String>(
                    s.to_string()
                ))
            }
            "hook-connect" => fill!(hook_connect, |s: &str| Ok::<_, String>(s.to_string())),
            "hook-subscribe" => fill!(hook_subscribe, |s: &str| Ok::<_, String>(s.to_string())),
            "hook-publish" => fill!(hook_publish, |s: &str| Ok::<_, String>(s.to_string())),
            "hook-rpc" => fill!(hook_rpc, |s: &str| Ok::<_, String>(s.to_string())),
            "backend-timeout" => fill!(backend_timeout, parse_timeout),
            "backend-max-in-flight" => fill!(backend_max_in_flight, parse_positive),
            "backend-queue" => fill!(backend_queue, parse_positive),
            "backend-secret-file" => {
                fill!(backend_secret_file, |s: &str| Ok::<_, String>(
                    PathBuf::from(s)
                ))
            }
            other => return Err(format!("unknown setting {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
