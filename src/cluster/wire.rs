//! What travels between nodes: NATS subjects, key-value keys, and message bodies. Pure
//! encoding, tested byte for byte; not the NATS client.
//!
//! Every cross-node operation is one NATS message. Node-wide work (broadcast, fire, emit to
//! UUIDs, close) shares one subject, so one node's operations arrive everywhere in the order
//! it sent them; each topic has a subject of its own, taken only by nodes with subscribers.
//! A topic with history has instead a subject its JetStream stream keeps (`Subjects::history`,
//! `Subjects::stream`), whose deliveries are placed by their reply subject (`delivered`) and
//! carry the skipped connection and the conflation key in headers.
//! Messages carry server frames already encoded: a receiving node queues the same bytes for
//! every local recipient.

use bytes::{BufMut, Bytes, BytesMut};

use crate::registry::{ConnId, ShardId};

/// Subjects and keys of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
    name: String,
}

impl Subjects {
    pub(crate) fn new(cluster: &str) -> Subjects {
        Subjects {
            prefix: format!("corecast.{cluster}"),
            name: cluster.to_string(),
        }
    }

    /// Node-wide operations.
    pub(crate) fn all(&self) -> String {
        format!("{}.all", self.prefix)
    }

    /// Heartbeats.
    pub(crate) fn heartbeat(&self) -> String {
        format!("{}.hb", self.prefix)
    }

    /// A topic's publishes. Topic names are any UTF-8, so the subject carries them in hex.
    pub(crate) fn topic(&self, topic: &str) -> String {
        format!("{}.t.{}", self.prefix, hex(topic.as_bytes()))
    }

    /// The key-value bucket of UUID claims.
    pub(crate) fn bucket(&self) -> String {
        format!("corecast_{}_uuids", self.name)
    }

    /// The subject a topic with history is published to: its JetStream stream's only subject.
    /// Apart from the topic subjects, so a node holding a topic's core subject never hears it.
    pub(crate) fn history(&self, topic: &str) -> String {
        format!("{}.h.{}", self.prefix, hex(topic.as_bytes()))
    }

