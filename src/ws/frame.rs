//! RFC 6455 framing: an incremental decoder for client-to-server frames, an encoder for
//! unmasked server frames, and the close-code rules. Pure: no I/O and no opening handshake.
//! With permessage-deflate agreed, the decoder accepts RSV1 and inflates (`inflate.rs`).

use bytes::Bytes;
use std::fmt;

use super::inflate::{inflate, InflateError};

/// Largest client frame header: 2 fixed bytes, 8 extended-length bytes, 4 mask bytes (RFC 6455 §5.2).
const MAX_CLIENT_HEADER: usize = 14;

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest close reason in bytes: the control payload limit minus the 2-byte code (RFC 6455 §5.5.1).
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// `0x0`: a later fragment of a data message.
    Continuation,
    /// `0x1`: the first frame of a UTF-8 text message.
    Text,
    /// `0x2`: the first frame of a binary message.
    Binary,
    /// `0x8`: connection close.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
}

impl OpCode {
    /// The 4-bit wire value of this opcode.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Parses a 4-bit wire value; `None` for the reserved opcodes 3-7 and 0xB-0xF.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        match value {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Whether this is a control opcode (close, ping, pong; RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The kind of data frame a message goes out as (RFC 6455 §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A text frame: the data should be UTF-8.
    Text,
    /// A binary frame.
    Binary,
}

impl MessageType {
    /// Frames `data` once; the result can be shared by every recipient.
    pub(crate) fn frame(self, data: &[u8]) -> Bytes {
        let op = match self {
            MessageType::Text => OpCode::Text,
            MessageType::Binary => OpCode::Binary,
        };
        encode(op, data)
    }
}

/// One complete inbound item decoded from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A complete (reassembled) data message; `binary` false means text, already UTF-8 validated.
    Message {
        /// `true` for a binary message, `false` for text.
        binary: bool,
        /// The unmasked, reassembled payload.
        data: Bytes,
    },
    /// A ping; the server should answer with a pong carrying the same payload (RFC 6455 §5.5.2).
    Ping(Bytes),
    /// A pong (RFC 6455 §5.5.3).
    Pong(Bytes),
    /// A close frame; `code` None when the payload was empty (RFC 6455 §7.1.5 "1005").
    Close {
        /// The status code, if the payload carried one.
        code: Option<u16>,
        /// The UTF-8 reason, possibly empty.
        reason: String,
    },
}

/// Why a client's bytes broke the protocol; each maps to the close code the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// RFC 6455 violation: close 1002. Carries a short static description.
    Protocol(&'static str),
    /// Text or close reason not valid UTF-8: close 1007.
    InvalidUtf8,
    /// A frame or reassembled message above the limit: close 1009.
    TooLarge {
        /// The configured maximum message size in bytes.
        limit: usize,
    },
}

impl ProtocolError {
    /// The close code the server sends for this error (RFC 6455 §7.4.1): 1002, 1007 or 1009.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::Protocol(_) => 1002,
            ProtocolError::InvalidUtf8 => 1007,
            ProtocolError::TooLarge { .. } => 1009,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Protocol(what) => write!(f, "protocol error: {what}"),
            ProtocolError::InvalidUtf8 => {
                f.write_str("invalid UTF-8 in text message or close reason")
            }
            ProtocolError::TooLarge { limit } => write!(f, "message larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Header of the frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct FrameState {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    len: usize,
    /// Payload bytes already received; also the mask phase (RFC 6455 §5.3).
    done: usize,
}

/// A data message whose frames are being received.
#[derive(Debug, Clone, Copy)]
struct MessageState {
    binary: bool,
    /// RSV1 was set on its first frame: the payload is deflated (RFC 7692 §6).
    compressed: bool,
    /// Length of the prefix of the message buffer known to be valid UTF-8 (text only).
    utf8_valid: usize,
}

/// Incremental decoder of client-to-server frames.
///
/// Between reads an idle decoder holds only its rules: the state of a frame or message that
/// a read left incomplete is boxed (`Partial`) and dropped once it completes, so an open,
/// idle connection pays nothing for it.
#[derive(Debug)]
pub struct Decoder {
    max_message_size: usize,
    partial: Option<Box<Partial>>,
    /// The violation that ended decoding, returned again to any later feed.
    failed: Option<Box<ProtocolError>>,
    /// True when decoding a client's frames (which must be masked), false for a server's
    /// (which must not be: RFC 6455 §5.1).
    masked: bool,
    /// permessage-deflate was agreed: RSV1 marks a compressed message.
    deflate: bool,
    /// A close frame was decoded; later input is ignored (RFC 6455 §5.5.1).
    closed: bool,
}

/// What a decoder checks frames against, passed to the partial state it drives.
#[derive(Debug, Clone, Copy)]
struct Rules {
    max_message_size: usize,
    masked: bool,
    deflate: bool,
}

/// The part of a frame or message received so far.
#[derive(Debug, Default)]
struct Partial {
    /// Partial frame header.
    header: [u8; MAX_CLIENT_HEADER],
    header_len: u8,
    frame: Option<FrameState>,
    /// Payload of the control frame being read.
    control: Vec<u8>,
    message: Option<MessageState>,
    /// Unmasked payload of the data message being reassembled.
    message_buf: Vec<u8>,
}

impl Decoder {
    /// `max_message_size`: limit for one frame's payload and for a reassembled message (usize::MAX = none).
    pub fn new(max_message_size: usize) -> Self {
        Decoder {
            max_message_size,
            partial: None,
            failed: None,
            masked: true,
            deflate: false,
            closed: false,
        }
    }

