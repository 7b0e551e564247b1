//! Client → server ops: one JSON object per text frame, discriminated by `op`.
//!
//! Decoding goes through one flat wire struct (fast: no buffering of the object, and `data` stays
//! a borrowed slice of the frame, never re-serialized) and is then checked into a typed
//! [`ClientOp`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::codes::ErrorCode;
use super::room::{validate_room, RoomError};

/// A position in a room's stream: the room's epoch and the offset of the last message seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The room's epoch; offsets from another epoch cannot be compared.
    pub epoch: String,
    /// The offset of the last message the client saw.
    pub offset: u64,
}

/// A decoded client op.
///
/// Compare ops by their JSON: raw `data` has no equality of its own.
#[derive(Debug, Clone)]
pub enum ClientOp<'a> {
    /// Join a room; with `since`, first receive what was missed after that position.
    Subscribe {
        /// Request id, echoed in the answer.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// Where to resume from.
        since: Option<Position>,
    },
    /// Leave a room.
    Unsubscribe {
        /// Request id, echoed in the answer.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
    },
    /// Publish `data` (any JSON value) to a room. With an `id`, the server acks with `published`.
    Publish {
        /// Request id; without it no ack is sent (errors still are).
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// The message, kept as the exact bytes the client sent.
        data: &'a RawValue,
    },
    /// An ephemeral event (typing, cursor): delivered to current subscribers, never stored.
    Event {
        /// Request id; errors echo it.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// The event payload.
        data: &'a RawValue,
    },
    /// Who is in a room.
    Presence {
        /// Request id, echoed in the answer.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
    },
    /// The room's stored messages after `since` (or the newest `limit`).
    History {
        /// Request id, echoed in the answer.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// Start after this position.
        since: Option<Position>,
        /// At most this many messages.
        limit: Option<u32>,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        /// Request id, echoed in the answer.
        id: Option<u64>,
        /// The new JWT.
        token: Cow<'a, str>,
    },
    /// Application-level ping; answered with `pong`.
    Ping {
        /// Request id, echoed in the answer.
        id: Option<u64>,
    },
}

/// Why a frame could not be decoded into an op; answered with an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct OpError {
    /// The request id, when it could be read.
    pub id: Option<u64>,
    /// The error code.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub reason: String,
}

/// The wire form of every op: one flat object.
#[derive(Debug, Default, Serialize, Deserialize)]
struct OpWire<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    room: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::present_raw",
        skip_serializing_if = "Option::is_none"
    )]
    data: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<Position>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    token: Option<Cow<'a, str>>,
}

/// Just the id, read leniently so that an error answer can echo it.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<u64>,
}

/// The op names this version knows.
pub const OPS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "publish",
    "event",
    "presence",
    "history",
    "refresh",
    "ping",
];

fn error(id: Option<u64>, code: ErrorCode, reason: impl Into<String>) -> OpError {
    OpError {
        id,
        code,
        reason: reason.into(),
    }
}

fn room<'a>(id: Option<u64>, room: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, OpError> {
    let room = room.ok_or_else(|| error(id, ErrorCode::BadRequest, "missing field `room`"))?;
    validate_room(&room).map_err(|e: RoomError| error(id, ErrorCode::BadRoom, e.to_string()))?;
    Ok(room)
}

/// `data` is required; `null` counts as absent (docs/protocol.md §7: publish `{}` or `[]` for
/// "nothing").
fn data(id: Option<u64>, data: Option<&RawValue>) -> Result<&RawValue, OpError> {
    data.filter(|d| d.get().trim() != "null")
        .ok_or_else(|| error(id, ErrorCode::BadRequest, "missing field `data`"))
}

/// Decodes one op from a text frame's payload.
pub fn decode_op(frame: &[u8]) -> Result<ClientOp<'_>, OpError> {
    let wire: OpWire<'_> = serde_json::from_slice(frame).map_err(|e| {
        let id = serde_json::from_slice::<IdOnly>(frame)
            .ok()
            .and_then(|i| i.id);
        error(id, ErrorCode::BadRequest, e.to_string())
    })?;
    let id = wire.id;
    Ok(match wire.op.as_ref() {
        "subscribe" => ClientOp::Subscribe {
            id,
            room: room(id, wire.room)?,
            since: wire.since,
        },
        "unsubscribe" => ClientOp::Unsubscribe {
            id,
            room: room(id, wire.room)?,
        },
        "publish" => ClientOp::Publish {
            id,
            data: data(id, wire.data)?,
            room: room(id, wire.room)?,
        },
        "event" => ClientOp::Event {
            id,
            data: data(id, wire.data)?,
            room: room(id, wire.room)?,
        },
        "presence" => ClientOp::Presence {
            id,
            room: room(id, wire.room)?,
        },
        "history" => ClientOp::History {
            id,
            room: room(id, wire.room)?,
            since: wire.since,
            limit: wire.limit,
        },
        "refresh" => ClientOp::Refresh {
            id,
            token: wire
                .token
                .ok_or_else(|| error(id, ErrorCode::BadRequest, "missing field `token`"))?,
        },
        "ping" => ClientOp::Ping { id },
        other => {
            return Err(error(
                id,
                ErrorCode::UnknownOp,
                format!(
                    "unknown op `{}`",
                    other.chars().take(32).collect::<String>()
                ),
            ))
        }
    })
}

