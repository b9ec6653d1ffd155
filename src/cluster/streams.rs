//! Cluster mode's topic history, kept in JetStream: one stream per topic with history, made on
//! first use; publishing to it (the stream orders every node's publications and its sequence
//! is the topic's offset); one push consumer per node and topic that hands the stream, in its
//! order and with positions, to the local shards; and recovery and the kept window, read from
//! the stream. Runs on the NATS link's thread, never on a shard. Not the link's other work
//! (`cluster::link`) nor the names and formats (`cluster::wire`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{push, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, Info, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::{Client, HeaderMap, StatusCode, Subscriber};
use bytes::Bytes;
use futures_lite::StreamExt;
use tokio::sync::watch;

use crate::cluster::handle::ClusterHandle;
use crate::cluster::wire::{self, Subjects};
use crate::history::{self, Epoch, Kept, NotRecovered, Position, RecoverAnswer, Retention};
use crate::registry::ConnId;
use crate::shard::link::{Refused, ShardMsg};
use crate::shard::shared::Shared;
use crate::Error;

/// How often an idle consumer hears from JetStream; three periods of silence mean it is lost
/// (the stream was deleted, or NATS restarted) and it is made again.
const CONSUMER_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long JetStream keeps a consumer nobody reads: a node that died leaves none behind.
const CONSUMER_INACTIVE: Duration = Duration::from_secs(10);
/// Acknowledgements JetStream may owe this node at once; past it, publishing waits (on the
/// link's thread: the shards' bounded queue to the link absorbs it, then drops and counts).
const ACKS_IN_FLIGHT: usize = 8_192;

/// How far one node's live consumer of a topic has got: the epoch of the stream it follows
/// (`None` before it first read the stream) and the last offset it handed to the shards.
/// Every offset above `delivered` is handed to the shards after the moment it is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) epoch: Option<Epoch>,
    pub(crate) delivered: u64,
}

/// This node's side of the topic streams.
pub(crate) struct Streams {
    client: Client,
    js: async_nats::jetstream::Context,
    subjects: Subjects,
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
    /// Bound on each JetStream request, and on a whole recovery.
    timeout: Duration,
    /// Topics whose stream this node has made sure of, and on which NATS connection (a
    /// restarted NATS without its store lost them).
    known: Mutex<HashMap<Arc<str>, u64>>,
}

impl Streams {
    pub(crate) fn new(
        client: Client,
        subjects: Subjects,
        shared: Arc<Shared>,
        handle: Arc<ClusterHandle>,
        timeout: Duration,
    ) -> Arc<Streams> {
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .max_ack_inflight(ACKS_IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Arc::new(Streams {
            client,
            js,
            subjects,
            shared,
            handle,
            timeout,
            known: Mutex::default(),
        })
    }

    /// The link's NATS client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The cluster's subjects.
    pub(crate) fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// What `topic` keeps, by this node's rules.
    pub(crate) fn retention(&self, topic: &str) -> Option<Retention> {
        self.shared.history.as_ref()?.retention(topic)
    }

    /// The topic's stream, made if it is not there (idempotent: of two nodes making it at
    /// once, both end with the one stream): its info now.
    async fn ensure(&self, topic: &str, retention: Retention) -> Result<Info, Error> {
        let name = self.subjects.stream(topic);
        let subject = self.subjects.history(topic);
        let config = Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            max_messages: i64::try_from(retention.size).unwrap_or(i64::MAX),
            max_age: retention.ttl,
            discard: DiscardPolicy::Old,
            // A cache of recent publications, as one node's history is: a NATS restart that
            // loses it starts a new epoch, which every recovery is told.
            storage: StorageType::Memory,
            ..Default::default()
        };
        let failed = |e: &dyn std::fmt::Display| {
            Error::Cluster(format!(
                "topic {topic:?}: cannot open its stream {name} (is JetStream on? nats-server -js): {e}"
            ))
        };
        let stream = tokio::time::timeout(self.timeout, self.js.get_or_create_stream(config))
            .await
            .map_err(|_| failed(&"no answer in time"))?
            .map_err(|e| failed(&e))?;
        // As the server answered just now, whether it made the stream or found it.
        let info = stream.cached_info().clone();
        if info.config.subjects != [subject] {
            return Err(failed(&"its name is taken by another topic's stream"));
        }
        Ok(info)
    }