    /// The JetStream stream keeping a topic's history: the cluster's name and a hash of the
    /// topic (stream names allow few characters and a bounded length; the stream's subject,
    /// checked on use, tells a hash collision apart).
    pub(crate) fn stream(&self, topic: &str) -> String {
        let hash = fnv1a(&[self.name.as_bytes(), b"\0", topic.as_bytes()].concat());
        format!("corecast_{}_h_{hash:016x}", self.name)
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A topic history's epoch in cluster mode: a hash of its stream's name and the stream's
/// creation time (ns since the Unix epoch), which every node reads alike from JetStream and
/// which changes whenever the stream is made again (deleted, or lost with a NATS restart).
pub(crate) fn epoch_of(stream: &str, created_unix_nanos: i128) -> u32 {
    let hash = fnv1a(&[stream.as_bytes(), &created_unix_nanos.to_be_bytes()].concat());
    (hash >> 32) as u32 ^ hash as u32
}

/// Where a message a JetStream push consumer delivered sits, read from its reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// The stream's sequence: the topic's offset.
    pub(crate) stream_seq: u64,
    /// The consumer's own count, one more per delivery: a jump means one was lost on the way.
    pub(crate) consumer_seq: u64,
}

/// Reads a delivery's reply subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.
/// <consumer seq>.<time>.<pending>`, or the longer form with a domain and an account hash
/// first (and a token last).
pub(crate) fn delivered(reply: &str) -> Option<Delivered> {
    // Read for every delivery: counted and walked in place, nothing allocated.
    let tokens = reply.split('.').count();
    let rest = reply.strip_prefix("$JS.ACK.")?;
    if tokens < 9 {
        return None;
    }
    let skip = if tokens == 9 { 3 } else { 5 };
    let mut numbers = rest.split('.').skip(skip).map(|t| t.parse::<u64>().ok());
    Some(Delivered {
        stream_seq: numbers.next()??,
        consumer_seq: numbers.next()??,
    })
}

/// The header naming the connection a history publication skips (`kws.publish`): the node
/// and the connection's id there.
pub(crate) const EXCEPT_HEADER: &str = "Corecast-Except";

/// The header carrying a history publication's conflation key hash.
pub(crate) const KEY_HEADER: &str = "Corecast-Key";

/// `<node> <shard> <slot> <generation>`: the value of `EXCEPT_HEADER`.
pub(crate) fn except_value(node: &str, id: ConnId) -> String {
    format!("{node} {} {} {}", id.shard.0, id.slot, id.generation)
}

/// The connection to skip, when `value` names one of node `me`.
pub(crate) fn parse_except(value: &str, me: &str) -> Option<ConnId> {
    let mut parts = value.split(' ');
    if parts.next()? != me {
        return None;
    }
    let mut number = || parts.next()?.parse::<u64>().ok();
    let (shard, slot, generation) = (number()?, number()?, number()?);
    Some(ConnId {
        shard: ShardId(usize::try_from(shard).ok()?),
        slot: usize::try_from(slot).ok()?,
        generation,
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A UUID's key in the claims bucket (keys allow only a few characters; hex fits all).
pub(crate) fn claim_key(uuid: &str) -> String {
    hex(uuid.as_bytes())
}

/// A claim's value: the holder and when it claimed (ms since the Unix epoch), so a claim
/// younger than the heartbeat timeout counts as live even before its node has been heard.
pub(crate) fn claim_value(node: &str, unix_ms: u64) -> Bytes {
    Bytes::from(format!("{node} {unix_ms}"))
}

pub(crate) fn parse_claim(value: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (node, ms) = text.rsplit_once(' ')?;
    Some((node, ms.parse().ok()?))
}

/// A node-wide operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// A framed message for every connection.
    Broadcast { frame: Bytes },
    /// Run the listeners of `name` once per connection.
    Fire { name: String, data: Bytes },
    /// A framed message for the connections holding these UUIDs, wherever they are.
    Emit { uuids: Vec<String>, frame: Bytes },
    /// Close the connection holding `uuid`.
    Close {
        uuid: String,
        code: u16,
        reason: String,
    },
    /// A publication whose publisher waits for a report (`publish_reported`): every node
    /// delivers it to its subscribers of `topic` and answers the message's reply subject with
    /// what it did (`encode_report`), none or not. `key`: the conflation key's hash.
    Publish {
        topic: String,
        key: u64,
        frame: Bytes,
    },
}

/// Why a body could not be read: another version's message, or a damaged one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed;

const BROADCAST: u8 = 1;
const FIRE: u8 = 2;
const EMIT: u8 = 3;
const CLOSE: u8 = 4;
const PUBLISH: u8 = 5;

fn put_str(out: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.put_slice(&s.as_bytes()[..usize::from(len)]);
}

impl Op {
    /// `kind` byte, then the fields: strings as u16 length + UTF-8, counts as u32, the frame
    /// or data last, to the end of the body.
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Op::Broadcast { frame } => {
                out.put_u8(BROADCAST);
                out.put_slice(frame);
            }
            Op::Fire { name, data } => {
                out.put_u8(FIRE);
                put_str(&mut out, name);
                out.put_slice(data);
            }
            Op::Emit { uuids, frame } => {
                out.put_u8(EMIT);
                out.put_u32(uuids.len() as u32);
                for u in uuids {
                    put_str(&mut out, u);
                }
                out.put_slice(frame);
            }
            Op::Close { uuid, code, reason } => {
                out.put_u8(CLOSE);
                put_str(&mut out, uuid);
                out.put_u16(*code);
                out.put_slice(reason.as_bytes());
            }
            Op::Publish { topic, key, frame } => {
                out.put_u8(PUBLISH);
                put_str(&mut out, topic);
                out.put_u64(*key);
                out.put_slice(frame);
            }
        }
        out.freeze()
    }

    pub(crate) fn decode(body: &Bytes) -> Result<Op, Malformed> {
        let mut r = Reader { body, at: 1 };
        match body.first() {
            Some(&BROADCAST) => Ok(Op::Broadcast { frame: r.rest() }),
            Some(&FIRE) => Ok(Op::Fire {
                name: r.string()?,
                data: r.rest(),
            }),
            Some(&EMIT) => {
                let n = r.u32()?;
                // Each UUID takes at least its two length bytes: a count beyond that is damage.
                if n as usize > body.len() / 2 {
                    return Err(Malformed);
                }
                let uuids = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
                Ok(Op::Emit {
                    uuids,
                    frame: r.rest(),
                })
            }
            Some(&CLOSE) => Ok(Op::Close {
                uuid: r.string()?,
                code: r.u16()?,
                reason: String::from_utf8(r.rest().to_vec()).map_err(|_| Malformed)?,
            }),
            Some(&PUBLISH) => Ok(Op::Publish {
                topic: r.string()?,
                key: r.u64()?,
                frame: r.rest(),
            }),
            _ => Err(Malformed),
        }
    }
}

struct Reader<'a> {
    body: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let end = self.at.checked_add(n).ok_or(Malformed)?;
        let bytes = self.body.get(self.at..end).ok_or(Malformed)?;
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut n = [0u8; 8];
        n.copy_from_slice(b);
        Ok(u64::from_be_bytes(n))
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Malformed)
    }

    fn rest(&mut self) -> Bytes {
        self.body.slice(self.at.min(self.body.len())..)
    }
}

