//! The ringcast app protocol: JSON ops from clients, JSON events from the server, and the codes
//! both use. `docs/protocol.md` is the specification; this module is its implementation.

pub mod binary;
pub mod codes;
pub mod events;
pub mod ops;
pub mod room;
mod wire;

pub use binary::{
    binary_message_frame, binary_payload, decode_binary_msg, decode_binary_op,
    encode_binary_publish, stored_binary, BinaryMsg, BinaryOp, BINARY_MARK,
};
pub use codes::ErrorCode;
pub use events::{
    event_json, room_message_frame, room_message_json, HistoryItem, Member, ServerEvent,
};
pub use ops::{decode_op, ClientOp, OpError, Position};
pub use room::{namespace_of, validate_room, RoomError};
