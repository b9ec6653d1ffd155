//! Delivery accounting for one receiving connection: every message from every sender must
//! arrive exactly once and in order. Pure bookkeeping; a fault is reported, never averaged away.

use std::collections::BTreeSet;
use std::fmt;

/// Something a server did wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A message never arrived.
    Missing {
        receiver: u32,
        sender: u32,
        seq: u64,
    },
    /// A message arrived twice.
    Duplicate {
        receiver: u32,
        sender: u32,
        seq: u64,
    },
    /// A message arrived after a later one from the same sender.
    Reordered {
        receiver: u32,
        sender: u32,
        seq: u64,
    },
    /// A message this receiver should not get, or that is not a load-test message at all.
    Unexpected { receiver: u32, detail: String },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Missing { receiver, sender, seq } => {
                write!(f, "missing: connection {receiver} never got message {seq} of sender {sender}")
            }
            Fault::Duplicate { receiver, sender, seq } => {
                write!(f, "duplicate: connection {receiver} got message {seq} of sender {sender} twice")
            }
            Fault::Reordered { receiver, sender, seq } => write!(
                f,
                "reordered: connection {receiver} got message {seq} of sender {sender} after a later one"
            ),
            Fault::Unexpected { receiver, detail } => {
                write!(f, "unexpected message on connection {receiver}: {detail}")
            }
        }
    }
}

/// Faults kept in full per receiver; beyond that they are only counted.
const KEEP: usize = 8;

/// What one receiver got.
#[derive(Debug)]
pub struct Tally {
    receiver: u32,
    /// Next expected sequence number per sender slot.
    next: Vec<u64>,
    /// (slot, seq) skipped over by a later message: reordered if they come, missing if not.
    skipped: BTreeSet<(usize, u64)>,
    /// Messages delivered exactly once.
    pub delivered: u64,
    /// All faults seen, counted.
    pub fault_count: u64,
    /// The first few, in full.
    pub faults: Vec<Fault>,
    /// Bytes left unread in the receiver's socket when it stopped (`WsConn::unread_bytes`).
    pub unread_at_end: Option<usize>,
}

impl Tally {
    /// A receiver expecting messages from `slots` senders.
    pub fn new(receiver: u32, slots: usize) -> Tally {
        Tally {
            receiver,
            next: vec![0; slots],
            skipped: BTreeSet::new(),
            delivered: 0,
            fault_count: 0,
            faults: Vec::new(),
            unread_at_end: None,
        }
    }

    fn fault(&mut self, f: Fault) {
        self.fault_count += 1;
        if self.faults.len() < KEEP {
            self.faults.push(f);
        }
    }

    /// The receiving connection.
    pub fn receiver(&self) -> u32 {
        self.receiver
    }

    /// Records message `seq` of `sender` (which the caller mapped to `slot`); true when it is a
    /// first, in-order delivery or a late reordered one (counted once either way).
    pub fn receive(&mut self, slot: usize, sender: u32, seq: u64) -> bool {
        let Some(next) = self.next.get_mut(slot) else {
            self.unexpected(format!("sender {sender} is not one it listens to"));
            return false;
        };
        let receiver = self.receiver;
        if seq == *next {
            *next += 1;
            self.delivered += 1;
            true
        } else if seq > *next {
            for s in *next..seq {
                if self.skipped.len() < 100_000 {
                    self.skipped.insert((slot, s));
                }
            }
            *next = seq + 1;
            self.delivered += 1;
            true
        } else if self.skipped.remove(&(slot, seq)) {
            self.delivered += 1;
            self.fault(Fault::Reordered {
                receiver,
                sender,
                seq,
            });
            true
        } else {
            self.fault(Fault::Duplicate {
                receiver,
                sender,
                seq,
            });
            false
        }
    }

    /// Records a message that is not part of the test, or not meant for this receiver.
    pub fn unexpected(&mut self, detail: String) {
        let receiver = self.receiver;
        self.fault(Fault::Unexpected { receiver, detail });
    }

    /// Closes the books: `sent[slot]` messages were sent by the sender in each slot, and
    /// `sender_of(slot)` names it. Whatever did not arrive is missing.
    pub fn finish(&mut self, sent: &[u64], sender_of: impl Fn(usize) -> u32) {
        let receiver = self.receiver;
        let skipped = std::mem::take(&mut self.skipped);
        for (slot, seq) in skipped {
            self.fault(Fault::Missing {
                receiver,
                sender: sender_of(slot),
                seq,
            });
        }
        for slot in 0..self.next.len() {
            let expected = sent.get(slot).copied().unwrap_or(0);
            for seq in self.next[slot]..expected {
                self.fault(Fault::Missing {
                    receiver,
                    sender: sender_of(slot),
                    seq,
                });
                if self.fault_count > 1_000_000 {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_delivery_is_clean() {
        let mut t = Tally::new(0, 2);
        for seq in 0..5 {
            assert!(t.receive(0, 10, seq));
            assert!(t.receive(1, 11, seq));
        }
        t.finish(&[5, 5], |s| 10 + s as u32);
        assert_eq!(t.delivered, 10);
        assert_eq!(t.fault_count, 0);
    }

    #[test]
    fn missing_duplicate_and_reordered_are_told_apart() {
        let mut t = Tally::new(3, 1);
        t.receive(0, 9, 0);
        t.receive(0, 9, 2); // 1 skipped
        t.receive(0, 9, 1); // ... arrives late: reordered
        t.receive(0, 9, 2); // again: duplicate
        t.receive(0, 9, 4); // 3 skipped, never arrives
        t.finish(&[6], |_| 9); // 5 never arrives either
        assert_eq!(
            t.faults,
            vec![
                Fault::Reordered {
                    receiver: 3,
                    sender: 9,
                    seq: 1
                },
                Fault::Duplicate {
                    receiver: 3,
                    sender: 9,
                    seq: 2
                },
                Fault::Missing {
                    receiver: 3,
                    sender: 9,
                    seq: 3
                },
                Fault::Missing {
                    receiver: 3,
                    sender: 9,
                    seq: 5
                },
            ]
        );
        assert_eq!(t.delivered, 4);
        assert_eq!(
            t.faults[0].to_string(),
            "reordered: connection 3 got message 1 of sender 9 after a later one"
        );
    }

    #[test]
    fn unknown_sender_is_unexpected() {
        let mut t = Tally::new(0, 1);
        assert!(!t.receive(5, 5, 0));
        assert_eq!(t.fault_count, 1);
        assert!(matches!(t.faults[0], Fault::Unexpected { .. }));
    }
}
