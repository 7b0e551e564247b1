//! Room kinds: what a kind of room adds to the home side's handling of it, behind one
//! interface ([`Kind`]). A plain room is all defaults; a collaborative room (`kind = "crdt"`)
//! keeps a document (`crdt.rs`); a Pusher channel counts presence per user and sends the app's
//! webhooks; the benchmark's raw broadcast sends its data as it is, outside any namespace. The
//! home side asks [`ShardCtx::kind_of`] and calls the hooks: it never tests which kind a room
//! is. A new kind is one more implementation here and one more line in `kind_of`.

use std::time::Instant;

use broker_bridge::{Appended, RoomName};
use bytes::Bytes;
use proto_codec::protocol::room_message_frame;
use proto_codec::ws::{OpCode, ServerFrame};

use super::{ShardCtx, RAW_ROOM_PREFIX};
use crate::ids::{ConnId, ShardId};
use crate::mailbox::PublishOrigin;
use crate::outgoing::Source;

/// A subscriber: its shard and connection.
pub(super) type Who = (ShardId, ConnId);

/// What a kind made of a publish before it is stored.
pub(super) enum Admit {
    /// Store it (and fan it out); `merged`: the kind already took it in (a collaborative
    /// room's update merged into its document).
    Store {
        /// The data to store.
        data: Bytes,
        /// Who gets the answer.
        origin: PublishOrigin,
        /// Already merged by the kind.
        merged: bool,
    },
    /// The kind took it: it waits (a document still loading) or was answered (refused).
    Taken,
}

/// What a kind of room adds to the home side. Every hook defaults to nothing.
pub(super) trait Kind: Sync {
    /// A subscription reached the room's home; `first`: the room's first on this node.
    fn on_interest(&self, _ctx: &ShardCtx, _room: &RoomName, _first: bool) {}

    /// A subscription waits for the broker's answer (its position in the room's order).
    fn on_pending(&self, _ctx: &ShardCtx, _room: &RoomName, _who: Who) {}

    /// A subscription was answered (its answer is on its way to the subscriber's shard).
    fn on_answered(&self, _ctx: &ShardCtx, _room: &RoomName, _who: Who, _ok: bool) {}

    /// A subscriber left; `last`: the room's last on this node.
    fn on_left(&self, _ctx: &ShardCtx, _room: &RoomName, _who: Who, _last: bool) {}

    /// Whether presence counts users, not connections: a user's second connection is no new
    /// member, and its member leaves with its last connection.
    fn presence_per_user(&self) -> bool {
        false
    }

    /// A member joined (`joined`) or left the room's presence (counted per user where
    /// [`Kind::presence_per_user`]).
    fn on_member(&self, _ctx: &ShardCtx, _room: &RoomName, _user: Option<&str>, _joined: bool) {}

    /// The data a path (`source`) may put into a room of this kind as a message: what is
    /// stored (a rule between two protocols: `PusherChannel`).
    fn message_from(&self, _room: &RoomName, data: Bytes, _source: Source) -> Bytes {
        data
    }

    /// The data a path may relay as a live event here (`None`: it has no form in the room).
    fn event_from(&self, _room: &RoomName, data: Bytes, _source: Source) -> Option<Bytes> {
        Some(data)
    }

    /// A publish, before it is stored.
    fn on_publish(
        &self,
        _ctx: &ShardCtx,
        _room: &RoomName,
        data: Bytes,
        origin: PublishOrigin,
    ) -> Admit {
        Admit::Store {
            data,
            origin,
            merged: false,
        }
    }

    /// A message was stored (this node's, or another node's that arrived); `merged` as
    /// [`Admit::Store`] said.
    fn on_appended(&self, _ctx: &ShardCtx, _m: &Appended, _merged: bool) {}

    /// The shared WebSocket frame of a stored message.
    fn frame(&self, m: &Appended) -> ServerFrame {
        room_message_frame(&m.room, &m.epoch, m.offset, &m.data)
    }

    /// Whether its rooms belong to a namespace (its policy: history, conflation, SLOs).
    fn namespaced(&self) -> bool {
        true
    }

    /// Time-driven work for every room of the kind (the shard's sweep).
    fn on_sweep(&self, _ctx: &ShardCtx, _now: Instant) {}
}

