//! permessage-deflate (RFC 7692): reading a client's offer, and the compressor that all
//! connections of a thread share. Pure: no I/O; not the framing (`frame.rs` checks RSV1),
//! not inflating (`inflate.rs`) and not the choice of who gets compressed frames (the
//! session's).
//!
//! The server always answers with both `server_no_context_takeover` and
//! `client_no_context_takeover` (RFC 7692 §7.1.1.1 and §7.1.1.2 let it add either unasked).
//! Every message is then compressed and inflated on its own, so:
//! * a connection holds no compression state at all: one compressor and one inflater per
//!   thread (one per shard) serve every connection;
//! * a broadcast or a publish is compressed once per shard, and the compressed frame is shared
//!   by every recipient, as the uncompressed frame is.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

use super::frame::{encode_header, header_len, OpCode};
pub use super::inflate::{inflate, InflateError};
use crate::http::split_unquoted;

/// The extension's name in `Sec-WebSocket-Extensions` (RFC 7692 §7).
const EXTENSION: &str = "permessage-deflate";

/// What a sync flush ends with, and what a compressed message leaves out (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = super::inflate::TAIL;

/// The smallest LZ77 window the compressor can keep to. A client that asks for 8 bits
/// (`server_max_window_bits=8`) is still accepted: the server then sends it uncompressed
/// messages, which RFC 7692 §6 always allows, and still inflates what it sends.
const MIN_COMPRESS_WINDOW_BITS: u8 = 9;

/// How a route compresses what it sends (`Config::deflate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// zlib level, 0 (store) to 9 (smallest); past 9 counts as 9. Default 1: for a feed of JSON
    /// it keeps most of the gain of higher levels at a third of their CPU.
    pub level: u32,
    /// Messages shorter than this go out uncompressed (RSV1 clear): deflating a few dozen bytes
    /// costs more CPU than the bytes it saves. Default 128. A message that would not shrink is
    /// sent uncompressed too.
    pub min_size: usize,
}

impl Default for Deflate {
    fn default() -> Self {
        Deflate {
            level: Self::DEFAULT_LEVEL,
            min_size: Self::DEFAULT_MIN_SIZE,
        }
    }
}

impl Deflate {
    /// Default zlib level.
    pub const DEFAULT_LEVEL: u32 = 1;
    /// Default smallest message that is compressed.
    pub const DEFAULT_MIN_SIZE: usize = 128;
}

/// What a connection agreed to: the extension is in use, with the server's window limit the
/// client asked for, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// `server_max_window_bits` from the accepted offer (8..=15); `None`: not limited (15).
    server_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value of the 101.
    pub fn response(&self) -> String {
        let mut out =
            format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            // §7.1.2.1: an accepted offer with this parameter is answered with it.
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        out
    }

    /// The window the server's compressor may use, in bits.
    pub fn window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }
}

/// The first offer of permessage-deflate that the server can honour, among `offers` (the items
/// of every `Sec-WebSocket-Extensions` header, in the client's order of preference, RFC 7692
/// §5). An offer with an unknown parameter, a repeated one or a bad value is declined, and the
/// next one is considered (§7); `None` when none is acceptable: the connection goes on without
/// compression.
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    offers.into_iter().find_map(accept_offer)
}

fn accept_offer(offer: &str) -> Option<Agreement> {
    let mut parts = split_unquoted(offer, b';').map(trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_max_window_bits = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (trim(name), Some(unquote(trim(value))?)),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        let slot = match (name.as_str(), value) {
            ("server_no_context_takeover", None) => 0,
            ("client_no_context_takeover", None) => 1,
            // §7.1.2.1: a value is required.
            ("server_max_window_bits", Some(v)) => {
                server_max_window_bits = Some(window_bits(v)?);
                2
            }
            // §7.1.2.2: the value is optional. The server inflates any window, so it never
            // limits the client's and leaves the parameter out of its answer.
            ("client_max_window_bits", None) => 3,
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            // §7: an offer with a parameter given twice is declined.
            return None;
        }
    }
    Some(Agreement {
        server_max_window_bits,
    })
}

/// A window size parameter: 1*DIGIT without leading zeros, 8 to 15 (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// A parameter value as a token or a quoted string (RFC 7692 §7: the value after unquoting must
/// still be valid); `None` for an unterminated quote or an escape.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        None => Some(value),
        Some(rest) => rest.strip_suffix('"').filter(|v| !v.contains(['"', '\\'])),
    }
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

// ---- compressing -----------------------------------------------------------------------------

/// Frames recently compressed on this thread, so every recipient of a broadcast or publish
/// shares one compressed frame. Keyed by the uncompressed frame's allocation: it is held
/// here, so the same address and length cannot mean other bytes while the entry lives.
const CACHED_FRAMES: usize = 4;

struct Cached {
    plain: Bytes,
    window_bits: u8,
    level: u32,
    /// The frame to send: compressed, or `plain` again when compression did not pay.
    sent: Bytes,
}

#[derive(Default)]
struct Compressors {
    /// One per (window bits, level) in use on this thread: almost always just one.
    by_settings: Vec<((u8, u32), Compress)>,
    cache: [Option<Cached>; CACHED_FRAMES],
    next_slot: usize,
}