/// A node's part of a publish report (`topics::PublishReport`), as `Op::Publish`'s answer
/// carries it: what its shards counted, and whether that is partial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReportPart {
    pub(crate) subscribers: u64,
    pub(crate) queued: u64,
    pub(crate) closed: u64,
    pub(crate) dropped: u64,
    pub(crate) shards: u64,
    pub(crate) partial: bool,
}

/// A node's answer to `Op::Publish`: its counts as u64 (subscribers, queued, closed, dropped,
/// shards), whether it is partial, then the node's id.
pub(crate) fn encode_report(node: &str, part: &ReportPart) -> Bytes {
    let mut out = BytesMut::with_capacity(41 + node.len());
    for n in [
        part.subscribers,
        part.queued,
        part.closed,
        part.dropped,
        part.shards,
    ] {
        out.put_u64(n);
    }
    out.put_u8(u8::from(part.partial));
    out.put_slice(node.as_bytes());
    out.freeze()
}

/// The node and its part of a report, from `encode_report`'s bytes.
pub(crate) fn decode_report(body: &Bytes) -> Result<(String, ReportPart), Malformed> {
    let mut r = Reader { body, at: 0 };
    let (subscribers, queued, closed, dropped, shards) =
        (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    let partial = match r.take(1)? {
        [0] => false,
        [1] => true,
        _ => return Err(Malformed),
    };
    let node = String::from_utf8(r.rest().to_vec()).map_err(|_| Malformed)?;
    let part = ReportPart {
        subscribers,
        queued,
        closed,
        dropped,
        shards,
        partial,
    };
    Ok((node, part))
}

/// A heartbeat: the node's live connections, then its id.
pub(crate) fn encode_heartbeat(node: &str, connections: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + node.len());
    out.put_u64(connections);
    out.put_slice(node.as_bytes());
    out.freeze()
}

