//! What one shard holds of the backend: its webhook outbox and the task that delivers it, its
//! queue towards the NATS events thread, its HTTP clients for the hooks, and the count of hook
//! calls in flight. Lives on the shard's thread; nothing here waits on another shard or
//! blocks. Not the JSON (`backend::wire`) nor the transport (`backend::client`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::Client;
use super::outbox::{Outbox, Outcome, Settled};
use super::wire::{self, ConnectVerdict, EventBody, EventKind, Origin, Verdict};
use super::{Backend, Hook};
use crate::metrics::{BackendEvent, HookOutcome, ShardMetrics};
use crate::registry::ShardId;
use crate::shard::link::ShardLinks;
use crate::shard::notify::LocalNotify;
use crate::Error;

/// One event for the NATS events thread: its subject and JSON.
pub(crate) type NatsEvent = (String, Vec<u8>);

/// What every shard's link is made of, shared by all shards.
pub(crate) struct BackendShared {
    pub(crate) config: Arc<Backend>,
    /// Tells this server run's event ids from another's: a retried delivery keeps its id, a
    /// restarted server never reuses one.
    pub(crate) boot: String,
    pub(crate) nats: Option<flume::Sender<NatsEvent>>,
}

impl BackendShared {
    pub(crate) fn new(config: Backend, nats: Option<flume::Sender<NatsEvent>>) -> BackendShared {
        let boot = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        BackendShared {
            config: Arc::new(config),
            boot,
            nats,
        }
    }

    /// The link of shard `shard`; spawns its webhook task on the calling executor.
    pub(crate) fn link(&self, shard: ShardId, links: Arc<ShardLinks>) -> Rc<BackendLink> {
        BackendLink::new(
            Arc::clone(&self.config),
            shard,
            &self.boot,
            self.nats.clone(),
            links,
        )
    }
}

/// One shard's side of the backend.
pub(crate) struct BackendLink {
    config: Arc<Backend>,
    /// Where this shard's counters are.
    links: Arc<ShardLinks>,
    shard: ShardId,
    /// `<boot>-<shard>-`: with a sequence number, each event's unique `id`.
    id_prefix: String,
    seq: Cell<u64>,
    /// The webhook's outbox and client, when there is a webhook.
    webhook: Option<(RefCell<Outbox>, Client)>,
    /// Signalled when the outbox gets its first waiting event.
    wake: LocalNotify,
    /// Signalled after each webhook delivery is settled.
    settled: LocalNotify,
    /// Towards the NATS events thread, when events go to NATS.
    nats: Option<flume::Sender<NatsEvent>>,
    hooks: [Option<Client>; 4],
    in_flight: Cell<usize>,
}

impl BackendLink {
    fn new(
        config: Arc<Backend>,
        shard: ShardId,
        boot: &str,
        nats: Option<flume::Sender<NatsEvent>>,
        links: Arc<ShardLinks>,
    ) -> Rc<BackendLink> {
        let webhook = config.webhook.clone().map(|endpoint| {
            let outbox = Outbox::new(config.queue_capacity, config.batch_max, config.retry);
            (RefCell::new(outbox), Client::new(endpoint))
        });
        let hooks = Hook::ALL.map(|h| config.endpoint(h).cloned().map(Client::new));
        let link = Rc::new(BackendLink {
            id_prefix: format!("{boot}-{}-", shard.0),
            seq: Cell::new(0),
            webhook,
            wake: LocalNotify::default(),
            settled: LocalNotify::default(),
            nats,
            hooks,
            in_flight: Cell::new(0),
            config,
            links,
            shard,
        });
        if link.webhook.is_some() {
            glommio::spawn_local(Rc::clone(&link).deliver()).detach();
        }
        link
    }

    fn metrics(&self) -> &ShardMetrics {
        &self.links.get(self.shard).metrics
    }

    /// Whether events of `kind` go anywhere: callers skip building them when not.
    pub(crate) fn forwards(&self, kind: EventKind) -> bool {
        self.config.forwards().contains(kind)
    }

    /// Forwards one event to where its kind goes; never waits. An event that finds its queue
    /// full is dropped and counted.
    pub(crate) fn forward(&self, origin: Origin<'_>, body: EventBody<'_>) {
        let kind = body.kind();
        let to_webhook = self.webhook.is_some() && self.config.webhook_events.contains(kind);
        let nats = self
            .nats
            .as_ref()
            .zip(self.config.nats.as_ref())
            .filter(|(_, n)| n.events.contains(kind));
        if !to_webhook && nats.is_none() {
            return;
        }
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let id = format!("{}{seq}", self.id_prefix);
        let json = wire::event_json(&id, unix_ms(), origin, body);
        if let Some((tx, n)) = nats {
            let subject = format!("{}.{}", n.subject, kind.name());
            let outcome = match tx.try_send((subject, json.clone())) {
                Ok(()) => BackendEvent::NatsSent,
                Err(_) => BackendEvent::NatsDropped,
            };
            self.metrics().backend_events(outcome, 1);
        }
        if let (true, Some((outbox, _))) = (to_webhook, &self.webhook) {
            let mut outbox = outbox.borrow_mut();
            let was_empty = outbox.is_empty();
            if outbox.push(json).is_err() {
                drop(outbox);
                self.metrics()
                    .backend_events(BackendEvent::WebhookQueueFull, 1);
                warn_throttled("webhook outbox full: events dropped");
            } else if was_empty {
                self.wake.notify();
            }
        }
    }