/// A room of an ordinary namespace.
pub(super) struct Plain;

impl Kind for Plain {}

/// A collaborative room: a document merged on its home shard (`crdt.rs`).
pub(super) struct Crdt;

impl Kind for Crdt {
    fn on_interest(&self, ctx: &ShardCtx, room: &RoomName, _first: bool) {
        // Its document is loaded while the room has interest here.
        ctx.crdt_open(room);
    }

    fn on_pending(&self, ctx: &ShardCtx, room: &RoomName, who: Who) {
        ctx.crdt_subscribing(room, who);
    }

    fn on_answered(&self, ctx: &ShardCtx, room: &RoomName, who: Who, ok: bool) {
        ctx.crdt_subscribed(room, who, ok);
    }

    fn on_left(&self, ctx: &ShardCtx, room: &RoomName, who: Who, last: bool) {
        ctx.crdt_left(room, who, last);
    }

    fn on_publish(
        &self,
        ctx: &ShardCtx,
        room: &RoomName,
        data: Bytes,
        origin: PublishOrigin,
    ) -> Admit {
        ctx.crdt_admit(room, data, origin)
    }

    fn on_appended(&self, ctx: &ShardCtx, m: &Appended, merged: bool) {
        ctx.crdt_appended(m, merged);
    }

    fn on_sweep(&self, ctx: &ShardCtx, now: Instant) {
        ctx.crdt_sweep(now);
    }
}

/// A Pusher channel's room (`pusher.<app>/<channel>`): presence per user, and the app's
/// webhooks (`channel_occupied`/`channel_vacated`, `member_added`/`member_removed`).
pub(super) struct PusherChannel;

impl Kind for PusherChannel {
    fn on_interest(&self, ctx: &ShardCtx, room: &RoomName, first: bool) {
        if first {
            ctx.pusher_webhook(room, "channel_occupied", None);
        }
    }

    fn on_left(&self, ctx: &ShardCtx, room: &RoomName, _who: Who, last: bool) {
        if last {
            ctx.pusher_webhook(room, "channel_vacated", None);
        }
    }

    fn presence_per_user(&self) -> bool {
        true
    }

    // A Pusher room holds only what the Pusher paths made: a native message or event there is
    // the Pusher event `ringcast:message` (docs/security.md, "Rooms two protocols reach").
    fn message_from(&self, room: &RoomName, data: Bytes, source: Source) -> Bytes {
        match source {
            Source::Pusher => data,
            _ => crate::pusher::wire::wrap_native_message(room, data),
        }
    }

    fn event_from(&self, room: &RoomName, data: Bytes, source: Source) -> Option<Bytes> {
        match source {
            Source::Pusher => Some(data),
            _ => crate::pusher::wire::wrap_native_event(room, &data),
        }
    }

    fn on_member(&self, ctx: &ShardCtx, room: &RoomName, user: Option<&str>, joined: bool) {
        let name = if joined {
            "member_added"
        } else {
            "member_removed"
        };
        ctx.pusher_webhook(room, name, user);
    }
}

/// The benchmark's raw broadcast (`/raw/<room>`): the published text is the frame's payload,
/// and the room has no namespace.
pub(super) struct Raw;

impl Kind for Raw {
    fn frame(&self, m: &Appended) -> ServerFrame {
        ServerFrame::encode(OpCode::Text, &m.data)
    }

    fn namespaced(&self) -> bool {
        false
    }
}

/// Every kind, for the hooks that concern all rooms of a kind ([`Kind::on_sweep`]).
pub(super) const KINDS: [&dyn Kind; 4] = [&Plain, &Crdt, &PusherChannel, &Raw];

impl ShardCtx {
    /// The kind of a room.
    pub(super) fn kind_of(&self, room: &str) -> &'static dyn Kind {
        if room.starts_with(RAW_ROOM_PREFIX) {
            return &Raw;
        }
        if proto_codec::protocol::namespace_of(room) == proto_codec::pusher::NAMESPACE {
            return &PusherChannel;
        }
        match self.namespaces.of(room) {
            Ok(ns) if ns.policy.kind == crate::config::RoomKind::Crdt => &Crdt,
            _ => &Plain,
        }
    }
}
