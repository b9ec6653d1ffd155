//! The topics scenario's plan: which topics each subscriber joins, which topic each publish
//! goes to, and the pubsub frames every server under test speaks. Pure; no sockets.
//!
//! Subscriber `i` joins `per_client` topics spread evenly over all of them. Publisher `p` cycles
//! through every topic, starting at its own offset, so each topic gets the same share of the
//! load and a message's place in its publisher's stream follows from its topic and sequence
//! number: that is how a receiver finds the message's completion counter.

/// The shape of one topics run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPlan {
    /// Topics in all (named `t0`, `t1`, ...).
    pub topics: usize,
    /// Topics each subscriber joins (at most `topics`).
    pub per_client: usize,
    /// Publishing connections (not subscribed to anything).
    pub publishers: usize,
    /// Publishers cycle through the first this many topics; 0 means all of them.
    pub publish_topics: usize,
}

/// Where one publish goes and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub topic: usize,
    /// The (publisher, topic) stream it belongs to: what a receiver's tally counts in order.
    pub slot: usize,
    /// Its sequence number within that stream.
    pub seq: u64,
}

impl TopicPlan {
    /// Checks the shape; the error says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.topics == 0 || self.per_client == 0 || self.per_client > self.topics {
            return Err(format!(
                "topics must be at least 1 and per-client between 1 and topics (got {} and {})",
                self.topics, self.per_client
            ));
        }
        if self.publish_topics > self.topics {
            return Err(format!(
                "publish-topics ({}) is more than topics ({})",
                self.publish_topics, self.topics
            ));
        }
        Ok(())
    }

    /// The topics subscriber `i` joins: distinct, evenly spread.
    pub fn subscriptions(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let stride = self.topics / self.per_client;
        (0..self.per_client).map(move |j| (i + j * stride) % self.topics)
    }

    /// Subscribers per topic, for `clients` subscribers.
    pub fn subscriber_counts(&self, clients: usize) -> Vec<u32> {
        let mut counts = vec![0u32; self.topics];
        for i in 0..clients {
            for t in self.subscriptions(i) {
                counts[t] += 1;
            }
        }
        counts
    }

    /// The query that subscribes subscriber `i` at upgrade: `topics=t3,t53`.
    pub fn query(&self, i: usize) -> String {
        let names: Vec<String> = self.subscriptions(i).map(topic_name).collect();
        format!("topics={}", names.join(","))
    }

    /// (publisher, topic) streams in all.
    pub fn slots(&self) -> usize {
        self.publishers * self.topics
    }

    /// The topics publishers cycle through: `t0` up to this.
    fn cycle(&self) -> usize {
        if self.publish_topics == 0 {
            self.topics
        } else {
            self.publish_topics
        }
    }

    fn start(&self, p: usize) -> usize {
        (p * (self.cycle() / self.publishers.max(1))) % self.cycle()
    }

    /// The `g`-th publish of publisher `p`.
    pub fn publish(&self, p: usize, g: u64) -> Publish {
        let cycle = self.cycle();
        let topic = (self.start(p) + (g % cycle as u64) as usize) % cycle;
        Publish {
            topic,
            slot: p * self.topics + topic,
            seq: g / cycle as u64,
        }
    }

    /// The inverse of `publish`: (publisher, g) of message `seq` in stream `slot`.
    pub fn origin(&self, slot: usize, seq: u64) -> (usize, u64) {
        let cycle = self.cycle();
        let (p, topic) = (slot / self.topics, slot % self.topics);
        let offset = (topic + cycle - self.start(p)) % cycle;
        (p, seq * cycle as u64 + offset as u64)
    }
}

/// The name of topic `t`.
pub fn topic_name(t: usize) -> String {
    format!("t{t}")
}

/// `{"publish":"t<topic>","data":"<data>"}`. `data` is a stamp (`payload::encode`): ASCII
/// digits, letters and colons, nothing that needs escaping in a JSON string.
pub fn publish_frame(topic: usize, data: &[u8]) -> Vec<u8> {
    debug_assert!(data.iter().all(|b| b.is_ascii_alphanumeric() || *b == b':'));
    let mut out = format!(r#"{{"publish":"{}","data":""#, topic_name(topic)).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\"}");
    out
}

/// Whether `data` acknowledges a subscription: `{"subscribed":"<topic>"}`.
pub fn is_ack(data: &[u8]) -> bool {
    data.starts_with(br#"{"subscribed":""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_distinct_and_spread() {
        let plan = TopicPlan {
            topics: 100,
            per_client: 10,
            publishers: 1,
            publish_topics: 0,
        };
        let mine: Vec<usize> = plan.subscriptions(7).collect();
        assert_eq!(mine, [7, 17, 27, 37, 47, 57, 67, 77, 87, 97]);
        assert_eq!(
            plan.query(3),
            "topics=t3,t13,t23,t33,t43,t53,t63,t73,t83,t93"
        );
        // 10,000 subscribers × 10 topics over 100 topics: 1,000 each.
        assert!(plan.subscriber_counts(10_000).iter().all(|&n| n == 1_000));
        let one = TopicPlan {
            per_client: 1,
            ..plan
        };
        assert!(one.subscriber_counts(10_000).iter().all(|&n| n == 100));
    }

    #[test]
    fn publishes_cycle_the_topics_and_invert() {
        let plan = TopicPlan {
            topics: 7,
            per_client: 1,
            publishers: 3,
            publish_topics: 0,
        };
        let hot = TopicPlan {
            publish_topics: 2,
            ..plan
        };
        for g in 0..20 {
            let m = hot.publish(2, g);
            assert!(m.topic < 2);
            assert_eq!(hot.origin(m.slot, m.seq), (2, g));
        }
        for p in 0..3 {
            let mut seen = [0u64; 7];
            for g in 0..70 {
                let m = plan.publish(p, g);
                assert_eq!(m.slot, p * 7 + m.topic);
                // Each stream's sequence numbers run 0, 1, 2, ... with no gap.
                assert_eq!(m.seq, seen[m.topic]);
                seen[m.topic] += 1;
                assert_eq!(plan.origin(m.slot, m.seq), (p, g));
            }
            assert!(seen.iter().all(|&n| n == 10));
        }
        assert_eq!(
            plan.publish(1, 0).topic,
            2,
            "publisher 1 starts at its own offset"
        );
    }

    #[test]
    fn frames_and_acks() {
        assert_eq!(
            publish_frame(4, b"cc:1:2:3:xx"),
            br#"{"publish":"t4","data":"cc:1:2:3:xx"}"#
        );
        assert!(is_ack(br#"{"subscribed":"t4"}"#));
        assert!(!is_ack(br#"{"error":"x"}"#));
        let plan = TopicPlan {
            topics: 3,
            per_client: 4,
            publishers: 1,
            publish_topics: 0,
        };
        assert!(plan.check().is_err());
        assert!(TopicPlan {
            per_client: 1,
            publish_topics: 4,
            ..plan
        }
        .check()
        .is_err());
    }
}