pub(crate) fn decode_heartbeat(body: &[u8]) -> Result<(String, u64), Malformed> {
    let (count, node) = body.split_at_checked(8).ok_or(Malformed)?;
    let count = u64::from_be_bytes(count.try_into().map_err(|_| Malformed)?);
    let node = std::str::from_utf8(node).map_err(|_| Malformed)?;
    if node.is_empty() {
        return Err(Malformed);
    }
    Ok((node.to_string(), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_keys() {
        let s = Subjects::new("prod");
        assert_eq!(s.all(), "corecast.prod.all");
        assert_eq!(s.heartbeat(), "corecast.prod.hb");
        // Dots, spaces and any UTF-8 in a topic cannot break the subject.
        assert_eq!(s.topic("a.b c"), "corecast.prod.t.612e622063");
        assert_eq!(s.topic("é"), "corecast.prod.t.c3a9");
        assert_eq!(s.bucket(), "corecast_prod_uuids");
        assert_eq!(claim_key("user-7"), "757365722d37");
        assert_eq!(&claim_value("node-a", 42)[..], b"node-a 42");
        assert_eq!(parse_claim(b"node-a 42"), Some(("node-a", 42)));
        assert_eq!(parse_claim(b"node-a"), None);
        assert_eq!(parse_claim(b"node-a x"), None);
    }

    #[test]
    fn ops_round_trip_byte_for_byte() {
        let frame = Bytes::from_static(b"\x81\x02hi");
        let cases = [
            (
                Op::Broadcast {
                    frame: frame.clone(),
                },
                b"\x01\x81\x02hi".to_vec(),
            ),
            (
                Op::Fire {
                    name: "tick".into(),
                    data: Bytes::from_static(b"d"),
                },
                b"\x02\x00\x04tickd".to_vec(),
            ),
            (
                Op::Emit {
                    uuids: vec!["a".into(), "bc".into()],
                    frame: frame.clone(),
                },
                b"\x03\x00\x00\x00\x02\x00\x01a\x00\x02bc\x81\x02hi".to_vec(),
            ),
            (
                Op::Close {
                    uuid: "u".into(),
                    code: 1000,
                    reason: "bye".into(),
                },
                b"\x04\x00\x01u\x03\xe8bye".to_vec(),
            ),
            (
                Op::Publish {
                    topic: "t".into(),
                    key: 0x0102,
                    frame: frame.clone(),
                },
                b"\x05\x00\x01t\x00\x00\x00\x00\x00\x00\x01\x02\x81\x02hi".to_vec(),
            ),
        ];
        for (op, bytes) in cases {
            let encoded = op.encode();
            assert_eq!(&encoded[..], &bytes[..], "{op:?}");
            assert_eq!(Op::decode(&encoded), Ok(op));
        }
    }

    #[test]
    fn reports_round_trip_byte_for_byte() {
        let part = ReportPart {
            subscribers: 5,
            queued: 3,
            closed: 1,
            dropped: 1,
            shards: 2,
            partial: true,
        };
        let encoded = encode_report("n1", &part);
        let mut expected = Vec::new();
        for n in [5u64, 3, 1, 1, 2] {
            expected.extend(n.to_be_bytes());
        }
        expected.extend(b"\x01n1");
        assert_eq!(&encoded[..], &expected[..]);
        assert_eq!(decode_report(&encoded), Ok(("n1".to_string(), part)));
        assert_eq!(decode_report(&encoded.slice(..40)), Err(Malformed));
        let mut bad = expected.clone();
        bad[40] = 2;
        assert_eq!(decode_report(&Bytes::from(bad)), Err(Malformed));
    }

    #[test]
    fn damaged_bodies_are_refused() {
        for bad in [
            &b""[..],
            b"\x09",
            b"\x02\x00\x09ti",
            b"\x03\xff\xff\xff\xff",
            b"\x03\x00\x00\x00\x01\x00\x05ab",
            b"\x04\x00\x01u\x03",
            b"\x04\x00\x01u\x03\xe8\xff",
            b"\x05\x00\x01t\x00\x00",
        ] {
            assert_eq!(
                Op::decode(&Bytes::copy_from_slice(bad)),
                Err(Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn history_subjects_streams_and_epochs() {
        let s = Subjects::new("prod");
        assert_eq!(s.history("a.b c"), "corecast.prod.h.612e622063");
        let name = s.stream("scores");
        assert!(name.starts_with("corecast_prod_h_"), "{name}");
        assert_eq!(name.len(), "corecast_prod_h_".len() + 16);
        // One name per cluster and topic, none shared between them.
        assert_eq!(name, Subjects::new("prod").stream("scores"));
        assert_ne!(name, s.stream("scores2"));
        assert_ne!(
            Subjects::new("a").stream("bc"),
            Subjects::new("ab").stream("c")
        );
        // Made again, a stream has another creation time, hence another epoch.
        let created = 1_700_000_000_123_456_789i128;
        assert_eq!(epoch_of(&name, created), epoch_of(&name, created));
        assert_ne!(epoch_of(&name, created), epoch_of(&name, created + 1));
        assert_ne!(epoch_of(&name, created), epoch_of(&s.stream("x"), created));
    }

    #[test]
    fn deliveries_are_placed_by_their_reply_subject() {
        let at = |stream_seq, consumer_seq| {
            Some(Delivered {
                stream_seq,
                consumer_seq,
            })
        };
        assert_eq!(
            delivered("$JS.ACK.corecast_p_h_00ff.c1.1.42.7.1700000000000000000.0"),
            at(42, 7)
        );
        assert_eq!(
            delivered("$JS.ACK.dom.acchash.corecast_p_h_00ff.c1.1.42.7.1700000000000000000.0.tok"),
            at(42, 7)
        );
        for bad in [
            "",
            "_INBOX.x",
            "$JS.ACK.s.c.1.x.7.1.0",
            "$JS.ACK.s.c.1",
            "$JS.NAK.s.c.1.42.7.1.0",
        ] {
            assert_eq!(delivered(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_except_header_names_a_connection_of_one_node() {
        let id = ConnId {
            shard: ShardId(3),
            slot: 17,
            generation: 99,
        };
        let value = except_value("node-a", id);
        assert_eq!(value, "node-a 3 17 99");
        assert_eq!(parse_except(&value, "node-a"), Some(id));
        assert_eq!(parse_except(&value, "node-b"), None);
        assert_eq!(parse_except("node-a 3 17", "node-a"), None);
        assert_eq!(parse_except("node-a 3 x 99", "node-a"), None);
    }

    #[test]
    fn heartbeats() {
        let hb = encode_heartbeat("n1", 7);
        assert_eq!(&hb[..], b"\x00\x00\x00\x00\x00\x00\x00\x07n1");
        assert_eq!(decode_heartbeat(&hb), Ok(("n1".to_string(), 7)));
        assert_eq!(decode_heartbeat(b"\x00\x00"), Err(Malformed));
        assert_eq!(decode_heartbeat(&[0; 8]), Err(Malformed));
    }
}
