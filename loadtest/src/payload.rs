//! What a load-test message carries: who sent it, its sequence number and when it was sent,
//! so every delivery can be counted and timed. Pure encoding; no sockets.

/// The identity and send time of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending connection's index.
    pub sender: u32,
    /// Per-sender sequence number, from 0.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at send time (one clock for the whole generator process).
    pub sent_ns: u64,
}

/// A relay/echo message: `cc:<sender>:<seq>:<ns>:` then `x` up to `size` bytes. Text, so
/// servers that relay text as text keep it whole.
pub fn encode(stamp: Stamp, size: usize) -> Vec<u8> {
    let mut out = format!("cc:{}:{}:{}:", stamp.sender, stamp.seq, stamp.sent_ns).into_bytes();
    if out.len() < size {
        out.resize(size, b'x');
    }
    out
}

/// `encode` padded with JSON records instead of `x`: text that compresses like a real feed
/// (about 3:1 at zlib level 1), for the compression scenarios. Still valid for `decode`.
pub fn encode_json(stamp: Stamp, size: usize) -> Vec<u8> {
    let mut out = format!("cc:{}:{}:{}:", stamp.sender, stamp.seq, stamp.sent_ns).into_bytes();
    let filler = json_filler();
    let need = size.saturating_sub(out.len());
    // Start where the sequence number says, so consecutive messages differ.
    let start = (stamp.seq as usize * 61) % (filler.len() / 2);
    out.extend_from_slice(&filler[start..][..need.min(filler.len() - start)]);
    out.resize(size.max(out.len()), b' ');
    out
}

/// 64 KiB of trade-like JSON records with varied numbers, made once.
fn json_filler() -> &'static [u8] {
    static FILLER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILLER.get_or_init(|| {
        let mut x = 0x2545_f491u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut s = String::with_capacity(70_000);
        let sides = ["buy", "sell"];
        let symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD", "DOT-USD"];
        while s.len() < 64 << 10 {
            let (a, b, c) = (next(), next(), next());
            s.push_str(&format!(
                "{{\"id\":{},\"symbol\":\"{}\",\"side\":\"{}\",\"price\":{}.{:02},\"qty\":{}.{:03},\"ts\":{}}},",
                a % 10_000_000,
                symbols[(b % 6) as usize],
                sides[(b >> 8) as usize % 2],
                20_000 + c % 50_000,
                c % 100,
                b % 50,
                a % 1000,
                1_764_000_000_000u64 + u64::from(c % 1_000_000)
            ));
        }
        s.into_bytes()
    })
}

/// Reads a stamp written by `encode`; `None` for anything else.
pub fn decode(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(b"cc:")?;
    let mut parts = rest.splitn(4, |b| *b == b':');
    let mut field = || -> Option<u64> { std::str::from_utf8(parts.next()?).ok()?.parse().ok() };
    let sender = u32::try_from(field()?).ok()?;
    let seq = field()?;
    let sent_ns = field()?;
    // The fourth part (padding) must exist: the header ends with ':'.
    parts.next()?;
    Some(Stamp {
        sender,
        seq,
        sent_ns,
    })
}

/// A shootout message of the hashrocket websocket-shootout protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShootoutKind {
    /// `{"type":"broadcast",...}`: the broadcast itself, as every client receives it.
    Broadcast,
    /// `{"type":"broadcastResult",...}`: the answer to the sender.
    Result,
    /// `{"type":"echo",...}`.
    Echo,
}

/// `{"type":"broadcast"|"echo","payload":{"s":..,"q":..,"t":..}}`.
pub fn encode_shootout(kind: ShootoutKind, stamp: Stamp) -> Vec<u8> {
    let kind = match kind {
        ShootoutKind::Broadcast => "broadcast",
        ShootoutKind::Result => "broadcastResult",
        ShootoutKind::Echo => "echo",
    };
    format!(
        r#"{{"type":"{kind}","payload":{{"s":{},"q":{},"t":{}}}}}"#,
        stamp.sender, stamp.seq, stamp.sent_ns
    )
    .into_bytes()
}

/// Reads a shootout message written by `encode_shootout` (or relayed by a server).
pub fn decode_shootout(data: &[u8]) -> Option<(ShootoutKind, Stamp)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let kind = match v.get("type")?.as_str()? {
        "broadcast" => ShootoutKind::Broadcast,
        "broadcastResult" => ShootoutKind::Result,
        "echo" => ShootoutKind::Echo,
        _ => return None,
    };
    let p = v.get("payload")?;
    Some((
        kind,
        Stamp {
            sender: u32::try_from(p.get("s")?.as_u64()?).ok()?,
            seq: p.get("q")?.as_u64()?,
            sent_ns: p.get("t")?.as_u64()?,
        },
    ))
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        sender: 7,
        seq: 42,
        sent_ns: 123456789,
    };

    #[test]
    fn round_trip_with_padding() {
        let m = encode(S, 64);
        assert_eq!(m.len(), 64);
        assert!(m.starts_with(b"cc:7:42:123456789:xxx"));
        assert_eq!(decode(&m), Some(S));
        // Shorter than the header: no padding, still whole.
        assert_eq!(decode(&encode(S, 0)), Some(S));
    }

    #[test]
    fn json_padding_keeps_the_size_and_the_stamp() {
        for size in [0, 64, 1024, 100_000] {
            let m = encode_json(S, size);
            assert_eq!(m.len(), size.max(encode(S, 0).len()), "{size}");
            assert_eq!(decode(&m), Some(S));
        }
        let m = encode_json(S, 1024);
        assert!(m.starts_with(b"cc:7:42:123456789:"));
        assert!(m.windows(9).any(|w| w == b"\"symbol\":"));
        let next = encode_json(Stamp { seq: 43, ..S }, 1024);
        assert_ne!(m[20..], next[20..], "consecutive messages differ");
    }

    #[test]
    fn rejects_anything_else() {
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(b"cc:7:42"), None);
        assert_eq!(decode(b"cc:x:42:1:"), None);
    }

    #[test]
    fn shootout_round_trip() {
        for kind in [
            ShootoutKind::Broadcast,
            ShootoutKind::Result,
            ShootoutKind::Echo,
        ] {
            assert_eq!(decode_shootout(&encode_shootout(kind, S)), Some((kind, S)));
        }
        assert_eq!(
            encode_shootout(ShootoutKind::Broadcast, S),
            br#"{"type":"broadcast","payload":{"s":7,"q":42,"t":123456789}}"#
        );
        assert_eq!(decode_shootout(b"{}"), None);
    }
}