    /// A decoder for the other direction: frames a server sent, which must be unmasked (for
    /// WebSocket clients such as the load generator).
    pub fn for_server_frames(max_message_size: usize) -> Self {
        Decoder {
            masked: false,
            ..Decoder::new(max_message_size)
        }
    }

    /// Accepts compressed messages from now on (permessage-deflate was agreed, RFC 7692):
    /// a data message whose first frame has RSV1 set is inflated, and `max_message_size`
    /// then bounds both its compressed and its inflated size.
    pub fn accept_deflate(&mut self) {
        self.deflate = true;
    }

    /// Feeds bytes read from the socket. Every byte of `input` is consumed: whatever does not yet
    /// form a whole frame is kept inside the decoder. Complete items are pushed to `out` in order.
    /// On a violation, the items decoded before it are still in `out` and the error is returned;
    /// after an error the decoder must not be fed again (it may return the same error).
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut impl Extend<Inbound>,
    ) -> Result<(), ProtocolError> {
        if let Some(err) = &self.failed {
            return Err(ProtocolError::clone(err));
        }
        if self.closed {
            return Ok(());
        }
        let rules = Rules {
            max_message_size: self.max_message_size,
            masked: self.masked,
            deflate: self.deflate,
        };
        // Most reads end on a frame boundary: their state lives on the stack and is boxed
        // only when a read leaves a frame or message incomplete.
        let result = match self.partial.as_deref_mut() {
            Some(partial) => partial.feed_frames(rules, input, out),
            None => {
                let mut partial = Partial::default();
                let result = partial.feed_frames(rules, input, out);
                if !partial.is_empty() {
                    self.partial = Some(Box::new(partial));
                }
                result
            }
        };
        match result {
            Ok(closed) => {
                self.closed = closed;
                if closed || self.partial.as_ref().is_some_and(|p| p.is_empty()) {
                    // Nothing after a close frame is processed (RFC 6455 §5.5.1).
                    self.partial = None;
                }
                Ok(())
            }
            Err(err) => {
                self.partial = None;
                self.failed = Some(Box::new(err.clone()));
                Err(err)
            }
        }
    }

