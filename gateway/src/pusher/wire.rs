//! The engine's values as Pusher frames. A Pusher connection is an ordinary subscriber: room
//! messages, live events and answers reach it as the same typed values every connection gets
//! (`outgoing`), and their Pusher forms are built here, from the values (room messages and
//! live events once per shard).

use bytes::Bytes;
use proto_codec::protocol::ServerEvent;
use proto_codec::pusher::{self as p, ChannelKind, StoredEvent};
use proto_codec::ws::{encode_frame, OpCode};
use serde_json::value::RawValue;

use crate::connection::shared::{ConnShared, SubState};
use crate::outgoing::{LiveEvent, Source};

fn text(frame: String) -> Bytes {
    encode_frame(OpCode::Text, false, frame.as_bytes())
}

/// Whether a room is a Pusher channel's (`pusher.<app>/<channel>`).
fn is_pusher_room(room: &str) -> bool {
    proto_codec::protocol::namespace_of(room) == p::NAMESPACE
}

/// A native message's JSON as the Pusher event `ringcast:message` of `channel` (its data the
/// JSON as a string, as Pusher events carry data).
fn native_event(channel: &str, json: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(json).ok()?;
    let raw = RawValue::from_string(serde_json::to_string(text).ok()?).ok()?;
    serde_json::to_string(&StoredEvent {
        event: "ringcast:message".into(),
        channel: channel.into(),
        data: &raw,
        user_id: None,
        socket_id: None,
    })
    .ok()
}

/// The data a message of `room` is stored with, by the one rule of a room two protocols
/// reach: a Pusher room holds only events the Pusher paths made, so a native message there is
/// stored as the Pusher event `ringcast:message` (issue 19, finding 3: a native message shaped
/// like a Pusher event was delivered as one). Binary messages (no Pusher form) and every other
/// room pass unchanged.
pub fn bridge_message(room: &str, data: Bytes, source: Source) -> Bytes {
    if source == Source::Pusher
        || !is_pusher_room(room)
        || proto_codec::protocol::binary_payload(&data).is_some()
    {
        return data;
    }
    match super::channel_name(room).and_then(|c| native_event(&c, &data)) {
        Some(wrapped) => Bytes::from(wrapped),
        None => data,
    }
}

/// The data a live event of `room` is relayed with, by the same rule: a native event in a
/// Pusher room carries the Pusher event `ringcast:message` (`None`: its data cannot be
/// wrapped).
pub fn bridge_event(room: &str, data: Bytes, source: Source) -> Option<Bytes> {
    if source == Source::Pusher || !is_pusher_room(room) {
        return Some(data);
    }
    native_event(&super::channel_name(room)?, &data).map(Bytes::from)
}

/// The Pusher frame of a room message's `data`: a stored Pusher event as it is (without its
/// `socket_id`, returned beside it: the connection that must not get it), or anything else
/// (published through the ringcast protocol) as the event `ringcast:message` with the JSON as
/// its data.
pub fn event_frame(channel: &str, data: &[u8]) -> Option<(Bytes, Option<String>)> {
    if let Ok(stored) = serde_json::from_slice::<StoredEvent>(data) {
        let exclude = stored.socket_id.as_deref().map(str::to_string);
        return Some((text(stored.to_frame()), exclude));
    }
    // Stored before native messages were wrapped at the home shard (`bridge_message`).
    let stored = native_event(channel, data)?;
    let stored: StoredEvent = serde_json::from_str(&stored).ok()?;
    Some((text(stored.to_frame()), None))
}

/// The Pusher form of a room message (built once per shard): `None` outside a Pusher
/// channel's room and for binary messages (no Pusher form).
pub fn room_message(room: &str, data: &[u8]) -> Option<(Bytes, Option<String>)> {
    if proto_codec::protocol::binary_payload(data).is_some() {
        return None;
    }
    event_frame(&super::channel_name(room)?, data)
}

/// The Pusher frame of a live event (a client event, a member added or removed), the same for
/// every connection: built once per shard (`outgoing::LiveForms`).
pub fn live(room: &str, event: &LiveEvent) -> Option<Bytes> {
    let frame = match event {
        // The data of an event in a Pusher room is a Pusher event (`bridge_event`).
        LiveEvent::Event { data, .. } => {
            serde_json::from_slice::<StoredEvent>(data).ok()?.to_frame()
        }
        LiveEvent::Join(member) => p::member_added(
            &super::channel_name(room)?,
            member.user.as_deref()?,
            member.info.as_deref(),
        ),
        LiveEvent::Leave(member) => {
            p::member_removed(&super::channel_name(room)?, member.user.as_deref()?)
        }
        LiveEvent::Gap { .. } | LiveEvent::Awareness(_) => return None,
    };
    Some(text(frame))
}

/// The Pusher frame of an app-protocol answer to a Pusher connection: a subscription's
/// success (a presence channel's comes with its members, the `presence` answer), or an error;
/// the rest (`hello`, acks, `unsubscribed`, …) has no Pusher form.
pub fn event(conn: &ConnShared, event: &ServerEvent<'_>) -> Option<Bytes> {
    let out = match event {
        ServerEvent::Subscribed { room, .. } => {
            let channel = super::channel_name(room)?;
            if ChannelKind::of(&channel) == ChannelKind::Presence {
                return None;
            }
            p::subscription_succeeded(&channel, "{}")
        }
        ServerEvent::Presence { room, members, .. } => {
            if conn.rooms.borrow().get(room.as_ref()) != Some(&SubState::Active) {
                return None;
            }
            let channel = super::channel_name(room)?;
            let data = p::presence_data(
                members
                    .iter()
                    .filter_map(|m| Some((m.user.clone()?, m.info.as_deref()))),
            );
            p::subscription_succeeded(&channel, &data)
        }
        ServerEvent::Error { code, reason, .. } => p::error(
            p::PusherCode::GENERIC_RECONNECT,
            &format!("{}: {reason}", code.as_str()),
        ),
        _ => return None,
    };
    Some(text(out))
}
