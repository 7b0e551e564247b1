//! A shard: one thread, one monoio runtime, its own listener, connections and rooms.
//!
//! A shard never touches another shard's state; it reaches another shard only through its
//! mailbox. A message to a room goes to the room's home shard, which gets its offset from the
//! broker, encodes the `msg` frame once (and compresses it once if a subscriber wants that), and
//! sends the same `Bytes` to every shard with subscribers of the room.

mod crdt;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use broker_bridge::{Appended, Broker, BrokerEvent, Completion, HistoryPolicy, Recovery, RoomName};
use bytes::Bytes;
use proto_codec::protocol::{room_message_frame, ErrorCode, HistoryItem, Member, ServerEvent};
use proto_codec::ws::{encode_frame, CloseCode, MessageDeflater, OpCode};
use std::borrow::Cow;

use crate::admission::Admission;
use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::connection::shared::{CloseRequest, ConnShared, SubState};
use crate::connection::Transport;
use crate::endpoint::{Endpoint, Heartbeat};
use crate::mailbox::{
    home_shard, AdminQuery, ConnId, DeliverMeta, Mailboxes, PublishOrigin, ShardId, ShardMsg,
    SubscribeReq,
};
use crate::metrics::ShardMetrics;
use crate::namespaces::Namespaces;
use crate::outgoing::{error_event, LiveEvent, LiveMsg, Outgoing, Replayed, RoomMsg, Source};
use crate::rooms::crdt::CrdtRooms;
use crate::rooms::home::{HomeRooms, InterestChange};
use crate::rooms::local::LocalRooms;
use crate::rooms::presence::Presence;
use crate::runtime::{self, ResolvedDriver};
use crate::slo::SloRecorder;
use crate::tls::Tls;

/// How long a closing connection waits for the peer's close frame before dropping the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the shard checks heartbeats, deadlines and metrics.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// The size of the per-shard read buffer every connection reads into.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// State shared by the whole process (all shards and the admin thread).
#[derive(Debug, Default)]
pub struct Global {
    /// Every shard is serving.
    pub ready: AtomicBool,
    /// Graceful shutdown began.
    pub shutting_down: AtomicBool,
    /// Open connections over all shards (a shard keeps serving its mailbox during a drain until
    /// every shard's connections are gone, so no message to a room it homes is lost).
    pub connections: AtomicUsize,
    /// Open Pusher connections per app (index of `pusher.apps`), for `max_connections`.
    pub pusher_connections: Box<[AtomicUsize]>,
}

impl Global {
    /// Process-wide state for this configuration.
    pub fn new(config: &Config) -> Global {
        Global {
            pusher_connections: config
                .pusher
                .apps
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
            ..Global::default()
        }
    }
}

/// What a shard thread needs to start.
pub struct ShardSetup {
    /// This shard.
    pub id: ShardId,
    /// Its SO_REUSEPORT listeners (plain and/or TLS).
    pub listeners: Vec<(std::net::TcpListener, Transport)>,
    /// Security and policy shared by every shard.
    pub policy: Policy,
    /// Every shard's mailbox.
    pub mailboxes: Mailboxes,
    /// The configuration.
    pub config: Arc<Config>,
    /// The node's name.
    pub node: Arc<str>,
    /// The I/O driver.
    pub driver: ResolvedDriver,
    /// Pin to this core.
    pub core: Option<usize>,
    /// Process-wide flags and counters.
    pub global: Arc<Global>,
    /// Tells the main thread the shard is serving, or why it could not start.
    pub started: std::sync::mpsc::Sender<Result<ShardId, String>>,
    /// This shard's handle on the broker (the rooms it is home to).
    pub broker: Box<dyn Broker + Send>,
}

/// Security and policy state shared by every shard (and the admin thread).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Namespace policies.
    pub namespaces: Arc<Namespaces>,
    /// Admission control.
    pub admission: Arc<Admission>,
    /// TLS, when a TLS listener is configured.
    pub tls: Option<Tls>,
    /// Pusher webhooks, when an app has some.
    pub webhooks: Option<Arc<crate::pusher::webhooks::Webhooks>>,
}

