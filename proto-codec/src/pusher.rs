//! The Pusher Channels protocol, version 7 (sans-I/O): channel names and their mapping onto
//! ringcast rooms, the client's frames, and the server's frames.
//!
//! Every frame is one JSON object `{"event": …, "channel": …, "data": …}`. The server sends
//! `data` as a JSON-encoded string (pusher-js parses it); clients send `data` as an object for
//! `pusher:*` events and as anything for `client-*` events.
//!
//! A channel `C` of app `A` is the room `pusher.A/C`, with `,` written `:c` and `;` written `:s`
//! (room names have neither; Pusher channel names have no `:`), so every app's channels are
//! rooms of the namespace `pusher`, and the mapping is one-to-one.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::room::MAX_ROOM_BYTES;

/// The namespace of Pusher rooms.
pub const NAMESPACE: &str = "pusher";
/// The longest channel name Pusher allows.
pub const MAX_CHANNEL_BYTES: usize = 164;

/// A Pusher protocol error code: the `code` of a `pusher:error` and the close code on a Pusher
/// connection (the Pusher Channels protocol, "Error codes"). Its own type, because these are
/// Pusher's numbers and some mean something else among ringcast's close codes (4004 is "over
/// connection quota" here and `bad_request` in `protocol::codes::close`): one cannot be passed
/// where the other is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PusherCode(pub u16);

impl PusherCode {
    /// 4001: the app key is not known ("Application does not exist").
    pub const APP_NOT_FOUND: PusherCode = PusherCode(4001);
    /// 4004: the app is at its connection limit ("Application is over connection quota").
    pub const OVER_CONNECTION_QUOTA: PusherCode = PusherCode(4004);
    /// 4006: the `protocol` query parameter is not a number.
    pub const INVALID_VERSION_FORMAT: PusherCode = PusherCode(4006);
    /// 4007: a protocol version this server does not speak.
    pub const UNSUPPORTED_PROTOCOL_VERSION: PusherCode = PusherCode(4007);
    /// 4008: no `protocol` query parameter.
    pub const NO_PROTOCOL_VERSION: PusherCode = PusherCode(4008);
    /// 4009: the connection is not authorized (a bad `pusher:signin`, or terminated by the
    /// server API); pusher-js does not reconnect on 4000–4099.
    pub const UNAUTHORIZED: PusherCode = PusherCode(4009);
    /// 4200: a generic error the client may reconnect after at once (used for malformed frames,
    /// answered without closing).
    pub const GENERIC_RECONNECT: PusherCode = PusherCode(4200);
    /// 4301: a client event refused (rate limit, size, or not allowed on the channel).
    pub const CLIENT_EVENT_REJECTED: PusherCode = PusherCode(4301);

    /// The WebSocket close code that carries it.
    pub fn close_code(self) -> crate::ws::CloseCode {
        crate::ws::CloseCode(self.0)
    }
}

/// What a channel's name makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Anyone may subscribe.
    Public,
    /// `private-`: subscribing needs an auth signature.
    Private,
    /// `private-encrypted-`: as private; the payloads are end-to-end encrypted by the clients.
    PrivateEncrypted,
    /// `presence-`: as private, with members (`channel_data`).
    Presence,
}

