//! The local side: this shard's connections. Registration, the ops a connection makes
//! (subscribe and leave, events, presence and history questions, publishes: each sent to the
//! room's home shard), and what comes back (subscription answers, deliveries, answers, closes).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use broker_bridge::RoomName;
use bytes::Bytes;
use proto_codec::protocol::{ErrorCode, Member, ServerEvent};
use proto_codec::ws::CloseCode;

use crate::auth::Principal;
use crate::connection::outbox::RoomMsg;
use crate::connection::shared::{CloseRequest, ConnShared, SubState};
use crate::endpoint::profile::Profile;
use crate::ids::{ConnId, ShardId};
use crate::mailbox::{home_shard, DeliverMeta, PublishOrigin, ShardMsg, SubscribeReq};
use crate::outgoing::{error_event, Outgoing, Source};

use super::home::shard_busy;
use super::ShardCtx;

impl ShardCtx {
    /// Registers an upgraded connection.
    pub fn register_conn(
        &self,
        profile: Profile,
        takes_shared_deflate: bool,
        principal: Principal,
    ) -> Rc<ConnShared> {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let principal = if principal.is_anonymous() {
            self.anonymous.clone()
        } else {
            Rc::new(principal)
        };
        let over_user_limit = principal
            .user
            .as_deref()
            .is_some_and(|u| !self.admission.add_user(u));
        let conn = Rc::new(ConnShared::new(
            id,
            profile,
            takes_shared_deflate,
            self.config.websocket.outbound_high_water_bytes,
            self.now.get(),
            principal,
        ));
        if over_user_limit {
            // Closed after the upgrade so that browsers see the code (docs/protocol.md §5.4).
            // The count was not taken: clear the user so unregistering does not release one.
            *conn.principal.borrow_mut() = self.anonymous.clone();
            crate::metrics::limit_hit("connections_per_user");
            conn.request_close(CloseRequest {
                code: proto_codec::protocol::codes::close::TOO_MANY_CONNECTIONS,
                reason: "too many connections for this user".into(),
                discard_queue: false,
            });
        }
        if self.shutting_down.get() {
            conn.shutdown_close_at.set(Some(self.now.get()));
        }
        self.conns.borrow_mut().insert(id, conn.clone());
        self.global.connections.fetch_add(1, Ordering::SeqCst);
        self.metrics.connections.increment(1.0);
        self.metrics.connections_total.increment(1);
        conn
    }

