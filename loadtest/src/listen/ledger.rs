//! The listen scenario's accounting: the messages sent from outside the run (a server's HTTP
//! API), how they are written, and one client's books over them. Two streams, broadcasts and
//! publications, each numbered from 0 and closed by an end message carrying its count, so a
//! client knows when it has everything. Pure; no sockets and no clock.
//!
//! Messages: `corecast-load:broadcast:<seq>:<sent_ns>` and
//! `corecast-load:broadcast:end:<count>` (the same with `publication`). `sent_ns` is the
//! sender's `CLOCK_MONOTONIC`, which every process of one machine shares.

use crate::tally::{Fault, Tally};

/// Every message of the scenario starts with this.
const PREFIX: &str = "corecast-load:";

/// Faults one client keeps in full; beyond that they are counted.
const KEEP: usize = 4;

/// A stream of messages sent from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `POST /api/broadcast`: every connection.
    Broadcast,
    /// `POST /api/publish/<topic>`: every subscriber of the topic.
    Publication,
}

impl Stream {
    pub const ALL: [Stream; 2] = [Stream::Broadcast, Stream::Publication];

    pub fn name(self) -> &'static str {
        match self {
            Stream::Broadcast => "broadcast",
            Stream::Publication => "publication",
        }
    }

    /// Its slot in a client's tally.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What one message of the scenario says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    /// Message `seq` of `stream`, sent at `sent_ns`.
    Message {
        stream: Stream,
        seq: u64,
        sent_ns: u64,
    },
    /// `stream` is over: `count` messages were sent in it.
    End { stream: Stream, count: u64 },
}

/// Message `seq` of `stream`, stamped `sent_ns`.
pub fn message(stream: Stream, seq: u64, sent_ns: u64) -> String {
    format!("{PREFIX}{}:{seq}:{sent_ns}", stream.name())
}

/// The end of `stream`, after `count` messages.
pub fn end(stream: Stream, count: u64) -> String {
    format!("{PREFIX}{}:end:{count}", stream.name())
}

/// Reads a message of the scenario; `None` for anything else.
pub fn decode(data: &[u8]) -> Option<Outside> {
    let text = std::str::from_utf8(data).ok()?.strip_prefix(PREFIX)?;
    let mut parts = text.split(':');
    let stream = match parts.next()? {
        "broadcast" => Stream::Broadcast,
        "publication" => Stream::Publication,
        _ => return None,
    };
    let (first, second) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    if first == "end" {
        return Some(Outside::End {
            stream,
            count: second.parse().ok()?,
        });
    }
    Some(Outside::Message {
        stream,
        seq: first.parse().ok()?,
        sent_ns: second.parse().ok()?,
    })
}

/// What `Ledger::take` made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A first delivery of a message, sent at `sent_ns`.
    Delivery { stream: Stream, sent_ns: u64 },
    /// An end, a repeat, or a message that is not the scenario's (a fault if it is wrong).
    Other,
}

/// One client's books: every message of each stream exactly once and in order, up to the
/// stream's end.
#[derive(Debug)]
pub struct Ledger {
    tally: Tally,
    delivered: [u64; 2],
    ends: [Option<u64>; 2],
    /// Faults of each stream's own (a repeat, a reordering, something after its end).
    stream_faults: [u64; 2],
}

impl Ledger {
    /// The books of client `client`.
    pub fn new(client: u32) -> Ledger {
        Ledger {
            tally: Tally::new(client, Stream::ALL.len()),
            delivered: [0; 2],
            ends: [None; 2],
            stream_faults: [0; 2],
        }
    }

