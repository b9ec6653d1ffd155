//! What a load run is asked to do: the scenario and its parameters, as the command line and the
//! benchmark harness give them. Plain data shared by the engines (`run`, `shootout`); no running.

use std::time::Duration;

use crate::payload::{self, Stamp};
use crate::topics::TopicPlan;
use crate::ws::Target;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One publisher, N receivers, the server relays each message to all.
    Broadcast,
    /// Every client publishes; the server relays to all (N² deliveries).
    Chat,
    /// Every client sends and waits for its echo.
    Echo,
    /// Connections opened and held; pings answered.
    Idle,
    /// hashrocket websocket-shootout: grow the client count until broadcast p95 passes a limit.
    Shootout,
    /// Subscribers on topics, publishers cycling through the topics (the pubsub protocol);
    /// with no publishers, connections and subscriptions held (for memory).
    Topics,
    /// Connections opened as fast as the server takes them, `clients` at a time: each sends
    /// its upgrade request, reads the answer (101, or the refusal a run of refused requests
    /// expects) and closes cleanly. Upgrades per second and server CPU per upgrade.
    Upgrades,
    /// A reconnect storm against topics with history: subscribers drop at once and come back
    /// for what they missed. Run by `recovery::run` (its options and report are its own), not
    /// by `run::run`.
    Recovery,
    /// Subscribed connections held, counting the broadcasts and publications a backend sends
    /// through the server's HTTP API. Run by `listen::run`, not by `run::run`.
    Listen,
}

impl Scenario {
    /// Every scenario, in the order `--help` lists them.
    pub const ALL: [Scenario; 9] = [
        Scenario::Broadcast,
        Scenario::Chat,
        Scenario::Echo,
        Scenario::Idle,
        Scenario::Shootout,
        Scenario::Topics,
        Scenario::Upgrades,
        Scenario::Recovery,
        Scenario::Listen,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Broadcast => "broadcast",
            Scenario::Chat => "chat",
            Scenario::Echo => "echo",
            Scenario::Idle => "idle",
            Scenario::Shootout => "shootout",
            Scenario::Topics => "topics",
            Scenario::Upgrades => "upgrades",
            Scenario::Recovery => "recovery",
            Scenario::Listen => "listen",
        }
    }
}

/// The command line takes a scenario by `name()`. Written out rather than derived: a derive would
/// list each variant's doc comment under `--help`, which already describes them in one line.
impl clap::ValueEnum for Scenario {
    fn value_variants<'a>() -> &'a [Self] {
        &Scenario::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    /// Where to connect: connection `i` goes to `targets[i % len]` (several for a cluster).
    pub targets: Vec<Target>,
    pub url: String,
    /// Connections (for shootout: the most to try; for upgrades: how many at a time).
    pub clients: usize,
    /// Broadcast: messages to publish (default 1000). Chat and echo: per client, optional.
    /// Upgrades: requests to make in all (default: until the duration ends).
    pub messages: Option<u64>,
    /// Chat, echo, idle, upgrades: how long to measure. Broadcast: the most to wait.
    pub duration: Duration,
    /// Messages a sender may have in flight.
    pub in_flight: usize,
    /// Broadcast: messages per second the publisher sends, whatever comes back (an open
    /// loop, as a feed publishes); `None`: as fast as the in-flight window opens.
    pub rate: Option<f64>,
    /// Payload size in bytes.
    pub size: usize,
    /// Generator threads.
    pub threads: usize,
    /// CPUs to pin generator threads to (round robin); empty: not pinned.
    pub cpus: Vec<usize>,
    /// The server's processes (a cluster's nodes and broker too), for CPU time and memory.
    pub server_pids: Vec<u32>,
    /// Print a progress line to stderr.
    pub progress: bool,
    /// Shootout: clients added per step.
    pub step: usize,
    /// Shootout: broadcasts measured per step.
    pub sample: usize,
    /// Shootout: broadcasts in flight while measuring.
    pub concurrent: usize,
    /// Shootout: the p95 limit.
    pub limit: Duration,
    /// Topics: the plan (topics, per client, publishers).
    pub topics: TopicPlan,
    /// Speak Socket.IO (Engine.IO v4) over the WebSocket: messages are `m` events.
    pub socket_io: bool,
    /// The targets offer permessage-deflate: messages are padded with JSON records.
    pub deflate: bool,
}

impl Options {
    /// The message a sender sends for `stamp`: `size` bytes, padded as the scenario says.
    pub(crate) fn payload(&self, stamp: Stamp) -> Vec<u8> {
        if self.deflate {
            payload::encode_json(stamp, self.size)
        } else {
            payload::encode(stamp, self.size)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::Scenario;

    #[test]
    fn every_scenario_parses_from_its_name() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_str(s.name(), false), Ok(s));
        }
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "broadcast",
                "chat",
                "echo",
                "idle",
                "shootout",
                "topics",
                "upgrades",
                "recovery",
                "listen"
            ]
        );
    }
}
