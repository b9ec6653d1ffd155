//! One recovery client's books on its topic: every publication exactly once and in order,
//! across its reconnect, by the publisher's sequence number each payload carries, and (against
//! corecast) at the offset that sequence number must have, in one epoch. Pure bookkeeping; a
//! fault is named, never averaged away.

use std::collections::BTreeSet;

/// Faults kept in full per client; beyond that they are only counted.
const KEEP: usize = 4;

/// What one client got of its topic's publications.
#[derive(Debug)]
pub struct StreamCheck {
    receiver: usize,
    topic: usize,
    /// The next sequence number expected.
    next: u64,
    /// Sequence numbers a later one skipped: reordered if they come, missing if not.
    skipped: BTreeSet<u64>,
    /// corecast: the topic's offset when the client first subscribed, before the run's first
    /// publication, so publication `seq` must come at offset `base + seq + 1`.
    base: Option<u64>,
    /// corecast: the topic's epoch, once known; it must not change during the run.
    epoch: Option<String>,
    /// After a not-recovered answer the client was allowed to take: the next publication, of
    /// whatever sequence number, starts the stream again.
    resync: bool,
    /// Publications received once.
    pub delivered: u64,
    /// Publications given up by an allowed not-recovered answer.
    pub lost: u64,
    pub fault_count: u64,
    pub faults: Vec<String>,
}

impl StreamCheck {
    pub fn new(receiver: usize, topic: usize) -> StreamCheck {
        StreamCheck {
            receiver,
            topic,
            next: 0,
            skipped: BTreeSet::new(),
            base: None,
            epoch: None,
            resync: false,
            delivered: 0,
            lost: 0,
            fault_count: 0,
            faults: Vec::new(),
        }
    }

    /// Records a fault, in full while there are few.
    pub fn fault(&mut self, what: impl FnOnce() -> String) {
        self.fault_count += 1;
        if self.faults.len() < KEEP {
            self.faults
                .push(format!("client {}: {}", self.receiver, what()));
        }
    }

    /// corecast: the answer to the first subscription, where the topic stood before the run.
    pub fn set_base(&mut self, offset: u64, epoch: Option<&str>) {
        self.base = Some(offset);
        if let Some(e) = epoch {
            self.epoch = Some(e.to_string());
        }
    }

    /// corecast: the offset of sequence number `seq`, once the base is known.
    pub fn offset_of(&self, seq: u64) -> Option<u64> {
        Some(self.base? + seq + 1)
    }

    /// corecast: an epoch the server gave (envelope or answer); a change is a fault.
    pub fn check_epoch(&mut self, epoch: &str) {
        match &self.epoch {
            None => self.epoch = Some(epoch.to_string()),
            Some(e) if e == epoch => {}
            Some(e) => {
                let was = e.clone();
                self.fault(|| format!("epoch changed from {was} to {epoch} during the run"));
            }
        }
    }

    /// Records publication `seq` of `sender` (the topic its payload names), at `offset` in
    /// `epoch` against corecast. True when it is a first delivery (in order, or late).
    pub fn receive(&mut self, sender: u32, seq: u64, at: Option<(u64, &str)>) -> bool {
        if sender as usize != self.topic {
            let topic = self.topic;
            self.fault(|| format!("publication of topic {sender} on a subscription of {topic}"));
            return false;
        }
        if let Some((offset, epoch)) = at {
            self.check_epoch(epoch);
            if let Some(want) = self.offset_of(seq).filter(|w| *w != offset) {
                self.fault(|| {
                    format!("publication {seq} came at offset {offset}, not {want}: offsets not contiguous")
                });
            }
        }
        if self.resync {
            self.resync = false;
            if seq >= self.next {
                self.lost += seq - self.next + self.skipped.len() as u64;
                self.skipped.clear();
                self.next = seq;
            }
        }
        if seq == self.next {
            self.next += 1;
            self.delivered += 1;
            true
        } else if seq > self.next {
            let from = self.next;
            self.fault(|| {
                format!(
                    "gap: publications {from} to {} never came before {seq}",
                    seq - 1
                )
            });
            for s in from..seq {
                if self.skipped.len() < 100_000 {
                    self.skipped.insert(s);
                }
            }
            self.next = seq + 1;
            self.delivered += 1;
            true
        } else if self.skipped.remove(&seq) {
            self.fault(|| format!("reordered: publication {seq} came after a later one"));
            self.delivered += 1;
            true
        } else {
            self.fault(|| format!("duplicate: publication {seq} came twice"));
            false
        }
    }

