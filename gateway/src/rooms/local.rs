//! This shard's subscribers per room. Delivery walks the list and pushes the same `Bytes` to
//! each connection: no allocation, no copy per subscriber.

use std::collections::HashMap;
use std::rc::Rc;

use broker_bridge::RoomName;
use bytes::Bytes;

use crate::connection::outbox::RoomMsg;
use crate::connection::shared::{ConnShared, Delivery};
use crate::connection::write_list::WriteList;
use crate::ids::ConnId;
use crate::outgoing::{LiveForms, LiveMsg, Rendered, RoomForms};

/// Subscribers of one room on this shard.
#[derive(Debug, Default)]
struct LocalRoom {
    subscribers: Vec<Rc<ConnShared>>,
}

/// Counts a delivery (1 if queued) and lists a queue it started for the write pass.
fn queued(delivery: Delivery, conn: &Rc<ConnShared>, writes: &WriteList) -> usize {
    match delivery {
        Delivery::Refused => 0,
        Delivery::Queued => 1,
        Delivery::Started => {
            writes.started(conn);
            1
        }
    }
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

    /// Queues a room message to every local subscriber, each in its form (the shared frame
    /// `frame`, its compressed twin `deflated`, or a form built once here); the queues it starts
    /// go on `writes`. Returns how many got it.
    pub fn deliver(
        &self,
        frame: &Bytes,
        deflated: Option<&Bytes>,
        msg: &Rc<RoomMsg>,
        writes: &WriteList,
    ) -> usize {
        let Some(r) = self.rooms.get(msg.room.as_ref()) else {
            return 0;
        };
        let mut forms = RoomForms::new(msg.as_ref().into(), Some(frame.clone()), deflated);
        let mut delivered = 0;
        for conn in &r.subscribers {
            let Some(f) = forms.for_conn(conn) else {
                continue;
            };
            delivered += queued(conn.push_room(f.clone(), msg), conn, writes);
        }
        delivered
    }

    /// Queues a live event to every local subscriber of its room but `except`, each in its form
    /// ([`LiveForms::for_conn`]); the queues it starts go on `writes`. Returns how many got it.
    pub fn deliver_live(
        &self,
        live: &LiveMsg,
        except: Option<ConnId>,
        writes: &WriteList,
    ) -> usize {
        let Some(r) = self.rooms.get(live.room.as_ref()) else {
            return 0;
        };
        let mut forms = LiveForms::new(live);
        let mut delivered = 0;
        for conn in &r.subscribers {
            if Some(conn.id) == except {
                continue;
            }
            match forms.for_conn(conn) {
                Rendered::Send(f) => delivered += queued(conn.push_live(f), conn, writes),
                Rendered::Skip => {}
                Rendered::Close(close) => conn.request_close(close),
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