    /// Forgets a connection and leaves its rooms.
    pub fn unregister_conn(&self, conn: &ConnShared) {
        if self.conns.borrow_mut().remove(&conn.id).is_some() {
            self.global.connections.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(app) = conn.pusher.borrow().as_ref().map(|s| s.app) {
            if let Some(n) = self.global.pusher_connections.get(app) {
                n.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.metrics.connections.decrement(1.0);
        if let Some(user) = conn.principal.borrow().user.as_deref() {
            self.admission.remove_user(user);
        }
        let rooms: Vec<(RoomName, SubState)> = conn.rooms.borrow_mut().drain().collect();
        for (room, state) in rooms {
            if state == SubState::Active {
                self.local.borrow_mut().remove(&room, conn.id);
            }
            self.leave_home(room, conn);
        }
    }

    /// A connection subscribes to a room. With `presence`, it becomes a member of the room
    /// (and its other subscribers get `join` when `join_leave`).
    pub fn subscribe(
        &self,
        conn: &Rc<ConnShared>,
        id: Option<u64>,
        room: &str,
        since: Option<(String, u64)>,
        presence: Option<bool>,
    ) {
        let member = presence.map(|_| self.member_of(conn));
        self.subscribe_with(conn, id, room, since, member, presence.unwrap_or(false));
    }

    /// A connection subscribes to a room as the given presence member (a Pusher presence
    /// channel's member comes from its signed `channel_data`, not from a token).
    pub fn subscribe_member(
        &self,
        conn: &Rc<ConnShared>,
        room: &str,
        member: Option<Member>,
        join_leave: bool,
    ) {
        self.subscribe_with(conn, None, room, None, member, join_leave);
    }

    pub(super) fn subscribe_with(
        &self,
        conn: &Rc<ConnShared>,
        id: Option<u64>,
        room: &str,
        since: Option<(String, u64)>,
        member: Option<Member>,
        join_leave: bool,
    ) {
        let error = |code, reason: &str| {
            self.metrics.op_errors.increment(1);
            conn.send(&error_event(id, code, reason));
        };
        let room: RoomName = room.into();
        {
            let rooms = conn.rooms.borrow();
            if rooms.contains_key(&room) {
                return error(
                    ErrorCode::AlreadySubscribed,
                    "already subscribed to this room",
                );
            }
            if rooms.len() >= self.config.limits.max_rooms_per_connection {
                return error(
                    ErrorCode::LimitExceeded,
                    "too many rooms on this connection",
                );
            }
        }
        let seq = conn.next_sub_seq.get();
        conn.next_sub_seq.set(seq + 1);
        conn.rooms
            .borrow_mut()
            .insert(room.clone(), SubState::Pending { seq });
        self.route(
            home_shard(&room, self.mailboxes.len()),
            ShardMsg::Subscribe(Box::new(SubscribeReq {
                room,
                origin: self.id,
                conn: conn.id,
                id,
                seq,
                since,
                deflate: conn.takes_shared_deflate,
                member,
                join_leave,
            })),
        );
    }

    /// A connection as a presence member.
    pub fn member_of(&self, conn: &ConnShared) -> Member {
        let principal = conn.principal.borrow();
        Member {
            client: self.client_id(conn.id),
            user: principal.user.as_deref().map(str::to_string),
            info: principal
                .info
                .as_ref()
                .and_then(|v| serde_json::value::to_raw_value(v).ok()),
        }
    }

    /// Sends an ephemeral event (its data, valid JSON) to a room's other subscribers.
    pub fn send_event(&self, conn: &ConnShared, room: &str, data: Bytes, source: Source) {
        let room: RoomName = room.into();
        let home = home_shard(&room, self.mailboxes.len());
        if home != self.id && self.mailboxes.is_full(home) {
            // Ephemeral: dropped rather than queued to a shard that is behind.
            crate::metrics::limit_hit("shard_inbox");
            return;
        }
        self.route(
            home,
            ShardMsg::Event {
                room,
                data,
                from: (self.id, conn.id),
                source,
            },
        );
    }

    /// Asks a room's home shard for its members (answered with a `presence` event).
    pub fn ask_presence(&self, conn: &ConnShared, id: Option<u64>, room: &str) {
        let room: RoomName = room.into();
        self.route(
            home_shard(&room, self.mailboxes.len()),
            ShardMsg::Presence {
                room,
                from: (self.id, conn.id),
                id,
            },
        );
    }

    /// Asks a room's home shard for stored messages (answered with a `history` event).
    pub fn ask_history(
        &self,
        conn: &ConnShared,
        id: Option<u64>,
        room: &str,
        since: Option<(String, u64)>,
        limit: usize,
    ) {
        let room: RoomName = room.into();
        self.route(
            home_shard(&room, self.mailboxes.len()),
            ShardMsg::History {
                room,
                from: (self.id, conn.id),
                id,
                since,
                limit,
            },
        );
    }

    /// A connection leaves a room.
    pub fn unsubscribe(&self, conn: &Rc<ConnShared>, id: Option<u64>, room: &str) {
        self.leave(conn, id, room, None);
    }

    /// The server removes a subscription (for example, a refreshed token no longer allows the
    /// room): the client gets `unsubscribed` with the reason.
    pub fn drop_subscription(&self, conn: &Rc<ConnShared>, room: &str, reason: &str) {
        self.leave(conn, None, room, Some(reason));
    }

    pub(super) fn leave(
        &self,
        conn: &Rc<ConnShared>,
        id: Option<u64>,
        room: &str,
        reason: Option<&str>,
    ) {
        let Some((room, state)) = conn.rooms.borrow_mut().remove_entry(room) else {
            self.metrics.op_errors.increment(1);
            conn.send(&error_event(
                id,
                ErrorCode::NotSubscribed,
                "not subscribed to this room",
            ));
            return;
        };
        if state == SubState::Active {
            self.local.borrow_mut().remove(&room, conn.id);
        }
        conn.send(&ServerEvent::Unsubscribed {
            id,
            room: room.as_ref().into(),
            reason: reason.map(Into::into),
        });
        self.leave_home(room, conn);
    }

    /// Tells a room's home shard that one subscriber on this shard left (or that a subscribe
    /// request will not be followed up): every Subscribe is balanced by exactly one of these.
    pub(super) fn leave_home(&self, room: RoomName, conn: &ConnShared) {
        self.route(
            home_shard(&room, self.mailboxes.len()),
            ShardMsg::Unsubscribe {
                room,
                origin: self.id,
                conn: conn.id,
                deflate: conn.takes_shared_deflate,
            },
        );
    }

    /// Publishes to a room (from a connection or the API).
    pub fn publish(&self, room: &str, data: Bytes, origin: PublishOrigin, source: Source) {
        let room: RoomName = room.into();
        let home = home_shard(&room, self.mailboxes.len());
        if home != self.id && self.mailboxes.is_full(home) {
            crate::metrics::limit_hit("shard_inbox");
            return self.answer_publish(origin, Err(shard_busy()));
        }
        self.route(
            home,
            ShardMsg::Publish {
                room,
                data,
                origin,
                source,
            },
        );
    }

    pub(super) fn local_subscribed(
        &self,
        room: RoomName,
        conn: ConnId,
        seq: u64,
        ok: bool,
        answer: Vec<Outgoing>,
    ) {
        let Some(c) = self.conns.borrow().get(&conn).cloned() else {
            // The connection is gone; closing it already told the home shard.
            return;
        };
        let state = c.rooms.borrow().get(&room).copied();
        if state != Some(SubState::Pending { seq }) {
            // Answer to a request the client cancelled (unsubscribe already told the home shard).
            return;
        }
        if ok {
            c.rooms.borrow_mut().insert(room.clone(), SubState::Active);
            self.local.borrow_mut().add(&room, c.clone());
        } else {
            self.metrics.op_errors.increment(1);
            c.rooms.borrow_mut().remove(&room);
            self.leave_home(room, &c);
        }
        c.profile.subscribed(&c, ok, &answer);
    }

    /// Queues a room message to this shard's subscribers under its namespace's policy.
    pub(super) fn deliver_here(
        &self,
        room: RoomName,
        frame: &Bytes,
        deflated: Option<&Bytes>,
        meta: DeliverMeta,
    ) {
        let policy = &self.namespaces.by_index(meta.namespace).policy;
        let msg = Rc::new(RoomMsg {
            room,
            data: meta.data,
            epoch: meta.epoch,
            offset: meta.offset,
            published_at: meta.published_at,
            policy: policy.slow_consumer,
            key: meta.key,
            max_age: (policy.max_age_ms > 0).then(|| Duration::from_millis(policy.max_age_ms)),
            namespace: meta.namespace,
        });
        let n = self
            .local
            .borrow()
            .deliver(frame, deflated, &msg, &self.writes);
        self.count_fanout(n);
        self.metrics.deliveries.increment(n as u64);
    }

    /// Queues a live event to this shard's subscribers of its room but `except`.
    pub(super) fn deliver_live_here(
        &self,
        live: &crate::outgoing::LiveMsg,
        except: Option<(ShardId, ConnId)>,
    ) {
        let except = except.filter(|(s, _)| *s == self.id).map(|(_, c)| c);
        let n = self.local.borrow().deliver_live(live, except, &self.writes);
        self.count_fanout(n);
    }

    /// Queues an answer from another shard to one connection, in its form.
    pub(super) fn to_conn(&self, conn: ConnId, out: &Outgoing) {
        let target = self.conns.borrow().get(&conn).cloned();
        if let Some(c) = target {
            c.send_outgoing(out, false);
        }
    }

    /// Closes one connection (asked by a home shard).
    pub(super) fn close_conn(&self, conn: ConnId, code: u16, reason: String) {
        let target = self.conns.borrow().get(&conn).cloned();
        if let Some(c) = target {
            c.request_close(CloseRequest {
                code: CloseCode(code),
                reason,
                discard_queue: false,
            });
        }
    }

    /// Closes this shard's Pusher connections signed in as `user` of an app.
    pub(super) fn pusher_terminate(&self, app: usize, user: &str) {
        let targets: Vec<Rc<ConnShared>> = self
            .conns
            .borrow()
            .values()
            .filter(|c| {
                c.pusher
                    .borrow()
                    .as_ref()
                    .is_some_and(|s| s.app == app && s.user.as_deref() == Some(user))
            })
            .cloned()
            .collect();
        for c in targets {
            crate::pusher::conn::terminate(&c);
        }
    }
}