impl ClientOp<'_> {
    /// The request id, if any.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientOp::Subscribe { id, .. }
            | ClientOp::Unsubscribe { id, .. }
            | ClientOp::Publish { id, .. }
            | ClientOp::Event { id, .. }
            | ClientOp::Presence { id, .. }
            | ClientOp::History { id, .. }
            | ClientOp::Refresh { id, .. }
            | ClientOp::Ping { id } => *id,
        }
    }

    /// Encodes the op as JSON (clients and tests use this).
    pub fn to_json(&self) -> String {
        let mut wire = OpWire::default();
        match self {
            ClientOp::Subscribe { id, room, since } => {
                wire.op = "subscribe".into();
                wire.id = *id;
                wire.room = Some(room.clone());
                wire.since = since.clone();
            }
            ClientOp::Unsubscribe { id, room } => {
                wire.op = "unsubscribe".into();
                wire.id = *id;
                wire.room = Some(room.clone());
            }
            ClientOp::Publish { id, room, data } => {
                wire.op = "publish".into();
                wire.id = *id;
                wire.room = Some(room.clone());
                wire.data = Some(data);
            }
            ClientOp::Event { id, room, data } => {
                wire.op = "event".into();
                wire.id = *id;
                wire.room = Some(room.clone());
                wire.data = Some(data);
            }
            ClientOp::Presence { id, room } => {
                wire.op = "presence".into();
                wire.id = *id;
                wire.room = Some(room.clone());
            }
            ClientOp::History {
                id,
                room,
                since,
                limit,
            } => {
                wire.op = "history".into();
                wire.id = *id;
                wire.room = Some(room.clone());
                wire.since = since.clone();
                wire.limit = *limit;
            }
            ClientOp::Refresh { id, token } => {
                wire.op = "refresh".into();
                wire.id = *id;
                wire.token = Some(token.clone());
            }
            ClientOp::Ping { id } => {
                wire.op = "ping".into();
                wire.id = *id;
            }
        }
        // A struct of strings, integers and raw JSON cannot fail to serialize.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keeps_data_bytes_as_sent() {
        let frame = br#"{"op":"publish","id":3,"room":"chat.lobby","data":{"text": "hi",  "n":1}}"#;
        match decode_op(frame).unwrap() {
            ClientOp::Publish { id, room, data } => {
                assert_eq!(id, Some(3));
                assert_eq!(room, "chat.lobby");
                assert_eq!(data.get(), r#"{"text": "hi",  "n":1}"#);
                assert!(matches!(room, Cow::Borrowed(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn null_data_counts_as_missing() {
        for op in [
            &br#"{"op":"publish","id":3,"room":"r","data":null}"#[..],
            br#"{"op":"event","id":3,"room":"r","data": null }"#,
        ] {
            let e = decode_op(op).unwrap_err();
            assert_eq!((e.id, e.code), (Some(3), ErrorCode::BadRequest), "{e}");
            assert!(e.to_string().contains("missing field `data`"));
        }
        match decode_op(br#"{"op":"publish","room":"r","data":{}}"#).unwrap() {
            ClientOp::Publish { data, .. } => assert_eq!(data.get(), "{}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_echo_the_id_when_they_can() {
        let e = decode_op(br#"{"op":"subscribe","id":9}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(9), ErrorCode::BadRequest));
        let e = decode_op(br#"{"op":"fly","id":10}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(10), ErrorCode::UnknownOp));
        let e = decode_op(br#"{"op":"subscribe","id":11,"room":"a b"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(11), ErrorCode::BadRoom));
        let e = decode_op(b"not json").unwrap_err();
        assert_eq!((e.id, e.code), (None, ErrorCode::BadRequest));
        let e = decode_op(br#"{"id":12,"op":"publish","room":"r","data":}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn round_trip() {
        let data = RawValue::from_string("[1,2]".into()).unwrap();
        let ops = vec![
            ClientOp::Subscribe {
                id: Some(1),
                room: "a.b".into(),
                since: Some(Position {
                    epoch: "e".into(),
                    offset: 4,
                }),
            },
            ClientOp::Unsubscribe {
                id: None,
                room: "a".into(),
            },
            ClientOp::Publish {
                id: Some(2),
                room: "a".into(),
                data: &data,
            },
            ClientOp::Event {
                id: None,
                room: "a".into(),
                data: &data,
            },
            ClientOp::Presence {
                id: Some(3),
                room: "a".into(),
            },
            ClientOp::History {
                id: Some(4),
                room: "a".into(),
                since: None,
                limit: Some(5),
            },
            ClientOp::Refresh {
                id: Some(5),
                token: "t".into(),
            },
            ClientOp::Ping { id: Some(6) },
        ];
        for op in ops {
            let json = op.to_json();
            assert_eq!(decode_op(json.as_bytes()).unwrap().to_json(), json);
        }
    }
}