    /// Takes one data message the client received.
    pub fn take(&mut self, data: &[u8]) -> Taken {
        match decode(data) {
            None => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned();
                self.tally.unexpected(format!("{shown:?}"));
                Taken::Other
            }
            Some(Outside::End { stream, count }) => {
                let s = stream.index();
                if self.ends[s].is_some() {
                    self.stream_faults[s] += 1;
                    self.tally
                        .unexpected(format!("a second end of the {}s", stream.name()));
                } else {
                    self.ends[s] = Some(count);
                }
                Taken::Other
            }
            Some(Outside::Message {
                stream,
                seq,
                sent_ns,
            }) => {
                let s = stream.index();
                if let Some(count) = self.ends[s].filter(|&c| seq >= c) {
                    self.stream_faults[s] += 1;
                    self.tally.unexpected(format!(
                        "{} {seq} after the end of the {}s ({count})",
                        stream.name(),
                        stream.name()
                    ));
                    return Taken::Other;
                }
                let faults = self.tally.fault_count;
                let first = self.tally.receive(s, s as u32, seq);
                self.stream_faults[s] += self.tally.fault_count - faults;
                if first {
                    self.delivered[s] += 1;
                    Taken::Delivery { stream, sent_ns }
                } else {
                    Taken::Other
                }
            }
        }
    }

    /// Whether both ends came: nothing more is owed to this client.
    pub fn finished(&self) -> bool {
        self.ends.iter().all(Option::is_some)
    }

    /// The count the end of `stream` gave, if it came.
    pub fn end_of(&self, stream: Stream) -> Option<u64> {
        self.ends[stream.index()]
    }

    /// Closes the books: `sent[stream]` messages were sent in each stream (what the ends
    /// said). Whatever did not arrive is missing, and an end that never came is a fault.
    pub fn close(mut self, sent: [u64; 2]) -> Books {
        for stream in Stream::ALL {
            let s = stream.index();
            match self.ends[s] {
                None => self.tally.unexpected(format!(
                    "no end of the {}s came (it got {})",
                    stream.name(),
                    self.delivered[s]
                )),
                Some(count) if count != sent[s] => self.tally.unexpected(format!(
                    "its end of the {}s said {count}, other clients' {}",
                    stream.name(),
                    sent[s]
                )),
                Some(_) => {}
            }
        }
        self.tally.finish(&sent, |s| s as u32);
        let complete = [0, 1].map(|s| {
            self.stream_faults[s] == 0
                && self.ends[s] == Some(sent[s])
                && self.delivered[s] == sent[s]
        });
        let faults = self.tally.faults.iter().take(KEEP).map(describe).collect();
        Books {
            delivered: self.delivered,
            complete,
            fault_count: self.tally.fault_count,
            faults,
        }
    }
}

/// A fault of the tally, in the words of this scenario (its senders are the two streams).
fn describe(fault: &Fault) -> String {
    let name = |sender: &u32| {
        Stream::ALL
            .get(*sender as usize)
            .map_or("message", |s| s.name())
    };
    match fault {
        Fault::Missing {
            receiver,
            sender,
            seq,
        } => format!("connection {receiver} never got {} {seq}", name(sender)),
        Fault::Duplicate {
            receiver,
            sender,
            seq,
        } => format!("connection {receiver} got {} {seq} twice", name(sender)),
        Fault::Reordered {
            receiver,
            sender,
            seq,
        } => format!(
            "connection {receiver} got {} {seq} after a later one",
            name(sender)
        ),
        Fault::Unexpected { receiver, detail } => format!("connection {receiver}: {detail}"),
    }
}

/// One client's closed books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    /// Messages of each stream it got exactly once.
    pub delivered: [u64; 2],
    /// Whether it got every message of each stream, once and in order, and its end.
    pub complete: [bool; 2],
    pub fault_count: u64,
    /// The first few faults, described.
    pub faults: Vec<String>,
}

