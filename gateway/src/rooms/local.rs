//! This shard's subscribers per room. Delivery walks the list and pushes the same `Bytes` to
//! each connection: no allocation, no copy per subscriber.

use std::collections::HashMap;
use std::rc::Rc;

use broker_bridge::RoomName;
use bytes::Bytes;

use crate::connection::outbox::RoomMsg;
use crate::connection::shared::{ConnKind, ConnShared};
use crate::mailbox::ConnId;

/// A room message as an SSE event, its id the position `<room>|<epoch>:<offset>`.
fn sse_form(frame: &Bytes, msg: &RoomMsg) -> Option<Bytes> {
    let id = format!("{}|{}:{}", msg.room, msg.epoch, msg.offset);
    proto_codec::sse::event_from_ws_frame(frame, Some(&id)).map(Bytes::from)
}

/// A room message as a y-protocols sync `update` (a collaborative room's binary message).
fn yjs_form(frame: &Bytes) -> Option<Bytes> {
    let payload = proto_codec::sse::payload_of(frame, 0x82)?;
    let msg = proto_codec::protocol::decode_binary_msg(payload).ok()?;
    Some(crate::rooms::crdt::update_frame(msg.data))
}

/// Subscribers of one room on this shard.
#[derive(Debug, Default)]
struct LocalRoom {
    subscribers: Vec<Rc<ConnShared>>,
}

/// Every room with subscribers on this shard.
#[derive(Debug, Default)]
pub struct LocalRooms {
    rooms: HashMap<RoomName, LocalRoom>,
}

impl LocalRooms {
    /// Adds a subscriber.
    pub fn add(&mut self, room: &RoomName, conn: Rc<ConnShared>) {
        self.rooms
            .entry(room.clone())
            .or_default()
            .subscribers
            .push(conn);
    }

    /// Removes a subscriber; returns whether it was there.
    pub fn remove(&mut self, room: &str, conn: ConnId) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(at) = r.subscribers.iter().position(|c| c.id == conn) else {
            return false;
        };
        r.subscribers.swap_remove(at);
        if r.subscribers.is_empty() {
            self.rooms.remove(room);
        }
        true
    }

    /// Queues a room message to every local subscriber; returns how many got it.
    pub fn deliver(
        &self,
        room: &str,
        frame: &Bytes,
        deflated: Option<&Bytes>,
        msg: &Rc<RoomMsg>,
    ) -> usize {
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        // The SSE and y-protocols forms, each encoded once for every connection of its kind on
        // this shard (not at all without one).
        let mut sse: Option<Option<Bytes>> = None;
        let mut yjs: Option<Option<Bytes>> = None;
        let mut pusher: Option<Option<(Bytes, Option<String>)>> = None;
        for conn in &r.subscribers {
            let f = match deflated {
                Some(d) if conn.takes_shared_deflate => d,
                _ if conn.kind == ConnKind::Pusher => {
                    match pusher.get_or_insert_with(|| crate::pusher::wire::room_message(frame)) {
                        Some((f, exclude)) => {
                            // The server API's `socket_id`: every subscriber but that one.
                            if exclude.is_some()
                                && conn.pusher.borrow().as_ref().map(|s| &s.socket_id)
                                    == exclude.as_ref()
                            {
                                continue;
                            }
                            f
                        }
                        None => continue,
                    }
                }
                _ if conn.kind == ConnKind::Sse => {
                    match sse.get_or_insert_with(|| sse_form(frame, msg)) {
                        Some(f) => f,
                        None => continue,
                    }
                }
                _ if conn.kind == ConnKind::Yjs => {
                    match yjs.get_or_insert_with(|| yjs_form(frame)) {
                        Some(f) => f,
                        None => continue,
                    }
                }
                _ => frame,
            };
            if conn.push_room(f.clone(), msg) {
                delivered += 1;
            }
        }
        delivered
    }

    /// Queues a live frame to every local subscriber but `except`; returns how many got it.
    /// App events (`event`, `join`, `leave`, `gap`; text frames) go to app connections, and
    /// y-protocols awareness messages (binary frames) to y-websocket connections. A `gap` closes
    /// a y-websocket connection instead: its client reconnects and syncs what it missed.
    pub fn deliver_live(&self, room: &str, frame: &Bytes, except: Option<ConnId>) -> usize {
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let binary = frame.first() == Some(&0x82);
        // The Pusher form, built once for every Pusher connection on this shard.
        let mut pusher: Option<Option<Bytes>> = None;
        let mut delivered = 0;
        for conn in &r.subscribers {
            if Some(conn.id) == except {
                continue;
            }
            if conn.kind == ConnKind::Pusher {
                let form = pusher.get_or_insert_with(|| crate::pusher::wire::live_frame(frame));
                if let Some(f) = form {
                    if conn.push_live(f.clone()) {
                        delivered += 1;
                    }
                }
                continue;
            }
            if (conn.kind == ConnKind::Yjs) != binary {
                if conn.kind == ConnKind::Yjs
                    && proto_codec::sse::payload_of(frame, 0x81)
                        .is_some_and(|p| p.starts_with(br#"{"ev":"gap""#))
                {
                    conn.request_close(crate::connection::shared::CloseRequest {
                        code: proto_codec::ws::CloseCode::TRY_AGAIN_LATER,
                        reason: "updates were lost on the way; reconnect to sync".into(),
                        discard_queue: false,
                    });
                }
                continue;
            }
            if conn.push_live(frame.clone()) {
                delivered += 1;
            }
        }
        delivered
    }

    /// Subscribers of a room on this shard.
    pub fn subscriber_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.subscribers.len())
    }

    /// Rooms with local subscribers.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room has local subscribers.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}
