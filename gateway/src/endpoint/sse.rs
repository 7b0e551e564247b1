//! `GET /sse`: a Server-Sent Events stream of rooms (docs/protocol.md §18). Its request is
//! checked in `http::public::stream_request` (every room before any is subscribed); the stream
//! head is written there, and the rooms are subscribed here once the stream is registered.

use std::rc::Rc;

use super::Endpoint;
use crate::connection::shared::ConnShared;
use crate::endpoint::profile::{Heartbeat, Profile};
use crate::form::Form;
use crate::http::public::StreamRoom;
use crate::shard::ShardCtx;

/// An event stream and the rooms it subscribes to when it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sse {
    /// The rooms, in request order, with their resume positions.
    pub rooms: Vec<StreamRoom>,
}

impl Endpoint for Sse {
    fn profile(&self) -> Profile {
        Profile {
            heartbeat: Heartbeat::Comment,
            stream: true,
            ..Profile::websocket(Form::Sse)
        }
    }

    fn says_hello(&self) -> bool {
        true
    }

    fn start(&mut self, ctx: &Rc<ShardCtx>, conn: &Rc<ConnShared>) {
        for (room, since) in std::mem::take(&mut self.rooms) {
            let presence = ctx
                .namespaces
                .of(&room)
                .ok()
                .and_then(|ns| ns.policy.presence.then_some(ns.policy.join_leave));
            ctx.subscribe(conn, None, &room, since, presence);
        }
    }
}
