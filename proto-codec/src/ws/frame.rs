//! RFC 6455 frame headers: parsing from a byte slice without copying, and encoding.
//!
//! [`parse_header`] looks only at the header bytes and says where the payload is, or how many more
//! bytes it needs. Encoding writes a header into a caller's buffer; [`encode_frame`] builds a whole
//! server frame as `Bytes` so that one encoded frame can be shared by every subscriber.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::mask::apply_mask;

/// The longest possible frame header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_BYTES: usize = 14;
/// The largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the 4-bit opcode field.
    pub fn from_u8(v: u8) -> Result<OpCode, ProtocolError> {
        Ok(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::UnknownOpcode(other)),
        })
    }

    /// The 4-bit wire value.
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

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Which side of the connection is parsing: it decides which frames must be masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We are the server: every frame we read must be masked.
    Server,
    /// We are the client: no frame we read may be masked.
    Client,
}

/// The rules a parser enforces beyond RFC 6455 itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Which side is reading.
    pub role: Role,
    /// The largest payload of one frame; larger frames fail with 1009 before their payload arrives.
    pub max_frame_bytes: u64,
    /// Whether RSV1 may be set (permessage-deflate was negotiated).
    pub allow_rsv1: bool,
}

impl FrameLimits {
    /// Limits for a server reading client frames.
    pub fn server(max_frame_bytes: u64) -> FrameLimits {
        FrameLimits {
            role: Role::Server,
            max_frame_bytes,
            allow_rsv1: false,
        }
    }

    /// Limits for a client reading server frames.
    pub fn client(max_frame_bytes: u64) -> FrameLimits {
        FrameLimits {
            role: Role::Client,
            max_frame_bytes,
            allow_rsv1: false,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, the message is compressed (first frame only).
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

/// The outcome of looking at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderParse {
    /// A whole header: the header and its length in bytes. The payload starts right after it.
    Complete {
        /// The header.
        header: FrameHeader,
        /// How many bytes the header took.
        header_len: usize,
    },
    /// The buffer holds only part of a header; at least this many more bytes are needed.
    Incomplete {
        /// Lower bound on the bytes still missing.
        needed: usize,
    },
}

/// Parses a frame header at the start of `buf`, enforcing every header-level rule.
pub fn parse_header(buf: &[u8], limits: &FrameLimits) -> Result<HeaderParse, ProtocolError> {
    if buf.len() < 2 {
        return Ok(HeaderParse::Incomplete {
            needed: 2 - buf.len(),
        });
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (rsv1 && !limits.allow_rsv1) {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0f)?;
    let masked = b1 & 0x80 != 0;
    match (limits.role, masked) {
        (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
        (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
        _ => {}
    }
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if len7 > 125 {
            return Err(ProtocolError::ControlFrameTooLong);
        }
        if rsv1 {
            return Err(ProtocolError::CompressedBitMisplaced);
        }
    }
    if rsv1 && opcode == OpCode::Continuation {
        return Err(ProtocolError::CompressedBitMisplaced);
    }
    let len_bytes = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(HeaderParse::Incomplete {
            needed: header_len - buf.len(),
        });
    }
    let payload_len = match len7 {
        126 => {
            let v = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
            if v < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            v
        }
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let v = u64::from_be_bytes(b);
            if v & (1 << 63) != 0 {
                return Err(ProtocolError::LengthMsbSet);
            }
            if v <= u64::from(u16::MAX) {
                return Err(ProtocolError::NonMinimalLength);
            }
            v
        }
        short => u64::from(short),
    };
    if payload_len > limits.max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge(payload_len));
    }
    let mask = if masked {
        let at = 2 + len_bytes;
        Some([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
    } else {
        None
    };
    Ok(HeaderParse::Complete {
        header: FrameHeader {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len,
        },
        header_len,
    })
}

/// Writes a frame header into `out` and returns how many bytes it used (2 to 14).
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_BYTES],
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> usize {
    out[0] = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u64::from(u16::MAX) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(key) = mask {
        out[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    at
}

/// The header length of an unmasked frame with this payload length.
pub fn server_header_len(payload_len: usize) -> usize {
    if payload_len < 126 {
        2
    } else if payload_len <= usize::from(u16::MAX) {
        4
    } else {
        10
    }
}

/// Appends one unmasked (server) frame to `dst`.
pub fn write_frame(dst: &mut BytesMut, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER_BYTES];
    let n = encode_header(&mut header, fin, rsv1, opcode, None, payload.len() as u64);
    dst.reserve(n + payload.len());
    dst.put_slice(&header[..n]);
    dst.put_slice(payload);
}

/// Encodes one whole unmasked (server) frame as `Bytes`, ready to share between connections.
pub fn encode_frame(opcode: OpCode, rsv1: bool, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(server_header_len(payload.len()) + payload.len());
    write_frame(&mut dst, true, rsv1, opcode, payload);
    dst.freeze()
}

/// A whole server frame we encoded, with its opcode and its payload's length: the payload is
/// the frame's tail, so that it can be compressed or put in another form without parsing the
/// header back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    frame: Bytes,
    opcode: OpCode,
    payload_len: usize,
}

impl ServerFrame {
    /// A frame of this opcode whose last `payload_len` bytes are its payload (`payload_len` is
    /// cut to the frame's length).
    pub fn new(frame: Bytes, opcode: OpCode, payload_len: usize) -> ServerFrame {
        let payload_len = payload_len.min(frame.len());
        ServerFrame {
            frame,
            opcode,
            payload_len,
        }
    }

