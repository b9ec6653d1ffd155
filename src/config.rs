//! Per-route connection settings (Go: `event.Config`). Not the server's own options (address,
//! shards): those live on the builder.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::ws::deflate::Deflate;
use crate::ws::session::Settings;

/// Called with the event name and the panic value when a listener panics.
pub type RecoverHandler = Arc<dyn Fn(&str, &(dyn Any + Send)) + Send + Sync>;

/// Settings for the connections of one route.
///
/// `Config::default()` holds the Go helper's defaults. As in Go, a zero field passed in still
/// means "use the default", so `Config { ping_interval: Duration::from_secs(5),
/// ..Config::default() }` and the same with every other field zero behave the same.
#[derive(Clone)]
pub struct Config {
    /// How often the server pings each connection. Default 1 s, the Go helper's; a server
    /// holding many connections opts into `Config::FAN_OUT_PING_INTERVAL` (25 s), as the
    /// `corecast` binary does. Each connection's first ping falls at a point of its own within
    /// the interval, so pings are spread out rather than sent in bursts.
    pub ping_interval: Duration,
    /// Silence after which a connection is torn down with a timeout. Zero: 3 × the ping interval.
    /// Only silence the server saw on time counts: when the shard looks at a silent connection
    /// late (it was blocked or overloaded), the connection is pinged and judged again later
    /// (`ws::liveness::judge_silence`, docs/behaviour.md).
    pub read_idle_timeout: Duration,
    /// Longest a write may stall, or the send queue stay full, before the connection is torn
    /// down as a slow consumer. Default 10 s.
    pub write_timeout: Duration,
    /// Largest frame or reassembled message accepted; above it the peer gets close 1009.
    /// Default 1 MiB; `usize::MAX` means no limit.
    pub max_message_size: usize,
    /// Messages a connection may hold undelivered before new ones wait. Default 100.
    pub send_queue_size: usize,
    /// With `retry_send_timeout`: how long a message waits for room in a full queue
    /// (`max_send_retry × retry_send_timeout`) before it is dropped. Default 5.
    pub max_send_retry: u32,
    /// See `max_send_retry`. Default 20 ms.
    pub retry_send_timeout: Duration,
    /// Topics one connection may subscribe to at once; past it `subscribe` fails with
    /// `Error::TooManyTopics`, so one client cannot grow the server's memory. Default 1,000.
    pub max_topics: usize,
    /// Receives listener panics. `None`: panics are swallowed (and logged at debug level).
    pub recover_handler: Option<RecoverHandler>,
    /// The subprotocols this route speaks, most preferred first. A client offering some of
    /// them (`Sec-WebSocket-Protocol`) gets the first of this list that it offered; a client
    /// offering none of them is accepted without one (RFC 6455 §4.2.2). Each must be an HTTP
    /// token. Default: none.
    pub subprotocols: Vec<String>,
    /// permessage-deflate (RFC 7692) for this route: `Some` offers it to clients that ask, with
    /// these settings. Default `None`: messages go out as they are.
    pub deflate: Option<Deflate>,
    /// Messages per second one connection may send, in bursts of up to as many: a token
    /// bucket of this size refilled at this rate. A message past it is not delivered (the
    /// connection's `error` listeners get `Error::RateLimited` with it), and a client that
    /// keeps on (more refusals than this before its bucket is full again) is closed with 1008
    /// "rate limit" (docs/behaviour.md). Default 0: no limit.
    pub client_message_rate: u32,
    /// Payload bytes per second one connection may send, in bursts of up to as many: a second
    /// token bucket, counted in bytes, beside `client_message_rate` and with the same answer
    /// past it. A message larger than the burst needs a full bucket and empties it; more than
    /// `ws::session::BYTE_REFUSALS_BEFORE_CLOSE` (32) refusals before the bucket is full again
    /// close with 1008 "rate limit". Default 0: no limit.
    pub client_byte_rate: u32,
}