    /// The stream's info, `None` when there is no stream.
    async fn info(&self, topic: &str) -> Result<Option<Info>, Error> {
        let failed = |e: &dyn std::fmt::Display| Error::Cluster(format!("stream info: {e}"));
        let got = tokio::time::timeout(self.timeout, async {
            let mut stream = match self.js.get_stream(self.subjects.stream(topic)).await {
                Ok(stream) => stream,
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(j)
                        if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        return Ok(None);
                    }
                    _ => return Err(failed(&e)),
                },
            };
            Ok(Some(stream.info().await.map_err(|e| failed(&e))?.clone()))
        })
        .await;
        got.map_err(|_| failed(&"no answer in time"))?
    }

    /// Publishes a publication of a topic with history to its stream, making the stream first
    /// if this node has not yet on this connection. Waits for NATS to take it, not for the
    /// stream's acknowledgement: that is awaited aside, and a refusal counted as lost.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        topic: Arc<str>,
        frame: Bytes,
        key: u64,
        except: Option<ConnId>,
        retention: Retention,
    ) {
        let connection = self.handle.stats.connects.load(Ordering::Acquire);
        let known = self.lock_known().get(&topic) == Some(&connection);
        if !known {
            if let Err(e) = self.ensure(&topic, retention).await {
                tracing::debug!(error = %e, "publication of a topic with history not kept");
                return self.handle.history_lost(1, "its stream cannot be opened");
            }
            self.lock_known().insert(Arc::clone(&topic), connection);
        }
        let mut headers = HeaderMap::new();
        if let Some(id) = except {
            headers.insert(
                wire::EXCEPT_HEADER,
                wire::except_value(&self.handle.node_id, id),
            );
        }
        if key != 0 {
            headers.insert(wire::KEY_HEADER, key.to_string());
        }
        let subject = self.subjects.history(&topic);
        let sent = if except.is_none() && key == 0 {
            self.js.publish(subject, frame).await
        } else {
            self.js.publish_with_headers(subject, headers, frame).await
        };
        let ack = match sent {
            Ok(ack) => ack,
            Err(_) => {
                return self
                    .handle
                    .history_lost(1, "publishing to JetStream failed")
            }
        };
        self.handle.stats.out.fetch_add(1, Ordering::Relaxed);
        let streams = Arc::clone(self);
        tokio::spawn(async move {
            match ack.await {
                Ok(_) => {}
                Err(e) => {
                    if e.kind() == PublishErrorKind::StreamNotFound {
                        // Deleted, or lost with a NATS restart: made again on the next one.
                        streams.lock_known().remove(&topic);
                    }
                    streams
                        .handle
                        .history_lost(1, "JetStream did not keep a publication");
                }
            }
        });
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `topic`'s stream for as long as the task runs (the link aborts it when the
    /// node has had no subscriber of the topic for the grace period), handing each
    /// publication to the local shards with subscribers, in the stream's order, with its
    /// position; `cursor` says how far it got. A consumer that is lost (NATS away, the stream
    /// deleted) is made again: from the next offset when the stream is the same, from the
    /// first when it is a new one (a new epoch).
    pub(crate) async fn follow(
        self: Arc<Self>,
        topic: Arc<str>,
        retention: Retention,
        cursor: watch::Sender<Cursor>,
    ) {
        let mut pause = Duration::from_millis(100);
        loop {
            if self.handle.stats.connected.load(Ordering::Acquire) {
                match self.follow_once(&topic, retention, &cursor).await {
                    // It was followed for a while: try again soon.
                    Ok(lost) => {
                        tracing::debug!(topic = %topic, error = %lost, "topic stream consumer lost");
                        pause = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::debug!(topic = %topic, error = %e, "cannot follow a topic's stream")
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// One consumer's life: made (an error when it cannot be), then read until it is lost
    /// (the error that lost it).
    async fn follow_once(
        &self,
        topic: &Arc<str>,
        retention: Retention,
        cursor: &watch::Sender<Cursor>,
    ) -> Result<Error, Error> {
        let info = self.ensure(topic, retention).await?;
        let epoch = epoch_of(&info);
        let was = *cursor.borrow();
        let start = match was.epoch {
            Some(e) if e == epoch => was.delivered + 1,
            // The node starts following: what comes next.
            None => info.state.last_sequence + 1,
            // A new stream: all of it is new to every subscriber here.
            Some(_) => 1,
        };
        if was.epoch != Some(epoch) {
            if was.epoch.is_some() {
                tracing::warn!(topic = %topic, "a topic's stream was made again: its history starts a new epoch");
            }
            cursor.send_replace(Cursor {
                epoch: Some(epoch),
                delivered: start - 1,
            });
        }
        let mut consumer = self.open(&info.config.name, start).await?;
        let lost = loop {
            let (delivered, msg) = match consumer.next(&self.client).await {
                Err(lost) => break lost,
                Ok(None) => continue,
                Ok(Some(delivery)) => delivery,
            };
            // Already handed over by the consumer before this one.
            if delivered.stream_seq <= cursor.borrow().delivered {
                continue;
            }
            let position = Position {
                offset: delivered.stream_seq,
                epoch,
            };
            self.deliver(topic, msg.payload, msg.headers.as_ref(), position);
            cursor.send_modify(|c| c.delivered = delivered.stream_seq);
        };
        consumer.close(&self.js);
        Ok(lost)
    }

    /// Hands a publication to every local shard with subscribers of `topic`, with its
    /// position. A shard whose inbox is full misses it, as it would any publication; its
    /// subscribers can recover it.
    fn deliver(
        &self,
        topic: &Arc<str>,
        frame: Bytes,
        headers: Option<&HeaderMap>,
        position: Position,
    ) {
        let header = |name: &str| headers?.get(name).map(|v| v.as_str().to_string());
        let except =
            header(wire::EXCEPT_HEADER).and_then(|v| wire::parse_except(&v, &self.handle.node_id));
        let key = header(wire::KEY_HEADER)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        self.handle.stats.received.fetch_add(1, Ordering::Relaxed);
        for shard in self.shared.topics.shards_with(topic) {
            let msg = ShardMsg::Publish {
                topic: Arc::clone(topic),
                frame: frame.clone(),
                key,
                except: except.filter(|id| id.shard == shard),
                position: Some(position),
                report: None,
            };
            if let Err(Refused::Full) = self.shared.links.post(shard, msg) {
                self.handle.dropped(1, "a shard's inbox is full");
            }
        }
    }

    /// A push consumer of `stream` from offset `start`, delivering to a fresh inbox.
    async fn open(&self, stream: &str, start: u64) -> Result<Consumer, Error> {
        let failed = |e: &dyn std::fmt::Display| Error::Cluster(format!("consumer: {e}"));
        let inbox = self.client.new_inbox();
        let sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(&e))?;
        let config = push::Config {
            deliver_subject: inbox,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ack_policy: AckPolicy::None,
            flow_control: true,
            idle_heartbeat: CONSUMER_HEARTBEAT,
            inactive_threshold: CONSUMER_INACTIVE,
            memory_storage: true,
            ..Default::default()
        };
        let made = tokio::time::timeout(
            self.timeout,
            self.js.create_consumer_on_stream(config, stream),
        )
        .await
        .map_err(|_| failed(&"no answer in time"))?
        .map_err(|e| failed(&e))?;
        Ok(Consumer {
            sub,
            stream: stream.to_string(),
            name: made.cached_info().name.clone(),
            consumer_seq: 0,
        })
    }

    /// What a subscriber of `topic` that last saw `since` missed, and the topic's position
    /// now; `cursor` is how far this node's live consumer of the topic has got. Answers
    /// within the timeout, whatever happens: past it, or with NATS away, the history is
    /// unavailable, and the answer says so.
    pub(crate) async fn recover(
        &self,
        topic: &str,
        retention: Retention,
        since: Option<Position>,
        cursor: watch::Receiver<Cursor>,
    ) -> RecoverAnswer {
        let answer = tokio::time::timeout(
            self.timeout,
            self.try_recover(topic, retention, since, cursor),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(topic, error = %e, "recovery from a topic's stream failed");
                (Err(NotRecovered::Unavailable), None)
            }
            Err(_) => {
                tracing::warn!(topic, timeout = ?self.timeout, "recovery from a topic's stream took too long");
                (Err(NotRecovered::Unavailable), None)
            }
        }
    }

    async fn try_recover(
        &self,
        topic: &str,
        retention: Retention,
        since: Option<Position>,
        mut cursor: watch::Receiver<Cursor>,
    ) -> Result<RecoverAnswer, Error> {
        let stopped = |_| Error::Cluster("the topic's consumer stopped".into());
        // Read after the subscriber joined: every offset the live consumer has not handed to
        // the shards yet will reach the subscriber live, so the recovery must cover the rest.
        cursor
            .wait_for(|c| c.epoch.is_some())
            .await
            .map_err(stopped)?;
        let info = self.ensure(topic, retention).await?;
        let epoch = epoch_of(&info);
        if cursor.borrow().epoch != Some(epoch) {
            // The stream was made again and the live consumer has not seen it yet: answer
            // once it follows the new one, so the live stream and the answer agree.
            cursor
                .wait_for(|c| c.epoch == Some(epoch))
                .await
                .map_err(stopped)?;
        }
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let now = Some(Position {
            offset: last,
            epoch,
        });
        let Some(since) = since else {
            return Ok((Ok(Vec::new()), now));
        };
        let missed = match recovery_range(since, epoch, first, last) {
            Err(reason) => Err(reason),
            Ok(None) => Ok(Vec::new()),
            Ok(Some((from, to))) => self.read(&info.config.name, from, to).await?,
        };
        Ok((missed, now))
    }

    /// Every publication of `stream` from offset `from` to `to`, in order; `TooOld` when the
    /// first is no longer kept.
    async fn read(
        &self,
        stream: &str,
        from: u64,
        to: u64,
    ) -> Result<Result<Vec<Kept>, NotRecovered>, Error> {
        let mut consumer = self.open(stream, from).await?;
        let capacity = usize::try_from(to - from + 1).unwrap_or(0).min(1 << 16);
        let mut kept = Vec::with_capacity(capacity);
        let read = async {
            while kept.last().map_or(from - 1, |k: &Kept| k.offset) < to {
                let Some((delivered, msg)) = consumer.next(&self.client).await? else {
                    continue;
                };
                let expected = kept.last().map_or(from, |k: &Kept| k.offset + 1);
                if delivered.stream_seq != expected {
                    // Dropped from the stream since its info was read (past its size or ttl).
                    return Ok(Err(NotRecovered::TooOld));
                }
                let (data, binary) = history::unframe(&msg.payload);
                kept.push(Kept::read_back(delivered.stream_seq, data, binary));
            }
            Ok(Ok(()))
        }
        .await;
        consumer.close(&self.js);
        read.map(|r: Result<(), NotRecovered>| r.map(|()| kept))
    }

    /// The kept window of `topic`'s stream: first and last offsets, and the epoch; `None`
    /// when nothing is kept, there is no stream, or NATS did not answer in time.
    pub(crate) async fn window(&self, topic: &str) -> Option<(u64, u64, Epoch)> {
        let info = self.info(topic).await.ok()??;
        (info.state.messages > 0).then(|| {
            (
                info.state.first_sequence,
                info.state.last_sequence,
                epoch_of(&info),
            )
        })
    }
}

/// Which offsets a recovery after `since` reads from a stream of `epoch` that keeps `first` to
/// `last` (`first` = `last` + 1 when it keeps none): `None` when nothing was missed.
pub(crate) fn recovery_range(
    since: Position,
    epoch: Epoch,
    first: u64,
    last: u64,
) -> Result<Option<(u64, u64)>, NotRecovered> {
    if since.epoch != epoch {
        return Err(NotRecovered::EpochChanged);
    }
    if since.offset > last {
        return Err(NotRecovered::Unknown);
    }
    if since.offset == last {
        return Ok(None);
    }
    if since.offset + 1 < first {
        return Err(NotRecovered::TooOld);
    }
    Ok(Some((since.offset + 1, last)))
}

/// A stream's epoch, from its name and creation time.
fn epoch_of(info: &Info) -> Epoch {
    Epoch(wire::epoch_of(
        &info.config.name,
        info.created.unix_timestamp_nanos(),
    ))
}

/// One push consumer being read: its inbox, and the last of its own sequence numbers seen.
struct Consumer {
    sub: Subscriber,
    stream: String,
    name: String,
    consumer_seq: u64,
}

impl Consumer {
    /// The next delivery: its place and the message, `None` for a heartbeat or flow control
    /// (answered here). An error when the consumer is lost: three heartbeats of silence, the
    /// inbox closed, or a delivery missing on the way (its own sequence jumped).
    async fn next(
        &mut self,
        client: &Client,
    ) -> Result<Option<(wire::Delivered, async_nats::Message)>, Error> {
        let lost = |why: &str| Error::Cluster(format!("stream consumer lost: {why}"));
        let msg = tokio::time::timeout(CONSUMER_HEARTBEAT * 3, self.sub.next())
            .await
            .map_err(|_| lost("no heartbeat"))?
            .ok_or_else(|| lost("inbox closed"))?;
        if msg.status == Some(StatusCode::IDLE_HEARTBEAT) {
            let header = |name: &str| msg.headers.as_ref()?.get(name).map(|v| v.as_str());
            // Flow control (or a heartbeat saying it is stalled for want of an answer):
            // JetStream sends more once answered.
            let answer = msg.reply.as_deref().or(header("Nats-Consumer-Stalled"));
            if let Some(subject) = answer {
                let _ = client.publish(subject.to_string(), Bytes::new()).await;
            }
            let last = header("Nats-Last-Consumer").and_then(|v| v.parse::<u64>().ok());
            if last.is_some_and(|n| n != self.consumer_seq) {
                return Err(lost("a delivery went missing"));
            }
            return Ok(None);
        }
        if msg.status.is_some() {
            return Ok(None);
        }
        let delivered = msg
            .reply
            .as_deref()
            .and_then(wire::delivered)
            .ok_or_else(|| lost("a delivery without its place"))?;
        if delivered.consumer_seq != self.consumer_seq + 1 {
            return Err(lost("a delivery went missing"));
        }
        self.consumer_seq = delivered.consumer_seq;
        Ok(Some((delivered, msg)))
    }

    /// Deletes the consumer, not waiting for the answer (JetStream deletes one nobody reads
    /// after a while anyway).
    fn close(self, js: &async_nats::jetstream::Context) {
        let js = js.clone();
        drop(self.sub);
        tokio::spawn(async move {
            let _ = js
                .delete_consumer_from_stream(&self.name, &self.stream)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: Epoch = Epoch(7);

    fn at(offset: u64) -> Position {
        Position {
            offset,
            epoch: EPOCH,
        }
    }

    #[test]
    fn a_recovery_reads_what_follows_the_position() {
        assert_eq!(recovery_range(at(3), EPOCH, 1, 10), Ok(Some((4, 10))));
        // The first kept one follows the position directly.
        assert_eq!(recovery_range(at(4), EPOCH, 5, 10), Ok(Some((5, 10))));
        assert_eq!(recovery_range(at(0), EPOCH, 1, 10), Ok(Some((1, 10))));
        // Up to date, including on a stream that keeps nothing (any more).
        assert_eq!(recovery_range(at(10), EPOCH, 1, 10), Ok(None));
        assert_eq!(recovery_range(at(10), EPOCH, 11, 10), Ok(None));
        assert_eq!(recovery_range(at(0), EPOCH, 1, 0), Ok(None));
    }

    #[test]
    fn a_recovery_says_why_it_cannot_be_made() {
        assert_eq!(
            recovery_range(at(3), Epoch(8), 1, 10),
            Err(NotRecovered::EpochChanged)
        );
        assert_eq!(
            recovery_range(at(11), EPOCH, 1, 10),
            Err(NotRecovered::Unknown)
        );
        assert_eq!(
            recovery_range(at(3), EPOCH, 5, 10),
            Err(NotRecovered::TooOld)
        );
        assert_eq!(
            recovery_range(at(3), EPOCH, 11, 10),
            Err(NotRecovered::TooOld)
        );
    }
}
