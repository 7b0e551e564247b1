//! Binary room messages: a compact envelope in WebSocket binary frames, for payloads that are not
//! JSON (game state, CRDT updates, protobuf).
//!
//! A client publishes with one binary message (`docs/protocol.md` §9.9):
//!
//! ```text
//! u8   kind     0x01 = publish
//! u8   flags    bit 0: an id follows
//! u64  id       big-endian, only with flag bit 0
//! u8   R        room length (1..=200)
//! R    room     the room name
//! ..   data     the rest of the message: the payload, any bytes
//! ```
//!
//! Subscribers get each binary room message as one binary message:
//!
//! ```text
//! u8   kind     0x01 = msg
//! u8   R        room length
//! R    room
//! u8   E        epoch length
//! E    epoch
//! u64  offset   big-endian
//! ..   data
//! ```
//!
//! Acks (`published`) and errors stay JSON text events. Inside the server (and in the broker's
//! storage) a binary payload is kept as its bytes behind one marker byte, [`BINARY_MARK`], which
//! no JSON text starts with, so every stored message says what it is without a second field.
//! Where only JSON can go (SSE, long-polling, `history`), a binary message is a `msg` event (or
//! a history item) with `bin`, the payload in standard base64, instead of `data`.

use base64::Engine as _;
use bytes::Bytes;

use super::codes::ErrorCode;
use super::ops::OpError;
use super::room::{validate_room, MAX_ROOM_BYTES};
use crate::ws::frame::{frame_in_place, OpCode, ServerFrame, SERVER_HEADER_ROOM};

/// The first byte of a stored binary payload (JSON never starts with it).
pub const BINARY_MARK: u8 = 0x00;
/// The envelope kind of a client publish and of a server `msg`.
pub const KIND_PUBLISH: u8 = 0x01;
/// The envelope kind of a server `msg`.
pub const KIND_MSG: u8 = 0x01;
const FLAG_ID: u8 = 0x01;

/// A binary payload as stored: the marker, then the bytes.
pub fn stored_binary(payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(1 + payload.len());
    v.push(BINARY_MARK);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// The payload of a stored binary message; `None` for stored JSON.
pub fn binary_payload(stored: &[u8]) -> Option<&[u8]> {
    match stored.split_first() {
        Some((&BINARY_MARK, rest)) => Some(rest),
        _ => None,
    }
}

/// A decoded binary client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryOp<'a> {
    /// Publish `data` to `room`.
    Publish {
        /// The request id, for the `published` ack.
        id: Option<u64>,
        /// The room.
        room: &'a str,
        /// The payload.
        data: &'a [u8],
    },
}

fn bad(id: Option<u64>, reason: &str) -> OpError {
    OpError {
        id,
        code: ErrorCode::BadRequest,
        reason: reason.into(),
    }
}

/// Decodes a binary client message.
pub fn decode_binary_op(msg: &[u8]) -> Result<BinaryOp<'_>, OpError> {
    let (&kind, rest) = msg
        .split_first()
        .ok_or_else(|| bad(None, "empty binary message"))?;
    if kind != KIND_PUBLISH {
        return Err(bad(None, "unknown binary message kind"));
    }
    let (&flags, mut rest) = rest
        .split_first()
        .ok_or_else(|| bad(None, "binary message cut short"))?;
    if flags & !FLAG_ID != 0 {
        return Err(bad(None, "unknown binary message flags"));
    }
    let mut id = None;
    if flags & FLAG_ID != 0 {
        let (head, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad(None, "binary message cut short"))?;
        id = Some(u64::from_be_bytes(*head));
        rest = tail;
    }
    let (&room_len, rest) = rest
        .split_first()
        .ok_or_else(|| bad(id, "binary message cut short"))?;
    let room_len = usize::from(room_len);
    if rest.len() < room_len {
        return Err(bad(id, "binary message cut short"));
    }
    let (room, data) = rest.split_at(room_len);
    let room = std::str::from_utf8(room).map_err(|_| OpError {
        id,
        code: ErrorCode::BadRoom,
        reason: "invalid room name".into(),
    })?;
    validate_room(room).map_err(|e| OpError {
        id,
        code: ErrorCode::BadRoom,
        reason: e.to_string(),
    })?;
    Ok(BinaryOp::Publish { id, room, data })
}