    /// Bytes held for an incomplete frame or message (for memory accounting / tests).
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| {
            usize::from(p.header_len) + p.control.len() + p.message_buf.len()
        })
    }

    /// Whether a close frame has been decoded (later input is ignored).
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Partial {
    /// Nothing received that is not yet a whole frame or message.
    fn is_empty(&self) -> bool {
        self.header_len == 0 && self.frame.is_none() && self.message.is_none()
    }

    /// Decodes what `input` completes; `Ok(true)` once a close frame is decoded.
    fn feed_frames(
        &mut self,
        rules: Rules,
        mut input: &[u8],
        out: &mut impl Extend<Inbound>,
    ) -> Result<bool, ProtocolError> {
        loop {
            let mut frame = match self.frame {
                Some(frame) => frame,
                None => match self.read_header(rules, &mut input)? {
                    Some(frame) => frame,
                    // Header incomplete: its bytes are kept, all input consumed.
                    None => return Ok(false),
                },
            };
            self.read_payload(&mut frame, &mut input)?;
            if frame.done < frame.len {
                self.frame = Some(frame);
                return Ok(false);
            }
            self.frame = None;
            if self.finish_frame(rules, frame, out)? {
                return Ok(true);
            }
            if input.is_empty() {
                return Ok(false);
            }
        }
    }

    /// Accumulates header bytes; returns the frame once its header is complete and accepted.
    fn read_header(
        &mut self,
        rules: Rules,
        input: &mut &[u8],
    ) -> Result<Option<FrameState>, ProtocolError> {
        loop {
            let have = usize::from(self.header_len);
            let need = if have < 2 {
                2
            } else {
                header_len(self.header[1], rules.masked)
            };
            if have >= need {
                break;
            }
            let take = (need - have).min(input.len());
            let (src, rest) = (input.get(..take), input.get(take..));
            let dst = self.header.get_mut(have..have + take);
            if let (Some(src), Some(rest), Some(dst)) = (src, rest, dst) {
                dst.copy_from_slice(src);
                *input = rest;
            }
            // At most MAX_CLIENT_HEADER (14): `need` never exceeds it.
            self.header_len = (have + take) as u8;
            if have + take < need {
                return Ok(None);
            }
            if need == 2 {
                // Fail fast on the first two bytes, before waiting for the rest.
                self.check_first_bytes(rules)?;
            }
        }
        let frame = self.parse_header(rules)?;
        self.header_len = 0;
        Ok(Some(frame))
    }

    /// Checks what the first two header bytes alone decide (RFC 6455 §5.2, §5.4, §5.5).
    fn check_first_bytes(&self, rules: Rules) -> Result<(), ProtocolError> {
        let [b0, b1, ..] = self.header;
        let opcode =
            OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::Protocol("reserved opcode"))?;
        // §5.2: RSV1-3 must be 0 unless an extension defines them. permessage-deflate defines
        // RSV1, on the first frame of a data message only (RFC 7692 §6, §6.1).
        let rsv1_allowed = rules.deflate && matches!(opcode, OpCode::Text | OpCode::Binary);
        if b0 & 0x30 != 0 || (b0 & 0x40 != 0 && !rsv1_allowed) {
            return Err(ProtocolError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 && rules.masked {
            // §5.1: a server must close on an unmasked client frame.
            return Err(ProtocolError::Protocol("client frame not masked"));
        }
        if b1 & 0x80 != 0 && !rules.masked {
            // §5.1: a client must close on a masked server frame.
            return Err(ProtocolError::Protocol("server frame masked"));
        }
        let fin = b0 & 0x80 != 0;
        if opcode.is_control() {
            // §5.5: control frames are never fragmented and carry at most 125 bytes.
            if !fin {
                return Err(ProtocolError::Protocol("fragmented control frame"));
            }
            if usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::Protocol(
                    "control frame payload over 125 bytes",
                ));
            }
        } else {
            // §5.4: fragments of one message are not interleaved with another message.
            match (opcode, self.message.is_some()) {
                (OpCode::Continuation, false) => {
                    return Err(ProtocolError::Protocol(
                        "continuation frame without a message in progress",
                    ))
                }
                (OpCode::Text | OpCode::Binary, true) => {
                    return Err(ProtocolError::Protocol(
                        "new data frame while a fragmented message is in progress",
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the length and mask from a complete header and applies the size limit.
    fn parse_header(&mut self, rules: Rules) -> Result<FrameState, ProtocolError> {
        let h = self.header;
        let fin = h[0] & 0x80 != 0;
        let opcode =
            OpCode::from_u8(h[0] & 0x0F).ok_or(ProtocolError::Protocol("reserved opcode"))?;
        // §5.2: 126 = 16-bit length follows, 127 = 64-bit length follows; minimal form not enforced.
        let (len, mask) = match h[1] & 0x7F {
            126 => (
                u64::from(u16::from_be_bytes([h[2], h[3]])),
                [h[4], h[5], h[6], h[7]],
            ),
            127 => (
                u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                [h[10], h[11], h[12], h[13]],
            ),
            n => (u64::from(n), [h[2], h[3], h[4], h[5]]),
        };
        // An unmasked frame is copied as if masked with zeros.
        let mask = if rules.masked { mask } else { [0; 4] };
        if len >> 63 != 0 {
            // §5.2: the most significant bit of a 64-bit length must be 0.
            return Err(ProtocolError::Protocol(
                "64-bit payload length with top bit set",
            ));
        }
        let limit = rules.max_message_size;
        let too_large = ProtocolError::TooLarge { limit };
        // Checked before any payload is buffered, so a declared size cannot reserve memory.
        let len = usize::try_from(len).map_err(|_| too_large.clone())?;
        if len > limit {
            return Err(too_large);
        }
        if opcode.is_control() {
            self.control = Vec::new();
        } else {
            let total = self.message_buf.len().checked_add(len);
            if total.map_or(true, |t| t > limit) {
                return Err(too_large);
            }
            if opcode != OpCode::Continuation {
                self.message = Some(MessageState {
                    binary: opcode == OpCode::Binary,
                    compressed: h[0] & 0x40 != 0,
                    utf8_valid: 0,
                });
            }
        }
        Ok(FrameState {
            opcode,
            fin,
            mask,
            len,
            done: 0,
        })
    }

    /// Copies and unmasks as much of the frame's payload as `input` holds.
    fn read_payload(
        &mut self,
        frame: &mut FrameState,
        input: &mut &[u8],
    ) -> Result<(), ProtocolError> {
        let take = (frame.len - frame.done).min(input.len());
        if take == 0 {
            return Ok(());
        }
        let (chunk, rest) = match (input.get(..take), input.get(take..)) {
            (Some(chunk), Some(rest)) => (chunk, rest),
            _ => return Ok(()),
        };
        *input = rest;
        let buf = if frame.opcode.is_control() {
            &mut self.control
        } else {
            &mut self.message_buf
        };
        append_unmasked(buf, chunk, frame.mask, frame.done);
        frame.done += take;
        if let Some(msg) = self.message.as_mut().filter(|m| !m.binary && !m.compressed) {
            if !frame.opcode.is_control() {
                // §8.1: fail fast on invalid text; an incomplete tail may finish later.
                validate_utf8(&self.message_buf, &mut msg.utf8_valid, false)?;
            }
        }
        Ok(())
    }

    /// Handles a frame whose payload is complete; `Ok(true)` for a close frame.
    fn finish_frame(
        &mut self,
        rules: Rules,
        frame: FrameState,
        out: &mut impl Extend<Inbound>,
    ) -> Result<bool, ProtocolError> {
        match frame.opcode {
            OpCode::Ping => out.extend(Some(Inbound::Ping(take_bytes(&mut self.control)))),
            OpCode::Pong => out.extend(Some(Inbound::Pong(take_bytes(&mut self.control)))),
            OpCode::Close => {
                let payload = std::mem::take(&mut self.control);
                out.extend(Some(parse_close(&payload)?));
                return Ok(true);
            }
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if !frame.fin {
                    return Ok(false);
                }
                if let Some(mut msg) = self.message.take() {
                    if msg.compressed {
                        let compressed = std::mem::take(&mut self.message_buf);
                        let limit = rules.max_message_size;
                        self.message_buf = inflate(&compressed, limit).map_err(|e| match e {
                            InflateError::TooLarge => ProtocolError::TooLarge { limit },
                            InflateError::Corrupt => {
                                ProtocolError::Protocol("invalid compressed data")
                            }
                        })?;
                    }
                    if !msg.binary {
                        // §5.6: a text message must end on a whole character.
                        validate_utf8(&self.message_buf, &mut msg.utf8_valid, true)?;
                    }
                    // Moving the buffer out leaves the idle decoder holding no heap memory.
                    out.extend(Some(Inbound::Message {
                        binary: msg.binary,
                        data: take_bytes(&mut self.message_buf),
                    }));
                }
            }
        }
        Ok(false)
    }
}

/// Header length given its second byte, with or without a masking key (RFC 6455 §5.2).
pub fn header_len(b1: u8, masked: bool) -> usize {
    let extended = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if masked { 4 } else { 0 }
}

/// Appends `chunk` unmasked; `offset` is the payload position of its first byte (RFC 6455 §5.3).
fn append_unmasked(buf: &mut Vec<u8>, chunk: &[u8], mask: [u8; 4], offset: usize) {
    if buf.capacity() == 0 {
        // Exact capacity, so a whole frame becomes `Bytes` without a second allocation.
        *buf = Vec::with_capacity(chunk.len());
    }
    let start = buf.len();
    buf.extend_from_slice(chunk);
    if let Some(appended) = buf.get_mut(start..) {
        apply_mask(appended, mask, offset);
    }
}

/// XORs `data` with the mask, starting at mask phase `offset % 4` (RFC 6455 §5.3).
fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
        }
    }
    // Each 8-byte step is a multiple of 4, so the tail starts at mask phase 0 again.
    for (byte, key) in chunks.into_remainder().iter_mut().zip(m.iter().cycle()) {
        *byte ^= key;
    }
}

/// Validates `buf[*valid..]`, advancing `*valid` past complete characters.
/// An incomplete trailing sequence is an error only when `last` is set.
fn validate_utf8(buf: &[u8], valid: &mut usize, last: bool) -> Result<(), ProtocolError> {
    let tail = buf.get(*valid..).unwrap_or_default();
    match std::str::from_utf8(tail) {
        Ok(_) => {
            *valid = buf.len();
            Ok(())
        }
        Err(err) => {
            *valid += err.valid_up_to();
            if err.error_len().is_some() || last {
                Err(ProtocolError::InvalidUtf8)
            } else {
                Ok(())
            }
        }
    }
}

/// Moves the buffer out as `Bytes`, leaving an unallocated `Vec` behind.
fn take_bytes(buf: &mut Vec<u8>) -> Bytes {
    let vec = std::mem::take(buf);
    if vec.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(vec)
    }
}

