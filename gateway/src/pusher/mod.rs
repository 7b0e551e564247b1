//! Pusher Channels protocol compatibility (docs/pusher.md): pusher-js and the Pusher server
//! libraries talk to ringcast unchanged. A Pusher channel is a room of the `pusher` namespace
//! (`proto_codec::pusher::room_of`), so subscriptions, fan-out, presence and ephemeral events
//! are the engine's own; this module only speaks the protocol: signatures ([`auth`]), the
//! client's frames ([`conn`]), the translation of the engine's events into Pusher frames
//! ([`wire`]) and the HTTP API ([`api`]).

pub mod api;
pub mod auth;
pub mod conn;
pub mod webhooks;
pub mod wire;

use std::collections::HashMap;

use broker_bridge::RoomName;

use crate::config::{Config, PusherApp};
use crate::ids::{ConnId, ShardId};

/// A Pusher connection's state.
#[derive(Debug, Clone)]
pub struct PusherConn {
    /// The app's index in `pusher.apps`.
    pub app: usize,
    /// The socket id given in `connection_established`.
    pub socket_id: String,
    /// The signed-in user (`pusher:signin`).
    pub user: Option<String>,
    /// The user id of each presence channel joined (for client events' `user_id`).
    pub presence_users: HashMap<RoomName, String>,
}

/// The app with this key.
pub fn app_by_key<'c>(config: &'c Config, key: &str) -> Option<(usize, &'c PusherApp)> {
    config
        .pusher
        .apps
        .iter()
        .enumerate()
        .find(|(_, a)| a.key == key)
}

/// The app with this id.
pub fn app_by_id<'c>(config: &'c Config, id: &str) -> Option<&'c PusherApp> {
    config.pusher.apps.iter().find(|a| a.id == id)
}

/// A connection's socket id, in the `digits.digits` form Pusher clients expect: 15 random
/// digits from the operating system's CSPRNG, then the shard and connection (unique on the
/// node). Channel-auth signatures sign the socket id: one that leaked must not become valid
/// again for another connection, as with sequential ids after a restart (issue 19).
pub fn socket_id(shard: ShardId, conn: ConnId) -> String {
    let mut random = [0u8; 8];
    // The kernel's CSPRNG; if it ever fails, the clock's nanoseconds still make the id hard to
    // guess (and the shard and connection keep it unique).
    if getrandom::getrandom(&mut random).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        random = nanos.to_le_bytes();
    }
    let random = u64::from_le_bytes(random) % 1_000_000_000_000_000;
    format!("{random}.{}", (shard as u64) << 40 | conn)
}

/// The room a signed-in user's server events go to (`#server-to-user-<id>` on the API side).
/// `+` is a room character no Pusher channel has, so no client can subscribe to it.
pub fn user_room(app: &str, user: &str) -> Option<String> {
    let escaped = proto_codec::pusher::room_of(app, user)?;
    let room = escaped.replacen('/', "/+user/", 1);
    (room.len() <= proto_codec::protocol::room::MAX_ROOM_BYTES).then_some(room)
}

/// The channel name the server libraries use for a user's events.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// The Pusher channel of a room (a signed-in user's room is `#server-to-user-<id>`).
pub fn channel_name(room: &str) -> Option<String> {
    let (_, channel) = proto_codec::pusher::channel_of(room)?;
    Some(match channel.strip_prefix("+user/") {
        Some(user) => format!("{USER_CHANNEL_PREFIX}{user}"),
        None => channel,
    })
}
