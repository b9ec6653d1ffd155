//! The NATS link: one thread per node running a small tokio runtime for the async-nats client.
//! It publishes the cross-node work shards hand it (in order), holds a topic's subject while
//! the node has subscribers of it, hands what other nodes send to the local shards (through
//! their inboxes, as any thread would), answers UUID claims from a JetStream key-value bucket,
//! and sends and hears heartbeats. For topics with history it publishes to, follows and reads
//! their JetStream streams instead (`cluster::streams`). Shards never wait on it. Not the wire
//! format (`cluster::wire`) nor what shards hold of it (`cluster::handle`).
//!
//! What depends on time is decided by pure functions of the time read once where the decision
//! is made (`claim_is_stale`, `subject_kept`), so the tests below move the clock by hand.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store};
use async_nats::{Client, ConnectOptions, Event, Subscriber};
use bytes::Bytes;
use futures_lite::StreamExt;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle as Task;

use crate::cluster::handle::{ClusterHandle, Control, Handover, LinkInbox, Work};
use crate::cluster::streams::{Cursor, Streams};
use crate::cluster::wire::{self, Op, Subjects};
use crate::cluster::ClusterConfig;
use crate::history::{NotRecovered, Retention};
use crate::shard::dispatch::{Dispatch, REPORT_WAIT};
use crate::shard::shared::Shared;
use crate::topics::PublishReport;
use crate::Error;

/// How long a reported publication waits for the other nodes' answers: within the publisher's
/// own bound (`REPORT_WAIT`), with room for the answer to reach it.
const NODE_REPORT_WAIT: Duration = Duration::from_millis(REPORT_WAIT.as_millis() as u64 * 3 / 4);

/// The running link of one node.
pub(crate) struct NatsLink {
    handle: Arc<ClusterHandle>,
    thread: Option<JoinHandle<()>>,
}

impl NatsLink {
    /// Starts the link and waits until it has reached NATS (or, with `start_without_nats`,
    /// until it is trying to).
    pub(crate) fn start(
        config: &ClusterConfig,
        shared: Arc<Shared>,
        handle: Arc<ClusterHandle>,
        inbox: LinkInbox,
    ) -> Result<NatsLink, Error> {
        spawn(config, shared, handle, inbox)
    }

    /// Ends the link and waits for its thread.
    pub(crate) fn stop(&mut self) {
        self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn spawn(
    config: &ClusterConfig,
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
    inbox: LinkInbox,
) -> Result<NatsLink, Error> {
    let (ready, started) = flume::bounded(1);
    let (cfg, link) = (config.clone(), Arc::clone(&handle));
    let thread = std::thread::Builder::new()
        .name("corecast-nats".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(run(cfg, shared, link, inbox, ready)),
                Err(e) => {
                    let _ = ready.send(Err(Error::Cluster(format!(
                        "cannot start the NATS link: {e}"
                    ))));
                }
            }
        })
        .map_err(|e| Error::Cluster(format!("cannot start the NATS link thread: {e}")))?;
    let mut link = NatsLink {
        handle,
        thread: Some(thread),
    };
    match started.recv_timeout(config.connect_timeout + Duration::from_secs(2)) {
        Ok(Ok(())) => Ok(link),
        Ok(Err(e)) => {
            link.stop();
            Err(e)
        }
        Err(_) => {
            link.stop();
            Err(unreachable(&config.url, "no answer in time"))
        }
    }
}

fn unreachable(url: &str, why: impl std::fmt::Display) -> Error {
    Error::Cluster(format!("cannot reach NATS at {url}: {why}"))
}

