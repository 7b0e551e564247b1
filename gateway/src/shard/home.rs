//! The home side: the rooms this shard is home to. Subscriptions are answered here (with the
//! broker's recovery), publishes stored and fanned out once to every shard with subscribers,
//! live events relayed, presence kept, history and member queries answered; the broker's
//! completions arrive in `completions.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_bridge::{Appended, Completion, HistoryPolicy, Recovery, RoomName};
use bytes::Bytes;
use proto_codec::protocol::{ErrorCode, HistoryItem, Member, ServerEvent};
use proto_codec::ws::encode_frame;
use std::borrow::Cow;

use crate::errors::OpFailure;
use crate::ids::{ConnId, ShardId};
use crate::mailbox::{DeliverMeta, PublishOrigin, ShardMsg, SubscribeReq};
use crate::outgoing::{LiveEvent, LiveMsg, Outgoing, Replayed, Source};
use crate::rooms::home::InterestChange;

use super::kinds::Admit;
use super::ShardCtx;

impl ShardCtx {
    /// Home: one subscriber on `who.0` left: its presence goes (a `leave` and Pusher's
    /// `member_removed` unless its user stays), and with the room's last subscriber on the node
    /// its interest.
    pub(super) fn home_unsubscribe(&self, room: RoomName, who: (ShardId, ConnId), deflate: bool) {
        let kind = self.kind_of(&room);
        let left = self.presence.borrow_mut().remove(&room, who);
        if let Some(member) = left {
            self.broker
                .borrow_mut()
                .presence_set(&room, &member.client, None);
            let user_stays = kind.presence_per_user()
                && member
                    .user
                    .as_deref()
                    .is_some_and(|u| self.presence.borrow().has_user(&room, u));
            if !user_stays {
                kind.on_member(self, &room, member.user.as_deref(), false);
                if self.join_leave(&room) {
                    self.broadcast_live(&room, LiveEvent::Leave(member), Some(who));
                }
            }
        }
        let last = self.home.borrow_mut().remove(&room, who.0, deflate) == InterestChange::Last;
        kind.on_left(self, &room, who, last);
        if last {
            self.broker.borrow_mut().set_interest(&room, false);
        }
    }

    /// Home: a publish from a path (`source`), stored as the room's kind lets that path speak
    /// there ([`Kind::message_from`](super::kinds::Kind::message_from)), then
    /// [`ShardCtx::home_publish`].
    pub(super) fn home_publish_from(
        &self,
        room: RoomName,
        data: Bytes,
        origin: PublishOrigin,
        source: Source,
    ) {
        let data = self.kind_of(&room).message_from(&room, data, source);
        self.home_publish(room, data, origin);
    }

    /// Home: an ephemeral event from a connection, relayed by the same rule to the room's other
    /// subscribers on every node.
    pub(super) fn home_event(
        &self,
        room: RoomName,
        data: Bytes,
        from: (ShardId, ConnId),
        source: Source,
    ) {
        if let Some(data) = self.kind_of(&room).event_from(&room, data, source) {
            self.broadcast_live(&room, LiveEvent::Event { data, source }, Some(from));
        }
    }

    /// Sends a Pusher webhook event for a room of a Pusher app with webhooks.
    pub(super) fn pusher_webhook(&self, room: &str, name: &'static str, user_id: Option<&str>) {
        let Some(hooks) = &self.webhooks else {
            return;
        };
        let Some((app, channel)) = proto_codec::pusher::channel_of(room) else {
            return;
        };
        // A signed-in user's room is no channel.
        if !proto_codec::pusher::valid_channel(&channel) {
            return;
        }
        let Some(index) = self.config.pusher.apps.iter().position(|a| a.id == app) else {
            return;
        };
        hooks.push(crate::pusher::webhooks::WebhookEvent {
            app: index,
            name,
            channel,
            user_id: user_id.map(str::to_string),
        });
    }

    /// Whether a room's namespace sends join/leave events.
    pub(super) fn join_leave(&self, room: &str) -> bool {
        self.namespaces
            .of(room)
            .is_ok_and(|ns| ns.policy.presence && ns.policy.join_leave)
    }