thread_local! {
    static COMPRESSORS: RefCell<Compressors> = RefCell::default();
}

/// The frame to send for `frame` (built by `frame::encode`) to a connection that agreed to a
/// window of `window_bits`: the same frame compressed with RSV1 set (RFC 7692 §6), or `frame`
/// itself when it is a control frame, shorter than `settings.min_size`, would not shrink, or
/// the window is too small to compress within.
pub fn compress_frame(frame: &Bytes, settings: &Deflate, window_bits: u8) -> Bytes {
    let Some((op, header_len)) = data_frame(frame) else {
        return frame.clone();
    };
    let payload = frame.get(header_len..).unwrap_or_default();
    if payload.len() < settings.min_size || window_bits < MIN_COMPRESS_WINDOW_BITS {
        return frame.clone();
    }
    let level = settings.level.min(9);
    COMPRESSORS.with(|c| {
        let mut c = c.borrow_mut();
        let hit = c.cache.iter().flatten().find(|e| {
            e.plain.as_ptr() == frame.as_ptr()
                && e.plain.len() == frame.len()
                && e.window_bits == window_bits
                && e.level == level
        });
        if let Some(hit) = hit {
            return hit.sent.clone();
        }
        let key = (window_bits, level);
        let compressor = c.compressor(key);
        let sent = match catch_unwind(AssertUnwindSafe(|| deflate_frame(compressor, op, payload))) {
            Ok(Deflated::Frame(compressed)) => compressed,
            Ok(Deflated::NotSmaller) => frame.clone(),
            Ok(Deflated::Failed) | Err(_) => {
                // A fault inside the compressor costs this message its compression, not the
                // thread: the compressor, in whatever state it was left, is made anew.
                c.by_settings.retain(|(k, _)| *k != key);
                frame.clone()
            }
        };
        let slot = c.next_slot;
        c.next_slot = (slot + 1) % CACHED_FRAMES;
        c.cache[slot] = Some(Cached {
            plain: frame.clone(),
            window_bits,
            level,
            sent: sent.clone(),
        });
        sent
    })
}

impl Compressors {
    fn compressor(&mut self, key: (u8, u32)) -> &mut Compress {
        let i = match self.by_settings.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let (window_bits, level) = key;
                let compress =
                    Compress::new_with_window_bits(Compression::new(level), false, window_bits);
                self.by_settings.push((key, compress));
                self.by_settings.len() - 1
            }
        };
        &mut self.by_settings[i].1
    }
}

/// The opcode and header length of an unfragmented, unextended data frame; `None` otherwise.
fn data_frame(frame: &[u8]) -> Option<(OpCode, usize)> {
    let (&b0, &b1) = (frame.first()?, frame.get(1)?);
    // FIN set, RSV1-3 clear.
    if b0 & 0xF0 != 0x80 {
        return None;
    }
    let op = match OpCode::from_u8(b0 & 0x0F)? {
        op @ (OpCode::Text | OpCode::Binary) => op,
        _ => return None,
    };
    Some((op, header_len(b1, false)))
}

/// What compressing one message gave.
enum Deflated {
    /// The compressed frame, RSV1 set.
    Frame(Bytes),
    /// It would not be shorter: send it as it is.
    NotSmaller,
    /// The compressor reported an error; its stream state is not to be trusted.
    Failed,
}

/// Compresses one message on its own (no context from earlier ones) into a frame with RSV1
/// set.
fn deflate_frame(c: &mut Compress, op: OpCode, payload: &[u8]) -> Deflated {
    const ROOM: usize = 10;
    c.reset();
    // Room for the longest header in front, written once the compressed length is known.
    let mut out = Vec::with_capacity(ROOM + payload.len() / 2 + 64);
    out.resize(ROOM, 0);
    let mut input = payload;
    // Always to the end of the flush, even when the output already outgrew the input: a
    // stream left half-flushed is not cleanly reset by zlib-rs 0.6 (its next message then
    // overflows an internal buffer). Incompressible data grows by a few bytes per 16 KiB.
    loop {
        let before = c.total_in();
        if c.compress_vec(input, &mut out, FlushCompress::Sync)
            .is_err()
        {
            return Deflated::Failed;
        }
        let used = usize::try_from(c.total_in() - before).unwrap_or(usize::MAX);
        let Some(rest) = input.get(used..) else {
            return Deflated::Failed;
        };
        input = rest;
        // Done when all input is in and the flush had room to finish.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    // §7.2.1: the sync flush's empty stored block is left out.
    if !out.ends_with(&TAIL) {
        return Deflated::Failed;
    }
    out.truncate(out.len() - TAIL.len());
    let len = out.len() - ROOM;
    if len >= payload.len() {
        return Deflated::NotSmaller;
    }
    let mut header = [0u8; 10];
    let header_len = encode_header(op, len, &mut header);
    header[0] |= 0x40; // RSV1: this message is compressed (RFC 7692 §6).
    let start = ROOM - header_len;
    match (out.get_mut(start..ROOM), header.get(..header_len)) {
        (Some(room), Some(header)) => room.copy_from_slice(header),
        _ => return Deflated::Failed,
    }
    Deflated::Frame(Bytes::from(out).slice(start..))
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