async fn run(
    cfg: ClusterConfig,
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
    inbox: LinkInbox,
    ready: flume::Sender<Result<(), Error>>,
) {
    let subjects = Subjects::new(&handle.name);
    handle.set_history(shared.history.clone());
    let events = Arc::clone(&handle);
    let mut options = ConnectOptions::new()
        // A node never hears its own messages: it delivered them locally already.
        .no_echo()
        .name(format!("corecast {}", handle.node_id))
        .connection_timeout(cfg.connect_timeout)
        .max_reconnects(None)
        // Back within a second of NATS coming back, rather than async-nats' longer backoff.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(1000))
        })
        .event_callback(move |event| {
            let handle = Arc::clone(&events);
            async move { on_event(&handle, event) }
        });
    if cfg.start_without_nats {
        options = options.retry_on_initial_connect();
    }
    let client = match tokio::time::timeout(cfg.connect_timeout, options.connect(&cfg.url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            let _ = ready.send(Err(unreachable(&cfg.url, e)));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(unreachable(
                &cfg.url,
                format!("no connection within {:?}", cfg.connect_timeout),
            )));
            return;
        }
    };
    if client.connection_state() == State::Connected {
        handle.stats.connected.store(true, Ordering::Release);
    }
    // The node-wide subject and the heartbeats are held for the node's whole life; async-nats
    // takes every subscription again after a reconnect.
    let subscribed = async {
        let all = client.subscribe(subjects.all()).await?;
        let beats = client.subscribe(subjects.heartbeat()).await?;
        Ok::<_, async_nats::SubscribeError>((all, beats))
    };
    let (all, beats) = match subscribed.await {
        Ok(subs) => subs,
        Err(e) => {
            let _ = ready.send(Err(unreachable(&cfg.url, e)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    tracing::info!(node = %handle.node_id, cluster = %handle.name, url = %cfg.url, "cluster link up");

    let streams = Streams::new(
        client.clone(),
        subjects.clone(),
        Arc::clone(&shared),
        Arc::clone(&handle),
        cfg.history_timeout,
    );
    let tasks = [
        tokio::spawn(receive_ops(
            all,
            client.clone(),
            Arc::clone(&shared),
            Arc::clone(&handle),
        )),
        tokio::spawn(receive_heartbeats(beats, Arc::clone(&handle))),
        tokio::spawn(send_heartbeats(
            client.clone(),
            subjects.clone(),
            Arc::clone(&shared),
            Arc::clone(&handle),
        )),
        tokio::spawn(publish_work(
            client.clone(),
            subjects.clone(),
            inbox.work,
            Arc::clone(&handle),
            Arc::clone(&streams),
        )),
    ];
    let claims = Claims {
        client: client.clone(),
        bucket: subjects.bucket(),
        store: Arc::new(OnceCell::new()),
        handle: Arc::clone(&handle),
        shared: Arc::clone(&shared),
    };
    control_loop(
        &shared,
        &handle,
        inbox.control,
        cfg.interest_grace,
        claims,
        &streams,
    )
    .await;
    for task in tasks {
        task.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    handle.stats.connected.store(false, Ordering::Release);
}

fn on_event(handle: &ClusterHandle, event: Event) {
    match event {
        Event::Connected => {
            handle.stats.connects.fetch_add(1, Ordering::AcqRel);
            handle.stats.connected.store(true, Ordering::Release);
            tracing::info!(node = %handle.node_id, "NATS connected");
        }
        Event::Disconnected => {
            handle.stats.connected.store(false, Ordering::Release);
            tracing::warn!(node = %handle.node_id, "NATS disconnected; reconnecting");
        }
        Event::SlowConsumer(_) => handle.dropped(1, "NATS dropped messages to this slow node"),
        other => tracing::warn!(node = %handle.node_id, event = %other, "NATS"),
    }
}

/// Publishes cross-node work in the order shards handed it over. A topic with history goes
/// to its stream (`Work::Record`, from its home shard), never to its core subject. A round's
/// batch is published item by item before the link waits again, so its messages leave in
/// one write to NATS.
async fn publish_work(
    client: Client,
    subjects: Subjects,
    work: flume::Receiver<Handover>,
    handle: Arc<ClusterHandle>,
    streams: Arc<Streams>,
) {
    let link = WorkLink {
        all: subjects.all(),
        client,
        subjects,
        handle,
        streams,
    };
    while let Ok(item) = work.recv_async().await {
        match item {
            Handover::One(item) => link.publish(item).await,
            Handover::Batch(items) => {
                for item in items {
                    link.publish(item).await;
                }
            }
        }
    }
}

/// What publishing cross-node work needs.
struct WorkLink {
    client: Client,
    subjects: Subjects,
    all: String,
    handle: Arc<ClusterHandle>,
    streams: Arc<Streams>,
}

impl WorkLink {
    async fn publish(&self, item: Work) {
        let (client, handle) = (&self.client, &self.handle);
        let (subject, body) = match item {
            Work::Op(op) => (self.all.clone(), op.encode()),
            Work::Publish {
                topic,
                frame,
                key,
                report: Some(report),
            } => {
                let op = Op::Publish {
                    topic: topic.to_string(),
                    key,
                    frame,
                };
                return publish_reported(client, &self.all, op, handle, report).await;
            }
            Work::Publish {
                topic, frame, key, ..
            } if key != 0 => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(wire::KEY_HEADER, key.to_string());
                let sent = client
                    .publish_with_headers(self.subjects.topic(&topic), headers, frame)
                    .await;
                return count_sent(handle, sent.is_ok());
            }
            Work::Publish { topic, frame, .. } => (self.subjects.topic(&topic), frame),
            Work::Record {
                topic,
                frame,
                key,
                except,
                retention,
            } => {
                return self
                    .streams
                    .publish(topic, frame, key, except, retention)
                    .await;
            }
        };
        let sent = client.publish(subject, body).await;
        count_sent(handle, sent.is_ok());
    }
}

fn count_sent(handle: &ClusterHandle, sent: bool) {
    if sent {
        handle.stats.out.fetch_add(1, Ordering::Relaxed);
    } else {
        handle.dropped(1, "publishing to NATS failed");
    }
}

/// Sends a reported publication to every node (`Op::Publish`, on the node-wide subject, with
/// a reply subject of its own), then, without holding up the work behind it, sums the
/// answers of the nodes in this node's view until each has answered or `NODE_REPORT_WAIT`
/// has passed, and hands the sum to `report`: partial when a live node did not answer.
async fn publish_reported(
    client: &Client,
    all: &str,
    op: Op,
    handle: &Arc<ClusterHandle>,
    report: flume::Sender<PublishReport>,
) {
    let unknown = PublishReport {
        partial: true,
        ..PublishReport::default()
    };
    let inbox = client.new_inbox();
    let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
        handle.dropped(1, "publishing to NATS failed");
        let _ = report.send(unknown);
        return;
    };
    let sent = client
        .publish_with_reply(all.to_string(), inbox, op.encode())
        .await;
    count_sent(handle, sent.is_ok());
    if sent.is_err() {
        let _ = report.send(unknown);
        return;
    }
    // The other live nodes: each one answers, with zeros when it holds no subscriber.
    let expected = handle.view(0).nodes.len().saturating_sub(1);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + NODE_REPORT_WAIT;
        let mut heard = HashSet::new();
        let mut sum = PublishReport::default();
        while heard.len() < expected {
            match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(msg)) => {
                    if let Ok((node, part)) = wire::decode_report(&msg.payload) {
                        if heard.insert(node) {
                            sum.add(&PublishReport {
                                subscribers: part.subscribers,
                                queued: part.queued,
                                closed: part.closed,
                                dropped: part.dropped,
                                shards: usize::try_from(part.shards).unwrap_or(usize::MAX),
                                nodes: 1,
                                partial: part.partial,
                            });
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        sum.partial |= heard.len() < expected;
        let _ = report.send(sum);
    });
}

/// Node-wide operations from other nodes, done on this node's shards.
async fn receive_ops(
    mut sub: Subscriber,
    client: Client,
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
) {
    while let Some(msg) = sub.next().await {
        handle.stats.received.fetch_add(1, Ordering::Relaxed);
        let Ok(op) = Op::decode(&msg.payload) else {
            handle.dropped(1, "a cross-node message could not be read");
            continue;
        };
        // Never sent back: every node hears each operation from its sender.
        let here = Dispatch::of(&shared).local();
        match op {
            Op::Broadcast { frame } => here.to_all(&frame, None),
            Op::Fire { name, data } => here.fire(&name, &data),
            Op::Emit { uuids, frame } => {
                let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
                here.to_uuids(&uuids, &frame, |_, _| {});
            }
            Op::Close { uuid, code, reason } => {
                let _ = here.close(&uuid, code, &reason);
            }
            Op::Publish { topic, key, frame } => match msg.reply {
                // Handed to the shards now, in order; the answer when they have answered.
                Some(reply) => {
                    let done = here.to_topic_reported(&topic, &frame, key, None);
                    let (client, node) = (client.clone(), handle.node_id.clone());
                    tokio::spawn(async move {
                        let done = done.await;
                        let part = wire::ReportPart {
                            subscribers: done.subscribers,
                            queued: done.queued,
                            closed: done.closed,
                            dropped: done.dropped,
                            shards: done.shards as u64,
                            partial: done.partial,
                        };
                        let _ = client
                            .publish(reply, wire::encode_report(&node, &part))
                            .await;
                    });
                }
                None => here.to_topic(&topic, &frame, key, None),
            },
        }
    }
}

/// One topic's publishes from other nodes, handed to the local shards with subscribers.
async fn receive_topic(
    mut sub: Subscriber,
    topic: Arc<str>,
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
) {
    while let Some(msg) = sub.next().await {
        handle.stats.received.fetch_add(1, Ordering::Relaxed);
        let key = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::KEY_HEADER))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(0);
        Dispatch::of(&shared)
            .local()
            .to_topic(&topic, &msg.payload, key, None);
    }
}

async fn receive_heartbeats(mut sub: Subscriber, handle: Arc<ClusterHandle>) {
    while let Some(msg) = sub.next().await {
        if let Ok((node, connections)) = wire::decode_heartbeat(&msg.payload) {
            let connections = usize::try_from(connections).unwrap_or(usize::MAX);
            handle.heard(node, connections, Instant::now());
        }
    }
}

/// Every heartbeat period: this node's connection count out, the NATS round trip measured
/// (a flush waits for the server's answer), silent nodes dropped from the view.
async fn send_heartbeats(
    client: Client,
    subjects: Subjects,
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
) {
    let subject = subjects.heartbeat();
    let mut every = tokio::time::interval(handle.heartbeat);
    loop {
        every.tick().await;
        handle.prune(Instant::now());
        if !handle.stats.connected.load(Ordering::Acquire) {
            continue;
        }
        let body = wire::encode_heartbeat(&handle.node_id, shared.links.connections() as u64);
        let sent = Instant::now();
        if client.publish(subject.clone(), body).await.is_err() {
            continue;
        }
        if let Ok(Ok(())) = tokio::time::timeout(handle.heartbeat, client.flush()).await {
            let rtt = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
            handle.stats.rtt_nanos.store(rtt, Ordering::Relaxed);
        }
    }
}

/// A topic subject this node holds: the task reading it, and since when the node has had no
/// subscriber of it (it lets go after the grace period, so churn is not NATS traffic). For a
/// topic with history the reader follows the topic's stream, and `cursor` says how far.
struct Held {
    reader: Task<()>,
    idle_since: Option<Instant>,
    cursor: Option<tokio::sync::watch::Receiver<Cursor>>,
}

/// Starts following `topic`'s stream (a topic with history that keeps `retention`).
fn follow(streams: &Arc<Streams>, topic: &Arc<str>, retention: Retention) -> Held {
    let (cursor, watching) = tokio::sync::watch::channel(Cursor::default());
    let reader = tokio::spawn(Arc::clone(streams).follow(Arc::clone(topic), retention, cursor));
    Held {
        reader,
        idle_since: None,
        cursor: Some(watching),
    }
}

/// Interest, claims, releases, recoveries and windows, in the order asked; core NATS and
/// JetStream are reached through `streams`' client.
async fn control_loop(
    shared: &Arc<Shared>,
    handle: &Arc<ClusterHandle>,
    control: flume::Receiver<Control>,
    grace: Duration,
    claims: Claims,
    streams: &Arc<Streams>,
) {
    let (client, subjects) = (streams.client(), streams.subjects());
    let mut held: HashMap<Arc<str>, Held> = HashMap::new();
    let mut tick = tokio::time::interval((grace / 4).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            command = control.recv_async() => match command {
                Ok(Control::Interest(topic)) => {
                    // The table, not the message, says whether there is interest now: two
                    // shards' changes may arrive in either order.
                    let wanted = shared.topics.count(&topic) > 0;
                    let history = streams.retention(&topic);
                    match (wanted, held.get_mut(&topic)) {
                        (true, Some(h)) => h.idle_since = None,
                        (true, None) => match history {
                            Some(retention) => {
                                held.insert(Arc::clone(&topic), follow(streams, &topic, retention));
                            }
                            None => match client.subscribe(subjects.topic(&topic)).await {
                                Ok(sub) => {
                                    let reader = tokio::spawn(receive_topic(
                                        sub,
                                        Arc::clone(&topic),
                                        Arc::clone(shared),
                                        Arc::clone(handle),
                                    ));
                                    held.insert(topic, Held { reader, idle_since: None, cursor: None });
                                }
                                Err(e) => tracing::warn!(topic = %topic, error = %e, "cannot take a topic's NATS subject"),
                            },
                        },
                        (false, Some(h)) => {
                            h.idle_since.get_or_insert_with(Instant::now);
                        }
                        (false, None) => {}
                    }
                }
                Ok(Control::Claim { uuid, reply }) => {
                    let claims = claims.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(claims.claim(&uuid).await);
                    });
                }
                Ok(Control::Release { uuid, revision }) => {
                    let claims = claims.clone();
                    tokio::spawn(async move { claims.release(&uuid, revision).await });
                }
                Ok(Control::Recover { topic, retention, since, done }) => {
                    // The subscriber has joined: this node follows the topic's stream from
                    // now on if it did not already, and the recovery reads what it has not
                    // handed over yet.
                    let h = held.entry(Arc::clone(&topic)).or_insert_with(|| {
                        let mut h = follow(streams, &topic, retention);
                        if shared.topics.count(&topic) == 0 {
                            h.idle_since = Some(Instant::now());
                        }
                        h
                    });
                    match h.cursor.clone() {
                        Some(cursor) => {
                            let streams = Arc::clone(streams);
                            tokio::spawn(async move {
                                let answer = streams.recover(&topic, retention, since, cursor).await;
                                let _ = done.send(answer);
                            });
                        }
                        // Held as a topic without history: the rules changed under it.
                        None => {
                            let _ = done.send((Err(NotRecovered::Unavailable), None));
                        }
                    }
                }
                Ok(Control::Window { topic, done }) => {
                    let streams = Arc::clone(streams);
                    tokio::spawn(async move {
                        let _ = done.send(streams.window(&topic).await);
                    });
                }
                Ok(Control::Stop) | Err(_) => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                held.retain(|topic, h| {
                    if shared.topics.count(topic) > 0 {
                        h.idle_since = None;
                        return true;
                    }
                    let keep = subject_kept(h.idle_since, now, grace);
                    if !keep {
                        // Dropping the subscriber unsubscribes.
                        h.reader.abort();
                    }
                    keep
                });
            }
        }
    }
    for h in held.into_values() {
        h.reader.abort();
    }
}