/// Encodes a binary publish (clients and tests). `None` when the room is longer than 200 bytes.
pub fn encode_binary_publish(id: Option<u64>, room: &str, data: &[u8]) -> Option<Vec<u8>> {
    if room.len() > MAX_ROOM_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(11 + room.len() + data.len());
    out.push(KIND_PUBLISH);
    out.push(if id.is_some() { FLAG_ID } else { 0 });
    if let Some(id) = id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.push(room.len() as u8);
    out.extend_from_slice(room.as_bytes());
    out.extend_from_slice(data);
    Some(out)
}

/// A binary `msg` as a subscriber decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMsg<'a> {
    /// The room.
    pub room: &'a str,
    /// The room's epoch.
    pub epoch: &'a str,
    /// The message's offset.
    pub offset: u64,
    /// The payload.
    pub data: &'a [u8],
}

/// Why a binary server message could not be decoded (clients and tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad binary message: {0}")]
pub struct BinaryMsgError(pub &'static str);

/// Decodes the payload of a binary server message.
pub fn decode_binary_msg(msg: &[u8]) -> Result<BinaryMsg<'_>, BinaryMsgError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], BinaryMsgError> {
        if b.len() < n {
            return Err(BinaryMsgError("cut short"));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    let mut b = msg;
    if take(&mut b, 1)? != [KIND_MSG] {
        return Err(BinaryMsgError("unknown kind"));
    }
    let room_len = usize::from(take(&mut b, 1)?[0]);
    let room = std::str::from_utf8(take(&mut b, room_len)?).map_err(|_| BinaryMsgError("room"))?;
    let epoch_len = usize::from(take(&mut b, 1)?[0]);
    let epoch =
        std::str::from_utf8(take(&mut b, epoch_len)?).map_err(|_| BinaryMsgError("epoch"))?;
    let mut offset = [0u8; 8];
    offset.copy_from_slice(take(&mut b, 8)?);
    Ok(BinaryMsg {
        room,
        epoch,
        offset: u64::from_be_bytes(offset),
        data: b,
    })
}

/// Writes the envelope of a binary `msg` (everything before the payload).
fn write_msg_envelope(out: &mut Vec<u8>, room: &str, epoch: &str, offset: u64) {
    // Room names are at most 200 bytes (validated on entry); epochs are short hex strings.
    let room = &room.as_bytes()[..room.len().min(255)];
    let epoch = &epoch.as_bytes()[..epoch.len().min(255)];
    out.push(KIND_MSG);
    out.push(room.len() as u8);
    out.extend_from_slice(room);
    out.push(epoch.len() as u8);
    out.extend_from_slice(epoch);
    out.extend_from_slice(&offset.to_be_bytes());
}

/// The payload of a binary `msg` (clients, tests and conversions).
pub fn binary_msg_payload(room: &str, epoch: &str, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + room.len() + epoch.len() + data.len());
    write_msg_envelope(&mut out, room, epoch, offset);
    out.extend_from_slice(data);
    out
}

/// Builds the WebSocket binary frame of a binary room message in one allocation, shared by
/// every subscriber (as `room_message_frame` does for JSON).
pub fn binary_message_frame(room: &str, epoch: &str, offset: u64, data: &[u8]) -> ServerFrame {
    let mut buf =
        Vec::with_capacity(SERVER_HEADER_ROOM + 12 + room.len() + epoch.len() + data.len());
    buf.resize(SERVER_HEADER_ROOM, 0);
    write_msg_envelope(&mut buf, room, epoch, offset);
    buf.extend_from_slice(data);
    frame_in_place(buf, OpCode::Binary)
}

