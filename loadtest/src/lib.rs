//! corecast-load: a load generator for WebSocket servers that relay, echo or speak the
//! websocket-shootout protocol. Every message carries its sender, sequence number and send
//! time, so every delivery is counted (a lost, duplicated or reordered message fails the run)
//! and timed (hdrhistogram percentiles).
//!
//! | module | what it is |
//! |---|---|
//! | `options` | what a run is asked to do: the scenario and its parameters |
//! | `run` | scenarios broadcast, chat, echo, idle, topics: threads, connections, send windows |
//! | `shootout` | the step-wise websocket-shootout scenario |
//! | `topics` | the topics scenario's plan: who joins what, where each publish goes |
//! | `upgrades` | the upgrades scenario: connect, upgrade (or be refused) and close, many at a time |
//! | `recovery` | the recovery scenario: a reconnect storm against topics with history, every publication checked across it |
//! | `listen` | the listen scenario: subscribed connections held, counting the broadcasts and publications sent from outside (a server's HTTP API) |
//! | `many_nodes` | what `corecast-many-nodes` (many cluster nodes and generators on one machine) reads and writes: `/metrics`, the API, its result |
//! | `ws` | a lean WebSocket client connection on glommio |
//! | `signal` | a one-shot event many tasks of one generator thread wait on |
//! | `payload` | the stamp each message carries |
//! | `tally` | per-receiver delivery accounting |
//! | `procstat` | the server's CPU time, memory and open files from procfs |
//! | `report` | results as JSON and as a summary |
//! | `token` | signing keys and connection tokens for runs against a server that authenticates |
//! | `siege` | the `corecast-siege` binary's attacks and soak against the real server |

pub mod listen;
pub mod many_nodes;
pub mod options;
pub mod payload;
pub mod procstat;
pub mod recovery;
pub mod report;
pub mod run;
mod shootout;
pub mod siege;
mod signal;
pub mod tally;
pub mod token;
pub mod topics;
pub mod upgrades;
pub mod ws;

pub use options::{Options, Scenario};
pub use report::Report;
pub use run::run;