/// A shard's state. Lives in an `Rc` on the shard's thread.
pub struct ShardCtx {
    /// This shard.
    pub id: ShardId,
    /// Every shard's mailbox.
    pub mailboxes: Mailboxes,
    /// The configuration.
    pub config: Arc<Config>,
    /// The node's name.
    pub node: Arc<str>,
    /// Process-wide flags and counters.
    pub global: Arc<Global>,
    /// Metric handles.
    pub metrics: ShardMetrics,
    /// The shared read buffer (connections keep only a partial frame between reads).
    pub read_buf: RefCell<Vec<u8>>,
    /// A coarse clock, updated on every mailbox batch and sweep.
    pub now: Cell<Instant>,
    /// Publish→write latency of every written room frame, per namespace (`GET /api/slo`).
    pub slo: RefCell<SloRecorder>,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Namespace policies.
    pub namespaces: Arc<Namespaces>,
    /// Admission control.
    pub admission: Arc<Admission>,
    /// TLS, when a TLS listener is configured.
    pub tls: Option<Tls>,
    webhooks: Option<Arc<crate::pusher::webhooks::Webhooks>>,
    anonymous: Rc<Principal>,
    sweeps: Cell<u64>,
    conns: RefCell<HashMap<ConnId, Rc<ConnShared>>>,
    next_conn: Cell<ConnId>,
    local: RefCell<LocalRooms>,
    home: RefCell<HomeRooms>,
    presence: RefCell<Presence>,
    /// Documents of the collaborative rooms this shard is home to.
    crdt: RefCell<CrdtRooms>,
    broker: RefCell<Box<dyn Broker + Send>>,
    /// Requests the broker answers later, by token.
    pending: RefCell<HashMap<u64, Pending>>,
    next_token: Cell<u64>,
    deflaters: RefCell<Vec<Option<MessageDeflater>>>,
    shutting_down: Cell<bool>,
    accept_wakers: RefCell<[Option<Waker>; 2]>,
    /// Connections that used up their turn's budget, to be woken after the runtime has parked.
    deferred: RefCell<Vec<Rc<ConnShared>>>,
    /// Deliveries queued on this shard so far (wrapping): a connection's turn ends once its
    /// input caused `FANOUT_BUDGET` of them.
    pub fanout_work: Cell<usize>,
    deferred_loop_waker: RefCell<Option<Waker>>,
}

impl ShardCtx {
    fn new(
        id: ShardId,
        mailboxes: Mailboxes,
        config: Arc<Config>,
        node: Arc<str>,
        global: Arc<Global>,
        policy: Policy,
        broker: Box<dyn Broker + Send>,
    ) -> ShardCtx {
        let shards = mailboxes.len();
        let metrics = ShardMetrics::new(id, &policy.namespaces);
        let slo = RefCell::new(SloRecorder::new(policy.namespaces.len(), Instant::now()));
        ShardCtx {
            auth: policy.auth,
            namespaces: policy.namespaces,
            admission: policy.admission,
            tls: policy.tls,
            webhooks: policy.webhooks,
            anonymous: Rc::new(Principal::anonymous()),
            sweeps: Cell::new(0),
            id,
            mailboxes,
            node,
            global,
            metrics,
            slo,
            read_buf: RefCell::new(vec![0; READ_BUFFER_BYTES]),
            now: Cell::new(Instant::now()),
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            local: RefCell::new(LocalRooms::default()),
            home: RefCell::new(HomeRooms::new(shards)),
            presence: RefCell::new(Presence::default()),
            crdt: RefCell::new(CrdtRooms::default()),
            broker: RefCell::new(broker),
            pending: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            deflaters: RefCell::new((8..=15).map(|_| None).collect()),
            shutting_down: Cell::new(false),
            accept_wakers: RefCell::new([None, None]),
            deferred: RefCell::new(Vec::new()),
            fanout_work: Cell::new(0),
            deferred_loop_waker: RefCell::new(None),
            config,
        }
    }

