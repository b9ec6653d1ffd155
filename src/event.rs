//! Event names, attributes, and the server-wide listener registry. Not the payload a listener
//! receives (`EventPayload`, beside the connection it describes in `shard::conn`) nor the
//! firing, which runs with the connection on its shard.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A complete text or binary message arrived; `data` is its payload.
pub const MESSAGE: &str = "message";
/// The peer pinged; `data` is the ping payload (the pong is sent automatically).
pub const PING: &str = "ping";
/// The peer ponged; `data` is the pong payload.
pub const PONG: &str = "pong";
/// The connection was torn down; `error` says why, when it was not a clean close.
pub const DISCONNECT: &str = "disconnect";
/// The route callback has run; fired before the first frame is read.
pub const CONNECT: &str = "connect";
/// The server closed the connection (`kws.close()`, `close_all`) and the close frame went out.
pub const CLOSE: &str = "close";
/// Something failed on this connection; `error` says what.
pub const ERROR: &str = "error";
/// The connection's token reached its `exp` (on a server with `Builder::authenticate`, for a
/// token that has one); `data` is the number of whole seconds left, as decimal text (`"30"`),
/// before the connection is closed with 1008 "token expired". A fresh token for the same user
/// (`Websocket::refresh_token`) within them keeps it open. Fires once per token.
pub const TOKEN_EXPIRING: &str = "token_expiring";

/// An event name without an allocation for the built-in ones.
#[derive(Clone, Debug)]
pub(crate) enum EventName {
    Static(&'static str),
    Shared(Arc<str>),
}

impl std::ops::Deref for EventName {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            EventName::Static(s) => s,
            EventName::Shared(s) => s,
        }
    }
}

/// A server-wide listener of payloads `P`: runs on whichever shard owns the connection.
pub(crate) type ServerListener<P> = Arc<dyn Fn(&P) + Send + Sync>;

/// Typed values attached to a connection. Cloning is cheap: the map is shared until written.
#[derive(Clone, Default)]
pub struct Attributes(Option<Arc<HashMap<String, Arc<dyn Any + Send + Sync>>>>);

impl Attributes {
    /// The value under `key`, if it is there and of type `V`.
    pub fn get<V: 'static>(&self, key: &str) -> Option<&V> {
        self.0.as_ref()?.get(key)?.downcast_ref::<V>()
    }

    /// Whether `key` is set, whatever its type.
    pub fn contains(&self, key: &str) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(key))
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets `key`; copies the map only if a snapshot of it is still held elsewhere.
    pub(crate) fn insert(&mut self, key: String, value: Arc<dyn Any + Send + Sync>) {
        Arc::make_mut(self.0.get_or_insert_with(Default::default)).insert(key, value);
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&String> = self.0.iter().flat_map(|m| m.keys()).collect();
        f.debug_struct("Attributes").field("keys", &keys).finish()
    }
}

/// Listeners by event name, as one immutable snapshot.
pub(crate) type ListenerMap<P> = HashMap<Box<str>, Arc<[ServerListener<P>]>>;

/// Server-wide listeners, copy-on-write: writers replace the snapshot and bump a version; shards
/// keep their own copy of the snapshot and re-read it only when the version moved, so firing an
/// event takes no lock.
///
/// Generic over the payload type so that this file needs nothing of the connection's.
pub(crate) struct ListenerRegistry<P> {
    version: AtomicU64,
    map: RwLock<Arc<ListenerMap<P>>>,
}

impl<P> Default for ListenerRegistry<P> {
    fn default() -> Self {
        ListenerRegistry {
            version: AtomicU64::new(0),
            map: RwLock::new(Arc::new(HashMap::new())),
        }
    }
}

impl<P> ListenerRegistry<P> {
    pub(crate) fn on(&self, name: &str, listener: ServerListener<P>) {
        self.update(|map| {
            let mut list: Vec<ServerListener<P>> =
                map.get(name).map(|l| l.to_vec()).unwrap_or_default();
            list.push(listener);
            map.insert(name.into(), list.into());
        });
    }

    pub(crate) fn off(&self, name: &str) {
        self.update(|map| {
            map.remove(name);
        });
    }

    fn update(&self, change: impl FnOnce(&mut ListenerMap<P>)) {
        let mut guard = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut next: ListenerMap<P> = (**guard).clone();
        change(&mut next);
        *guard = Arc::new(next);
        // Bumped while the write lock is held, so a reader that sees the new version also
        // reads the new map.
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> (u64, Arc<ListenerMap<P>>) {
        let guard = self.map.read().unwrap_or_else(|e| e.into_inner());
        (self.version(), Arc::clone(&guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_typed_and_copy_on_write() {
        let mut a = Attributes::default();
        assert!(a.is_empty());
        a.insert("n".into(), Arc::new(7u32));
        let snapshot = a.clone();
        a.insert("n".into(), Arc::new(8u32));
        assert_eq!(a.get::<u32>("n"), Some(&8));
        assert_eq!(snapshot.get::<u32>("n"), Some(&7));
        assert_eq!(a.get::<String>("n"), None);
        assert_eq!(a.get::<u32>("missing"), None);
        assert!(a.contains("n"));
    }

    #[test]
    fn registry_versions_move_on_every_change() {
        let r = ListenerRegistry::<u32>::default();
        let v0 = r.version();
        r.on("message", Arc::new(|_| {}));
        r.on("message", Arc::new(|_| {}));
        let (v, map) = r.snapshot();
        assert!(v > v0);
        assert_eq!(map.get("message").map(|l| l.len()), Some(2));
        r.off("message");
        let (v2, map) = r.snapshot();
        assert!(v2 > v);
        assert!(!map.contains_key("message"));
    }
}