/// Standard base64 of a payload (the `bin` field of JSON forms).
pub fn to_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes the `bin` field of a JSON form.
pub fn from_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// The JSON `msg` event of a binary server message payload (for SSE and long-polling).
pub fn binary_msg_json(msg: &[u8]) -> Option<Vec<u8>> {
    let m = decode_binary_msg(msg).ok()?;
    Some(super::events::room_message_json(
        m.room,
        m.epoch,
        m.offset,
        &stored_binary(m.data),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{parse_header, FrameLimits, HeaderParse};
    use proptest::prelude::*;

    #[test]
    fn publish_round_trips_with_and_without_id() {
        for id in [None, Some(0), Some(u64::MAX)] {
            let wire = encode_binary_publish(id, "game.42", b"\x00\xffpayload").unwrap();
            assert_eq!(
                decode_binary_op(&wire).unwrap(),
                BinaryOp::Publish {
                    id,
                    room: "game.42",
                    data: b"\x00\xffpayload"
                }
            );
        }
    }

    #[test]
    fn bad_publishes_are_errors_with_their_id() {
        assert_eq!(
            decode_binary_op(b"").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            decode_binary_op(b"\x07\x00").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            decode_binary_op(b"\x01\x02\x01a").unwrap_err().code,
            ErrorCode::BadRequest
        );
        // Cut inside the id.
        assert_eq!(decode_binary_op(b"\x01\x01\x00\x00").unwrap_err().id, None);
        // Room longer than the message.
        let e = decode_binary_op(b"\x01\x01\x00\x00\x00\x00\x00\x00\x00\x09\x05ab").unwrap_err();
        assert_eq!((e.id, e.code), (Some(9), ErrorCode::BadRequest));
        // Invalid room characters.
        let e = decode_binary_op(b"\x01\x00\x03a b").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRoom);
        let e = decode_binary_op(b"\x01\x00\x00data").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRoom);
    }

    #[test]
    fn msg_frame_is_one_binary_frame_with_the_envelope() {
        for size in [0usize, 100, 70_000] {
            let data = vec![0xabu8; size];
            let framed = binary_message_frame("game.42", "e1", 77, &data);
            let frame = framed.frame().clone();
            let HeaderParse::Complete { header, header_len } =
                parse_header(&frame, &FrameLimits::client(1 << 30)).unwrap()
            else {
                panic!("incomplete")
            };
            assert_eq!(header.opcode, OpCode::Binary);
            assert!(header.fin);
            assert_eq!(header.payload_len as usize, frame.len() - header_len);
            let payload = &frame[header_len..];
            assert_eq!(payload, framed.payload());
            assert_eq!(payload, binary_msg_payload("game.42", "e1", 77, &data));
            let m = decode_binary_msg(payload).unwrap();
            assert_eq!(
                (m.room, m.epoch, m.offset, m.data),
                ("game.42", "e1", 77, &data[..])
            );
        }
    }

    #[test]
    fn stored_form_is_marked_and_json_form_has_bin() {
        let stored = stored_binary(b"\x01\x02");
        assert_eq!(binary_payload(&stored), Some(&b"\x01\x02"[..]));
        assert_eq!(binary_payload(b"{\"a\":1}"), None);
        let json = binary_msg_json(&binary_msg_payload("r", "e", 3, b"\x01\x02")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["ev"], "msg");
        assert_eq!(v["offset"], 3);
        assert_eq!(
            from_base64(v["bin"].as_str().unwrap()).unwrap(),
            b"\x01\x02"
        );
        assert!(v.get("data").is_none());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_binary_op(&bytes);
            let _ = decode_binary_msg(&bytes);
        }

        #[test]
        fn any_payload_round_trips(id in any::<Option<u64>>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let wire = encode_binary_publish(id, "a.b", &data).unwrap();
            prop_assert_eq!(decode_binary_op(&wire).unwrap(), BinaryOp::Publish { id, room: "a.b", data: &data });
            let msg = binary_msg_payload("a.b", "ep", 5, &data);
            prop_assert_eq!(decode_binary_msg(&msg).unwrap().data, &data[..]);
        }
    }
}
