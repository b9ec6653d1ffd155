//! What the rest of the server holds of each shard: its inbox, its live connection count and
//! its traffic counters, and the messages the inbox carries. Not the shard itself: no other
//! thread touches that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::metrics::ShardMetrics;
use crate::registry::{ConnId, ShardId};
use crate::Error;

/// Work sent to a shard by other threads (or run inline by the shard's own thread).
pub(crate) enum ShardMsg {
    /// A framed message for one connection.
    Emit { to: ConnId, frame: Bytes },
    /// A framed message for every connection of the shard, maybe but one.
    Broadcast {
        frame: Bytes,
        except: Option<ConnId>,
    },
    /// A framed message for the shard's subscribers of `topic`, maybe but one.
    Publish {
        topic: Arc<str>,
        frame: Bytes,
        except: Option<ConnId>,
    },
    /// Subscribe (or unsubscribe) one connection, and answer on `done`.
    Subscription {
        to: ConnId,
        topic: Box<str>,
        subscribe: bool,
        done: flume::Sender<Result<bool, Error>>,
    },
    /// Run the listeners of `name` once per live connection.
    Fire { name: Arc<str>, data: Bytes },
    /// Close one connection.
    Close {
        to: ConnId,
        code: u16,
        reason: String,
    },
    /// Close every connection; report `true` on `done` if some had to be forced.
    CloseAll {
        frame: Bytes,
        deadline: Instant,
        done: flume::Sender<bool>,
    },
    /// Stop accepting, close everything (1001) by the deadline, then end the executor.
    Stop { deadline: Instant },
}

/// One shard as the rest of the server sees it.
pub(crate) struct ShardLink {
    pub(crate) inbox: flume::Sender<ShardMsg>,
    pub(crate) live: AtomicUsize,
    pub(crate) metrics: ShardMetrics,
}

/// Every shard's link, by shard id.
pub(crate) struct ShardLinks(Box<[ShardLink]>);

impl ShardLinks {
    /// Links for `n` shards, and the receiving end of each inbox.
    pub(crate) fn new(n: usize) -> (ShardLinks, Vec<flume::Receiver<ShardMsg>>) {
        let (links, inboxes): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| {
                let (inbox, receiver) = flume::unbounded();
                let link = ShardLink {
                    inbox,
                    live: AtomicUsize::new(0),
                    metrics: ShardMetrics::default(),
                };
                (link, receiver)
            })
            .unzip();
        (ShardLinks(links.into()), inboxes)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn get(&self, shard: ShardId) -> &ShardLink {
        &self.0[shard.0]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ShardLink> {
        self.0.iter()
    }

    /// Live connections on all shards.
    pub(crate) fn connections(&self) -> usize {
        self.0.iter().map(|s| s.live.load(Ordering::Relaxed)).sum()
    }

    /// Posts `msg` to `shard`'s inbox; false once that shard has stopped (or never existed).
    pub(crate) fn post(&self, shard: ShardId, msg: ShardMsg) -> bool {
        self.0
            .get(shard.0)
            .is_some_and(|s| s.inbox.send(msg).is_ok())
    }
}
