//! Server API queries (from the admin thread): latency histograms, members, history, rooms,
//! the admin page's overview, and disconnecting a user.

use std::cmp::Ordering;
use std::time::Instant;

use crate::connection::shared::CloseRequest;
use crate::mailbox::{AdminQuery, RoomActivity, ShardOverview};
use crate::rooms::home::Interest;

use super::home::Answer;
use super::{ShardCtx, RAW_ROOM_PREFIX};

impl ShardCtx {
    pub(super) fn admin_query(&self, query: AdminQuery) {
        match query {
            AdminQuery::Slo { reply } => {
                let _ = reply.send(self.slo.borrow_mut().snapshot(Instant::now()));
            }
            AdminQuery::Presence { room, reply } => self.home_members(room, Answer::Api(reply)),
            AdminQuery::History {
                room,
                since,
                limit,
                reply,
            } => self.home_history(room, Answer::Api(reply), since, limit),
            AdminQuery::Rooms { reply } => {
                let rooms = self
                    .home
                    .borrow()
                    .iter()
                    .filter(|(room, _)| !room.starts_with(RAW_ROOM_PREFIX))
                    .map(|(room, interest)| (room.clone(), u64::from(interest.total())))
                    .collect();
                let _ = reply.send(rooms);
            }
            AdminQuery::Overview { top, reply } => {
                let _ = reply.send(self.overview(top));
            }
            AdminQuery::Disconnect { user, reply } => {
                let mut closed = 0;
                for conn in self.conns.borrow().values() {
                    if conn.principal.borrow().user.as_deref() == Some(user.as_str()) {
                        conn.request_close(CloseRequest {
                            code: proto_codec::protocol::codes::close::FORBIDDEN,
                            reason: "disconnected by the server".into(),
                            discard_queue: false,
                        });
                        closed += 1;
                    }
                }
                let _ = reply.send(closed);
            }
        }
    }
}

impl ShardCtx {
    /// This shard's part of the admin page: connections per transport, its `top` busiest rooms
    /// (rolling their rates first), its latency histograms. Walks its connections and rooms
    /// once: a query, off the message path.
    fn overview(&self, top: usize) -> ShardOverview {
        let now = Instant::now();
        let mut connections = [0u64; crate::form::Form::ALL.len()];
        for conn in self.conns.borrow().values() {
            connections[conn.profile.form.index()] += 1;
        }
        let mut home = self.home.borrow_mut();
        home.roll_rates(now);
        let mut rooms: Vec<(&broker_bridge::RoomName, &Interest)> = home
            .iter()
            .filter(|(room, _)| !room.starts_with(RAW_ROOM_PREFIX))
            .collect();
        let count = rooms.len();
        let busier = |a: &(&broker_bridge::RoomName, &Interest),
                      b: &(&broker_bridge::RoomName, &Interest)| {
            b.1.rate_per_s
                .partial_cmp(&a.1.rate_per_s)
                .unwrap_or(Ordering::Equal)
                .then(b.1.total().cmp(&a.1.total()))
                .then(a.0.cmp(b.0))
        };
        if top < rooms.len() {
            rooms.select_nth_unstable_by(top, busier);
            rooms.truncate(top);
        }
        rooms.sort_unstable_by(busier);
        let busiest = rooms
            .into_iter()
            .map(|(room, interest)| RoomActivity {
                room: room.clone(),
                subscribers: u64::from(interest.total()),
                messages: interest.messages,
                rate_per_s: interest.rate_per_s,
            })
            .collect();
        drop(home);
        ShardOverview {
            connections,
            rooms: count,
            busiest,
            slo: self.slo.borrow_mut().snapshot(now),
        }
    }
}