impl Default for Config {
    /// The Go defaults: pings every 1 s, idle after 3 × that (`read_idle_timeout` stays zero so
    /// it follows a custom ping interval), 10 s write timeout, 1 MiB messages, 100 queued
    /// messages, 5 retries of 20 ms; and 1,000 topics per connection.
    fn default() -> Self {
        Config {
            ping_interval: Self::DEFAULT_PING_INTERVAL,
            read_idle_timeout: Duration::ZERO,
            write_timeout: Self::DEFAULT_WRITE_TIMEOUT,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            send_queue_size: Self::DEFAULT_SEND_QUEUE_SIZE,
            max_send_retry: Self::DEFAULT_MAX_SEND_RETRY,
            retry_send_timeout: Self::DEFAULT_RETRY_SEND_TIMEOUT,
            max_topics: Self::DEFAULT_MAX_TOPICS,
            recover_handler: None,
            subprotocols: Vec::new(),
            deflate: None,
            client_message_rate: 0,
            client_byte_rate: 0,
        }
    }
}

impl Config {
    /// Default ping interval.
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);
    /// A ping interval for servers with many mostly idle connections (the `corecast` binary's
    /// default): 25 s keeps a connection alive through proxies and NATs that close after 60 s
    /// of silence with a ping to spare, and costs a 25th of the 1 s default's pings; with the
    /// idle timeout at 3 × that, a dead peer is found within about 75 s.
    pub const FAN_OUT_PING_INTERVAL: Duration = Duration::from_secs(25);
    /// Default write timeout.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default largest message.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
    /// Default send queue length.
    pub const DEFAULT_SEND_QUEUE_SIZE: usize = 100;
    /// Default number of retry periods.
    pub const DEFAULT_MAX_SEND_RETRY: u32 = 5;
    /// Default retry period.
    pub const DEFAULT_RETRY_SEND_TIMEOUT: Duration = Duration::from_millis(20);
    /// Default subscriptions per connection.
    pub const DEFAULT_MAX_TOPICS: usize = 1_000;

    /// The same config with every zero field replaced by its default.
    pub fn effective(&self) -> Config {
        fn or(d: Duration, default: Duration) -> Duration {
            if d.is_zero() {
                default
            } else {
                d
            }
        }
        let ping_interval = or(self.ping_interval, Self::DEFAULT_PING_INTERVAL);
        Config {
            ping_interval,
            read_idle_timeout: or(self.read_idle_timeout, ping_interval.saturating_mul(3)),
            write_timeout: or(self.write_timeout, Self::DEFAULT_WRITE_TIMEOUT),
            max_message_size: if self.max_message_size == 0 {
                Self::DEFAULT_MAX_MESSAGE_SIZE
            } else {
                self.max_message_size
            },
            send_queue_size: if self.send_queue_size == 0 {
                Self::DEFAULT_SEND_QUEUE_SIZE
            } else {
                self.send_queue_size
            },
            max_send_retry: if self.max_send_retry == 0 {
                Self::DEFAULT_MAX_SEND_RETRY
            } else {
                self.max_send_retry
            },
            retry_send_timeout: or(self.retry_send_timeout, Self::DEFAULT_RETRY_SEND_TIMEOUT),
            max_topics: if self.max_topics == 0 {
                Self::DEFAULT_MAX_TOPICS
            } else {
                self.max_topics
            },
            recover_handler: self.recover_handler.clone(),
            subprotocols: self.subprotocols.clone(),
            deflate: self.deflate,
            client_message_rate: self.client_message_rate,
            client_byte_rate: self.client_byte_rate,
        }
    }

    /// How long a message may wait for room in a full queue: `max_send_retry × retry_send_timeout`.
    pub fn retry_window(&self) -> Duration {
        self.retry_send_timeout.saturating_mul(self.max_send_retry)
    }
}

