//! Server → client events: one JSON object per text frame (or SSE event), discriminated by `ev`.
//!
//! The hot one, `msg`, is built by [`room_message_frame`] straight into a WebSocket frame: the
//! published `data` bytes are spliced in, never re-serialized, and the result is shared by every
//! subscriber. The rest go through one flat wire struct, as ops do.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::codes::ErrorCode;
use crate::ws::frame::{frame_in_place, OpCode, ServerFrame, SERVER_HEADER_ROOM};

/// One member of a room's presence set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// The connection's client id.
    pub client: String,
    /// The user id from the token, if authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Public info from the token's claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

impl PartialEq for Member {
    fn eq(&self, other: &Member) -> bool {
        self.client == other.client
            && self.user == other.user
            && self.info.as_ref().map(|i| i.get()) == other.info.as_ref().map(|i| i.get())
    }
}
impl Eq for Member {}

/// A stored message, as returned by `history`: JSON `data`, or a binary payload as `bin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryItem<'a> {
    /// The message's offset.
    pub offset: u64,
    /// The message data as published (JSON messages).
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::present_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<&'a RawValue>,
    /// The payload in standard base64 (binary messages).
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub bin: Option<Cow<'a, str>>,
}

impl<'a> HistoryItem<'a> {
    /// The item of a stored message (JSON, or binary behind its marker); `None` when stored
    /// JSON does not parse.
    pub fn from_stored(offset: u64, stored: &'a [u8]) -> Option<HistoryItem<'a>> {
        if let Some(payload) = super::binary::binary_payload(stored) {
            return Some(HistoryItem {
                offset,
                data: None,
                bin: Some(super::binary::to_base64(payload).into()),
            });
        }
        let data = serde_json::from_slice::<&RawValue>(stored).ok()?;
        Some(HistoryItem {
            offset,
            data: Some(data),
            bin: None,
        })
    }
}

/// A decoded or to-be-encoded server event.
///
/// Compare events by their JSON: raw `data` has no equality of its own.
#[derive(Debug, Clone)]
pub enum ServerEvent<'a> {
    /// First event on every connection.
    Hello {
        /// This connection's id.
        client: Cow<'a, str>,
        /// The node's name.
        node: Cow<'a, str>,
        /// How often the server pings; a client that hears nothing for twice this may reconnect.
        heartbeat_ms: u64,
    },
    /// A subscribe succeeded. With `recovered: true` the missed messages follow at once.
    Subscribed {
        /// Echo of the op's id.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// The room's epoch.
        epoch: Cow<'a, str>,
        /// The room's latest offset when the subscription started.
        offset: u64,
        /// Whether every message after `since` will be delivered.
        recovered: bool,
    },
    /// The connection left a room (answer to unsubscribe, or the server's decision).
    Unsubscribed {
        /// Echo of the op's id (absent when the server decided).
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// Why the server removed the subscription, if it did.
        reason: Option<Cow<'a, str>>,
    },
    /// A room message.
    Msg {
        /// The room.
        room: Cow<'a, str>,
        /// The room's epoch.
        epoch: Cow<'a, str>,
        /// The message's offset.
        offset: u64,
        /// The data as published.
        data: &'a RawValue,
    },
    /// A binary room message, in its JSON form (SSE, long-polling): `bin` is the payload in
    /// base64. Over WebSocket a binary message is a binary frame (`protocol::binary`).
    MsgBinary {
        /// The room.
        room: Cow<'a, str>,
        /// The room's epoch.
        epoch: Cow<'a, str>,
        /// The message's offset.
        offset: u64,
        /// The payload.
        data: Vec<u8>,
    },
    /// Ack of a publish: the offset the message got.
    Published {
        /// Echo of the op's id.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// The room's epoch.
        epoch: Cow<'a, str>,
        /// The message's offset.
        offset: u64,
    },
    /// An ephemeral event from another client.
    Event {
        /// The room.
        room: Cow<'a, str>,
        /// The event payload.
        data: &'a RawValue,
    },
    /// Answer to presence.
    Presence {
        /// Echo of the op's id.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// Who is there.
        members: Vec<Member>,
    },
    /// Someone joined a room.
    Join {
        /// The room.
        room: Cow<'a, str>,
        /// Who.
        member: Member,
    },
    /// Someone left a room.
    Leave {
        /// The room.
        room: Cow<'a, str>,
        /// Who.
        member: Member,
    },
    /// Answer to history.
    History {
        /// Echo of the op's id.
        id: Option<u64>,
        /// The room.
        room: Cow<'a, str>,
        /// The room's epoch.
        epoch: Cow<'a, str>,
        /// The room's latest offset.
        offset: u64,
        /// Whether `messages` holds everything after `since`.
        recovered: bool,
        /// The messages, oldest first.
        messages: Vec<HistoryItem<'a>>,
    },
    /// Answer to refresh: the new token is in force.
    Refreshed {
        /// Echo of the op's id.
        id: Option<u64>,
        /// When the new token expires (Unix seconds), if it does.
        expires_at: Option<u64>,
    },
    /// The token expires soon; send `refresh` before the grace period ends.
    TokenExpiring {
        /// Time left before the connection is closed with 4002.
        expires_in_ms: u64,
    },
    /// Messages `from..=to` of a room were not delivered to this connection.
    Gap {
        /// The room.
        room: Cow<'a, str>,
        /// The room's epoch.
        epoch: Cow<'a, str>,
        /// First offset missed.
        from: u64,
        /// Last offset missed.
        to: u64,
    },
    /// Answer to application ping.
    Pong {
        /// Echo of the op's id.
        id: Option<u64>,
    },
    /// An op was refused.
    Error {
        /// Echo of the op's id, if it could be read.
        id: Option<u64>,
        /// Why.
        code: ErrorCode,
        /// Details for humans.
        reason: Cow<'a, str>,
    },
}

