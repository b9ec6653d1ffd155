//! The types users hold of a connection: `Websocket` (its methods, which reach across shards
//! and nodes, are in `websocket.rs`) and `EventPayload`, what a listener receives. Not the
//! connection's state: that is `Conn`, which these point to.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::conn::Conn;
use crate::event::{Attributes, EventName};
use crate::ws::frame::MessageType;
use crate::Error;

/// A cheap, cloneable handle to one connection (Go: `*event.Websocket`); its methods are in
/// `websocket.rs`. Not `Send`: it lives on its connection's shard.
#[derive(Clone)]
pub struct Websocket {
    pub(crate) conn: Rc<Conn>,
}

impl Websocket {
    pub(crate) fn from_conn(conn: Rc<Conn>) -> Self {
        Websocket { conn }
    }
}

/// What a listener receives (Go: `*event.EventPayload`).
pub struct EventPayload {
    pub(crate) kws: Websocket,
    pub(crate) name: EventName,
    pub(crate) uuid: Arc<str>,
    pub(crate) attributes: Attributes,
    pub(crate) error: Option<Arc<Error>>,
    pub(crate) data: Bytes,
    pub(crate) binary: bool,
}

impl EventPayload {
    /// The connection the event is about.
    pub fn kws(&self) -> &Websocket {
        &self.kws
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection's UUID when the event fired.
    pub fn socket_uuid(&self) -> &str {
        &self.uuid
    }

    /// The connection's attributes when the event fired.
    pub fn socket_attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The error, for `error` and for `disconnect` after a failure.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }

    /// The payload: the message, ping or pong data, or what `fire` was given.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// How a `message` arrived: `Binary` for a binary message, `Text` for everything else.
    pub fn message_type(&self) -> MessageType {
        if self.binary {
            MessageType::Binary
        } else {
            MessageType::Text
        }
    }
}

impl std::fmt::Debug for EventPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPayload")
            .field("name", &&*self.name)
            .field("uuid", &self.uuid)
            .field("error", &self.error)
            .field("data_len", &self.data.len())
            .finish()
    }
}