    pub(super) fn home_subscribe(&self, req: SubscribeReq) {
        let SubscribeReq {
            room,
            origin,
            conn,
            id,
            seq,
            since,
            deflate,
            member,
            join_leave,
        } = req;
        let kind = self.kind_of(&room);
        if let Some(member) = member {
            // Where presence is per user (Pusher channels), a second connection of a user is no
            // new member (docs/pusher.md).
            let known_user = kind.presence_per_user()
                && member
                    .user
                    .as_deref()
                    .is_some_and(|u| self.presence.borrow().has_user(&room, u));
            if !known_user {
                kind.on_member(self, &room, member.user.as_deref(), true);
                if join_leave {
                    let join = LiveEvent::Join(member.clone());
                    self.broadcast_live(&room, join, Some((origin, conn)));
                }
            }
            if let Ok(json) = serde_json::to_vec(&member) {
                self.broker.borrow_mut().presence_set(
                    &room,
                    &member.client,
                    Some(Bytes::from(json)),
                );
            }
            self.presence
                .borrow_mut()
                .add(&room, (origin, conn), member);
        }
        let first = self.home.borrow_mut().add(&room, origin, deflate) == InterestChange::First;
        if first {
            self.broker.borrow_mut().set_interest(&room, true);
        }
        kind.on_interest(self, &room, first);
        let token = self.token();
        let since_ref = since.as_ref().map(|(e, o)| (e.as_str(), *o));
        let policy = self.history_policy(&room);
        let result =
            self.broker
                .borrow_mut()
                .recover(&room, since_ref, policy, token, self.now.get());
        let sub = PendingSubscribe {
            room,
            origin,
            conn,
            id,
            seq,
        };
        match result {
            Ok(Completion::Ready(rec)) => self.answer_subscribe(sub, Ok(rec)),
            // A networked broker answers at the room's position in its order (merged with the
            // live messages around it): see broker_bridge::redis::sequencer.
            Ok(Completion::Pending) => {
                kind.on_pending(self, &sub.room, (sub.origin, sub.conn));
                self.pending
                    .borrow_mut()
                    .insert(token, Pending::Subscribe(sub));
            }
            Err(e) => self.answer_subscribe(sub, Err(e.to_string())),
        }
    }

    /// Sends a subscription's outcome to the subscriber's shard: the `subscribed` event and the
    /// replayed messages, or the error.
    pub(super) fn answer_subscribe(&self, sub: PendingSubscribe, result: Result<Recovery, String>) {
        let PendingSubscribe {
            room,
            origin,
            conn,
            id,
            seq,
        } = sub;
        let (ok, answer) = match result {
            Ok(rec) => {
                let mut answer = Vec::with_capacity(1 + rec.messages.len());
                answer.push(Outgoing::Event(ServerEvent::Subscribed {
                    id,
                    room: Cow::Owned(room.to_string()),
                    epoch: Cow::Owned(rec.epoch.to_string()),
                    offset: rec.latest,
                    recovered: rec.recovered,
                }));
                for m in rec.messages {
                    answer.push(Outgoing::Replayed(Replayed {
                        room: room.clone(),
                        epoch: rec.epoch.clone(),
                        offset: m.offset,
                        data: m.data,
                    }));
                }
                (true, answer)
            }
            Err(reason) => (
                false,
                vec![Outgoing::error(id, ErrorCode::Unavailable, &reason)],
            ),
        };
        self.route(
            origin,
            ShardMsg::Subscribed {
                room: room.clone(),
                conn,
                seq,
                ok,
                answer,
            },
        );
        self.kind_of(&room)
            .on_answered(self, &room, (origin, conn), ok);
    }

