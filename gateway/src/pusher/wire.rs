//! The engine's events as Pusher frames. A Pusher connection is an ordinary subscriber: room
//! messages, ephemeral events, joins and leaves reach it as the same frames every connection
//! gets, and are translated here (room messages once per shard, in `LocalRooms::deliver`).

use bytes::Bytes;
use proto_codec::protocol::ServerEvent;
use proto_codec::pusher::{self as p, ChannelKind, StoredEvent};
use proto_codec::ws::{encode_frame, OpCode};
use serde_json::value::RawValue;

use crate::connection::shared::{ConnShared, SubState};
use crate::mailbox::Source;

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

/// The `event` frame a live event of `room` is relayed with, by the same rule: a native event
/// in a Pusher room carries the Pusher event `ringcast:message` (`None`: not an event frame).
pub fn bridge_event(room: &str, frame: Bytes, source: Source) -> Option<Bytes> {
    if source == Source::Pusher || !is_pusher_room(room) {
        return Some(frame);
    }
    let payload = proto_codec::sse::text_payload(&frame)?;
    let ServerEvent::Event { data, .. } = ServerEvent::decode(payload).ok()? else {
        return None;
    };
    let wrapped = native_event(&super::channel_name(room)?, data.get().as_bytes())?;
    let raw = RawValue::from_string(wrapped).ok()?;
    Some(
        ServerEvent::Event {
            room: room.into(),
            data: &raw,
        }
        .to_frame(),
    )
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

/// The Pusher form of a shared `msg` frame (computed once per shard).
pub fn room_message(frame: &[u8]) -> Option<(Bytes, Option<String>)> {
    let payload = proto_codec::sse::text_payload(frame)?;
    let ServerEvent::Msg { room, data, .. } = ServerEvent::decode(payload).ok()? else {
        return None;
    };
    let channel = super::channel_name(&room)?;
    event_frame(&channel, data.get().as_bytes())
}

/// The Pusher frame of a live event (a client event, a member added or removed), the same for
/// every connection: `LocalRooms::deliver_live` builds it once per shard.
pub fn live_frame(frame: &[u8]) -> Option<Bytes> {
    let payload = proto_codec::sse::text_payload(frame)?;
    live_event(ServerEvent::decode(payload).ok()?).map(text)
}

fn live_event(event: ServerEvent<'_>) -> Option<String> {
    Some(match event {
        ServerEvent::Event { data, .. } => serde_json::from_str::<StoredEvent>(data.get())
            .ok()?
            .to_frame(),
        ServerEvent::Join { room, member } => p::member_added(
            &super::channel_name(&room)?,
            member.user.as_deref()?,
            member.info.as_deref(),
        ),
        ServerEvent::Leave { room, member } => {
            p::member_removed(&super::channel_name(&room)?, member.user.as_deref()?)
        }
        _ => return None,
    })
}

/// A frame for a Pusher connection: Pusher frames pass; the engine's events (`{"ev":…}`) are
/// translated or dropped (`hello`, acks, `unsubscribed`, binary messages, …).
pub fn translate(conn: &ConnShared, frame: Bytes) -> Option<Bytes> {
    let first = *frame.first()?;
    if first != 0x81 {
        // Control frames pass; binary messages have no Pusher form.
        return (first & 0x0f >= 0x8).then_some(frame);
    }
    let payload = proto_codec::sse::text_payload(&frame)?;
    // The engine's events start with `"ev"`; anything else is already a Pusher frame.
    if !payload.starts_with(b"{\"ev\":") {
        return Some(frame);
    }
    let event = ServerEvent::decode(payload).ok()?;
    let channel_of = |room: &str| super::channel_name(room);
    let out = match event {
        ServerEvent::Subscribed { room, .. } => {
            let channel = channel_of(&room)?;
            // A presence channel succeeds with its member list (the `presence` answer).
            if ChannelKind::of(&channel) == ChannelKind::Presence {
                return None;
            }
            p::subscription_succeeded(&channel, "{}")
        }
        ServerEvent::Presence { room, members, .. } => {
            if conn.rooms.borrow().get(room.as_ref()) != Some(&SubState::Active) {
                return None;
            }
            let channel = channel_of(&room)?;
            let data = p::presence_data(
                members
                    .iter()
                    .filter_map(|m| Some((m.user.clone()?, m.info.as_deref()))),
            );
            p::subscription_succeeded(&channel, &data)
        }
        ServerEvent::Msg { room, data, .. } => {
            let channel = channel_of(&room)?;
            let (frame, exclude) = event_frame(&channel, data.get().as_bytes())?;
            let me = conn.pusher.borrow();
            if exclude.is_some() && exclude.as_deref() == me.as_ref().map(|s| s.socket_id.as_str())
            {
                return None;
            }
            return Some(frame);
        }
        ev @ (ServerEvent::Event { .. } | ServerEvent::Join { .. } | ServerEvent::Leave { .. }) => {
            live_event(ev)?
        }
        ServerEvent::Error { code, reason, .. } => p::error(
            p::PusherCode::GENERIC_RECONNECT,
            &format!("{}: {reason}", code.as_str()),
        ),
        _ => return None,
    };
    Some(text(out))
}
