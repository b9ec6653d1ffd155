//! Where work for connections goes: this node's shards first (inline when the caller runs the
//! target shard, else through that shard's bounded inbox), then, in cluster mode, the other
//! nodes. The one path that `Server`, `Websocket` and the NATS link share. Not what a shard
//! does with the work (`ShardCore::handle`), nor how work crosses to other nodes (`nats`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::Timer;

use super::connections::Connections;
use super::link::{Refused, ShardLinks, ShardMsg};
use super::shared::Shared;
use super::state::{on_shard_thread, running};
use crate::cluster::handle::{ClusterHandle, Work};
use crate::cluster::wire::Op;
use crate::history::{self, HistoryRules};
use crate::registry::{ConnId, Registry, ShardId};
use crate::topics::{self, PublishReport, TopicTable};
use crate::Error;

/// What dispatching reaches: this node's shards, its UUID map and topic table, and in cluster
/// mode the NATS link.
#[derive(Clone, Copy)]
pub(crate) struct Dispatch<'a> {
    links: &'a Arc<ShardLinks>,
    registry: &'a Registry,
    topics: &'a TopicTable,
    cluster: Option<&'a ClusterHandle>,
    history: Option<&'a HistoryRules>,
}

impl<'a> Dispatch<'a> {
    /// For a `Server` handle, or the NATS link.
    pub(crate) fn of(shared: &'a Shared) -> Self {
        Dispatch {
            links: &shared.links,
            registry: &shared.registry,
            topics: &shared.topics,
            cluster: shared.cluster.as_deref(),
            history: shared.history.as_deref(),
        }
    }

    /// For a connection's handle, on its shard.
    pub(crate) fn from_shard(conns: &'a Connections) -> Self {
        Dispatch {
            links: &conns.links,
            registry: &conns.registry,
            topics: &conns.topic_table,
            cluster: conns.cluster.as_deref(),
            history: conns.history_rules.as_deref(),
        }
    }

    /// This node only: for work that came from the other nodes, which is never sent back.
    #[cfg(feature = "cluster")]
    pub(crate) fn local(self) -> Self {
        Dispatch {
            cluster: None,
            ..self
        }
    }

    /// One message for the connection holding `uuid`. `InvalidConnection` when no connection
    /// of this node holds it (in cluster mode it goes to the other nodes instead, and is `Ok`)
    /// or it is closing on the caller's shard; `InboxFull` when its shard's inbox is full.
    pub(crate) fn to_uuid(self, uuid: &str, frame: Bytes) -> Result<(), Error> {
        let mut elsewhere = Vec::new();
        let result = self.to_uuid_here(uuid, frame.clone(), &mut elsewhere);
        self.forward_emit(elsewhere, frame);
        result
    }

    /// `to_uuid` for each UUID, the ones held on no shard here in one message to the other nodes;
    /// `failed` hears of each UUID that could not be reached.
    pub(crate) fn to_uuids(
        self,
        uuids: &[&str],
        frame: &Bytes,
        mut failed: impl FnMut(&str, Error),
    ) {
        let mut elsewhere = Vec::new();
        for uuid in uuids {
            if let Err(e) = self.to_uuid_here(uuid, frame.clone(), &mut elsewhere) {
                failed(uuid, e);
            }
        }
        self.forward_emit(elsewhere, frame.clone());
    }

    fn to_uuid_here(
        self,
        uuid: &str,
        frame: Bytes,
        elsewhere: &mut Vec<String>,
    ) -> Result<(), Error> {
        let Some(to) = self.registry.get(uuid) else {
            if self.cluster.is_some() {
                elsewhere.push(uuid.to_string());
                return Ok(());
            }
            return Err(Error::InvalidConnection);
        };
        match running(self.links, to.shard) {
            // On the caller's own shard the answer is known now: a closing connection is an error.
            Some(core) => match core.conns.get(to) {
                Some(conn) => conn.send_frame(frame, Instant::now()),
                None => Err(Error::InvalidConnection),
            },
            None => post(self.links, to.shard, ShardMsg::Emit { to, frame }),
        }
    }

    fn forward_emit(self, uuids: Vec<String>, frame: Bytes) {
        if let Some(cluster) = self.cluster.filter(|_| !uuids.is_empty()) {
            cluster.send(Work::Op(Op::Emit { uuids, frame }));
        }
    }

