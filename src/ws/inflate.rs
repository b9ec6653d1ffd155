//! Inflating one permessage-deflate message (RFC 7692 §7.2.2) with the inflater all
//! connections of a thread share, never past a size limit. Pure: no I/O; not the negotiation
//! or compressing (`deflate.rs`), nor which close code a failure earns (`frame.rs`).

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use flate2::{Decompress, FlushDecompress, Status};

/// What a sync flush ends with: a sender leaves it out, the receiver appends it again before
/// inflating (RFC 7692 §7.2.1, §7.2.2).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why a message did not inflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (a close 1009 for a peer's message).
    TooLarge,
    /// It is not valid deflate data (a protocol error).
    Corrupt,
}

thread_local! {
    /// Raw deflate, 15-bit window: it inflates what any client window produced.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Inflates one compressed message's payload, never holding more than `max_size + 1` bytes of
/// output: past `max_size` it is `TooLarge`, so a decompression bomb costs at most the limit.
/// Every message stands alone (the server always agrees `client_no_context_takeover`).
pub fn inflate(compressed: &[u8], max_size: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(false);
        catch_unwind(AssertUnwindSafe(|| {
            inflate_with(&mut d, compressed, max_size)
        }))
        .unwrap_or_else(|_| {
            // A fault inside the inflater: this message is refused, the next gets a new one.
            *d = Decompress::new(false);
            Err(InflateError::Corrupt)
        })
    })
}

fn inflate_with(
    d: &mut Decompress,
    compressed: &[u8],
    max_size: usize,
) -> Result<Vec<u8>, InflateError> {
    let cap = max_size.saturating_add(1);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).clamp(64, cap));
    for part in [compressed, &TAIL[..]] {
        let mut input = part;
        loop {
            if out.len() == out.capacity() {
                if out.len() > max_size {
                    return Err(InflateError::TooLarge);
                }
                let grow = out.capacity().max(64).min(cap - out.len());
                out.reserve_exact(grow);
            }
            let (in_before, out_before) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            if out.len() > max_size {
                return Err(InflateError::TooLarge);
            }
            let used =
                usize::try_from(d.total_in() - in_before).map_err(|_| InflateError::Corrupt)?;
            input = input.get(used..).unwrap_or_default();
            if status == Status::StreamEnd {
                // A final block (BFINAL, §7.2.3.4): whatever follows is not part of it.
                return Ok(out);
            }
            let room_left = out.len() < out.capacity();
            if input.is_empty() && room_left {
                break;
            }
            if used == 0 && out.len() == out_before && room_left {
                // No progress with room to spare: the data cannot be inflated.
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok(out)
}