/// Whether a topic subject without local subscribers since `idle_since` (`None`: it has
/// some) is still held at `now`: for less than `grace` after it lost the last one.
fn subject_kept(idle_since: Option<Instant>, now: Instant, grace: Duration) -> bool {
    idle_since.map_or(true, |t| now.saturating_duration_since(t) < grace)
}

/// Seconds a release keeps trying while NATS is away.
const RELEASE_TRIES: u32 = 300;

/// UUID claims in the cluster's key-value bucket: key = the UUID, value = holder and time.
#[derive(Clone)]
struct Claims {
    client: Client,
    bucket: String,
    store: Arc<OnceCell<Store>>,
    handle: Arc<ClusterHandle>,
    shared: Arc<Shared>,
}

/// The wall clock in milliseconds since the Unix epoch (0 before it): what claims are stamped
/// with, since they are compared across nodes.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether another node's claim stamped at `stamp_ms` may be taken over at `now_ms`: its holder
/// is not live (no heartbeat within the node timeout) and the claim is at least `timeout` old.
/// A claim younger than that is kept even when its holder is not heard yet (a node that just
/// joined), and so is one stamped after `now_ms`: when a clock went backwards, its age is
/// unknown, not large.
fn claim_is_stale(now_ms: u64, stamp_ms: u64, holder_live: bool, timeout: Duration) -> bool {
    let age_ms = now_ms.saturating_sub(stamp_ms);
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    !holder_live && age_ms >= timeout_ms
}