    /// `frame` for every connection on every shard and node, maybe but `except`. A shard whose
    /// inbox is full misses it (counted in its metrics).
    pub(crate) fn to_all(self, frame: &Bytes, except: Option<ConnId>) {
        each_shard(self.links, |shard| ShardMsg::Broadcast {
            frame: frame.clone(),
            except: except.filter(|id| id.shard == shard),
        });
        if let Some(cluster) = self.cluster {
            cluster.send(Work::Op(Op::Broadcast {
                frame: frame.clone(),
            }));
        }
    }

    /// `frame` for every subscriber of `topic`, maybe but `except`: one message to each shard
    /// of this node that holds a subscriber, and in cluster mode one to the other nodes. `key`
    /// is the conflation key's hash (`topics::key_hash`), 0 for none.
    pub(crate) fn to_topic(self, topic: &str, frame: &Bytes, key: u64, except: Option<ConnId>) {
        self.publish(topic, frame, key, except, None);
    }

    /// `to_topic`, each shard reached answering with what it did; the future sums the answers
    /// (this node only), waiting at most `REPORT_WAIT`. Sent at the call, not at the first poll.
    pub(crate) fn to_topic_reported(
        self,
        topic: &str,
        frame: &Bytes,
        key: u64,
        except: Option<ConnId>,
    ) -> impl Future<Output = PublishReport> + Send + 'static {
        let (report, answers) = flume::unbounded();
        let partial = self.publish(topic, frame, key, except, Some(&report));
        // Each shard drops its sender once it answered (or its message was dropped unread):
        // when the last is gone every answer is in.
        drop(report);
        collect(answers, partial, REPORT_WAIT)
    }

    /// Sends a publication (see `to_topic`), handing `report` to each message. Returns whether
    /// the report will be partial: an inbox refused it, or it went to other nodes too.
    fn publish(
        self,
        topic: &str,
        frame: &Bytes,
        key: u64,
        except: Option<ConnId>,
        report: Option<&ReportSender>,
    ) -> bool {
        let partial = if self
            .history
            .is_some_and(|rules| rules.retention(topic).is_some())
        {
            // A topic with history: its home shard orders and keeps it, then fans it out.
            let home = ShardId(history::home_shard(topic, self.links.len()));
            let msg = ShardMsg::Record {
                topic: topic.into(),
                frame: frame.clone(),
                key,
                except,
                report: report.cloned(),
            };
            send_to(self.links, home, msg).is_err()
        } else {
            self.fan_out(topic, frame, key, except, report)
        };
        if let Some(cluster) = self.cluster.filter(|_| topics::check_name(topic).is_ok()) {
            // With a report, the link answers for the other nodes (or says it cannot).
            cluster.send(Work::Publish {
                topic: topic.into(),
                frame: frame.clone(),
                key,
                report: report.cloned(),
            });
        }
        partial
    }

    /// Sends a publication to every shard with subscribers of `topic`; true when an inbox
    /// refused it.
    fn fan_out(
        self,
        topic: &str,
        frame: &Bytes,
        key: u64,
        except: Option<ConnId>,
        report: Option<&ReportSender>,
    ) -> bool {
        let shards = self.topics.shards_with(topic);
        let mut refused = false;
        if !shards.is_empty() {
            let name: Arc<str> = topic.into();
            for shard in shards {
                let msg = ShardMsg::Publish {
                    topic: Arc::clone(&name),
                    frame: frame.clone(),
                    key,
                    except: except.filter(|id| id.shard == shard),
                    position: None,
                    report: report.cloned(),
                };
                refused |= send_to(self.links, shard, msg).is_err();
            }
        }
        refused
    }

    /// Runs the listeners of `name` once per live connection, on every shard and node.
    pub(crate) fn fire(self, name: &str, data: &Bytes) {
        let shared_name: Arc<str> = name.into();
        each_shard(self.links, |_| ShardMsg::Fire {
            name: Arc::clone(&shared_name),
            data: data.clone(),
        });
        if let Some(cluster) = self.cluster {
            cluster.send(Work::Op(Op::Fire {
                name: name.to_string(),
                data: data.clone(),
            }));
        }
    }

    /// Closes the connection holding `uuid`, here or (cluster mode) wherever it is;
    /// `InvalidConnection` when no node can have it.
    pub(crate) fn close(self, uuid: &str, code: u16, reason: &str) -> Result<(), Error> {
        if let Some(to) = self.registry.get(uuid) {
            let reason = reason.to_string();
            return send_to(self.links, to.shard, ShardMsg::Close { to, code, reason });
        }
        let cluster = self.cluster.ok_or(Error::InvalidConnection)?;
        cluster.send(Work::Op(Op::Close {
            uuid: uuid.to_string(),
            code,
            reason: reason.to_string(),
        }));
        Ok(())
    }
}