    /// The webhook task: one delivery at a time, for as long as the shard runs.
    async fn deliver(self: Rc<Self>) {
        let Some((outbox, client)) = &self.webhook else {
            return;
        };
        let auth = self.config.authorization.as_deref();
        loop {
            let now = Instant::now();
            let body = outbox.borrow_mut().next_batch(now).map(wire::batch_json);
            let Some(body) = body else {
                let wake_at = outbox.borrow().wake_at();
                match wake_at {
                    // A backoff: sleep it out (new events cannot start a delivery before).
                    Some(at) => glommio::timer::sleep(at.saturating_duration_since(now)).await,
                    None => self.wake.wait().await,
                }
                continue;
            };
            let headers = authorization(auth);
            let outcome = match client.post(&body, &headers, self.config.timeout).await {
                Ok(answer) => Outcome::of_status(answer.status),
                Err(e) => {
                    tracing::debug!(error = %e, "webhook delivery failed");
                    Outcome::Retry
                }
            };
            let settled = outbox.borrow_mut().settle(outcome, Instant::now());
            match settled {
                Settled::Delivered(n) => self
                    .metrics()
                    .backend_events(BackendEvent::WebhookDelivered, n),
                Settled::Dropped(n) => {
                    self.metrics()
                        .backend_events(BackendEvent::WebhookFailed, n);
                    warn_throttled("webhook deliveries failing: events dropped");
                }
                Settled::RetryAt(_) => {}
            }
            self.settled.notify();
        }
    }

    /// At shutdown, after the shard's connections are gone: waits until the webhook outbox is
    /// empty (their disconnect events included), for at most one `Backend::timeout`; what is
    /// left then is dropped and counted.
    pub(crate) async fn drain(&self) {
        let Some((outbox, _)) = &self.webhook else {
            return;
        };
        let give_up = Instant::now() + self.config.timeout;
        loop {
            let left = outbox.borrow().len();
            if left == 0 {
                return;
            }
            let now = Instant::now();
            if now >= give_up {
                self.metrics()
                    .backend_events(BackendEvent::WebhookFailed, left);
                tracing::warn!(left, "webhook events not delivered at shutdown");
                return;
            }
            futures_lite::future::or(self.settled.wait(), async {
                glommio::timer::Timer::new(give_up - now).await;
            })
            .await;
        }
    }

    /// Whether `hook` is configured.
    pub(crate) fn has_hook(&self, hook: Hook) -> bool {
        self.hooks[hook as usize].is_some()
    }

    /// Asks `hook` with `body`: the answer's body when the backend answered 200 in time.
    async fn ask(&self, hook: Hook, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        let Some(client) = &self.hooks[hook as usize] else {
            return Err(Error::NoHook(hook.name()));
        };
        if self.in_flight.get() >= self.config.max_in_flight {
            self.metrics().hook_called(hook as usize, HookOutcome::Busy);
            return Err(Error::BackendBusy);
        }
        let slot = InFlight::take(&self.in_flight);
        let headers = authorization(self.config.authorization.as_deref());
        let answer = client.post(&body, &headers, self.config.timeout).await;
        drop(slot);
        let failed = |why: String| {
            self.metrics()
                .hook_called(hook as usize, HookOutcome::Failed);
            warn_throttled("backend hook calls failing");
            tracing::debug!(hook = hook.name(), why, "hook call failed");
            Error::BackendUnavailable(why)
        };
        match answer {
            Ok(a) if a.status == 200 => Ok(a.body),
            Ok(a) => Err(failed(format!("status {}", a.status))),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    fn count(&self, hook: Hook, allowed: bool) {
        let outcome = if allowed {
            HookOutcome::Allowed
        } else {
            HookOutcome::Refused
        };
        self.metrics().hook_called(hook as usize, outcome);
    }

    fn unreadable(&self, hook: Hook, e: wire::BadAnswer) -> Error {
        self.metrics()
            .hook_called(hook as usize, HookOutcome::Failed);
        Error::BackendUnavailable(e.to_string())
    }

    /// The connect hook's verdict on an upgrade.
    pub(crate) async fn ask_connect(&self, request: Vec<u8>) -> Result<ConnectVerdict, Error> {
        let body = self.ask(Hook::Connect, request).await?;
        let verdict =
            wire::connect_verdict(&body).map_err(|e| self.unreadable(Hook::Connect, e))?;
        self.count(Hook::Connect, matches!(verdict, ConnectVerdict::Allow(_)));
        Ok(verdict)
    }

    /// A subscribe, publish or RPC hook's verdict.
    pub(crate) async fn ask_verdict(&self, hook: Hook, request: Vec<u8>) -> Result<Verdict, Error> {
        let body = self.ask(hook, request).await?;
        let verdict = wire::verdict(&body).map_err(|e| self.unreadable(hook, e))?;
        self.count(hook, matches!(verdict, Verdict::Allow(_)));
        Ok(verdict)
    }
}

/// One hook call counted in flight until it is dropped: when it ends, and also when the caller
/// stops waiting for it (an upgrade past its handshake timeout drops its connect hook call).
struct InFlight<'a>(&'a Cell<usize>);

impl<'a> InFlight<'a> {
    fn take(count: &'a Cell<usize>) -> InFlight<'a> {
        count.set(count.get() + 1);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn authorization(value: Option<&str>) -> Vec<(&'static str, &str)> {
    value.map(|v| ("Authorization", v)).into_iter().collect()
}

/// Milliseconds since the epoch, for an event's `time`.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Logs `what` at most once a minute per shard thread: a backend that is down would
/// otherwise write a line per event.
fn warn_throttled(what: &'static str) {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    LAST.with(|last| {
        if !last
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            last.set(Some(now));
            tracing::warn!("{what} (see corecast_backend_* in /metrics)");
        }
    });
}