impl Claims {
    /// The claims bucket, made on first use. The bucket's stream is created directly, with
    /// the settings a key-value bucket has (one value per key, no overwrite of a newer one):
    /// async-nats' own bucket creation first asks for account details in a form the
    /// nats-server 2.9 that Debian ships does not give.
    async fn store(&self) -> Result<&Store, Error> {
        use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
        self.store
            .get_or_try_init(|| async {
                let failed = |e: &dyn std::fmt::Display| {
                    Error::Cluster(format!(
                        "cannot open the UUID claims bucket (is JetStream on? nats-server -js): {e}"
                    ))
                };
                let js = async_nats::jetstream::new(self.client.clone());
                // Two nodes may create it at once; the loser's "overlaps with an existing
                // stream" is fine as long as the bucket is there afterwards.
                let created = js
                    .get_or_create_stream(Config {
                        name: format!("KV_{}", self.bucket),
                        subjects: vec![format!("$KV.{}.>", self.bucket)],
                        max_messages_per_subject: 1,
                        discard: DiscardPolicy::New,
                        // On disk where the server keeps its store, so claims outlive a
                        // restart of NATS while their connections stay open.
                        storage: StorageType::File,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        ..Default::default()
                    })
                    .await;
                match js.get_key_value(self.bucket.as_str()).await {
                    Ok(store) => Ok(store),
                    Err(e) => Err(match created {
                        Err(create) => failed(&create),
                        Ok(_) => failed(&e),
                    }),
                }
            })
            .await
    }