/// Hands `msg` to `shard`: run at once when this thread runs that shard, else through its
/// inbox. One thread's messages to one shard keep their order either way. `InboxFull` when the
/// inbox refused it (data only, see `ShardLinks::post`).
pub(crate) fn send_to(links: &Arc<ShardLinks>, shard: ShardId, msg: ShardMsg) -> Result<(), Error> {
    match running(links, shard) {
        Some(core) => {
            core.handle(msg, Instant::now());
            Ok(())
        }
        None => post(links, shard, msg),
    }
}

/// Hands every shard the message `msg` makes for it: one message per shard, never one per
/// connection (docs/architecture.md, "Performance rules").
pub(crate) fn each_shard(links: &Arc<ShardLinks>, mut msg: impl FnMut(ShardId) -> ShardMsg) {
    for i in 0..links.len() {
        let _ = send_to(links, ShardId(i), msg(ShardId(i)));
    }
}

/// Posts to another thread's shard. A message that must not be refused and finds even the
/// inbox's reserved room full waits for room: on a shard thread in a task of its own (the
/// shard goes on), elsewhere in place.
fn post(links: &ShardLinks, shard: ShardId, msg: ShardMsg) -> Result<(), Error> {
    match links.post(shard, msg) {
        // A stopped shard has nobody left to deliver to.
        Ok(()) | Err(Refused::Stopped) => Ok(()),
        Err(Refused::Full) => Err(Error::InboxFull),
        Err(Refused::NoRoom(msg)) => {
            let inbox = links.get(shard).inbox.clone();
            if on_shard_thread() {
                glommio::spawn_local(async move {
                    let _ = inbox.send_async(msg).await;
                })
                .detach();
            } else {
                let _ = inbox.send(msg);
            }
            Ok(())
        }
    }
}

/// Where a shard answers a reported publish (`ShardMsg::Publish`, `ShardMsg::Record`).
type ReportSender = flume::Sender<PublishReport>;

/// Longest a reported publish waits for the shards' answers.
pub(crate) const REPORT_WAIT: Duration = Duration::from_secs(2);

/// Sums the shards' answers until every sender is gone, or `wait` has passed (then partial).
/// Answers already in (the caller's own shard answers inline) need no wait and no timer.
fn collect(
    answers: flume::Receiver<PublishReport>,
    partial: bool,
    wait: Duration,
) -> impl Future<Output = PublishReport> + Send + 'static {
    let mut report = PublishReport {
        nodes: 1,
        partial,
        ..PublishReport::default()
    };
    let mut pending = true;
    while pending {
        match answers.try_recv() {
            Ok(part) => report.add(&part),
            Err(flume::TryRecvError::Empty) => break,
            Err(flume::TryRecvError::Disconnected) => pending = false,
        }
    }
    let timer = pending.then(|| deadline(wait));
    async move {
        let Some(timer) = timer else {
            return report;
        };
        let all_in = future::or(
            async {
                while let Ok(part) = answers.recv_async().await {
                    report.add(&part);
                }
                true
            },
            async {
                timer.await;
                false
            },
        )
        .await;
        report.partial |= !all_in;
        report
    }
}

/// A future that resolves `wait` from now, and can be awaited on any thread: the timer runs
/// on this shard (a task of its own) when called on a shard thread, else on a short-lived
/// thread. Dropping the future ends the timer at once.
fn deadline(wait: Duration) -> impl Future<Output = ()> + Send + 'static {
    let (fire, fired) = flume::bounded::<()>(1);
    let (cancel, cancelled) = flume::bounded::<()>(1);
    if on_shard_thread() {
        glommio::spawn_local(async move {
            let ended = future::or(
                async {
                    Timer::new(wait).await;
                    true
                },
                async {
                    let _ = cancelled.recv_async().await;
                    false
                },
            )
            .await;
            if ended {
                let _ = fire.send(());
            }
        })
        .detach();
    } else {
        // Without a thread the wait ends at once: the report says partial.
        let _ = std::thread::Builder::new()
            .name("corecast-report".into())
            .spawn(move || {
                if let Err(flume::RecvTimeoutError::Timeout) = cancelled.recv_timeout(wait) {
                    let _ = fire.send(());
                }
            });
    }
    async move {
        let _cancel = cancel;
        let _ = fired.recv_async().await;
    }
}