    pub(super) fn home_publish(&self, room: RoomName, data: Bytes, origin: PublishOrigin) {
        // Refused before it is stored when a shard with subscribers of the room is behind its
        // inbox bound: its deliveries would queue there without bound.
        let behind = self.home.borrow().get(&room).is_some_and(|interest| {
            interest
                .per_shard
                .iter()
                .enumerate()
                .any(|(shard, n)| *n > 0 && shard != self.id && self.mailboxes.is_full(shard))
        });
        if behind {
            crate::metrics::limit_hit("shard_inbox");
            return self.answer_publish(origin, Err(shard_busy()));
        }
        let token = self.token();
        // Every room was checked against its namespace before it was routed here (a room of an
        // unknown namespace never gets this far).
        let policy = self.history_policy(&room);
        // The accept time of a publish starts its latency (SLO, `max_age`): read the clock here,
        // not the shard's coarse clock, which a busy shard refreshes late.
        let now = Instant::now();
        self.now.set(now);
        // The room's kind sees it first (a collaborative room's update is merged into its
        // loaded document, or refused, or waits for the document to load).
        let (data, origin, merged) = match self.kind_of(&room).on_publish(self, &room, data, origin)
        {
            Admit::Store {
                data,
                origin,
                merged,
            } => (data, origin, merged),
            Admit::Taken => return,
        };
        let result = self
            .broker
            .borrow_mut()
            .publish(&room, data, policy, token, now);
        match result {
            Ok(Completion::Ready(appended)) => self.fan_out(appended, Some(origin), merged),
            Ok(Completion::Pending) => {
                self.pending
                    .borrow_mut()
                    .insert(token, Pending::Publish(origin));
            }
            Err(e) => self.answer_publish(
                origin,
                Err(OpFailure::new(ErrorCode::Unavailable, e.to_string())),
            ),
        }
    }

    /// Encodes a message once and sends it to every shard with subscribers.
    ///
    /// `merged`: a collaborative room's update is already in the room's document (merged when it
    /// was accepted on this shard).
    pub(super) fn fan_out(&self, m: Appended, origin: Option<PublishOrigin>, merged: bool) {
        self.metrics.publishes.increment(1);
        let kind = self.kind_of(&m.room);
        kind.on_appended(self, &m, merged);
        let frame = kind.frame(&m);
        let mut deliver_here = false;
        {
            let mut home = self.home.borrow_mut();
            if let Some(interest) = home.count_message(&m.room) {
                let (namespace, key) = match self.namespaces.of(&m.room) {
                    Ok(ns) if kind.namespaced() => (ns.index, conflation_key(&ns.policy, &m.data)),
                    _ => (0, None),
                };
                let meta = DeliverMeta {
                    data: m.data.clone(),
                    epoch: m.epoch.clone(),
                    offset: m.offset,
                    published_at: m.at,
                    key,
                    namespace,
                };
                let deflated = (interest.deflate > 0).then(|| {
                    let payload = frame.payload();
                    let mut compressed = Vec::with_capacity(payload.len() / 2 + 16);
                    self.with_deflater(15, |d| d.compress(payload, &mut compressed));
                    // The compressed frame keeps the message's type (binary messages, §9.9).
                    encode_frame(frame.opcode(), true, &compressed)
                });
                let frame = frame.frame();
                for (shard, count) in interest.per_shard.iter().enumerate() {
                    if *count == 0 {
                        continue;
                    }
                    if shard == self.id {
                        deliver_here = true;
                        continue;
                    }
                    self.mailboxes.send(
                        shard,
                        ShardMsg::Deliver {
                            room: m.room.clone(),
                            frame: frame.clone(),
                            deflated: deflated.clone(),
                            meta: meta.clone(),
                        },
                    );
                }
                if deliver_here {
                    self.deliver_here(m.room.clone(), frame, deflated.as_ref(), meta);
                }
            }
        }
        if let Some(origin) = origin {
            self.answer_publish(origin, Ok(m));
        }
    }

    pub(super) fn answer_publish(
        &self,
        origin: PublishOrigin,
        result: Result<Appended, OpFailure>,
    ) {
        match origin {
            PublishOrigin::Conn { shard, conn, id } => {
                let out = match result {
                    Ok(m) if id.is_some() => Outgoing::Event(ServerEvent::Published {
                        id,
                        room: Cow::Owned(m.room.to_string()),
                        epoch: Cow::Owned(m.epoch.to_string()),
                        offset: m.offset,
                    }),
                    Ok(_) => return,
                    Err(OpFailure { code, reason }) => {
                        self.metrics.op_errors.increment(1);
                        Outgoing::error(id, code, &reason)
                    }
                };
                self.route(shard, ShardMsg::ToConn { conn, out });
            }
            PublishOrigin::Api(tx) => {
                let _ = tx.send(result.map(|m| (m.epoch, m.offset)).map_err(|f| f.code));
            }
            PublishOrigin::Raw => {}
        }
    }