    /// A connection used up its turn: it runs again after the runtime has parked once (which
    /// is when monoio polls timers, and what lets accepts and timers through under a flood;
    /// waking itself directly would keep the run queue from ever emptying). Until then it does
    /// nothing, however often it is woken (a push does not buy it an extra turn).
    pub fn defer(&self, conn: &Rc<ConnShared>) {
        if conn.deferred.replace(true) {
            return;
        }
        self.deferred.borrow_mut().push(conn.clone());
        if let Some(w) = self.deferred_loop_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Whether graceful shutdown began on this shard.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    // ---- connections -------------------------------------------------------------------

    /// Registers an upgraded connection.
    pub fn register_conn(
        &self,
        endpoint: Endpoint,
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
            endpoint,
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

    /// A compressor for a window size, kept per shard (zlib state is large).
    pub fn with_deflater<R>(
        &self,
        window_bits: u8,
        f: impl FnOnce(&mut MessageDeflater) -> R,
    ) -> R {
        let bits = window_bits.clamp(8, 15);
        let mut all = self.deflaters.borrow_mut();
        let level = self.config.websocket.compression_level;
        let slot = &mut all[usize::from(bits - 8)];
        f(slot.get_or_insert_with(|| MessageDeflater::new(bits, level)))
    }

    // ---- ops from this shard's connections ---------------------------------------------

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

    fn subscribe_with(
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

    /// The client id of a connection of this shard (as in `hello`).
    pub fn client_id(&self, conn: ConnId) -> String {
        format!("{}-{}-{}", self.node, self.id, conn)
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

    fn leave(&self, conn: &Rc<ConnShared>, id: Option<u64>, room: &str, reason: Option<&str>) {
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
    fn leave_home(&self, room: RoomName, conn: &ConnShared) {
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

    /// Sends a message to a shard; to this shard it is handled at once.
    pub(crate) fn route(&self, to: ShardId, msg: ShardMsg) {
        if to == self.id {
            self.handle(msg);
        } else {
            self.mailboxes.send(to, msg);
        }
    }

    // ---- messages ----------------------------------------------------------------------

    /// Handles one mailbox message.
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Subscribe(req) => self.home_subscribe(*req),
            ShardMsg::Unsubscribe {
                room,
                origin,
                conn,
                deflate,
            } => {
                let left = self.presence.borrow_mut().remove(&room, (origin, conn));
                if let Some(member) = left {
                    self.broker
                        .borrow_mut()
                        .presence_set(&room, &member.client, None);
                    let user_stays = self.per_user_presence(&room)
                        && member
                            .user
                            .as_deref()
                            .is_some_and(|u| self.presence.borrow().has_user(&room, u));
                    if self.per_user_presence(&room) && !user_stays {
                        self.pusher_webhook(&room, "member_removed", member.user.as_deref());
                    }
                    if self.join_leave(&room) && !user_stays {
                        self.broadcast_live(&room, LiveEvent::Leave(member), Some((origin, conn)));
                    }
                }
                let change = self.home.borrow_mut().remove(&room, origin, deflate);
                self.crdt_left(&room, (origin, conn), change == InterestChange::Last);
                if change == InterestChange::Last {
                    self.broker.borrow_mut().set_interest(&room, false);
                    self.pusher_webhook(&room, "channel_vacated", None);
                }
            }
            ShardMsg::DeliverLive { live, except } => {
                let except = except.filter(|(s, _)| *s == self.id).map(|(_, c)| c);
                let n = self.local.borrow().deliver_live(&live, except);
                self.count_fanout(n);
            }
            ShardMsg::Event {
                room,
                data,
                from,
                source,
            } => {
                if let Some(data) = crate::pusher::wire::bridge_event(&room, data, source) {
                    self.broadcast_live(&room, LiveEvent::Event { data, source }, Some(from));
                }
            }
            ShardMsg::Presence { room, from, id } => {
                self.home_members(room, Answer::Conn { to: from, id });
            }
            ShardMsg::History {
                room,
                from,
                id,
                since,
                limit,
            } => self.home_history(room, Answer::Conn { to: from, id }, since, limit),
            ShardMsg::BrokerReady => {}
            ShardMsg::Publish {
                room,
                data,
                origin,
                source,
            } => {
                let data = crate::pusher::wire::bridge_message(&room, data, source);
                self.home_publish(room, data, origin);
            }
            ShardMsg::Subscribed {
                room,
                conn,
                seq,
                ok,
                answer,
            } => self.local_subscribed(room, conn, seq, ok, answer),
            ShardMsg::Deliver {
                room,
                frame,
                deflated,
                meta,
            } => self.deliver_here(room, &frame, deflated.as_ref(), meta),
            ShardMsg::ToConn { conn, out } => {
                let target = self.conns.borrow().get(&conn).cloned();
                if let Some(c) = target {
                    c.send_outgoing(&out, false);
                }
            }
            ShardMsg::PusherTerminate { app, user } => {
                let targets: Vec<Rc<ConnShared>> = self
                    .conns
                    .borrow()
                    .values()
                    .filter(|c| {
                        c.pusher
                            .borrow()
                            .as_ref()
                            .is_some_and(|s| s.app == app && s.user.as_deref() == Some(&user))
                    })
                    .cloned()
                    .collect();
                for c in targets {
                    crate::pusher::conn::terminate(&c);
                }
            }
            ShardMsg::CloseConn { conn, code, reason } => {
                let target = self.conns.borrow().get(&conn).cloned();
                if let Some(c) = target {
                    c.request_close(CloseRequest {
                        code: CloseCode(code),
                        reason,
                        discard_queue: false,
                    });
                }
            }
            ShardMsg::CrdtSync {
                room,
                from,
                state_vector,
            } => self.crdt_sync(room, from, state_vector),
            ShardMsg::CrdtAwareness { room, from, update } => {
                self.crdt_awareness(room, from, update);
            }
            ShardMsg::CrdtAwarenessQuery { room, from } => self.crdt_awareness_query(room, from),
            ShardMsg::Admin(query) => self.admin_query(query),
            ShardMsg::Shutdown => self.begin_shutdown(),
        }
    }

    /// Queues a room message to this shard's subscribers under its namespace's policy.
    fn deliver_here(
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
        let n = self.local.borrow().deliver(frame, deflated, &msg);
        self.count_fanout(n);
        self.metrics.deliveries.increment(n as u64);
    }

    fn count_fanout(&self, n: usize) {
        self.fanout_work.set(self.fanout_work.get().wrapping_add(n));
    }

    /// Sends a Pusher webhook event for a room of a Pusher app with webhooks.
    fn pusher_webhook(&self, room: &str, name: &'static str, user_id: Option<&str>) {
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

    /// Whether a room counts presence per user rather than per connection (Pusher channels).
    fn per_user_presence(&self, room: &str) -> bool {
        proto_codec::protocol::namespace_of(room) == proto_codec::pusher::NAMESPACE
    }

    /// Whether a room's namespace sends join/leave events.
    fn join_leave(&self, room: &str) -> bool {
        self.namespaces
            .of(room)
            .is_ok_and(|ns| ns.policy.presence && ns.policy.join_leave)
    }

    /// Sends a live event to every shard with subscribers of its room (home side).
    fn fan_out_live(&self, live: Arc<LiveMsg>, except: Option<(ShardId, ConnId)>) {
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
                let n = self.local.borrow().deliver_live(&live, except);
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
    fn broadcast_live(&self, room: &RoomName, event: LiveEvent, except: Option<(ShardId, ConnId)>) {
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

    fn admin_query(&self, query: AdminQuery) {
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

    /// A room's history policy (raw-broadcast rooms keep none).
    fn history_policy(&self, room: &str) -> HistoryPolicy {
        match self.namespaces.of(room) {
            Ok(ns) if !room.starts_with(RAW_ROOM_PREFIX) => ns.history,
            _ => HistoryPolicy {
                size: 0,
                ttl: Duration::ZERO,
            },
        }
    }

    /// Reads a room's stored messages for a `history` op or the API (home side).
    fn home_history(
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
    fn answer_history(
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
    fn home_members(&self, room: RoomName, answer: Answer<Result<Vec<Member>, ErrorCode>>) {
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

    fn answer_members(
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

    fn home_subscribe(&self, req: SubscribeReq) {
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
        if let Some(member) = member {
            // In Pusher channels presence is per user: a second connection of a user is no
            // `member_added` (docs/pusher.md).
            let known_user = self.per_user_presence(&room)
                && member
                    .user
                    .as_deref()
                    .is_some_and(|u| self.presence.borrow().has_user(&room, u));
            if self.per_user_presence(&room) && !known_user {
                self.pusher_webhook(&room, "member_added", member.user.as_deref());
            }
            if join_leave && !known_user {
                self.broadcast_live(&room, LiveEvent::Join(member.clone()), Some((origin, conn)));
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
        if self.home.borrow_mut().add(&room, origin, deflate) == InterestChange::First {
            self.broker.borrow_mut().set_interest(&room, true);
            self.pusher_webhook(&room, "channel_occupied", None);
        }
        // A collaborative room's document is loaded while the room has interest here.
        self.crdt_open(&room);
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
                self.crdt_subscribing(&sub.room, (sub.origin, sub.conn));
                self.pending
                    .borrow_mut()
                    .insert(token, Pending::Subscribe(sub));
            }
            Err(e) => self.answer_subscribe(sub, Err(e.to_string())),
        }
    }

    /// Sends a subscription's outcome to the subscriber's shard: the `subscribed` event and the
    /// replayed messages, or the error.
    fn answer_subscribe(&self, sub: PendingSubscribe, result: Result<Recovery, String>) {
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
        self.crdt_subscribed(&room, (origin, conn), ok);
    }

    fn local_subscribed(
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
        c.endpoint.subscribed(&c, ok, &answer);
    }

    fn token(&self) -> u64 {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        t
    }

    fn home_publish(&self, room: RoomName, data: Bytes, origin: PublishOrigin) {
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
        // A collaborative room's update is merged before it is stored (or refused), into its
        // loaded document (it waits for the document to load).
        let mut merged = false;
        if let Some(ns) = self.crdt_namespace(&room) {
            if !self.crdt_ready(&room) {
                return self.crdt_park(&room, data, origin, ns.policy.max_document_bytes);
            }
            match self.crdt_accept(&room, &data, ns) {
                Ok(()) => merged = true,
                Err(refusal) => return self.answer_publish(origin, Err(refusal)),
            }
        }
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
            Err(e) => self.answer_publish(origin, Err((ErrorCode::Unavailable, e.to_string()))),
        }
    }

    /// Moves completed broker work forward (a networked broker's answers and echoes).
    fn poll_broker(&self) {
        let mut events = Vec::new();
        self.broker.borrow_mut().poll_events(&mut events);
        for ev in events {
            match ev {
                BrokerEvent::Appended { token, message } => {
                    let origin = token
                        .and_then(|t| self.pending.borrow_mut().remove(&t))
                        .and_then(|p| match p {
                            Pending::Publish(origin) => Some(origin),
                            _ => None,
                        });
                    self.fan_out(message, origin, false);
                }
                BrokerEvent::Acked {
                    token,
                    room,
                    epoch,
                    offset,
                } => {
                    if let Some(Pending::Publish(origin)) = self.take_pending(token) {
                        self.answer_publish(
                            origin,
                            Ok(Appended {
                                room,
                                epoch,
                                offset,
                                data: Bytes::new(),
                                at: self.now.get(),
                            }),
                        );
                    }
                }
                BrokerEvent::DocLoaded {
                    token,
                    room: _,
                    snapshot,
                } => {
                    if let Some(Pending::DocLoad { room }) = self.take_pending(token) {
                        self.crdt_doc_loaded(&room, snapshot);
                    }
                }
                BrokerEvent::Recovered {
                    token,
                    room: _,
                    recovery,
                } => match self.take_pending(token) {
                    Some(Pending::Subscribe(sub)) => self.answer_subscribe(sub, Ok(recovery)),
                    Some(Pending::DocReplay { room }) => self.crdt_replayed(&room, recovery),
                    Some(Pending::History { room, answer }) => {
                        self.answer_history(&room, answer, Ok(recovery));
                    }
                    _ => {}
                },
                BrokerEvent::Members {
                    token,
                    room: _,
                    members,
                } => {
                    if let Some(Pending::Members { room, answer }) = self.take_pending(token) {
                        self.answer_members(&room, answer, Ok(parse_members(&members)));
                    }
                }
                BrokerEvent::Failed { token, reason } => match self.take_pending(token) {
                    Some(Pending::Publish(origin)) => {
                        self.answer_publish(origin, Err((ErrorCode::Unavailable, reason)));
                    }
                    Some(Pending::Subscribe(sub)) => self.answer_subscribe(sub, Err(reason)),
                    Some(Pending::History { room, answer }) => {
                        self.answer_history(&room, answer, Err(ErrorCode::Unavailable));
                    }
                    Some(Pending::Members { room, answer }) => {
                        self.answer_members(&room, answer, Err(ErrorCode::Unavailable));
                    }
                    Some(Pending::DocLoad { room } | Pending::DocReplay { room }) => {
                        self.crdt_load_failed(&room, &reason);
                    }
                    None => {}
                },
                BrokerEvent::Live { room, event } => {
                    let event = match event {
                        broker_bridge::LiveEvent::App(json) => LiveMsg::app_from_node(&json)
                            .and_then(|e| self.relayed_by_another_node(&room, e)),
                        broker_bridge::LiveEvent::Awareness(message) => self
                            .crdt_remote_awareness(&room, &message)
                            .map(LiveEvent::Awareness),
                    };
                    if let Some(event) = event {
                        self.fan_out_live(LiveMsg::new(room, event), None);
                    }
                }
                BrokerEvent::Gap {
                    room,
                    epoch,
                    from,
                    to,
                } => {
                    let gap = LiveEvent::Gap { epoch, from, to };
                    self.fan_out_live(LiveMsg::new(room, gap), None);
                }
            }
        }
    }

    /// A live app event another node relayed, by the rule its home applied there (a native
    /// event in a Pusher room carries the event `ringcast:message`): enforced here too, so a
    /// node that broke the rule cannot forge Pusher events on this one.
    fn relayed_by_another_node(&self, room: &RoomName, event: LiveEvent) -> Option<LiveEvent> {
        match event {
            LiveEvent::Event { data, source } => {
                let data = crate::pusher::wire::bridge_event(room, data, source)?;
                Some(LiveEvent::Event { data, source })
            }
            other => Some(other),
        }
    }

    fn take_pending(&self, token: u64) -> Option<Pending> {
        self.pending.borrow_mut().remove(&token)
    }

    /// Encodes a message once and sends it to every shard with subscribers.
    ///
    /// `merged`: a collaborative room's update is already in the room's document (merged when it
    /// was accepted on this shard).
    fn fan_out(&self, m: Appended, origin: Option<PublishOrigin>, merged: bool) {
        self.metrics.publishes.increment(1);
        self.crdt_appended(&m, merged);
        // Raw broadcast sends the published text as is; app rooms get the `msg` envelope.
        let frame = if m.room.starts_with(RAW_ROOM_PREFIX) {
            encode_frame(OpCode::Text, false, &m.data)
        } else {
            room_message_frame(&m.room, &m.epoch, m.offset, &m.data)
        };
        let mut deliver_here = false;
        {
            let home = self.home.borrow();
            if let Some(interest) = home.get(&m.room) {
                let (namespace, key) = match self.namespaces.of(&m.room) {
                    Ok(ns) if !m.room.starts_with(RAW_ROOM_PREFIX) => {
                        (ns.index, conflation_key(&ns.policy, &m.data))
                    }
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
                    let payload = &frame[frame_header_len(&frame)..];
                    let mut compressed = Vec::with_capacity(payload.len() / 2 + 16);
                    self.with_deflater(15, |d| d.compress(payload, &mut compressed));
                    // The compressed frame keeps the message's type (binary messages, §9.9).
                    let opcode = if proto_codec::protocol::binary_payload(&m.data).is_some() {
                        OpCode::Binary
                    } else {
                        OpCode::Text
                    };
                    encode_frame(opcode, true, &compressed)
                });
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
                    self.deliver_here(m.room.clone(), &frame, deflated.as_ref(), meta);
                }
            }
        }
        if let Some(origin) = origin {
            self.answer_publish(origin, Ok(m));
        }
    }

    fn answer_publish(&self, origin: PublishOrigin, result: Result<Appended, (ErrorCode, String)>) {
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
                    Err((code, reason)) => {
                        self.metrics.op_errors.increment(1);
                        Outgoing::error(id, code, &reason)
                    }
                };
                self.route(shard, ShardMsg::ToConn { conn, out });
            }
            PublishOrigin::Api(tx) => {
                let _ = tx.send(result.map(|m| (m.epoch, m.offset)).map_err(|(c, _)| c));
            }
            PublishOrigin::Raw => {}
        }
    }

    // ---- time-driven work --------------------------------------------------------------

    fn sweep(&self) {
        let now = Instant::now();
        self.now.set(now);
        let sweeps = self.sweeps.get() + 1;
        self.sweeps.set(sweeps);
        if self.id == 0 && sweeps.is_multiple_of(10) {
            // Once a second: the memory figure admission control compares with its budget.
            if let Some(rss) = crate::admission::read_rss_bytes() {
                self.admission.set_rss(rss);
            }
            self.admission.purge(now);
        }
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ws = &self.config.websocket;
        let interval = Duration::from_millis(ws.heartbeat_interval_ms);
        let timeout = Duration::from_millis(ws.heartbeat_timeout_ms);
        let idle = (ws.idle_timeout_ms > 0).then(|| Duration::from_millis(ws.idle_timeout_ms));
        let mut queued = 0usize;
        for conn in self.conns.borrow().values() {
            queued += conn.queued_bytes();
            if let Some(since) = conn.closing_since.get() {
                if now.saturating_duration_since(since) > CLOSE_TIMEOUT {
                    conn.force_end.set(true);
                    conn.wake();
                }
                continue;
            }
            if let Some(at) = conn.shutdown_close_at.get() {
                if now >= at {
                    let hint = fastrand::u64(0..=self.config.shutdown.reconnect_hint_max_ms);
                    if conn.endpoint.is_stream() {
                        // EventSource reconnects after `retry:` (docs/protocol.md §18.3).
                        conn.push_bytes(Bytes::from(format!("retry: {hint}\n\n")));
                    }
                    conn.request_close(CloseRequest {
                        code: CloseCode::GOING_AWAY,
                        reason: format!("{{\"reconnect_after_ms\":{hint}}}"),
                        discard_queue: false,
                    });
                    continue;
                }
            }
            match conn.endpoint.heartbeat() {
                // A long poll ends by itself within its hold.
                Heartbeat::None => {
                    self.check_token_expiry(conn, unix_now);
                    continue;
                }
                // An event stream cannot answer pings: a comment keeps proxies from timing it
                // out, and a dead peer shows up as a write error.
                Heartbeat::Comment => {
                    if now.saturating_duration_since(conn.last_rx.get()) >= interval {
                        conn.last_rx.set(now);
                        conn.push_bytes(Bytes::from_static(proto_codec::sse::HEARTBEAT));
                    }
                    self.check_token_expiry(conn, unix_now);
                    continue;
                }
                Heartbeat::Ping => {}
            }
            match conn.ping_sent.get() {
                Some(sent) if now.saturating_duration_since(sent) > timeout => {
                    conn.request_close(CloseRequest {
                        code: proto_codec::protocol::codes::close::HEARTBEAT_TIMEOUT,
                        reason: "heartbeat timeout".into(),
                        discard_queue: true,
                    });
                }
                None if now.saturating_duration_since(conn.last_rx.get()) >= interval => {
                    conn.ping_sent.set(Some(now));
                    conn.push_ws_control(encode_frame(OpCode::Ping, false, b""));
                }
                _ => {}
            }
            self.check_token_expiry(conn, unix_now);
            if let Some(idle) = idle {
                if conn.endpoint.idles_out()
                    && now.saturating_duration_since(conn.last_op.get()) > idle
                {
                    conn.request_close(CloseRequest {
                        code: proto_codec::protocol::codes::close::IDLE_TIMEOUT,
                        reason: "idle timeout".into(),
                        discard_queue: false,
                    });
                }
            }
        }
        self.metrics.outbound_queued.set(queued as f64);
        self.metrics
            .mailbox_depth
            .set(self.mailboxes.depth(self.id) as f64);
        self.crdt_sweep(now);
        let mut broker = self.broker.borrow_mut();
        broker.expire(now);
        self.metrics.rooms.set(broker.room_count() as f64);
    }

    /// Warns a connection whose token is about to expire (`token_expiring`), and closes it with
    /// 4002 once the grace period after `exp` is over without a `refresh`.
    fn check_token_expiry(&self, conn: &ConnShared, unix_now_ms: u64) {
        let Some(exp) = conn.principal.borrow().expires_at else {
            return;
        };
        let auth = &self.config.auth;
        let close_at_ms = exp
            .saturating_mul(1000)
            .saturating_add(auth.expiry_grace_ms);
        if unix_now_ms >= close_at_ms {
            crate::metrics::limit_hit("token_expired_close");
            conn.request_close(CloseRequest {
                code: proto_codec::protocol::codes::close::TOKEN_EXPIRED,
                reason: "token expired".into(),
                discard_queue: false,
            });
        } else if !conn.expiry_warned.get()
            && unix_now_ms.saturating_add(auth.expiry_warning_ms) >= exp.saturating_mul(1000)
        {
            conn.expiry_warned.set(true);
            conn.send_control(&ServerEvent::TokenExpiring {
                expires_in_ms: close_at_ms - unix_now_ms,
            });
        }
    }

    fn begin_shutdown(&self) {
        if self.shutting_down.replace(true) {
            return;
        }
        for w in self.accept_wakers.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        let now = Instant::now();
        let drain_ms = self.config.shutdown.drain_ms;
        for conn in self.conns.borrow().values() {
            let delay = Duration::from_millis(fastrand::u64(0..=drain_ms));
            conn.shutdown_close_at.set(Some(now + delay));
        }
    }
}

/// A request the broker answers later.
enum Pending {
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
struct PendingSubscribe {
    room: RoomName,
    origin: ShardId,
    conn: ConnId,
    id: Option<u64>,
    seq: u64,
}

/// Where a query's answer goes: an event to a connection, or a value to the API.
enum Answer<T> {
    Conn {
        to: (ShardId, ConnId),
        id: Option<u64>,
    },
    Api(tokio::sync::oneshot::Sender<T>),
}

/// Members as stored by the broker (JSON); entries that do not parse are skipped.
/// The refusal of a publish while a shard it needs is behind its inbox bound.
fn shard_busy() -> (ErrorCode, String) {
    (
        ErrorCode::Unavailable,
        "the node is behind on this room's shard; retry".into(),
    )
}

fn parse_members(json: &[Bytes]) -> Vec<Member> {
    json.iter()
        .filter_map(|m| serde_json::from_slice(m).ok())
        .collect()
}

/// The prefix of raw-broadcast rooms: `~` never appears in an app room name, so the two never
/// meet.
pub const RAW_ROOM_PREFIX: &str = "~raw/";

/// The internal room of the raw-broadcast path `/raw/<room>`.
pub fn raw_room(room: &str) -> String {
    format!("{RAW_ROOM_PREFIX}{room}")
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

/// The header length of a server frame we encoded.
fn frame_header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Runs a shard until graceful shutdown ends (or the listener fails).
pub fn run(setup: ShardSetup) -> std::io::Result<()> {
    if let Some(core) = setup.core {
        runtime::pin_current_thread(core);
    }
    let driver = setup.driver;
    let started = setup.started.clone();
    let result = runtime::block_on(driver, move || async move {
        let mut listeners = Vec::with_capacity(setup.listeners.len());
        for (l, transport) in setup.listeners {
            match monoio::net::TcpListener::from_std(l) {
                Ok(l) => listeners.push((l, transport)),
                Err(e) => {
                    let _ = setup
                        .started
                        .send(Err(format!("shard {}: listener: {e}", setup.id)));
                    return Err(e);
                }
            }
        }
        let ctx = Rc::new(ShardCtx::new(
            setup.id,
            setup.mailboxes,
            setup.config,
            setup.node,
            setup.global,
            setup.policy,
            setup.broker,
        ));
        monoio::spawn(mailbox_loop(ctx.clone()));
        monoio::spawn(sweep_loop(ctx.clone()));
        monoio::spawn(deferred_loop(ctx.clone()));
        let _ = setup.started.send(Ok(ctx.id));
        let loops: Vec<_> = listeners
            .into_iter()
            .map(|(l, transport)| monoio::spawn(accept_loop(ctx.clone(), l, transport)))
            .collect();
        for l in loops {
            l.await;
        }
        // Drain: keep serving this shard's mailbox (rooms homed here, deliveries to its
        // connections) until every shard's connections are gone, or the deadline.
        let deadline = Instant::now()
            + Duration::from_millis(ctx.config.shutdown.drain_ms)
            + CLOSE_TIMEOUT
            + Duration::from_secs(1);
        while ctx.global.connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!(
            shard = ctx.id,
            left = ctx.conns.borrow().len(),
            "shard stopped"
        );
        Ok(())
    });
    match result {
        Ok(r) => r,
        Err(e) => {
            let _ = started.send(Err(format!("runtime: {e}")));
            Err(e)
        }
    }
}

async fn accept_loop(ctx: Rc<ShardCtx>, listener: monoio::net::TcpListener, transport: Transport) {
    let mut backoff_logged = false;
    loop {
        let accept = listener.accept();
        let mut accept = std::pin::pin!(accept);
        let next = poll_fn(|cx| {
            if ctx.shutting_down.get() {
                return Poll::Ready(None);
            }
            ctx.accept_wakers.borrow_mut()[transport as usize] = Some(cx.waker().clone());
            accept.as_mut().poll(cx).map(Some)
        })
        .await;
        match next {
            None => return,
            Some(Ok((stream, peer))) => {
                backoff_logged = false;
                let task = crate::connection::serve(ctx.clone(), stream, peer, transport);
                ctx.metrics
                    .connection_task_bytes
                    .set(std::mem::size_of_val(&task) as f64);
                monoio::spawn(task);
            }
            Some(Err(e)) => {
                // Out of file descriptors (or similar): wait a little instead of spinning.
                if !backoff_logged {
                    tracing::warn!(shard = ctx.id, error = %e, "accept failed; backing off");
                    backoff_logged = true;
                }
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn mailbox_loop(ctx: Rc<ShardCtx>) {
    let mut batch = Vec::with_capacity(256);
    loop {
        ctx.mailboxes.recv_batch(ctx.id, &mut batch).await;
        ctx.now.set(Instant::now());
        for msg in batch.drain(..) {
            ctx.handle(msg);
        }
        ctx.poll_broker();
    }
}

/// Wakes the connections that used up their turn, once per park of the runtime: a timer of the
/// smallest resolution fires only when monoio parks, which it does only when its run queue is
/// empty, so every busy connection's next turn comes after timers, accepts and I/O were polled
/// (under io_uring, monoio re-arms the epoll instance of `poll-io` sockets only when it parks:
/// new input, such as a calm room's publish, is seen once per park). A busy connection thus
/// gets one turn per round of about a millisecond, and connections with little to do run in
/// between: this is what keeps a flood from taking the whole shard (docs/decisions.md, "Fair
/// egress").
async fn deferred_loop(ctx: Rc<ShardCtx>) {
    loop {
        poll_fn(|cx| {
            if ctx.deferred.borrow().is_empty() {
                *ctx.deferred_loop_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        monoio::time::sleep(Duration::from_millis(1)).await;
        let round: Vec<Rc<ConnShared>> = ctx.deferred.borrow_mut().drain(..).collect();
        for conn in round {
            conn.deferred.set(false);
            conn.wake();
        }
    }
}

async fn sweep_loop(ctx: Rc<ShardCtx>) {
    loop {
        monoio::time::sleep(SWEEP_INTERVAL).await;
        ctx.sweep();
    }
}

/// Tells every shard to shut down gracefully and marks the node not ready.
pub fn shutdown_all(global: &Global, mailboxes: &Mailboxes) {
    global.ready.store(false, Ordering::SeqCst);
    global.shutting_down.store(true, Ordering::SeqCst);
    mailboxes.broadcast(|| ShardMsg::Shutdown);
}
