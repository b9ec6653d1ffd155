//! The application's backend: events forwarded to it and hooks that ask it, over HTTP.

// Used once the shards forward events and ask hooks.
#[allow(dead_code)]
pub(crate) mod client;
#[allow(dead_code)]
pub(crate) mod outbox;
#[allow(dead_code)]
pub(crate) mod wire;