    /// After an allowed not-recovered answer: corecast says where the live stream resumes (the
    /// sequence number of the publication after the answer's offset); Socket.IO does not, and
    /// the next publication to come starts the stream again.
    pub fn resync(&mut self, next_seq: Option<u64>) {
        match next_seq {
            Some(seq) if seq >= self.next => {
                self.lost += seq - self.next + self.skipped.len() as u64;
                self.skipped.clear();
                self.next = seq;
            }
            Some(_) => {}
            None => self.resync = true,
        }
    }

    /// Closes the books: `published` publications were made to the topic; what never came
    /// is missing. Missing ones already named as a gap are counted, not named again.
    pub fn finish(&mut self, published: u64) {
        if self.resync {
            // Nothing came after an allowed not-recovered answer: all of it was given up.
            self.lost += published.saturating_sub(self.next) + self.skipped.len() as u64;
            self.skipped.clear();
            self.next = self.next.max(published);
            return;
        }
        let skipped = std::mem::take(&mut self.skipped);
        self.fault_count += skipped.len() as u64;
        if published > self.next {
            let (from, to) = (self.next, published - 1);
            self.fault(|| format!("missing: publications {from} to {to} never came"));
            self.fault_count += to - from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_with_offsets_is_clean() {
        let mut c = StreamCheck::new(7, 2);
        c.set_base(10, None);
        for seq in 0..5 {
            assert!(c.receive(2, seq, Some((11 + seq, "abcd0001"))));
        }
        c.finish(5);
        assert_eq!((c.delivered, c.fault_count), (5, 0), "{:?}", c.faults);
        assert_eq!(c.offset_of(4), Some(15));
    }

    #[test]
    fn gap_duplicate_reorder_and_missing_are_faults() {
        let mut c = StreamCheck::new(1, 0);
        assert!(c.receive(0, 0, None));
        assert!(c.receive(0, 2, None)); // 1 skipped
        assert!(c.receive(0, 1, None)); // late: reordered
        assert!(!c.receive(0, 2, None)); // again: duplicate
        c.finish(5); // 3 and 4 never came
        assert_eq!(c.delivered, 3);
        assert_eq!(c.fault_count, 5, "{:?}", c.faults);
        assert!(c.faults[0].starts_with("client 1: gap"), "{:?}", c.faults);
        assert!(c.faults[1].contains("reordered"));
        assert!(c.faults[2].contains("duplicate"));
        assert!(c.faults[3].contains("missing: publications 3 to 4"));
    }

    #[test]
    fn wrong_offset_epoch_or_topic_is_a_fault() {
        let mut c = StreamCheck::new(0, 1);
        c.set_base(0, None);
        c.receive(1, 0, Some((1, "abcd0001")));
        c.receive(1, 1, Some((3, "abcd0001")));
        assert!(c.faults[0].contains("not contiguous"), "{:?}", c.faults);
        c.receive(1, 2, Some((3, "ffff0000")));
        assert!(c.faults[1].contains("epoch changed"), "{:?}", c.faults);
        assert!(!c.receive(0, 3, None));
        assert!(c.faults[2].contains("topic 0 on a subscription of 1"));
    }

    #[test]
    fn an_allowed_resync_counts_what_was_lost() {
        let mut c = StreamCheck::new(0, 0);
        c.receive(0, 0, None);
        c.resync(Some(4)); // corecast: the stream resumes at 4
        assert!(c.receive(0, 4, None));
        assert_eq!((c.lost, c.fault_count), (3, 0));
        c.resync(None); // Socket.IO: whatever comes next
        assert!(c.receive(0, 9, None));
        c.finish(10);
        assert_eq!((c.lost, c.fault_count, c.delivered), (7, 0, 3));
        // Nothing came after the last one: the rest was given up, not missing.
        c.resync(None);
        c.finish(14);
        assert_eq!((c.lost, c.fault_count), (11, 0));
    }
}
