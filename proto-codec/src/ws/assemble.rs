//! The frame decoder: turns a stream of bytes into messages.
//!
//! The caller reads into a buffer it owns and calls [`Decoder::decode`] on the unread bytes. The
//! decoder unmasks in place and consumes what it can:
//!
//! - a whole unfragmented, uncompressed data frame is returned **borrowed** from that buffer (no
//!   copy);
//! - control frames are returned borrowed once the whole frame (at most 139 bytes) is present;
//! - payload of fragmented, compressed or partially received messages is consumed as it arrives
//!   (inflated and UTF-8-checked chunk by chunk, so invalid text fails on the first bad byte) and
//!   the message is returned owned when its last frame ends.
//!
//! What is not consumed is at most a partial header or a partial control frame: that remainder is
//! all a connection keeps between reads.

use super::close::{parse_close_payload, CloseCode};
use super::deflate::MessageInflater;
use super::error::ProtocolError;
use super::frame::{parse_header, FrameHeader, FrameLimits, HeaderParse, OpCode};
use super::mask::apply_mask_at;
use super::utf8::Utf8Validator;

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Header-level rules (role, frame size, whether RSV1 is allowed).
    pub limits: FrameLimits,
    /// The largest message, after decompression.
    pub max_message_bytes: usize,
    /// `Some(client_no_context_takeover)` when permessage-deflate was negotiated.
    pub deflate: Option<bool>,
}

impl DecoderConfig {
    /// A server-side decoder with the same limit for frames and messages.
    pub fn server(max_message_bytes: usize) -> DecoderConfig {
        DecoderConfig {
            limits: FrameLimits::server(max_message_bytes as u64),
            max_message_bytes,
            deflate: None,
        }
    }

    /// A client-side decoder with the same limit for frames and messages.
    pub fn client(max_message_bytes: usize) -> DecoderConfig {
        DecoderConfig {
            limits: FrameLimits::client(max_message_bytes as u64),
            max_message_bytes,
            deflate: None,
        }
    }

    /// Enables permessage-deflate with the agreed client context takeover.
    pub fn with_deflate(mut self, no_context_takeover: bool) -> DecoderConfig {
        self.deflate = Some(no_context_takeover);
        self.limits.allow_rsv1 = true;
        self
    }
}

/// Whether a data message is text or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// A text message (valid UTF-8, checked).
    Text,
    /// A binary message.
    Binary,
}

/// A message payload: borrowed from the caller's buffer when possible.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The unmasked payload, in place in the caller's buffer.
    Borrowed(&'a [u8]),
    /// A payload assembled from several frames or inflated.
    Owned(Vec<u8>),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }
}

