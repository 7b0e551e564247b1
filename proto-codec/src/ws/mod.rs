//! RFC 6455 WebSocket framing and RFC 7692 permessage-deflate, without I/O.

pub mod assemble;
pub mod close;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod mask;
pub mod utf8;

use bytes::Bytes;

pub use assemble::{DataKind, Decoded, Decoder, DecoderConfig, Message, Payload};
pub use close::{close_payload, parse_close_payload, CloseCode};
pub use deflate::{DeflateParams, DeflatePolicy, MessageDeflater, MessageInflater, Negotiated};
pub use error::ProtocolError;
pub use frame::{
    encode_frame, frame_in_place, parse_header, FrameHeader, FrameLimits, HeaderParse, OpCode,
    Role, ServerFrame, SERVER_HEADER_ROOM,
};
pub use mask::{apply_mask, apply_mask_at};

/// Encodes a whole server message as one frame, compressed when a deflater is given.
///
/// The result is shared as is by every connection that receives the message.
pub fn encode_message(
    kind: DataKind,
    payload: &[u8],
    deflater: Option<&mut MessageDeflater>,
) -> Bytes {
    let opcode = match kind {
        DataKind::Text => OpCode::Text,
        DataKind::Binary => OpCode::Binary,
    };
    match deflater {
        Some(d) => {
            let mut compressed = Vec::with_capacity(payload.len() / 2 + 16);
            d.compress(payload, &mut compressed);
            encode_frame(opcode, true, &compressed)
        }
        None => encode_frame(opcode, false, payload),
    }
}

/// Encodes a close frame with a code and a reason (cut to fit 125 bytes).
pub fn encode_close(code: CloseCode, reason: &str) -> Bytes {
    encode_frame(OpCode::Close, false, &close_payload(code, reason))
}
