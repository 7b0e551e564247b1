//! The engine's events as Pusher frames. A Pusher connection is an ordinary subscriber: room
//! messages, ephemeral events, joins and leaves reach it as the same frames every connection
//! gets, and are translated here (room messages once per shard, in `LocalRooms::deliver`).

use bytes::Bytes;
use proto_codec::protocol::ServerEvent;
use proto_codec::pusher::{self as p, ChannelKind, StoredEvent};
use proto_codec::ws::{encode_frame, OpCode};
use serde_json::value::RawValue;

use crate::connection::shared::{ConnShared, SubState};

fn text(frame: String) -> Bytes {
    encode_frame(OpCode::Text, false, frame.as_bytes())
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
    let data = std::str::from_utf8(data).ok()?;
    let raw = RawValue::from_string(serde_json::to_string(data).ok()?).ok()?;
    let frame = StoredEvent {
        event: "ringcast:message".into(),
        channel: channel.into(),
        data: &raw,
        user_id: None,
        socket_id: None,
    }
    .to_frame();
    Some((text(frame), None))
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
        ServerEvent::Error { code, reason, .. } => {
            p::error(4200, &format!("{}: {reason}", code.as_str()))
        }
        _ => return None,
    };
    Some(text(out))
}