/// One decoded message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A complete data message.
    Data(DataKind, Payload<'a>),
    /// A ping with its payload.
    Ping(&'a [u8]),
    /// A pong with its payload.
    Pong(&'a [u8]),
    /// A close frame: its code and reason, or `None` if it had no payload.
    Close(Option<(CloseCode, &'a str)>),
}

/// What one call to [`Decoder::decode`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// How many input bytes were consumed; the caller drops them before the next call.
    pub consumed: usize,
    /// The message completed by those bytes, if any.
    pub message: Option<Message<'a>>,
}

#[derive(Debug)]
struct InProgress {
    kind: DataKind,
    compressed: bool,
    /// Compressed bytes received, for the limit on the wire size.
    wire_len: usize,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

#[derive(Debug)]
enum FrameState {
    /// Waiting for a frame header.
    Header,
    /// Receiving the payload of a data frame that belongs to the message in progress.
    Payload { header: FrameHeader, received: u64 },
}

/// What one step decided, as ranges into the input (no borrows, for the borrow checker).
enum Step {
    NeedMore(usize),
    Borrowed(usize, DataKind, std::ops::Range<usize>),
    Owned(usize, DataKind, Vec<u8>),
    Control(usize, OpCode, std::ops::Range<usize>),
}

/// A streaming WebSocket decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    state: FrameState,
    message: Option<InProgress>,
    inflater: Option<Box<MessageInflater>>,
}

impl Decoder {
    /// A decoder at the start of a connection.
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder {
            config,
            state: FrameState::Header,
            message: None,
            inflater: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Whether a data message is partly received (its bytes are held by the decoder).
    pub fn is_mid_message(&self) -> bool {
        self.message.is_some()
    }

    /// Decodes from `input`, unmasking in place; stops after the first complete message.
    ///
    /// After an error the connection must be closed with [`ProtocolError::close_code`].
    pub fn decode<'a>(&mut self, input: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        let step = self.step(input)?;
        let input: &'a [u8] = input;
        Ok(match step {
            Step::NeedMore(consumed) => Decoded {
                consumed,
                message: None,
            },
            Step::Borrowed(consumed, kind, range) => Decoded {
                consumed,
                message: Some(Message::Data(kind, Payload::Borrowed(&input[range]))),
            },
            Step::Owned(consumed, kind, data) => Decoded {
                consumed,
                message: Some(Message::Data(kind, Payload::Owned(data))),
            },
            Step::Control(consumed, opcode, range) => {
                let payload = &input[range];
                let message = match opcode {
                    OpCode::Ping => Message::Ping(payload),
                    OpCode::Pong => Message::Pong(payload),
                    _ => Message::Close(parse_close_payload(payload)?),
                };
                Decoded {
                    consumed,
                    message: Some(message),
                }
            }
        })
    }

    fn step(&mut self, input: &mut [u8]) -> Result<Step, ProtocolError> {
        let mut pos = 0usize;
        loop {
            match self.state {
                FrameState::Header => {
                    let (header, header_len) =
                        match parse_header(&input[pos..], &self.config.limits)? {
                            HeaderParse::Incomplete { .. } => return Ok(Step::NeedMore(pos)),
                            HeaderParse::Complete { header, header_len } => (header, header_len),
                        };
                    let total = header_len as u64 + header.payload_len;
                    let available = (input.len() - pos) as u64;
                    if header.opcode.is_control() {
                        if available < total {
                            return Ok(Step::NeedMore(pos));
                        }
                        let start = pos + header_len;
                        let end = start + header.payload_len as usize;
                        if let Some(key) = header.mask {
                            apply_mask_at(&mut input[start..end], key, 0);
                        }
                        return Ok(Step::Control(end, header.opcode, start..end));
                    }
                    let whole_message = header.fin
                        && !header.rsv1
                        && header.opcode != OpCode::Continuation
                        && self.message.is_none()
                        && available >= total;
                    if whole_message {
                        // The fast path: nothing is allocated or copied.
                        if header.payload_len > self.config.max_message_bytes as u64 {
                            return Err(ProtocolError::MessageTooLarge);
                        }
                        let start = pos + header_len;
                        let end = start + header.payload_len as usize;
                        if let Some(key) = header.mask {
                            apply_mask_at(&mut input[start..end], key, 0);
                        }
                        let kind = if header.opcode == OpCode::Text {
                            DataKind::Text
                        } else {
                            DataKind::Binary
                        };
                        if kind == DataKind::Text {
                            simdutf8::basic::from_utf8(&input[start..end])
                                .map_err(|_| ProtocolError::InvalidUtf8)?;
                        }
                        return Ok(Step::Borrowed(end, kind, start..end));
                    }
                    self.start_frame(&header)?;
                    pos += header_len;
                    self.state = FrameState::Payload {
                        header,
                        received: 0,
                    };
                }
                FrameState::Payload { header, received } => {
                    let remaining = header.payload_len - received;
                    let take = remaining.min((input.len() - pos) as u64) as usize;
                    if take == 0 && remaining > 0 {
                        return Ok(Step::NeedMore(pos));
                    }
                    let chunk = &mut input[pos..pos + take];
                    if let Some(key) = header.mask {
                        apply_mask_at(chunk, key, received);
                    }
                    self.absorb(chunk)?;
                    pos += take;
                    let received = received + take as u64;
                    if received < header.payload_len {
                        self.state = FrameState::Payload { header, received };
                        return Ok(Step::NeedMore(pos));
                    }
                    self.state = FrameState::Header;
                    if header.fin {
                        let (kind, data) = self.finish_message()?;
                        return Ok(Step::Owned(pos, kind, data));
                    }
                }
            }
        }
    }

    /// Checks a data frame header against the message in progress and starts a message.
    fn start_frame(&mut self, header: &FrameHeader) -> Result<(), ProtocolError> {
        let max = self.config.max_message_bytes;
        match (header.opcode, &mut self.message) {
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(m)) => {
                if m.wire_len as u64 + header.payload_len > max as u64 {
                    return Err(ProtocolError::MessageTooLarge);
                }
                Ok(())
            }
            (_, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            (opcode, None) => {
                if header.payload_len > max as u64 {
                    return Err(ProtocolError::MessageTooLarge);
                }
                let kind = if opcode == OpCode::Text {
                    DataKind::Text
                } else {
                    DataKind::Binary
                };
                if header.rsv1 && self.inflater.is_none() {
                    let no_context_takeover = self.config.deflate.unwrap_or(true);
                    self.inflater = Some(Box::new(MessageInflater::new(no_context_takeover)));
                }
                self.message = Some(InProgress {
                    kind,
                    compressed: header.rsv1,
                    wire_len: 0,
                    data: Vec::with_capacity(header.payload_len.min(64 * 1024) as usize),
                    utf8: Utf8Validator::new(),
                });
                Ok(())
            }
        }
    }

    /// Takes a piece of (unmasked) payload into the message in progress.
    fn absorb(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let max = self.config.max_message_bytes;
        let Some(m) = self.message.as_mut() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        m.wire_len += chunk.len();
        if m.compressed {
            let inflater = self
                .inflater
                .as_mut()
                .ok_or(ProtocolError::BadCompression)?;
            let before = m.data.len();
            inflater.inflate(chunk, &mut m.data, max)?;
            if m.kind == DataKind::Text {
                m.utf8.feed(&m.data[before..])?;
            }
        } else {
            if m.data.len() + chunk.len() > max {
                return Err(ProtocolError::MessageTooLarge);
            }
            if m.kind == DataKind::Text {
                m.utf8.feed(chunk)?;
            }
            m.data.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn finish_message(&mut self) -> Result<(DataKind, Vec<u8>), ProtocolError> {
        let max = self.config.max_message_bytes;
        let Some(mut m) = self.message.take() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        if m.compressed {
            let inflater = self
                .inflater
                .as_mut()
                .ok_or(ProtocolError::BadCompression)?;
            let before = m.data.len();
            inflater.finish(&mut m.data, max)?;
            if m.kind == DataKind::Text {
                m.utf8.feed(&m.data[before..])?;
            }
            if self.config.deflate != Some(false) {
                // No context takeover: the window is not needed between messages, so an idle
                // connection does not keep ~40 KB of inflate state.
                self.inflater = None;
            }
        }
        if m.kind == DataKind::Text {
            m.utf8.finish()?;
        }
        Ok((m.kind, m.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::compress_message;
    use crate::ws::frame::write_masked_frame;
    use bytes::BytesMut;

    const KEY: [u8; 4] = [1, 2, 3, 4];

    fn frame(fin: bool, rsv1: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_masked_frame(&mut b, fin, rsv1, op, KEY, payload);
        b.to_vec()
    }

    /// Feeds `bytes` in pieces of `step` bytes, the way reads would deliver them.
    fn decode_all(
        config: DecoderConfig,
        bytes: &[u8],
        step: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ProtocolError> {
        let mut d = Decoder::new(config);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                let r = d.decode(&mut buf)?;
                let consumed = r.consumed;
                let got = r.message.map(|m| match m {
                    Message::Data(DataKind::Text, p) => ("text".to_string(), p.to_vec()),
                    Message::Data(DataKind::Binary, p) => ("binary".to_string(), p.to_vec()),
                    Message::Ping(p) => ("ping".to_string(), p.to_vec()),
                    Message::Pong(p) => ("pong".to_string(), p.to_vec()),
                    Message::Close(c) => (
                        "close".to_string(),
                        c.map(|(c, r)| format!("{} {r}", c.0).into_bytes())
                            .unwrap_or_default(),
                    ),
                });
                buf.drain(..consumed);
                match got {
                    Some(g) => out.push(g),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn single_frame_is_borrowed() {
        let mut buf = frame(true, false, OpCode::Text, b"hello");
        let mut d = Decoder::new(DecoderConfig::server(1024));
        let r = d.decode(&mut buf).unwrap();
        assert_eq!(r.consumed, 11);
        assert_eq!(
            r.message,
            Some(Message::Data(DataKind::Text, Payload::Borrowed(b"hello")))
        );
    }

    #[test]
    fn fragments_with_interleaved_ping_any_split() {
        let mut bytes = frame(false, false, OpCode::Text, "Hel".as_bytes());
        bytes.extend(frame(true, false, OpCode::Ping, b"p"));
        bytes.extend(frame(false, false, OpCode::Continuation, "lo, ".as_bytes()));
        bytes.extend(frame(true, false, OpCode::Continuation, "wörld".as_bytes()));
        bytes.extend(frame(true, false, OpCode::Close, &[0x03, 0xe8, b'o', b'k']));
        for step in 1..bytes.len() {
            let got = decode_all(DecoderConfig::server(1024), &bytes, step).unwrap();
            assert_eq!(
                got,
                vec![
                    ("ping".into(), b"p".to_vec()),
                    ("text".into(), "Hello, wörld".as_bytes().to_vec()),
                    ("close".into(), b"1000 ok".to_vec()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_ends() {
        // Autobahn 6.4.3: the bad byte arrives in the first read of a longer frame.
        let mut payload = "κόσμε".as_bytes().to_vec();
        payload.extend([0xf4, 0x90, 0x80, 0x80]);
        payload.extend(b"-edited-and-more");
        let bytes = frame(true, false, OpCode::Text, &payload);
        let mut d = Decoder::new(DecoderConfig::server(1024));
        let mut partial = bytes[..6 + 14].to_vec();
        assert_eq!(d.decode(&mut partial), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn fragmentation_rules() {
        let cont = frame(true, false, OpCode::Continuation, b"x");
        assert_eq!(
            decode_all(DecoderConfig::server(64), &cont, 100),
            Err(ProtocolError::UnexpectedContinuation)
        );
        let mut two = frame(false, false, OpCode::Text, b"a");
        two.extend(frame(true, false, OpCode::Text, b"b"));
        assert_eq!(
            decode_all(DecoderConfig::server(64), &two, 100),
            Err(ProtocolError::ExpectedContinuation)
        );
    }

    #[test]
    fn message_limit_over_fragments() {
        let mut bytes = frame(false, false, OpCode::Binary, &[0; 40]);
        bytes.extend(frame(true, false, OpCode::Continuation, &[0; 40]));
        assert_eq!(
            decode_all(DecoderConfig::server(64), &bytes, 100),
            Err(ProtocolError::MessageTooLarge)
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "zlib-rs runs for many minutes under Miri")]
    fn compressed_fragments() {
        let text = "the quick brown fox jumps over the lazy dog ".repeat(20);
        let c = compress_message(text.as_bytes(), 15);
        let (a, b) = c.split_at(c.len() / 2);
        let mut bytes = frame(false, true, OpCode::Text, a);
        bytes.extend(frame(true, false, OpCode::Continuation, b));
        let config = DecoderConfig::server(4096).with_deflate(true);
        for step in [1, 7, 1000] {
            let got = decode_all(config, &bytes, step).unwrap();
            assert_eq!(got, vec![("text".into(), text.as_bytes().to_vec())]);
        }
        let bomb = compress_message(&vec![b'a'; 1 << 20], 15);
        let bytes = frame(true, true, OpCode::Text, &bomb);
        assert_eq!(
            decode_all(config, &bytes, 1 << 20),
            Err(ProtocolError::MessageTooLarge)
        );
    }

    #[test]
    fn rsv1_without_deflate_is_rejected() {
        let bytes = frame(true, true, OpCode::Text, b"x");
        assert_eq!(
            decode_all(DecoderConfig::server(64), &bytes, 100),
            Err(ProtocolError::ReservedBits)
        );
    }
}
