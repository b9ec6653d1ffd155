//! What the rest of the server holds of each shard: its inbox, its live connection count and
//! its traffic counters, and the messages the inbox carries. Not the shard itself: no other
//! thread touches that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::history::{Epoch, Position, RecoverAnswer};
use crate::metrics::ShardMetrics;
use crate::registry::{ConnId, ShardId};
use crate::topics::PublishReport;
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
    /// A framed message for the shard's subscribers of `topic`, maybe but one; with its
    /// position when the topic keeps history. With `report`, the shard answers once there
    /// with what it did (`Server::publish_reported`).
    Publish {
        topic: Arc<str>,
        frame: Bytes,
        /// The conflation key's hash (`topics::key_hash`), 0 for none.
        key: u64,
        except: Option<ConnId>,
        position: Option<Position>,
        report: Option<flume::Sender<PublishReport>>,
    },
    /// A publication of a topic with history, for the topic's home shard: it records it (its
    /// position), then sends it to the shards with subscribers. With `report`, the home shard
    /// answers for itself and hands it on to each shard it sends the publication to.
    Record {
        topic: Arc<str>,
        frame: Bytes,
        key: u64,
        except: Option<ConnId>,
        report: Option<flume::Sender<PublishReport>>,
    },
    /// What a subscriber of `topic` that last saw `since` missed, asked of the topic's home
    /// shard, and where the topic stands.
    Recover {
        topic: Arc<str>,
        since: Option<Position>,
        done: flume::Sender<RecoverAnswer>,
    },
    /// The kept window of `topic`, asked of its home shard: first and last offsets, epoch.
    Window {
        topic: Arc<str>,
        done: flume::Sender<Option<(u64, u64, Epoch)>>,
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

impl ShardMsg {
    /// Data for connections, which a full inbox refuses (the sender hears `InboxFull` where
    /// its call returns a result, and the refusal is counted). Subscriptions, closes and the
    /// stop are never refused: they take the room kept for them.
    fn is_data(&self) -> bool {
        matches!(
            self,
            ShardMsg::Emit { .. }
                | ShardMsg::Broadcast { .. }
                | ShardMsg::Publish { .. }
                | ShardMsg::Record { .. }
                | ShardMsg::Fire { .. }
        )
    }
}

/// Messages a shard's inbox holds before it refuses data: a shard this far behind is not
/// catching up, and what waits in its inbox holds memory (each message a frame).
pub const DEFAULT_INBOX_CAPACITY: usize = 65_536;

/// Room beyond the capacity kept for the messages never refused.
const CONTROL_ROOM: usize = 1_024;

/// Why `ShardLinks::post` did not queue a message.
pub(crate) enum Refused {
    /// The inbox holds its capacity: data is refused (and counted).
    Full,
    /// Even the room kept for control messages is taken: the caller must wait for room.
    NoRoom(ShardMsg),
    /// The shard has stopped (or never existed).
    Stopped,
}

/// One shard as the rest of the server sees it.
pub(crate) struct ShardLink {
    pub(crate) inbox: flume::Sender<ShardMsg>,
    pub(crate) live: AtomicUsize,
    pub(crate) metrics: ShardMetrics,
}

/// Every shard's link, by shard id, and the inboxes' capacity.
pub(crate) struct ShardLinks {
    links: Box<[ShardLink]>,
    capacity: usize,
}

impl ShardLinks {
    /// Links for `n` shards whose inboxes refuse data past `capacity` messages, and the
    /// receiving end of each inbox.
    pub(crate) fn new(n: usize, capacity: usize) -> (ShardLinks, Vec<flume::Receiver<ShardMsg>>) {
        let capacity = capacity.max(1);
        let (links, inboxes): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| {
                let (inbox, receiver) = flume::bounded(capacity + CONTROL_ROOM);
                let link = ShardLink {
                    inbox,
                    live: AtomicUsize::new(0),
                    metrics: ShardMetrics::default(),
                };
                (link, receiver)
            })
            .unzip();
        let links = links.into();
        (ShardLinks { links, capacity }, inboxes)
    }

    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    pub(crate) fn get(&self, shard: ShardId) -> &ShardLink {
        &self.links[shard.0]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ShardLink> {
        self.links.iter()
    }

    /// Live connections on all shards.
    pub(crate) fn connections(&self) -> usize {
        self.links
            .iter()
            .map(|s| s.live.load(Ordering::Relaxed))
            .sum()
    }

    /// Posts `msg` to `shard`'s inbox without waiting. Data finds the inbox full at its
    /// capacity (counted in that shard's metrics); other messages may use the room beyond it.
    pub(crate) fn post(&self, shard: ShardId, msg: ShardMsg) -> Result<(), Refused> {
        let Some(link) = self.links.get(shard.0) else {
            return Err(Refused::Stopped);
        };
        let data = msg.is_data();
        if data && link.inbox.len() >= self.capacity {
            link.metrics.inbox_refused();
            return Err(Refused::Full);
        }
        match link.inbox.try_send(msg) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Disconnected(_)) => Err(Refused::Stopped),
            // Another thread filled the last places since the check.
            Err(flume::TrySendError::Full(_)) if data => {
                link.metrics.inbox_refused();
                Err(Refused::Full)
            }
            Err(flume::TrySendError::Full(msg)) => Err(Refused::NoRoom(msg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit() -> ShardMsg {
        let to = ConnId {
            shard: ShardId(0),
            slot: 0,
            generation: 1,
        };
        ShardMsg::Emit {
            to,
            frame: Bytes::new(),
        }
    }

    fn close_all() -> ShardMsg {
        let (done, _) = flume::bounded(1);
        ShardMsg::CloseAll {
            frame: Bytes::new(),
            deadline: Instant::now(),
            done,
        }
    }

    #[test]
    fn a_full_inbox_refuses_data_counts_it_and_keeps_room_for_control() {
        let (links, inboxes) = ShardLinks::new(1, 2);
        assert!(links.post(ShardId(0), emit()).is_ok());
        assert!(links.post(ShardId(0), emit()).is_ok());
        assert!(matches!(links.post(ShardId(0), emit()), Err(Refused::Full)));
        assert_eq!(links.get(ShardId(0)).metrics.inbox_refusals(), 1);
        for _ in 0..CONTROL_ROOM {
            assert!(links.post(ShardId(0), close_all()).is_ok());
        }
        assert!(matches!(
            links.post(ShardId(0), close_all()),
            Err(Refused::NoRoom(ShardMsg::CloseAll { .. }))
        ));
        // The shard takes one: data is still refused until it is below the capacity.
        inboxes[0].try_recv().unwrap();
        assert!(matches!(links.post(ShardId(0), emit()), Err(Refused::Full)));
        assert!(matches!(
            links.post(ShardId(1), emit()),
            Err(Refused::Stopped)
        ));
    }
}
