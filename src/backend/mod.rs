//! The application's backend, as the server talks to it: events forwarded to it (a webhook,
//! NATS subjects) and hooks that ask it (connect, subscribe, publish, RPC), over HTTP.
//!
//! [`Backend`] says where the backend listens and the bounds on talking to it; a server takes
//! one with `Builder::backend`. Each shard then keeps its own outbox, HTTP connections and
//! count of hook calls in flight: a shard never waits for the backend, and a backend that is
//! slow or down costs each shard bounded memory. docs/backend.md has the JSON, the hook
//! contracts and the failure rules. Not the pure JSON (`backend::wire`) nor the HTTP client
//! (`backend::client`).

pub(crate) mod client;
pub(crate) mod link;
#[cfg(feature = "cluster")]
pub(crate) mod nats;
pub(crate) mod outbox;
pub(crate) mod wire;

use std::fmt;
use std::time::Duration;

use crate::Error;
use client::Endpoint;
use outbox::RetryPolicy;

pub use wire::{EventKind, EventSet, Verdict};

/// The hooks the backend may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Before an upgrade: who the client is and what it may do, or a refusal.
    Connect,
    /// Before a client joins a topic.
    Subscribe,
    /// Before a client's publish goes out: allow, refuse or replace the data.
    Publish,
    /// A client's request that only the backend answers.
    Rpc,
}

impl Hook {
    /// Every hook.
    pub const ALL: [Hook; 4] = [Hook::Connect, Hook::Subscribe, Hook::Publish, Hook::Rpc];

    /// Its name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Subscribe => "subscribe",
            Hook::Publish => "publish",
            Hook::Rpc => "rpc",
        }
    }
}

/// Where events go over NATS: `<subject>.<type>` (`corecast.events.message`, ...).
#[derive(Debug, Clone)]
pub(crate) struct NatsEvents {
    /// Read by the NATS events thread, which only a build with cluster mode has.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) url: String,
    pub(crate) subject: String,
    pub(crate) events: EventSet,
}

/// Where the application's backend listens and how the server talks to it. Everything is off
/// until set; the defaults of the bounds suit a backend on the same network.
///
/// ```
/// use corecast::backend::{Backend, EventSet};
///
/// let events = EventSet::parse("message,connect,disconnect").map_err(corecast::Error::Config)?;
/// let backend = Backend::new()
///     .webhook("http://127.0.0.1:3000/events", events)?
///     .subscribe_hook("http://127.0.0.1:3000/subscribe")?
///     .timeout(std::time::Duration::from_secs(2));
/// # Ok::<(), corecast::Error>(())
/// ```
#[derive(Clone)]
pub struct Backend {
    pub(crate) webhook: Option<Endpoint>,
    pub(crate) webhook_events: EventSet,
    pub(crate) nats: Option<NatsEvents>,
    pub(crate) hooks: [Option<Endpoint>; 4],
    pub(crate) timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) batch_max: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) authorization: Option<String>,
}

impl Default for Backend {
    fn default() -> Self {
        Backend::new()
    }
}

impl Backend {
    /// How long one call to the backend may take, connecting included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Hook calls one shard may have in flight; past it a call is refused as busy.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
    /// Events one shard's webhook outbox holds; past it an event is dropped and counted.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
    /// Events in one webhook delivery, at most.
    pub const DEFAULT_BATCH_MAX: usize = 256;

    /// Nothing forwarded, no hooks.
    pub fn new() -> Backend {
        Backend {
            webhook: None,
            webhook_events: EventSet::NONE,
            nats: None,
            hooks: [None, None, None, None],
            timeout: Self::DEFAULT_TIMEOUT,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            batch_max: Self::DEFAULT_BATCH_MAX,
            retry: RetryPolicy {
                retries: 5,
                first_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            },
            authorization: None,
        }
    }

    /// POSTs the `events` to `url` (`http://host:port/path`) in batches: `{"events":[...]}`.
    pub fn webhook(mut self, url: &str, events: EventSet) -> Result<Self, Error> {
        self.webhook = Some(endpoint(url)?);
        self.webhook_events = events;
        Ok(self)
    }

