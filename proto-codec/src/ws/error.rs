//! The errors a WebSocket peer can provoke, each mapped to the close code it answers with.

use super::close::CloseCode;

/// A violation of RFC 6455 / RFC 7692 or of a configured limit by the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV bits set without an extension that defines them.
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 does not define (3–7, 0xB–0xF).
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame with a payload over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A 64-bit payload length with its most significant bit set.
    #[error("64-bit length with the most significant bit set")]
    LengthMsbSet,
    /// A payload length not in its shortest form.
    #[error("payload length not minimally encoded")]
    NonMinimalLength,
    /// A client frame without a mask.
    #[error("client frame not masked")]
    UnmaskedClientFrame,
    /// A server frame with a mask.
    #[error("server frame masked")]
    MaskedServerFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is still in progress.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// RSV1 (compressed) on a continuation or control frame.
    #[error("compressed bit on a continuation or control frame")]
    CompressedBitMisplaced,
    /// A text message (or close reason) that is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    #[error("close frame payload of one byte")]
    CloseFrameTooShort,
    /// A close code that may not be sent.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A frame larger than the configured maximum.
    #[error("frame of {0} bytes over the limit")]
    FrameTooLarge(u64),
    /// A message larger than the configured maximum (compressed or decompressed).
    #[error("message over the size limit")]
    MessageTooLarge,
    /// A compressed message that does not inflate.
    #[error("invalid compressed data")]
    BadCompression,
}

impl ProtocolError {
    /// The close code this error answers with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompression => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge(_) | ProtocolError::MessageTooLarge => {
                CloseCode::MESSAGE_TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