/// A session reads its route's settings through this: `Session`s hold the route's effective
/// `Config` (zero fields resolved by `effective`).
impl Settings for Config {
    fn ping_interval(&self) -> Duration {
        self.ping_interval
    }
    fn read_idle_timeout(&self) -> Duration {
        self.read_idle_timeout
    }
    fn write_timeout(&self) -> Duration {
        self.write_timeout
    }
    fn max_message_size(&self) -> usize {
        self.max_message_size
    }
    fn send_queue_size(&self) -> usize {
        self.send_queue_size
    }
    fn retry_window(&self) -> Duration {
        Config::retry_window(self)
    }
    fn deflate(&self) -> Option<&Deflate> {
        self.deflate.as_ref()
    }
    fn client_message_rate(&self) -> u32 {
        self.client_message_rate
    }
    fn client_byte_rate(&self) -> u32 {
        self.client_byte_rate
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("ping_interval", &self.ping_interval)
            .field("read_idle_timeout", &self.read_idle_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("send_queue_size", &self.send_queue_size)
            .field("max_send_retry", &self.max_send_retry)
            .field("retry_send_timeout", &self.retry_send_timeout)
            .field("max_topics", &self.max_topics)
            .field("recover_handler", &self.recover_handler.is_some())
            .field("subprotocols", &self.subprotocols)
            .field("deflate", &self.deflate)
            .field("client_message_rate", &self.client_message_rate)
            .field("client_byte_rate", &self.client_byte_rate)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed() -> Config {
        Config {
            ping_interval: Duration::ZERO,
            read_idle_timeout: Duration::ZERO,
            write_timeout: Duration::ZERO,
            max_message_size: 0,
            send_queue_size: 0,
            max_send_retry: 0,
            retry_send_timeout: Duration::ZERO,
            max_topics: 0,
            recover_handler: None,
            subprotocols: Vec::new(),
            deflate: None,
            client_message_rate: 0,
            client_byte_rate: 0,
        }
    }

    #[test]
    fn default_holds_the_go_defaults_in_its_fields() {
        let c = Config::default();
        assert_eq!(c.ping_interval, Duration::from_secs(1));
        assert_eq!(c.read_idle_timeout, Duration::ZERO);
        assert_eq!(c.write_timeout, Duration::from_secs(10));
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.send_queue_size, 100);
        assert_eq!(c.max_send_retry, 5);
        assert_eq!(c.retry_send_timeout, Duration::from_millis(20));
        assert_eq!(c.max_topics, 1_000);
        assert!(c.recover_handler.is_none());
        assert_eq!(c.client_message_rate, 0, "no rate limit by default");
    }

    #[test]
    fn zero_fields_take_the_go_defaults() {
        let c = zeroed().effective();
        assert_eq!(
            format!("{c:?}"),
            format!("{:?}", Config::default().effective())
        );
        assert_eq!(c.ping_interval, Duration::from_secs(1));
        assert_eq!(c.read_idle_timeout, Duration::from_secs(3));
        assert_eq!(c.write_timeout, Duration::from_secs(10));
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.send_queue_size, 100);
        assert_eq!(c.max_send_retry, 5);
        assert_eq!(c.retry_send_timeout, Duration::from_millis(20));
        assert_eq!(c.retry_window(), Duration::from_millis(100));
        assert_eq!(c.max_topics, 1_000);
    }

    #[test]
    fn idle_timeout_follows_a_custom_ping_interval() {
        let c = Config {
            ping_interval: Duration::from_millis(200),
            ..Config::default()
        }
        .effective();
        assert_eq!(c.read_idle_timeout, Duration::from_millis(600));
        let c = Config {
            ping_interval: Duration::from_millis(200),
            ..zeroed()
        }
        .effective();
        assert_eq!(c.read_idle_timeout, Duration::from_millis(600));
        let c = Config {
            ping_interval: Duration::from_millis(200),
            read_idle_timeout: Duration::from_secs(9),
            ..Config::default()
        }
        .effective();
        assert_eq!(c.read_idle_timeout, Duration::from_secs(9));
    }
}