    /// Publishes the `events` to the NATS server at `url`, each on `<subject>.<type>`.
    pub fn nats_events(
        mut self,
        url: &str,
        subject: &str,
        events: EventSet,
    ) -> Result<Self, Error> {
        let token_ok = |t: &str| !t.is_empty() && !t.contains(['*', '>']);
        if !subject.split('.').all(token_ok) || subject.contains(char::is_whitespace) {
            return Err(Error::Config(format!(
                "invalid NATS subject prefix {subject:?}: dot-separated tokens without spaces or wildcards"
            )));
        }
        self.nats = Some(NatsEvents {
            url: url.to_string(),
            subject: subject.to_string(),
            events,
        });
        Ok(self)
    }

    /// Asks `url` about every upgrade (after a token, when the server verifies tokens).
    pub fn connect_hook(self, url: &str) -> Result<Self, Error> {
        self.hook(Hook::Connect, url)
    }

    /// Asks `url` before a client joins a topic (the binary's `--mode pubsub`, or
    /// `Websocket::ask_subscribe`).
    pub fn subscribe_hook(self, url: &str) -> Result<Self, Error> {
        self.hook(Hook::Subscribe, url)
    }

    /// Asks `url` before a client's publish goes out.
    pub fn publish_hook(self, url: &str) -> Result<Self, Error> {
        self.hook(Hook::Publish, url)
    }

    /// Sends clients' RPC requests to `url`.
    pub fn rpc_hook(self, url: &str) -> Result<Self, Error> {
        self.hook(Hook::Rpc, url)
    }

    /// Sets the URL `hook` asks.
    pub fn hook(mut self, hook: Hook, url: &str) -> Result<Self, Error> {
        self.hooks[hook as usize] = Some(endpoint(url)?);
        Ok(self)
    }

    /// How long one call may take, connecting included (default 2 s). Past it a hook is
    /// answered as failed, and a webhook delivery is retried.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Hook calls one shard may have in flight (default 256); past it a call is refused as
    /// busy at once.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Events one shard's webhook outbox holds (default 10,000); past it new events are
    /// dropped and counted.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Events in one webhook delivery, at most (default 256).
    pub fn batch_max(mut self, n: usize) -> Self {
        self.batch_max = n.max(1);
        self
    }

    /// Tries of a failed webhook delivery after the first (default 5), the first wait (100 ms,
    /// doubling) and the longest (5 s).
    pub fn retries(mut self, retries: u32, first_backoff: Duration, max_backoff: Duration) -> Self {
        self.retry = RetryPolicy {
            retries,
            first_backoff,
            max_backoff: max_backoff.max(first_backoff),
        };
        self
    }

    /// An `Authorization` header value sent with every call, so the backend knows the call
    /// comes from this server (`Bearer <secret>`).
    pub fn authorization(mut self, value: impl Into<String>) -> Self {
        self.authorization = Some(value.into());
        self
    }

    /// Whether `hook` is set.
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.hooks[hook as usize].is_some()
    }

    pub(crate) fn endpoint(&self, hook: Hook) -> Option<&Endpoint> {
        self.hooks[hook as usize].as_ref()
    }

    /// Events forwarded anywhere.
    pub(crate) fn forwards(&self) -> EventSet {
        let nats = self.nats.as_ref().map_or(EventSet::NONE, |n| n.events);
        self.webhook_events.union(nats)
    }
}

fn endpoint(url: &str) -> Result<Endpoint, Error> {
    Endpoint::parse(url).map_err(Error::Config)
}

impl fmt::Debug for Backend {
    /// Never shows the authorization value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hooks: Vec<String> = Hook::ALL
            .into_iter()
            .filter_map(|h| Some(format!("{}={}", h.name(), self.endpoint(h)?)))
            .collect();
        f.debug_struct("Backend")
            .field("webhook", &self.webhook.as_ref().map(ToString::to_string))
            .field("webhook_events", &self.webhook_events.to_string())
            .field("nats", &self.nats)
            .field("hooks", &hooks)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_max", &self.batch_max)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish()
    }
}