impl ChannelKind {
    /// The kind of a channel name.
    pub fn of(channel: &str) -> ChannelKind {
        if channel.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if channel.starts_with("private-") {
            ChannelKind::Private
        } else if channel.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// Whether subscribing needs a signature.
    pub fn needs_auth(self) -> bool {
        self != ChannelKind::Public
    }
}

/// Whether a channel name is valid: 1 to 164 of `A-Za-z0-9_-=@,.;`.
pub fn valid_channel(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_BYTES
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

/// The room of an app's channel; `None` for an invalid channel or one whose room would be too
/// long.
pub fn room_of(app: &str, channel: &str) -> Option<String> {
    if !valid_channel(channel) {
        return None;
    }
    let mut room = String::with_capacity(NAMESPACE.len() + 2 + app.len() + channel.len() + 8);
    room.push_str(NAMESPACE);
    room.push('.');
    room.push_str(app);
    room.push('/');
    for c in channel.chars() {
        match c {
            ',' => room.push_str(":c"),
            ';' => room.push_str(":s"),
            c => room.push(c),
        }
    }
    (room.len() <= MAX_ROOM_BYTES).then_some(room)
}

/// The app and channel of a Pusher room.
pub fn channel_of(room: &str) -> Option<(&str, String)> {
    let rest = room.strip_prefix(NAMESPACE)?.strip_prefix('.')?;
    let (app, escaped) = rest.split_once('/')?;
    let mut channel = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == ':' {
            match chars.next()? {
                'c' => channel.push(','),
                's' => channel.push(';'),
                _ => return None,
            }
        } else {
            channel.push(c);
        }
    }
    Some((app, channel))
}

/// A frame from a client.
#[derive(Debug, Deserialize)]
pub struct ClientFrame<'a> {
    /// The event name.
    #[serde(borrow)]
    pub event: std::borrow::Cow<'a, str>,
    /// The channel (client events).
    #[serde(default, borrow)]
    pub channel: Option<std::borrow::Cow<'a, str>>,
    /// The payload.
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

/// The data of `pusher:subscribe`.
#[derive(Debug, Deserialize)]
pub struct Subscribe {
    /// The channel.
    pub channel: String,
    /// `<key>:<hex signature>` for private, encrypted and presence channels.
    #[serde(default)]
    pub auth: Option<String>,
    /// Presence: the member's JSON (`{"user_id": …, "user_info": …}`) as a string.
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// The data of `pusher:unsubscribe`.
#[derive(Debug, Deserialize)]
pub struct Unsubscribe {
    /// The channel.
    pub channel: String,
}

/// The data of `pusher:signin`.
#[derive(Debug, Deserialize)]
pub struct Signin {
    /// `<key>:<hex signature>` of `<socket_id>::user::<user_data>`.
    pub auth: String,
    /// The user's JSON (with `id`) as a string.
    pub user_data: String,
}

/// A presence member's `channel_data`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ChannelData {
    /// The user id (a string or a number in the JSON; kept as its text).
    pub user_id: serde_json::Value,
    /// Public user info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<Box<RawValue>>,
}

impl ChannelData {
    /// The user id as text (numbers as written).
    pub fn user_id(&self) -> Option<String> {
        match &self.user_id {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

fn frame(event: &str, channel: Option<&str>, data: &str) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        data: &'a str,
    }
    serde_json::to_string(&Frame {
        event,
        channel,
        data,
    })
    .unwrap_or_default()
}

/// `pusher:connection_established`.
pub fn connection_established(socket_id: &str, activity_timeout_s: u64) -> String {
    let data = serde_json::json!({"socket_id": socket_id, "activity_timeout": activity_timeout_s});
    frame("pusher:connection_established", None, &data.to_string())
}

/// `pusher:pong` (and `pusher:ping`, with `event` "pusher:ping").
pub fn ping_pong(event: &str) -> String {
    format!("{{\"event\":\"{event}\",\"data\":{{}}}}")
}

/// `pusher:error`.
pub fn error(code: PusherCode, message: &str) -> String {
    serde_json::json!({"event": "pusher:error", "data": {"code": code.0, "message": message}})
        .to_string()
}

/// `pusher:subscription_error` (pusher-js reports `status` to the app).
pub fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> String {
    serde_json::json!({
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": {"type": kind, "error": message, "status": status}
    })
    .to_string()
}

/// `pusher_internal:subscription_succeeded` with `data` (a JSON text).
pub fn subscription_succeeded(channel: &str, data: &str) -> String {
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        data,
    )
}

/// The presence data of `subscription_succeeded`: `{"presence": {ids, hash, count}}`, one entry
/// per user (a user with several connections counts once).
pub fn presence_data<'a>(
    members: impl IntoIterator<Item = (String, Option<&'a RawValue>)>,
) -> String {
    let mut ids: Vec<String> = Vec::new();
    let mut hash = serde_json::Map::new();
    for (id, info) in members {
        if hash.contains_key(&id) {
            continue;
        }
        let info = info
            .and_then(|i| serde_json::from_str(i.get()).ok())
            .unwrap_or(serde_json::Value::Null);
        hash.insert(id.clone(), info);
        ids.push(id);
    }
    serde_json::json!({"presence": {"count": ids.len(), "ids": ids, "hash": hash}}).to_string()
}

/// `pusher_internal:member_added`.
pub fn member_added(channel: &str, user_id: &str, user_info: Option<&RawValue>) -> String {
    let info = user_info
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i.get()).ok())
        .unwrap_or(serde_json::Value::Null);
    let data = serde_json::json!({"user_id": user_id, "user_info": info});
    frame(
        "pusher_internal:member_added",
        Some(channel),
        &data.to_string(),
    )
}

/// `pusher_internal:member_removed`.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    let data = serde_json::json!({"user_id": user_id});
    frame(
        "pusher_internal:member_removed",
        Some(channel),
        &data.to_string(),
    )
}