    /// Sends a live event to every shard with subscribers of its room (home side).
    pub(super) fn fan_out_live(&self, live: Arc<LiveMsg>, except: Option<(ShardId, ConnId)>) {
        let home = self.home.borrow();
        let Some(interest) = home.get(&live.room) else {
            return;
        };
        for (shard, count) in interest.per_shard.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            if shard == self.id {
                let except = except.filter(|(s, _)| *s == self.id).map(|(_, c)| c);
                let n = self
                    .local
                    .borrow()
                    .deliver_live(&live, except, &self.writes);
                self.count_fanout(n);
            } else {
                self.mailboxes.send(
                    shard,
                    ShardMsg::DeliverLive {
                        live: live.clone(),
                        except,
                    },
                );
            }
        }
    }

    /// Sends a live event to the room's subscribers on this node and, through the broker, on
    /// every other node (home side).
    pub(super) fn broadcast_live(
        &self,
        room: &RoomName,
        event: LiveEvent,
        except: Option<(ShardId, ConnId)>,
    ) {
        let live = LiveMsg::new(room.clone(), event);
        let mut broker = self.broker.borrow_mut();
        if broker.reaches_other_nodes() {
            if let Some(to_nodes) = live.to_node() {
                broker.publish_live(room, to_nodes);
            }
        }
        drop(broker);
        self.fan_out_live(live, except);
    }

    /// A room's history policy (raw-broadcast rooms keep none).
    pub(super) fn history_policy(&self, room: &str) -> HistoryPolicy {
        match self.namespaces.of(room) {
            Ok(ns) if self.kind_of(room).namespaced() => ns.history,
            _ => HistoryPolicy {
                size: 0,
                ttl: Duration::ZERO,
            },
        }
    }

    /// Reads a room's stored messages for a `history` op or the API (home side).
    pub(super) fn home_history(
        &self,
        room: RoomName,
        answer: Answer<Result<String, ErrorCode>>,
        since: Option<(String, u64)>,
        limit: usize,
    ) {
        let token = self.token();
        let since_ref = since.as_ref().map(|(e, o)| (e.as_str(), *o));
        let policy = self.history_policy(&room);
        let result = self.broker.borrow_mut().history(
            &room,
            since_ref,
            limit,
            policy,
            token,
            self.now.get(),
        );
        match result {
            Ok(Completion::Ready(rec)) => self.answer_history(&room, answer, Ok(rec)),
            Ok(Completion::Pending) => {
                self.pending
                    .borrow_mut()
                    .insert(token, Pending::History { room, answer });
            }
            Err(_) => self.answer_history(&room, answer, Err(ErrorCode::Unavailable)),
        }
    }

    /// Answers a history read: a `history` event to a connection, its JSON to the API.
    pub(super) fn answer_history(
        &self,
        room: &RoomName,
        answer: Answer<Result<String, ErrorCode>>,
        result: Result<Recovery, ErrorCode>,
    ) {
        let id = match &answer {
            Answer::Conn { id, .. } => *id,
            Answer::Api(_) => None,
        };
        let json = result.map(|rec| {
            // Stored data is valid JSON (checked when it was published) or marked binary.
            let messages = rec
                .messages
                .iter()
                .filter_map(|m| HistoryItem::from_stored(m.offset, &m.data))
                .collect();
            ServerEvent::History {
                id,
                room: room.as_ref().into(),
                epoch: rec.epoch.as_ref().into(),
                offset: rec.latest,
                recovered: rec.recovered,
                messages,
            }
            .to_json()
        });
        match answer {
            Answer::Conn { to, id } => {
                let out = match json {
                    Ok(json) => Outgoing::History(Bytes::from(json)),
                    Err(code) => Outgoing::error(id, code, "history not available now; retry"),
                };
                self.route(to.0, ShardMsg::ToConn { conn: to.1, out });
            }
            Answer::Api(reply) => {
                let _ = reply.send(json);
            }
        }
    }

    /// Finds a room's members: this node's own list, or every node's through the broker.
    pub(super) fn home_members(
        &self,
        room: RoomName,
        answer: Answer<Result<Vec<Member>, ErrorCode>>,
    ) {
        let token = self.token();
        let result = self.broker.borrow_mut().members(&room, token);
        match result {
            Ok(Completion::Ready(None)) => {
                let members = self.presence.borrow().members(&room);
                self.answer_members(&room, answer, Ok(members));
            }
            Ok(Completion::Ready(Some(json))) => {
                self.answer_members(&room, answer, Ok(parse_members(&json)));
            }
            Ok(Completion::Pending) => {
                self.pending
                    .borrow_mut()
                    .insert(token, Pending::Members { room, answer });
            }
            Err(_) => self.answer_members(&room, answer, Err(ErrorCode::Unavailable)),
        }
    }

    pub(super) fn answer_members(
        &self,
        room: &RoomName,
        answer: Answer<Result<Vec<Member>, ErrorCode>>,
        result: Result<Vec<Member>, ErrorCode>,
    ) {
        match answer {
            Answer::Conn { to, id } => {
                let out = match result {
                    Ok(members) => Outgoing::Event(ServerEvent::Presence {
                        id,
                        room: Cow::Owned(room.to_string()),
                        members,
                    }),
                    Err(code) => Outgoing::error(id, code, "presence not available now; retry"),
                };
                self.route(to.0, ShardMsg::ToConn { conn: to.1, out });
            }
            Answer::Api(reply) => {
                let _ = reply.send(result);
            }
        }
    }
}