    /// Claims `uuid` for this node. Exactly one of concurrent claims wins: a new key is an
    /// atomic create; a key held by a node that is gone (no heartbeat within the node
    /// timeout, and the claim older than that) is taken over with a compare-and-set.
    async fn claim(&self, uuid: &str) -> Result<u64, Error> {
        let store = self.store().await?;
        let key = wire::claim_key(uuid);
        let value = wire::claim_value(&self.handle.node_id, unix_ms());
        let failed = |e: &dyn std::fmt::Display| Error::Cluster(format!("UUID claim failed: {e}"));
        match store.create(&key, value.clone()).await {
            Ok(revision) => return Ok(revision),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(&e)),
        }
        let entry = store.entry(key.as_str()).await.map_err(|e| failed(&e))?;
        let Some(entry) = entry else {
            return Err(Error::UuidDuplication);
        };
        if entry.operation == Operation::Put
            && self.held_elsewhere(uuid, &entry.value, unix_ms(), Instant::now())
        {
            return Err(Error::UuidDuplication);
        }
        store
            .update(&key, value, entry.revision)
            .await
            .map_err(|_| Error::UuidDuplication)
    }

    /// Whether a claim's holder still counts at `now_ms` on the wall clock (`now` on this
    /// node's clock): this node with a live connection holding it, or another node's claim that
    /// is not stale (`claim_is_stale`).
    fn held_elsewhere(&self, uuid: &str, value: &Bytes, now_ms: u64, now: Instant) -> bool {
        let Some((node, at)) = wire::parse_claim(value) else {
            return false;
        };
        if node == &*self.handle.node_id {
            return self.shared.registry.get(uuid).is_some();
        }
        let live = self.handle.is_live(node, now);
        !claim_is_stale(now_ms, at, live, self.handle.node_timeout())
    }

    /// Deletes the claim, retrying while NATS is away (for up to `RELEASE_TRIES` seconds):
    /// a claim left behind would refuse the name on other nodes while this node lives.
    async fn release(&self, uuid: &str, revision: u64) {
        let key = wire::claim_key(uuid);
        for _ in 0..RELEASE_TRIES {
            if self.handle.stats.connected.load(Ordering::Acquire) {
                if let Ok(store) = self.store().await {
                    // Only our own claim: a key another node took over has another revision.
                    match store.delete_expect_revision(&key, Some(revision)).await {
                        Ok(()) => return,
                        Err(e) if self.handle.stats.connected.load(Ordering::Acquire) => {
                            tracing::debug!(uuid, error = %e, "UUID claim not ours any more");
                            return;
                        }
                        Err(_) => {}
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tracing::warn!(uuid, "UUID claim not released: NATS stayed away");
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