/// The wire form of every event: one flat object. Field order here is the order on the wire.
#[derive(Debug, Default, Serialize, Deserialize)]
struct EventWire<'a> {
    #[serde(borrow)]
    ev: Cow<'a, str>,
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
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    epoch: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::present_raw",
        skip_serializing_if = "Option::is_none"
    )]
    data: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    bin: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    client: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    node: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    members: Option<Vec<Member>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<Member>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<HistoryItem<'a>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<ErrorCode>,
    #[serde(
        borrow,
        default,
        deserialize_with = "super::wire::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    reason: Option<Cow<'a, str>>,
}

/// Why a server event could not be decoded (clients and tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad server event: {0}")]
pub struct EventError(pub String);

fn need<T>(v: Option<T>, field: &str) -> Result<T, EventError> {
    v.ok_or_else(|| EventError(format!("missing field `{field}`")))
}

impl<'a> ServerEvent<'a> {
    /// The event's name (its `ev`; the SSE event name).
    pub fn name(&self) -> &'static str {
        match self {
            ServerEvent::Hello { .. } => "hello",
            ServerEvent::Subscribed { .. } => "subscribed",
            ServerEvent::Unsubscribed { .. } => "unsubscribed",
            ServerEvent::Msg { .. } | ServerEvent::MsgBinary { .. } => "msg",
            ServerEvent::Published { .. } => "published",
            ServerEvent::Event { .. } => "event",
            ServerEvent::Presence { .. } => "presence",
            ServerEvent::Join { .. } => "join",
            ServerEvent::Leave { .. } => "leave",
            ServerEvent::History { .. } => "history",
            ServerEvent::Refreshed { .. } => "refreshed",
            ServerEvent::TokenExpiring { .. } => "token_expiring",
            ServerEvent::Gap { .. } => "gap",
            ServerEvent::Pong { .. } => "pong",
            ServerEvent::Error { .. } => "error",
        }
    }

    /// Encodes the event as JSON.
    pub fn to_json(&self) -> String {
        let mut w = EventWire::default();
        match self {
            ServerEvent::Hello {
                client,
                node,
                heartbeat_ms,
            } => {
                w.ev = "hello".into();
                w.client = Some(client.clone());
                w.node = Some(node.clone());
                w.heartbeat_ms = Some(*heartbeat_ms);
            }
            ServerEvent::Subscribed {
                id,
                room,
                epoch,
                offset,
                recovered,
            } => {
                w.ev = "subscribed".into();
                w.id = *id;
                w.room = Some(room.clone());
                w.epoch = Some(epoch.clone());
                w.offset = Some(*offset);
                w.recovered = Some(*recovered);
            }
            ServerEvent::Unsubscribed { id, room, reason } => {
                w.ev = "unsubscribed".into();
                w.id = *id;
                w.room = Some(room.clone());
                w.reason = reason.clone();
            }
            ServerEvent::Msg {
                room,
                epoch,
                offset,
                data,
            } => {
                w.ev = "msg".into();
                w.room = Some(room.clone());
                w.epoch = Some(epoch.clone());
                w.offset = Some(*offset);
                w.data = Some(data);
            }
            ServerEvent::MsgBinary {
                room,
                epoch,
                offset,
                data,
            } => {
                w.ev = "msg".into();
                w.room = Some(room.clone());
                w.epoch = Some(epoch.clone());
                w.offset = Some(*offset);
                w.bin = Some(super::binary::to_base64(data).into());
            }
            ServerEvent::Published {
                id,
                room,
                epoch,
                offset,
            } => {
                w.ev = "published".into();
                w.id = *id;
                w.room = Some(room.clone());
                w.epoch = Some(epoch.clone());
                w.offset = Some(*offset);
            }
            ServerEvent::Event { room, data } => {
                w.ev = "event".into();
                w.room = Some(room.clone());
                w.data = Some(data);
            }
            ServerEvent::Presence { id, room, members } => {
                w.ev = "presence".into();
                w.id = *id;
                w.room = Some(room.clone());
                w.members = Some(members.clone());
            }
            ServerEvent::Join { room, member } => {
                w.ev = "join".into();
                w.room = Some(room.clone());
                w.member = Some(member.clone());
            }
            ServerEvent::Leave { room, member } => {
                w.ev = "leave".into();
                w.room = Some(room.clone());
                w.member = Some(member.clone());
            }
            ServerEvent::History {
                id,
                room,
                epoch,
                offset,
                recovered,
                messages,
            } => {
                w.ev = "history".into();
                w.id = *id;
                w.room = Some(room.clone());
                w.epoch = Some(epoch.clone());
                w.offset = Some(*offset);
                w.recovered = Some(*recovered);
                w.messages = Some(messages.clone());
            }
            ServerEvent::Refreshed { id, expires_at } => {
                w.ev = "refreshed".into();
                w.id = *id;
                w.expires_at = *expires_at;
            }
            ServerEvent::TokenExpiring { expires_in_ms } => {
                w.ev = "token_expiring".into();
                w.expires_in_ms = Some(*expires_in_ms);
            }
            ServerEvent::Gap {
                room,
                epoch,
                from,
                to,
            } => {
                w.ev = "gap".into();
                w.room = Some(room.clone());
                w.epoch = Some(epoch.clone());
                w.from = Some(*from);
                w.to = Some(*to);
            }
            ServerEvent::Pong { id } => {
                w.ev = "pong".into();
                w.id = *id;
            }
            ServerEvent::Error { id, code, reason } => {
                w.ev = "error".into();
                w.id = *id;
                w.code = Some(*code);
                w.reason = Some(reason.clone());
            }
        }
        // Strings, integers, booleans and raw JSON cannot fail to serialize.
        serde_json::to_string(&w).unwrap_or_default()
    }

    /// Encodes the event as a WebSocket text frame.
    pub fn to_frame(&self) -> Bytes {
        crate::ws::encode_frame(OpCode::Text, false, self.to_json().as_bytes())
    }

    /// Decodes an event (clients and tests).
    pub fn decode(json: &'a [u8]) -> Result<ServerEvent<'a>, EventError> {
        let w: EventWire<'a> =
            serde_json::from_slice(json).map_err(|e| EventError(e.to_string()))?;
        Ok(match w.ev.as_ref() {
            "hello" => ServerEvent::Hello {
                client: need(w.client, "client")?,
                node: need(w.node, "node")?,
                heartbeat_ms: need(w.heartbeat_ms, "heartbeat_ms")?,
            },
            "subscribed" => ServerEvent::Subscribed {
                id: w.id,
                room: need(w.room, "room")?,
                epoch: need(w.epoch, "epoch")?,
                offset: need(w.offset, "offset")?,
                recovered: need(w.recovered, "recovered")?,
            },
            "unsubscribed" => ServerEvent::Unsubscribed {
                id: w.id,
                room: need(w.room, "room")?,
                reason: w.reason,
            },
            "msg" if w.bin.is_some() => ServerEvent::MsgBinary {
                room: need(w.room, "room")?,
                epoch: need(w.epoch, "epoch")?,
                offset: need(w.offset, "offset")?,
                data: w
                    .bin
                    .as_deref()
                    .and_then(super::binary::from_base64)
                    .ok_or_else(|| EventError("`bin` is not base64".into()))?,
            },
            "msg" => ServerEvent::Msg {
                room: need(w.room, "room")?,
                epoch: need(w.epoch, "epoch")?,
                offset: need(w.offset, "offset")?,
                data: need(w.data, "data")?,
            },
            "published" => ServerEvent::Published {
                id: w.id,
                room: need(w.room, "room")?,
                epoch: need(w.epoch, "epoch")?,
                offset: need(w.offset, "offset")?,
            },
            "event" => ServerEvent::Event {
                room: need(w.room, "room")?,
                data: need(w.data, "data")?,
            },
            "presence" => ServerEvent::Presence {
                id: w.id,
                room: need(w.room, "room")?,
                members: need(w.members, "members")?,
            },
            "join" => ServerEvent::Join {
                room: need(w.room, "room")?,
                member: need(w.member, "member")?,
            },
            "leave" => ServerEvent::Leave {
                room: need(w.room, "room")?,
                member: need(w.member, "member")?,
            },
            "history" => ServerEvent::History {
                id: w.id,
                room: need(w.room, "room")?,
                epoch: need(w.epoch, "epoch")?,
                offset: need(w.offset, "offset")?,
                recovered: need(w.recovered, "recovered")?,
                messages: need(w.messages, "messages")?,
            },
            "refreshed" => ServerEvent::Refreshed {
                id: w.id,
                expires_at: w.expires_at,
            },
            "token_expiring" => ServerEvent::TokenExpiring {
                expires_in_ms: need(w.expires_in_ms, "expires_in_ms")?,
            },
            "gap" => ServerEvent::Gap {
                room: need(w.room, "room")?,
                epoch: need(w.epoch, "epoch")?,
                from: need(w.from, "from")?,
                to: need(w.to, "to")?,
            },
            "pong" => ServerEvent::Pong { id: w.id },
            "error" => ServerEvent::Error {
                id: w.id,
                code: need(w.code, "code")?,
                reason: w.reason.unwrap_or_default(),
            },
            other => return Err(EventError(format!("unknown event `{other}`"))),
        })
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The JSON of a `msg` event, with `data` spliced in as is. Matches [`ServerEvent::Msg`]'s
/// `to_json` byte for byte. Stored binary data (behind [`super::binary::BINARY_MARK`]) becomes
/// `bin`, as [`ServerEvent::MsgBinary`] writes it.
pub fn room_message_json(room: &str, epoch: &str, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + room.len() + epoch.len() + data.len());
    write_room_message_json(&mut out, room, epoch, offset, data);
    out
}

fn write_room_message_json(out: &mut Vec<u8>, room: &str, epoch: &str, offset: u64, data: &[u8]) {
    out.extend_from_slice(br#"{"ev":"msg","room":"#);
    push_json_str(out, room);
    out.extend_from_slice(br#","epoch":"#);
    push_json_str(out, epoch);
    out.extend_from_slice(br#","offset":"#);
    out.extend_from_slice(itoa_u64(offset, &mut [0u8; 20]));
    match super::binary::binary_payload(data) {
        Some(payload) => {
            out.extend_from_slice(br#","bin":""#);
            out.extend_from_slice(super::binary::to_base64(payload).as_bytes());
            out.push(b'"');
        }
        None => {
            out.extend_from_slice(br#","data":"#);
            out.extend_from_slice(data);
        }
    }
    out.push(b'}');
}

/// The JSON of an `event` (an ephemeral event of `room`), with `data` (valid JSON) spliced in
/// as is. Matches [`ServerEvent::Event`]'s `to_json` byte for byte.
pub fn event_json(room: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + room.len() + data.len());
    out.extend_from_slice(br#"{"ev":"event","room":"#);
    push_json_str(&mut out, room);
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

fn itoa_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Builds the WebSocket text frame of a room message in one allocation: `data` (already valid
/// JSON) is copied once into the frame, which every subscriber then shares.
///
/// Stored binary data (behind [`super::binary::BINARY_MARK`]) becomes a binary frame instead
/// ([`super::binary::binary_message_frame`]).
pub fn room_message_frame(room: &str, epoch: &str, offset: u64, data: &[u8]) -> ServerFrame {
    if let Some(payload) = super::binary::binary_payload(data) {
        return super::binary::binary_message_frame(room, epoch, offset, payload);
    }
    // The JSON is written after room for the header (`frame_in_place`): the frame is
    // contiguous without moving the payload.
    let mut buf =
        Vec::with_capacity(SERVER_HEADER_ROOM + 64 + room.len() + epoch.len() + data.len());
    buf.resize(SERVER_HEADER_ROOM, 0);
    write_room_message_json(&mut buf, room, epoch, offset, data);
    frame_in_place(buf, OpCode::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{parse_header, FrameLimits, HeaderParse};

    #[test]
    fn event_json_matches_the_serde_encoding_and_names_are_the_ev_field() {
        for (room, data) in [("chat.1", r#"{"a":[1,"\u00e9"]}"#), ("r\"q", "7")] {
            let raw = RawValue::from_string(data.to_string()).unwrap();
            let ev = ServerEvent::Event {
                room: room.into(),
                data: &raw,
            };
            assert_eq!(event_json(room, data.as_bytes()), ev.to_json().as_bytes());
            let decoded: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
            assert_eq!(decoded["ev"], ev.name());
        }
        let ev = ServerEvent::TokenExpiring { expires_in_ms: 5 };
        assert!(ev
            .to_json()
            .starts_with(&format!(r#"{{"ev":"{}""#, ev.name())));
    }

    #[test]
    fn msg_frame_matches_the_serde_encoding() {
        for size in [0usize, 100, 200, 70_000] {
            let data_json = format!("\"{}\"", "x".repeat(size));
            let data = RawValue::from_string(data_json.clone()).unwrap();
            let ev = ServerEvent::Msg {
                room: "prices.BTC".into(),
                epoch: "ab12".into(),
                offset: 1234567890123,
                data: &data,
            };
            let framed =
                room_message_frame("prices.BTC", "ab12", 1234567890123, data_json.as_bytes());
            let frame = framed.frame().clone();
            let HeaderParse::Complete { header, header_len } =
                parse_header(&frame, &FrameLimits::client(1 << 30)).unwrap()
            else {
                panic!("incomplete")
            };
            assert_eq!(header.payload_len as usize, frame.len() - header_len);
            assert_eq!(&frame[header_len..], ev.to_json().as_bytes());
            assert_eq!(framed.payload(), ev.to_json().as_bytes());
            assert_eq!(frame, ev.to_frame());
        }
    }

    #[test]
    fn round_trip() {
        let data = RawValue::from_string(r#"{"p":1.5}"#.into()).unwrap();
        let info = RawValue::from_string(r#"{"name":"Ann"}"#.into()).unwrap();
        let member = Member {
            client: "c1".into(),
            user: Some("u1".into()),
            info: Some(info),
        };
        let events = vec![
            ServerEvent::Hello {
                client: "c1".into(),
                node: "n1".into(),
                heartbeat_ms: 25_000,
            },
            ServerEvent::Subscribed {
                id: Some(1),
                room: "r".into(),
                epoch: "e".into(),
                offset: 0,
                recovered: false,
            },
            ServerEvent::Unsubscribed {
                id: None,
                room: "r".into(),
                reason: Some("forbidden".into()),
            },
            ServerEvent::Msg {
                room: "r".into(),
                epoch: "e".into(),
                offset: 7,
                data: &data,
            },
            ServerEvent::Published {
                id: Some(2),
                room: "r".into(),
                epoch: "e".into(),
                offset: 7,
            },
            ServerEvent::Event {
                room: "r".into(),
                data: &data,
            },
            ServerEvent::Presence {
                id: Some(3),
                room: "r".into(),
                members: vec![member.clone()],
            },
            ServerEvent::Join {
                room: "r".into(),
                member: member.clone(),
            },
            ServerEvent::Leave {
                room: "r".into(),
                member,
            },
            ServerEvent::History {
                id: Some(4),
                room: "r".into(),
                epoch: "e".into(),
                offset: 9,
                recovered: true,
                messages: vec![
                    HistoryItem {
                        offset: 9,
                        data: Some(&data),
                        bin: None,
                    },
                    HistoryItem {
                        offset: 10,
                        data: None,
                        bin: Some("AAH/".into()),
                    },
                ],
            },
            ServerEvent::Refreshed {
                id: Some(5),
                expires_at: Some(1_700_000_000),
            },
            ServerEvent::TokenExpiring {
                expires_in_ms: 30_000,
            },
            ServerEvent::Gap {
                room: "r".into(),
                epoch: "e".into(),
                from: 3,
                to: 5,
            },
            ServerEvent::Pong { id: Some(6) },
            ServerEvent::MsgBinary {
                room: "r".into(),
                epoch: "e".into(),
                offset: 11,
                data: vec![0, 1, 255],
            },
            ServerEvent::Error {
                id: Some(7),
                code: ErrorCode::Forbidden,
                reason: "no".into(),
            },
        ];
        for ev in events {
            let json = ev.to_json();
            assert_eq!(
                ServerEvent::decode(json.as_bytes()).unwrap().to_json(),
                json
            );
        }
    }
}
