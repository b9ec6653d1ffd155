//! What users can do with a connection: the methods of `Websocket` (Go: `*event.Websocket`).
//! A thin face over the shard's connection glue; the type itself is defined beside that glue
//! in `shard::conn`, and it is not `Send`: it lives on its connection's shard.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::backend::wire::{self, Origin, Verdict};
use crate::backend::Hook;
use crate::event::EventName;
use crate::history::{self, NotRecovered, Position, Recovery};
use crate::registry::RenameError;
use crate::registry::ShardId;
use crate::shard::dispatch::{send_to, Dispatch};
use crate::shard::handle::{EventPayload, Websocket};
use crate::shard::link::ShardMsg;
use crate::topics::{self, PublishReport};
use crate::ws::frame::MessageType;
use crate::Error;

/// A subscription catching up (`Websocket::subscribe_from`): what it found, and what is still
/// to send. Until it is delivered (or dropped), live publications of the topic for this
/// connection are held, so nothing is lost between the answer and the catch-up.
pub struct Catchup {
    kws: Websocket,
    topic: Arc<str>,
    epoch: Option<history::Epoch>,
    after: u64,
    kept: Vec<history::Kept>,
    recovery: Recovery,
}

impl Catchup {
    /// What the recovery found.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Sends what was missed and what arrived meanwhile, in order, in the position envelope;
    /// the live stream follows.
    pub fn deliver(self) {
        // Drop does it.
    }
}

impl Drop for Catchup {
    fn drop(&mut self) {
        let kept = std::mem::take(&mut self.kept);
        self.kws
            .conn
            .end_recovery(&self.topic, self.epoch, self.after, kept);
    }
}

impl Websocket {
    /// The connection's UUID (Go: `GetUUID`).
    pub fn uuid(&self) -> String {
        self.conn.uuid().to_string()
    }

    /// Gives the connection a new UUID. Never waits.
    ///
    /// Errors, with nothing changed: `UuidDuplication` if another live connection of this node
    /// (on any shard) holds it; `InvalidConnection` if this connection is closing or gone.
    ///
    /// Without cluster mode the old UUID stops resolving and the new one resolves at once. In
    /// cluster mode the name must also be free on every other node, which takes a NATS round
    /// trip: the shard does not wait for it. The call returns `Ok` once the claim is asked
    /// for, the connection keeps its old UUID until the claim is granted, and a refusal
    /// (`UuidDuplication`, or `Timeout` past the claim timeout) fires `event::ERROR` on the
    /// connection. Await [`Websocket::set_uuid_async`] to have the cluster's answer returned.
    pub fn set_uuid(&self, new: impl Into<String>) -> Result<(), Error> {
        let Some(new) = self.rename_target(new.into())? else {
            return Ok(());
        };
        let Some(cluster) = self.conn.conns.cluster.clone() else {
            return self.rename(new, None);
        };
        let kws = self.clone();
        glommio::spawn_local(async move {
            let renamed = match cluster.claim(&new).await {
                Ok(revision) => kws.rename(new, Some(revision)),
                Err(e) => Err(e),
            };
            if let Err(e) = renamed {
                kws.conn.fire_error(e, Bytes::new());
            }
        })
        .detach();
        Ok(())
    }

    /// `set_uuid` that returns once the new UUID holds everywhere: in cluster mode after the
    /// cluster-wide claim (one NATS round trip, at most the claim timeout, `Error::Timeout`
    /// past it), so of two concurrent calls for one name on any nodes exactly one returns
    /// `Ok`. Awaiting it holds up only the task that awaits, never the shard.
    pub async fn set_uuid_async(&self, new: impl Into<String>) -> Result<(), Error> {
        let Some(new) = self.rename_target(new.into())? else {
            return Ok(());
        };
        let claim = match self.conn.conns.cluster.clone() {
            Some(cluster) => Some(cluster.claim(&new).await?),
            None => None,
        };
        self.rename(new, claim)
    }