    /// Encodes one whole unmasked, uncompressed frame ([`encode_frame`]).
    pub fn encode(opcode: OpCode, payload: &[u8]) -> ServerFrame {
        ServerFrame::new(encode_frame(opcode, false, payload), opcode, payload.len())
    }

    /// Its opcode.
    pub fn opcode(&self) -> OpCode {
        self.opcode
    }

    /// The whole frame, shared.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The whole frame.
    pub fn into_frame(self) -> Bytes {
        self.frame
    }

    /// Its payload.
    pub fn payload(&self) -> &[u8] {
        &self.frame[self.frame.len() - self.payload_len..]
    }
}

/// Room for the longest server header at the front of a buffer that
/// [`frame_in_place`] frames.
pub const SERVER_HEADER_ROOM: usize = 10;

/// Frames a payload written after [`SERVER_HEADER_ROOM`] bytes reserved at the front of `buf`:
/// the header goes right before the payload and the frame is a slice of the one allocation, so
/// the payload never moves. A `buf` shorter than the room is an empty payload.
pub fn frame_in_place(mut buf: Vec<u8>, opcode: OpCode) -> ServerFrame {
    if buf.len() < SERVER_HEADER_ROOM {
        buf.resize(SERVER_HEADER_ROOM, 0);
    }
    let payload_len = buf.len() - SERVER_HEADER_ROOM;
    let mut header = [0u8; MAX_HEADER_BYTES];
    let n = encode_header(&mut header, true, false, opcode, None, payload_len as u64);
    let start = SERVER_HEADER_ROOM - n;
    buf[start..SERVER_HEADER_ROOM].copy_from_slice(&header[..n]);
    ServerFrame::new(Bytes::from(buf).slice(start..), opcode, payload_len)
}

/// Appends one masked (client) frame to `dst`, masking a copy of `payload` with `key`.
pub fn write_masked_frame(
    dst: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    key: [u8; 4],
    payload: &[u8],
) {
    let mut header = [0u8; MAX_HEADER_BYTES];
    let n = encode_header(
        &mut header,
        fin,
        rsv1,
        opcode,
        Some(key),
        payload.len() as u64,
    );
    dst.reserve(n + payload.len());
    dst.put_slice(&header[..n]);
    let start = dst.len();
    dst.put_slice(payload);
    apply_mask(&mut dst[start..], key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> FrameLimits {
        FrameLimits::server(1 << 20)
    }

    #[test]
    fn rfc_masked_hello() {
        let buf = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let parsed = parse_header(&buf, &server()).unwrap();
        assert_eq!(
            parsed,
            HeaderParse::Complete {
                header: FrameHeader {
                    fin: true,
                    rsv1: false,
                    opcode: OpCode::Text,
                    mask: Some([0x37, 0xfa, 0x21, 0x3d]),
                    payload_len: 5
                },
                header_len: 6
            }
        );
    }

    #[test]
    fn incomplete_says_how_much_is_missing() {
        assert_eq!(
            parse_header(&[], &server()),
            Ok(HeaderParse::Incomplete { needed: 2 })
        );
        assert_eq!(
            parse_header(&[0x82, 0xfe, 0x01], &server()),
            Ok(HeaderParse::Incomplete { needed: 5 })
        );
    }

    #[test]
    fn header_rules() {
        let s = server();
        assert_eq!(
            parse_header(&[0xa1, 0x80], &s),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header(&[0xc1, 0x80], &s),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header(&[0x83, 0x80], &s),
            Err(ProtocolError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_header(&[0x81, 0x00], &s),
            Err(ProtocolError::UnmaskedClientFrame)
        );
        assert_eq!(
            parse_header(&[0x09, 0x80], &s),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            parse_header(&[0x89, 0xfe], &s),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(
            parse_header(&[0x82, 0xfe, 0x00, 0x7d, 0, 0, 0, 0], &s),
            Err(ProtocolError::NonMinimalLength)
        );
        let msb = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_header(&msb, &s), Err(ProtocolError::LengthMsbSet));
        let big = [0x82, 0xff, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_header(&big, &s),
            Err(ProtocolError::FrameTooLarge(0x20_0000))
        );
        let client = FrameLimits::client(100);
        assert_eq!(
            parse_header(&[0x81, 0x80], &client),
            Err(ProtocolError::MaskedServerFrame)
        );
        let deflate = FrameLimits {
            allow_rsv1: true,
            ..server()
        };
        assert!(parse_header(&[0xc1, 0x80, 0, 0, 0, 0], &deflate).is_ok());
        assert_eq!(
            parse_header(&[0xc0, 0x80, 0, 0, 0, 0], &deflate),
            Err(ProtocolError::CompressedBitMisplaced)
        );
        assert_eq!(
            parse_header(&[0xc9, 0x80, 0, 0, 0, 0], &deflate),
            Err(ProtocolError::CompressedBitMisplaced)
        );
    }

    #[test]
    fn encode_lengths() {
        for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
            let payload = vec![7u8; len];
            let frame = encode_frame(OpCode::Binary, false, &payload);
            assert_eq!(frame.len(), server_header_len(len) + len);
            let parsed = parse_header(&frame, &FrameLimits::client(u64::MAX >> 1)).unwrap();
            match parsed {
                HeaderParse::Complete { header, header_len } => {
                    assert_eq!(header.payload_len, len as u64);
                    assert_eq!(header_len, server_header_len(len));
                }
                HeaderParse::Incomplete { .. } => panic!("incomplete"),
            }
        }
    }

    fn framed_opcode(opcode: OpCode) -> OpCode {
        frame_in_place(vec![0; SERVER_HEADER_ROOM], opcode).opcode()
    }

    #[test]
    fn a_frame_built_in_place_is_the_encoded_frame_and_knows_its_payload() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for opcode in [OpCode::Text, OpCode::Binary] {
                let mut buf = vec![0xee; SERVER_HEADER_ROOM];
                buf.extend_from_slice(&payload);
                let framed = frame_in_place(buf, opcode);
                assert_eq!(
                    framed.frame(),
                    &encode_frame(opcode, false, &payload),
                    "{len}"
                );
                assert_eq!(framed.payload(), &payload[..], "{len}");
                let encoded = ServerFrame::encode(opcode, &payload);
                assert_eq!(encoded, framed);
                assert_eq!(encoded.payload(), &payload[..]);
            }
        }
        // A buffer without its header room is an empty payload, not a panic.
        let framed = frame_in_place(vec![1, 2, 3], OpCode::Text);
        assert_eq!(framed.into_frame(), encode_frame(OpCode::Text, false, b""));
        let short = ServerFrame::new(Bytes::from_static(b"ab"), OpCode::Text, 9);
        assert_eq!(short.payload(), b"ab");
        assert_eq!(framed_opcode(OpCode::Binary), OpCode::Binary);
    }
}
