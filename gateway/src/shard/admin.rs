//! Server API queries (from the admin thread): latency histograms, members, history, rooms,
//! and disconnecting a user.

use std::time::Instant;

use crate::connection::shared::CloseRequest;
use crate::mailbox::AdminQuery;

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