/// `pusher:signin_success`.
pub fn signin_success(user_data: &str) -> String {
    serde_json::json!({"event": "pusher:signin_success", "data": {"user_data": user_data}})
        .to_string()
}

/// An app event as stored in the room (the frame subscribers get, plus the socket to leave
/// out): `{"event", "channel", "data"[, "socket_id"]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredEvent<'a> {
    /// The event name.
    #[serde(borrow)]
    pub event: std::borrow::Cow<'a, str>,
    /// The channel.
    #[serde(borrow)]
    pub channel: std::borrow::Cow<'a, str>,
    /// The payload: a string as the server API sent it, or what a client sent.
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// Client events on presence channels: the sender's user id.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<std::borrow::Cow<'a, str>>,
    /// The connection that must not get it (the server API's `socket_id`).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<std::borrow::Cow<'a, str>>,
}

impl StoredEvent<'_> {
    /// The frame a subscriber gets (without `socket_id`).
    pub fn to_frame(&self) -> String {
        #[derive(Serialize)]
        struct Out<'b> {
            event: &'b str,
            channel: &'b str,
            data: &'b RawValue,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_id: Option<&'b str>,
        }
        serde_json::to_string(&Out {
            event: &self.event,
            channel: &self.channel,
            data: self.data,
            user_id: self.user_id.as_deref(),
        })
        .unwrap_or_default()
    }
}

/// Whether `socket_id` has the form Pusher uses (`digits.digits`).
pub fn valid_socket_id(socket_id: &str) -> bool {
    socket_id.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn channels_map_to_rooms_and_back() {
        for c in [
            "my-channel",
            "private-a,b;c",
            "presence-room.1=x@y",
            "private-encrypted-z",
        ] {
            let room = room_of("123", c).unwrap();
            assert!(crate::protocol::validate_room(&room).is_ok(), "{room}");
            assert_eq!(crate::protocol::namespace_of(&room), NAMESPACE);
            assert_eq!(channel_of(&room), Some(("123", c.to_string())));
        }
        assert_eq!(room_of("1", "bad channel"), None);
        assert_eq!(room_of("1", ""), None);
        assert_eq!(room_of("1", &"x".repeat(165)), None);
        assert_eq!(
            room_of("1", &",".repeat(100)),
            None,
            "too long once escaped"
        );
        assert_eq!(channel_of("chat.x"), None);
        assert_eq!(channel_of("pusher.1/a:x"), None);
    }

    #[test]
    fn kinds_by_prefix() {
        assert_eq!(
            ChannelKind::of("private-encrypted-x"),
            ChannelKind::PrivateEncrypted
        );
        assert_eq!(ChannelKind::of("private-x"), ChannelKind::Private);
        assert_eq!(ChannelKind::of("presence-x"), ChannelKind::Presence);
        assert_eq!(ChannelKind::of("x"), ChannelKind::Public);
    }

    #[test]
    fn server_frames_carry_data_as_a_string() {
        let f: serde_json::Value =
            serde_json::from_str(&connection_established("1.2", 120)).unwrap();
        assert_eq!(f["event"], "pusher:connection_established");
        let d: serde_json::Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            (d["socket_id"].as_str(), d["activity_timeout"].as_u64()),
            (Some("1.2"), Some(120))
        );
        let info = RawValue::from_string("{\"name\":\"a\"}".into()).unwrap();
        let p = presence_data([
            ("u1".to_string(), Some(&*info)),
            ("u1".to_string(), Some(&*info)),
            ("u2".to_string(), None),
        ]);
        let p: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(p["presence"]["count"], 2);
        assert_eq!(p["presence"]["hash"]["u1"]["name"], "a");
        let stored = r#"{"event":"e","channel":"c","data":"{\"x\":1}","socket_id":"1.2"}"#;
        let s: StoredEvent = serde_json::from_str(stored).unwrap();
        assert_eq!(
            s.to_frame(),
            r#"{"event":"e","channel":"c","data":"{\"x\":1}"}"#
        );
        assert!(valid_socket_id("12.34") && !valid_socket_id("12.") && !valid_socket_id("a.1"));
    }

    proptest! {
        #[test]
        fn room_mapping_is_one_to_one(c in "[A-Za-z0-9_=@,.;-]{1,60}") {
            let room = room_of("7", &c).unwrap();
            prop_assert!(crate::protocol::validate_room(&room).is_ok());
            prop_assert_eq!(channel_of(&room), Some(("7", c.clone())));
        }
    }
}