/// Parses a close payload (RFC 6455 §5.5.1, §7.1.5, §7.1.6).
fn parse_close(payload: &[u8]) -> Result<Inbound, ProtocolError> {
    match payload {
        [] => Ok(Inbound::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(ProtocolError::Protocol("close payload of 1 byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_received_close_code(code) {
                return Err(ProtocolError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Inbound::Close {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

/// Encodes one unmasked server frame (FIN set): header followed by payload, in one allocation.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; 10];
    let header_len = encode_header(opcode, payload.len(), &mut header);
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(header.get(..header_len).unwrap_or_default());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// Encodes one client frame (FIN set), masked with `key` as RFC 6455 §5.3 requires of clients.
pub fn encode_masked(opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut header = [0u8; 10];
    let header_len = encode_header(opcode, payload.len(), &mut header);
    let mut frame = Vec::with_capacity(header_len + 4 + payload.len());
    frame.extend_from_slice(header.get(..header_len).unwrap_or_default());
    frame[1] |= 0x80;
    frame.extend_from_slice(&key);
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], key, 0);
    frame
}

/// Writes only the header of an unmasked FIN frame into `out`, returning its length (2, 4 or 10).
pub fn encode_header(opcode: OpCode, payload_len: usize, out: &mut [u8; 10]) -> usize {
    // §5.2: servers never mask; the shortest length form is used.
    out[0] = 0x80 | opcode.as_u8();
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// The payload of an unmasked frame built by `encode` (its header skipped, the bytes shared).
pub fn payload(frame: &Bytes) -> Bytes {
    let Some(&b1) = frame.get(1) else {
        return Bytes::new();
    };
    frame.slice(header_len(b1, false).min(frame.len())..)
}

/// Encodes a close frame after sanitising: see `wire_close_code` and `truncate_reason`. For 1005 the frame has an empty payload.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    match wire_close_code(code) {
        None => encode(OpCode::Close, &[]),
        Some(code) => {
            let reason = truncate_reason(reason).as_bytes();
            // At most 2 + 123 bytes, so the header is always 2 bytes (§5.5).
            let mut frame = Vec::with_capacity(4 + reason.len());
            let [hi, lo] = code.to_be_bytes();
            frame.extend_from_slice(&[0x88, (2 + reason.len()) as u8, hi, lo]);
            frame.extend_from_slice(reason);
            Bytes::from(frame)
        }
    }
}

/// The code that goes on the wire for a requested close code: 1005 -> None (empty close payload);
/// codes RFC 6455 §7.4 forbids on the wire (below 1000, 1004, 1006, 1015, unassigned 1016–2999, 5000 and above) -> Some(1000);
/// anything else (1000–1003, 1007–1014, 3000–4999) unchanged.
pub fn wire_close_code(code: u16) -> Option<u16> {
    if code == 1005 {
        // §7.1.5: 1005 means "no status code", expressed by an empty payload.
        None
    } else if is_valid_received_close_code(code) {
        Some(code)
    } else {
        Some(1000)
    }
}

/// Cuts a close reason to at most 123 bytes at a UTF-8 character boundary (RFC 6455 §5.5: control payload ≤ 125).
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or_default()
}

/// Whether a close code received from a peer is allowed (RFC 6455 §7.4.1/§7.4.2): 1000–1003, 1007–1014, 3000–4999.
pub fn is_valid_received_close_code(code: u16) -> bool {
    // 1004 is reserved; 1005, 1006 and 1015 must never be sent (§7.4.1); 1016-2999 are unassigned.
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
