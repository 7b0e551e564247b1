//! The engine's values as Pusher frames, and the one rule of a room two protocols reach. Pure
//! functions of the values (`outgoing` calls them to build a Pusher client's forms, once per
//! shard for room messages and live events; `shard::kinds::PusherChannel` applies the rule).

use bytes::Bytes;
use proto_codec::protocol::{Member, ServerEvent};
use proto_codec::pusher::{self as p, ChannelKind, StoredEvent};
use proto_codec::ws::{encode_frame, OpCode};
use serde_json::value::RawValue;

fn text(frame: String) -> Bytes {
    encode_frame(OpCode::Text, false, frame.as_bytes())
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

/// A native message's data in a Pusher room, by the one rule of a room two protocols reach: a
/// Pusher room holds only events the Pusher paths made, so a native message there is stored as
/// the Pusher event `ringcast:message` (issue 19, finding 3: a native message shaped like a
/// Pusher event was delivered as one). Binary messages (no Pusher form) pass unchanged.
pub fn wrap_native_message(room: &str, data: Bytes) -> Bytes {
    if proto_codec::protocol::binary_payload(&data).is_some() {
        return data;
    }
    match super::channel_name(room).and_then(|c| native_event(&c, &data)) {
        Some(wrapped) => Bytes::from(wrapped),
        None => data,
    }
}

/// A native live event's data in a Pusher room, by the same rule: the Pusher event
/// `ringcast:message` (`None`: it cannot be wrapped).
pub fn wrap_native_event(room: &str, data: &[u8]) -> Option<Bytes> {
    native_event(&super::channel_name(room)?, data).map(Bytes::from)
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

/// The Pusher form of a room message: `None` outside a Pusher channel's room and for binary
/// messages (no Pusher form).
pub fn room_message(room: &str, data: &[u8]) -> Option<(Bytes, Option<String>)> {
    if proto_codec::protocol::binary_payload(data).is_some() {
        return None;
    }
    event_frame(&super::channel_name(room)?, data)
}

/// The Pusher frame of an ephemeral event's data: in a Pusher room it is a Pusher event (the
/// rule above).
pub fn live_event(data: &[u8]) -> Option<Bytes> {
    Some(text(
        serde_json::from_slice::<StoredEvent>(data).ok()?.to_frame(),
    ))
}

/// The `member_added` frame of a member joining a Pusher presence channel.
pub fn member_added(room: &str, member: &Member) -> Option<Bytes> {
    Some(text(p::member_added(
        &super::channel_name(room)?,
        member.user.as_deref()?,
        member.info.as_deref(),
    )))
}

/// The `member_removed` frame of a member leaving a Pusher presence channel.
pub fn member_removed(room: &str, member: &Member) -> Option<Bytes> {
    Some(text(p::member_removed(
        &super::channel_name(room)?,
        member.user.as_deref()?,
    )))
}

/// The Pusher frame of an app-protocol answer to a Pusher connection: a subscription's
/// success (a presence channel's comes with its members, the `presence` answer, sent only while
/// the connection's subscription is `active` in that room), or an error; the rest (`hello`,
/// acks, `unsubscribed`, …) has no Pusher form.
pub fn event(event: &ServerEvent<'_>, active: &dyn Fn(&str) -> bool) -> Option<Bytes> {
    let out = match event {
        ServerEvent::Subscribed { room, .. } => {
            let channel = super::channel_name(room)?;
            if ChannelKind::of(&channel) == ChannelKind::Presence {
                return None;
            }
            p::subscription_succeeded(&channel, "{}")
        }
        ServerEvent::Presence { room, members, .. } => {
            if !active(room) {
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