/// A request the broker answers later.
pub(super) enum Pending {
    Publish(PublishOrigin),
    Subscribe(PendingSubscribe),
    History {
        room: RoomName,
        answer: Answer<Result<String, ErrorCode>>,
    },
    Members {
        room: RoomName,
        answer: Answer<Result<Vec<Member>, ErrorCode>>,
    },
    /// A collaborative room's snapshot.
    DocLoad {
        room: RoomName,
    },
    /// The updates stored after a collaborative room's snapshot.
    DocReplay {
        room: RoomName,
    },
}

/// A subscription waiting for its recovery.
pub(super) struct PendingSubscribe {
    room: RoomName,
    origin: ShardId,
    conn: ConnId,
    id: Option<u64>,
    seq: u64,
}

/// Where a query's answer goes: an event to a connection, or a value to the API.
pub(super) enum Answer<T> {
    Conn {
        to: (ShardId, ConnId),
        id: Option<u64>,
    },
    Api(tokio::sync::oneshot::Sender<T>),
}

/// The refusal of a publish while a shard it needs is behind its inbox bound.
pub(super) fn shard_busy() -> OpFailure {
    OpFailure::new(
        ErrorCode::Unavailable,
        "the node is behind on this room's shard; retry",
    )
}

/// Members as stored by the broker (JSON); entries that do not parse are skipped.
pub(super) fn parse_members(json: &[Bytes]) -> Vec<Member> {
    json.iter()
        .filter_map(|m| serde_json::from_slice(m).ok())
        .collect()
}

/// The conflation key of a message in a conflating namespace: the room itself (`Some(0)`) when
/// no key field is configured, else a hash of the key field's JSON text; `None` (never
/// conflated) when the namespace does not conflate or the message has no such field.
pub fn conflation_key(policy: &crate::config::NamespacePolicy, data: &[u8]) -> Option<u64> {
    if policy.slow_consumer != crate::config::SlowConsumer::Conflate {
        return None;
    }
    if policy.conflation_key.is_empty() {
        return Some(0);
    }
    let fields: HashMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(data).ok()?;
    let value = fields.get(&policy.conflation_key)?;
    // FNV-1a of the value's JSON text.
    Some(value.get().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }))
}