    /// The name to rename to, `None` when it is already this connection's, or why not.
    fn rename_target(&self, new: String) -> Result<Option<Arc<str>>, Error> {
        if !self.conn.is_open() {
            return Err(Error::InvalidConnection);
        }
        if *self.conn.uuid() == *new {
            return Ok(None);
        }
        if self.conn.conns.registry.get(&new).is_some() {
            return Err(Error::UuidDuplication);
        }
        Ok(Some(new.into()))
    }

    /// Renames in this node's registry, with the cluster-wide claim on `new` already made (in
    /// cluster mode); on failure the claim is given back.
    fn rename(&self, new: Arc<str>, claim: Option<u64>) -> Result<(), Error> {
        let conns = &self.conn.conns;
        let old = self.conn.uuid();
        let renamed = if self.conn.is_open() {
            conns.registry.rename(&old, Arc::clone(&new), self.conn.id)
        } else {
            Err(RenameError::NotRegistered)
        };
        match renamed {
            Ok(()) => {
                self.conn.release_claim(&old);
                self.conn.set_uuid(Arc::clone(&new));
                if let Some(revision) = claim {
                    self.conn.set_claim(revision);
                }
                Ok(())
            }
            Err(e) => {
                if let (Some(cluster), Some(revision)) = (&conns.cluster, claim) {
                    cluster.release(&new, revision);
                }
                Err(match e {
                    RenameError::Taken => Error::UuidDuplication,
                    RenameError::NotRegistered => Error::InvalidConnection,
                })
            }
        }
    }

    /// Attaches a typed value to the connection.
    pub fn set_attribute<V: Any + Send + Sync>(&self, key: impl Into<String>, value: V) {
        self.conn.set_attribute(key.into(), Arc::new(value));
    }