/// The count each stream's ends agree on, from the ends the clients saw (`None`: no client
/// saw one); `Err` names a stream whose ends disagree.
pub fn agreed_ends<'a>(
    ledgers: impl IntoIterator<Item = &'a Ledger>,
) -> Result<[Option<u64>; 2], String> {
    let mut agreed = [None; 2];
    for ledger in ledgers {
        for stream in Stream::ALL {
            let s = stream.index();
            match (agreed[s], ledger.ends[s]) {
                (Some(a), Some(b)) if a != b => {
                    return Err(format!(
                        "the clients' ends of the {}s disagree: {a} and {b}",
                        stream.name()
                    ))
                }
                (None, Some(b)) => agreed[s] = Some(b),
                _ => {}
            }
        }
    }
    Ok(agreed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(ledger: &mut Ledger, stream: Stream, seqs: &[u64]) {
        for &seq in seqs {
            ledger.take(message(stream, seq, 7).as_bytes());
        }
    }

    #[test]
    fn messages_read_back_and_others_are_not_ours() {
        let m = message(Stream::Publication, 12, 345);
        assert_eq!(m, "corecast-load:publication:12:345");
        assert_eq!(
            decode(m.as_bytes()),
            Some(Outside::Message {
                stream: Stream::Publication,
                seq: 12,
                sent_ns: 345
            })
        );
        assert_eq!(
            decode(end(Stream::Broadcast, 21).as_bytes()),
            Some(Outside::End {
                stream: Stream::Broadcast,
                count: 21
            })
        );
        for other in [
            &b"cc:0:1:2:"[..],
            b"corecast-load:chat:1:2",
            b"corecast-load:broadcast:x:2",
            b"corecast-load:broadcast:1:2:3",
            b"corecast-load:broadcast:end",
            b"{\"subscribed\":\"everyone\"}",
            b"\xff\xfe",
        ] {
            assert_eq!(decode(other), None, "{other:?}");
        }
    }

    #[test]
    fn every_message_once_in_order_is_complete() {
        let mut l = Ledger::new(3);
        feed(&mut l, Stream::Broadcast, &[0, 1]);
        assert_eq!(
            l.take(message(Stream::Publication, 0, 99).as_bytes()),
            Taken::Delivery {
                stream: Stream::Publication,
                sent_ns: 99
            }
        );
        feed(&mut l, Stream::Broadcast, &[2]);
        feed(&mut l, Stream::Publication, &[1, 2]);
        assert!(!l.finished());
        l.take(end(Stream::Broadcast, 3).as_bytes());
        l.take(end(Stream::Publication, 3).as_bytes());
        assert!(l.finished());
        assert_eq!(agreed_ends([&l]), Ok([Some(3), Some(3)]));
        let books = l.close([3, 3]);
        assert_eq!(books.fault_count, 0, "{:?}", books.faults);
        assert_eq!(books.delivered, [3, 3]);
        assert_eq!(books.complete, [true, true]);
    }

    #[test]
    fn a_missing_message_is_named_with_its_stream() {
        let mut l = Ledger::new(5);
        feed(&mut l, Stream::Broadcast, &[0, 2]);
        l.take(end(Stream::Broadcast, 3).as_bytes());
        feed(&mut l, Stream::Publication, &[0, 1]);
        l.take(end(Stream::Publication, 3).as_bytes());
        let books = l.close([3, 3]);
        assert_eq!(books.delivered, [2, 2]);
        assert_eq!(books.complete, [false, false]);
        assert_eq!(books.fault_count, 2);
        let mut l = Ledger::new(6);
        feed(&mut l, Stream::Broadcast, &[0]);
        l.take(end(Stream::Broadcast, 1).as_bytes());
        l.take(end(Stream::Publication, 1).as_bytes());
        assert_eq!(l.close([1, 1]).complete, [true, false]);
        assert_eq!(
            books.faults,
            [
                "connection 5 never got broadcast 1",
                "connection 5 never got publication 2"
            ]
        );
    }

    #[test]
    fn duplicates_reorders_strangers_and_late_messages_are_faults() {
        let mut l = Ledger::new(1);
        feed(&mut l, Stream::Publication, &[0, 0, 2, 1]);
        l.take(b"hello");
        l.take(end(Stream::Publication, 3).as_bytes());
        feed(&mut l, Stream::Publication, &[3]);
        l.take(end(Stream::Publication, 3).as_bytes());
        l.take(end(Stream::Broadcast, 0).as_bytes());
        let books = l.close([0, 3]);
        assert_eq!(books.delivered, [0, 3]);
        assert_eq!(books.complete, [true, false]);
        assert_eq!(books.fault_count, 5);
        assert_eq!(
            books.faults,
            [
                "connection 1 got publication 0 twice",
                "connection 1 got publication 1 after a later one",
                "connection 1: \"hello\"",
                "connection 1: publication 3 after the end of the publications (3)",
            ]
        );
    }

    #[test]
    fn an_end_that_never_came_or_disagrees_is_a_fault() {
        let mut l = Ledger::new(2);
        feed(&mut l, Stream::Broadcast, &[0, 1]);
        l.take(end(Stream::Publication, 4).as_bytes());
        let books = l.close([2, 5]);
        assert_eq!(
            books.faults[..2],
            [
                "connection 2: no end of the broadcasts came (it got 2)".to_string(),
                "connection 2: its end of the publications said 4, other clients' 5".to_string(),
            ]
        );
        assert!(books
            .faults
            .contains(&"connection 2 never got publication 0".to_string()));
        assert_eq!(books.complete, [false, false]);

        let (mut a, mut b) = (Ledger::new(0), Ledger::new(1));
        a.take(end(Stream::Broadcast, 2).as_bytes());
        b.take(end(Stream::Broadcast, 3).as_bytes());
        let none = Ledger::new(2);
        assert_eq!(agreed_ends([&none]), Ok([None, None]));
        assert_eq!(agreed_ends([&none, &a]), Ok([Some(2), None]));
        assert_eq!(
            agreed_ends([&a, &b]),
            Err("the clients' ends of the broadcasts disagree: 2 and 3".into())
        );
    }
}