    /// A copy of the value under `key`; `None` if missing or of another type.
    pub fn attribute<V: Clone + 'static>(&self, key: &str) -> Option<V> {
        self.conn.attributes().get::<V>(key).cloned()
    }

    /// A route parameter (`:name`, or `*` for the wildcard).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.conn.request.params.get(name)
    }

    /// A query parameter of the upgrade request, decoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.conn.request.head.query(name)
    }

    /// A header of the upgrade request; the name is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.conn.request.head.header(name)
    }

    /// The subprotocol agreed at the upgrade (`Sec-WebSocket-Protocol`), if the route lists
    /// any and the client offered one of them.
    pub fn protocol(&self) -> Option<&str> {
        self.conn.request.protocol()
    }

    /// A cookie of the upgrade request.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.conn.request.head.cookie(name)
    }

    /// The request path, without the query string.
    pub fn path(&self) -> &str {
        self.conn.request.head.path()
    }

    /// The user the client's token named (its `sub`) at the upgrade, on a server that
    /// authenticates (`Builder::authenticate`); `None` on one that does not. Not the UUID: a
    /// user may hold several connections.
    pub fn user(&self) -> Option<&str> {
        self.conn.request.token().map(|t| &*t.user)
    }

    /// The verified token's identity: user, expiry and topic grants
    /// ([`Identity::may_subscribe`](crate::Identity::may_subscribe)), from the upgrade or the
    /// last [`Websocket::refresh_token`]. `None` without authentication.
    pub fn identity(&self) -> Option<Arc<crate::Identity>> {
        self.conn.request.identity()
    }

    /// Whether the server's backend (`Builder::backend`) has `hook` configured.
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.conn
            .conns
            .backend
            .as_ref()
            .is_some_and(|b| b.has_hook(hook))
    }

    /// Asks the backend's subscribe hook whether this connection may join `topic`. Nothing is
    /// subscribed: act on the verdict. The call waits for the backend (within
    /// `Backend::timeout`) without holding up the shard; await it on a task
    /// (`glommio::spawn_local`), not in a listener.
    ///
    /// Errors: `Error::NoHook` when no subscribe hook is set; `Error::BackendBusy` when this
    /// shard already has `Backend::max_in_flight` calls waiting; `Error::BackendUnavailable`
    /// when the backend could not be reached, was too slow, or answered wrongly.
    pub async fn ask_subscribe(&self, topic: &str) -> Result<Verdict, Error> {
        let request = wire::subscribe_request(self.origin(&self.conn.uuid()), topic);
        self.ask(Hook::Subscribe, request).await
    }

    /// Asks the backend's publish hook about publishing `data` to `topic`: `Allow(Some(v))`
    /// replaces the data with `v`. Errors as `ask_subscribe`.
    pub async fn ask_publish(&self, topic: &str, data: &str) -> Result<Verdict, Error> {
        let request = wire::publish_request(self.origin(&self.conn.uuid()), topic, data);
        self.ask(Hook::Publish, request).await
    }

    /// Sends an RPC request to the backend's RPC hook: `Allow(data)` is its answer. Errors as
    /// `ask_subscribe`.
    pub async fn ask_rpc(&self, method: &str, data: &serde_json::Value) -> Result<Verdict, Error> {
        let request = wire::rpc_request(self.origin(&self.conn.uuid()), method, data);
        self.ask(Hook::Rpc, request).await
    }

    fn origin<'a>(&'a self, uuid: &'a str) -> Origin<'a> {
        Origin {
            uuid,
            user: self.user(),
            path: self.path(),
        }
    }

    async fn ask(&self, hook: Hook, request: Vec<u8>) -> Result<Verdict, Error> {
        let Some(backend) = self.conn.conns.backend.clone() else {
            return Err(Error::NoHook(hook.name()));
        };
        backend.ask_verdict(hook, request).await
    }

    /// Presents a fresh token on this open connection, verified with the server's verifier
    /// (`Builder::authenticate`) at the current time. Taken, it replaces the connection's
    /// identity: its grants and its expiry, which is enforced anew (`event::TOKEN_EXPIRING` at
    /// its `exp`, 1008 "token expired" past the grace).
    ///
    /// Errors: `Error::Token` with the refusal's reason for a token the verifier refuses
    /// (nothing changes); `Error::Token("the token is for another user")` for a token whose
    /// `sub` is not the connection's user, and the connection is closed with 1008;
    /// `Error::InvalidConnection` once closing or gone; `Error::Config` on a server that does
    /// not authenticate.
    pub fn refresh_token(&self, token: &str) -> Result<(), Error> {
        self.conn.refresh_token(token)
    }

    /// A copy of a value the `before_upgrade` gate stored with `set_local`.
    pub fn local<V: Clone + 'static>(&self, key: &str) -> Option<V> {
        self.conn
            .request
            .extras
            .as_ref()?
            .locals
            .get(key)?
            .downcast_ref::<V>()
            .cloned()
    }

    /// Whether permessage-deflate is in use on this connection (the route offers it and the
    /// client asked for it): what it is sent goes out compressed when that pays.
    pub fn deflate(&self) -> bool {
        self.conn.request.deflate.is_some()
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.request.remote
    }

    /// The shard (0-based) that owns this connection.
    pub fn shard(&self) -> usize {
        self.conn.id.shard.0
    }

    /// Whether the connection is open: not closing, not torn down.
    pub fn is_alive(&self) -> bool {
        self.conn.is_open()
    }

    /// Queues a message to this connection. On a closed connection it is dropped; on a full
    /// queue it waits, then `error` fires with `Error::QueueFull` (docs/behaviour.md, "Sending").
    pub fn emit(&self, data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        let _ = self.conn.send_frame(ty.frame(&data), Instant::now());
    }

    /// Sends a message to the connection holding `uuid`, on any shard. On failure returns
    /// the error (`InvalidConnection`, or `InboxFull` when its shard's inbox is full) and fires
    /// `error` on this connection with the UUID as data. In cluster mode a UUID this node does
    /// not hold goes to the other nodes (and is `Ok`).
    pub fn emit_to(
        &self,
        uuid: &str,
        data: impl Into<Bytes>,
        ty: MessageType,
    ) -> Result<(), Error> {
        let data = data.into();
        let result = self.dispatch().to_uuid(uuid, ty.frame(&data));
        if let Err(e) = &result {
            self.failed_to_reach(uuid, e);
        }
        result
    }

    /// `emit_to` for each UUID; each failure fires one `error` on this connection. In cluster
    /// mode the UUIDs this node does not hold go to the other nodes in one message.
    pub fn emit_to_list(&self, uuids: &[&str], data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        self.dispatch()
            .to_uuids(uuids, &ty.frame(&data), |uuid, e| {
                self.failed_to_reach(uuid, &e)
            });
    }

    /// Fires `error` on this connection for a message `uuid` did not get.
    fn failed_to_reach(&self, uuid: &str, error: &Error) {
        // Emitting fails only with these two, which carry nothing to share.
        let error = match error {
            Error::InboxFull => Error::InboxFull,
            _ => Error::InvalidConnection,
        };
        self.conn
            .fire_error(error, Bytes::copy_from_slice(uuid.as_bytes()));
    }

    fn dispatch(&self) -> Dispatch<'_> {
        Dispatch::from_shard(&self.conn.conns)
    }

    /// Sends a message to every connection on every shard; with `except`, not to this one.
    /// The message is framed once and the bytes shared by all recipients.
    pub fn broadcast(&self, data: impl Into<Bytes>, except: bool, ty: MessageType) {
        let data = data.into();
        let except = except.then_some(self.conn.id);
        self.dispatch().to_all(&ty.frame(&data), except);
    }

    /// Subscribes this connection to `topic`: `Ok(false)` if it already was. A publish called
    /// after this returns, on any thread, reaches it. `Error::InvalidTopic` for an empty name
    /// or one over 256 bytes, `Error::TooManyTopics` past `Config::max_topics`,
    /// `Error::InvalidConnection` once the connection is gone. Subscriptions end with it.
    pub fn subscribe(&self, topic: impl Into<String>) -> Result<bool, Error> {
        self.conn.subscribe(&topic.into())
    }

    /// Unsubscribes this connection from `topic`; false if it was not subscribed.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        self.conn.unsubscribe(topic)
    }

    /// Whether this connection is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.conn.is_subscribed(topic)
    }

    /// This connection's topics, in the order it subscribed.
    pub fn topics(&self) -> Vec<String> {
        self.conn.topics()
    }

    /// Publications reach this connection in the envelope instead of as bare payloads:
    /// `{"topic":..,"offset":..,"epoch":..,"data":..}` for a topic with history
    /// (`Builder::history`), so the client can come back with the last position it saw, and
    /// `{"topic":..,"data":..}` for any other, so it always knows a publication's topic and
    /// never mistakes a payload for one of its own protocol's frames. Set by `subscribe_from`;
    /// off by default.
    pub fn set_positions(&self, on: bool) {
        self.conn.set_positions(on);
    }

    /// Subscribes to `topic`, which keeps history, and turns positions on (`set_positions`).
    /// With `since`, the last position the client saw, the client is to get every publication
    /// it missed, then the live stream, with no gap and no duplicate at the seam even while
    /// publishing goes on; when that cannot be told (another epoch, too old), the result says
    /// so and the client gets the live stream. Without `since`, the result says where the
    /// topic stands. Asks the topic's home shard without blocking this one.
    ///
    /// Nothing is sent yet when this returns: answer the client first if the protocol says
    /// so, then `Catchup::deliver` (or drop the `Catchup`) sends what was missed and what
    /// arrived meanwhile, and the live stream goes on after it.
    ///
    /// Errors: `Error::NoHistory` for a topic without history; as `subscribe` otherwise.
    pub async fn subscribe_from(
        &self,
        topic: &str,
        since: Option<Position>,
    ) -> Result<Catchup, Error> {
        let conns = &self.conn.conns;
        if !conns
            .history_rules
            .as_ref()
            .is_some_and(|r| r.retention(topic).is_some())
        {
            return Err(Error::NoHistory);
        }
        self.conn.set_positions(true);
        self.conn.begin_recovery(topic);
        let mut catchup = Catchup {
            kws: self.clone(),
            topic: topic.into(),
            epoch: None,
            after: 0,
            kept: Vec::new(),
            recovery: Recovery::Fresh { position: None },
        };
        // On an error the catch-up ends here, with nothing to send.
        self.conn.subscribe(topic)?;
        let (done, answer) = flume::bounded(1);
        let home = ShardId(history::home_shard(topic, conns.links.len()));
        let ask = ShardMsg::Recover {
            topic: topic.into(),
            since,
            done,
        };
        let _ = send_to(&conns.links, home, ask);
        // A home shard that stopped dropped the question: nothing can be told.
        let (missed, now) = answer
            .recv_async()
            .await
            .unwrap_or((Err(NotRecovered::Unknown), None));
        catchup.epoch = now.map(|p| p.epoch);
        catchup.after = now.map_or(0, |p| p.offset);
        catchup.recovery = match (since, missed) {
            (None, _) => Recovery::Fresh { position: now },
            (Some(since), Ok(kept)) => {
                catchup.after = since.offset;
                catchup.kept = kept;
                Recovery::Recovered {
                    missed: catchup.kept.len(),
                    position: now,
                }
            }
            (Some(_), Err(reason)) => Recovery::NotRecovered {
                reason,
                position: now,
            },
        };
        Ok(catchup)
    }

    /// Sends to every subscriber of `topic`, on every shard, except this connection (as
    /// uWebSockets' `ws.publish`). Framed once; a publish never blocks the caller.
    pub fn publish(&self, topic: &str, data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        self.dispatch()
            .to_topic(topic, &ty.frame(&data), 0, Some(self.conn.id));
    }

    /// `publish` with a conflation key (a symbol, a user id): where `topic`'s slow-consumer
    /// policy is `KeepLatest`, a subscriber's full queue keeps only the latest publication
    /// per key (`Builder::slow_consumers`). Elsewhere the key changes nothing.
    pub fn publish_keyed(&self, topic: &str, key: &str, data: impl Into<Bytes>, ty: MessageType) {
        let data = data.into();
        let key = topics::key_hash(key);
        self.dispatch()
            .to_topic(topic, &ty.frame(&data), key, Some(self.conn.id));
    }

    /// Turns on (or off) the in-band notice `{"topic":"t","missed":N}`, sent when this
    /// connection's full queue dropped N publications of `t` under the topic's slow-consumer
    /// policy (`Builder::slow_consumers`); counts of drops not yet told add up in one notice.
    /// On whenever positions are (`set_positions`). Off by default, since a client that did
    /// not ask for it may not expect JSON among its messages.
    pub fn set_notices(&self, on: bool) {
        self.conn.set_notices(on);
    }

    /// `publish` (this connection left out), then what it reached on this node, as
    /// `Server::publish_reported`. Never blocks the shard: await the future in a task.
    pub fn publish_reported(
        &self,
        topic: &str,
        data: impl Into<Bytes>,
        ty: MessageType,
    ) -> impl Future<Output = PublishReport> + Send + 'static {
        let data = data.into();
        self.dispatch()
            .to_topic_reported(topic, &ty.frame(&data), 0, Some(self.conn.id))
    }

    /// Runs the listeners of `name` for this connection only, now (nothing goes on the wire).
    pub fn fire(&self, name: &str, data: impl Into<Bytes>) {
        self.conn
            .fire(EventName::Shared(name.into()), data.into(), None);
    }

    /// Adds a listener for this connection only; dropped when it disconnects.
    pub fn on(&self, name: &str, listener: impl Fn(&EventPayload) + 'static) {
        self.conn.on(name, Rc::new(listener));
    }

    /// Removes every listener of `name` that this connection registered.
    pub fn off(&self, name: &str) {
        self.conn.off(name);
    }

    /// Closes with 1000 "Connection closed" after what is queued; `close` then `disconnect` fire.
    pub fn close(&self) {
        self.close_with(1000, "Connection closed");
    }

    /// Closes with a code and reason (sanitised as for `close_all`).
    pub fn close_with(&self, code: u16, reason: &str) {
        self.conn.close(code, reason);
    }
}

impl std::fmt::Debug for Websocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Websocket")
            .field("uuid", &&*self.conn.uuid())
            .field("alive", &self.conn.is_open())
            .finish()
    }
}
