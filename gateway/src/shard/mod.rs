//! A shard: one thread, one monoio runtime, its own listener, connections and rooms.
//!
//! A shard never touches another shard's state; it reaches another shard only through its
//! mailbox. A message to a room goes to the room's home shard, which gets its offset from the
//! broker, encodes the `msg` frame once (and compresses it once if a subscriber wants that), and
//! sends the same `Bytes` to every shard with subscribers of the room.
//!
//! [`ShardCtx`] has roughly six families of methods, each in the file named after it:
//! - **Local side** (`local.rs`): this shard's connections: `register_conn`, the ops a
//!   connection makes (`subscribe`, `publish`, `send_event`, `ask_*`, `unsubscribe`), each
//!   routed to the room's home shard, and what comes back (`local_subscribed`, `deliver_here`,
//!   `deliver_live_here`, `to_conn`, `close_conn`).
//! - **Home side** (`home.rs`): the rooms this shard is home to, named `home_*`: subscriptions
//!   answered with the broker's recovery (`answer_subscribe`), publishes stored and fanned out
//!   once (`fan_out`, `fan_out_live`, `broadcast_live`), presence, history and members.
//! - **Broker completions** (`completions.rs`): `poll_broker` handles what the broker answers
//!   later and what other nodes send.
//! - **Documents** (`crdt.rs`): collaborative rooms' hooks, named `crdt_*`, called by the home
//!   side.
//! - **Dispatch** (`dispatch.rs`): [`ShardCtx::handle`], one arm per mailbox message, each a call
//!   into one of the above.
//! - **Time and queries** (`sweep.rs`, `admin.rs`): `sweep` (heartbeats, deadlines, token
//!   expiry, metrics), `begin_shutdown`, and `admin_query` for the server API.
//!
//! This file holds the state and the small helpers every family uses (`route`, `token`,
//! `with_deflater`); `serve.rs` the shard's thread and its loops (`serve::run`).

mod admin;
mod completions;
mod crdt;
mod dispatch;
mod home;
mod kinds;
mod local;
pub mod serve;
mod sweep;

pub use home::conflation_key;
use home::Pending;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use broker_bridge::Broker;
use proto_codec::ws::MessageDeflater;

use crate::admission::Admission;
use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::connection::shared::ConnShared;
use crate::connection::write_list::WriteList;
use crate::ids::{ConnId, ShardId};
use crate::listener::Transport;
use crate::mailbox::{Mailboxes, ShardMsg};
use crate::metrics::ShardMetrics;
use crate::namespaces::Namespaces;
use crate::rooms::crdt::CrdtRooms;
use crate::rooms::home::HomeRooms;
use crate::rooms::local::LocalRooms;
use crate::rooms::presence::Presence;
use crate::runtime::ResolvedDriver;
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
    /// Connections whose queue a delivery started, for the write loop's next pass.
    pub writes: WriteList,
}

impl ShardCtx {
    pub(super) fn new(
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
            writes: WriteList::default(),
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

    /// The client id of a connection of this shard (as in `hello`).
    pub fn client_id(&self, conn: ConnId) -> String {
        format!("{}-{}-{}", self.node, self.id, conn)
    }

    /// Sends a message to a shard; to this shard it is handled at once.
    pub(crate) fn route(&self, to: ShardId, msg: ShardMsg) {
        if to == self.id {
            self.handle(msg);
        } else {
            self.mailboxes.send(to, msg);
        }
    }

    fn count_fanout(&self, n: usize) {
        self.fanout_work.set(self.fanout_work.get().wrapping_add(n));
    }

    fn token(&self) -> u64 {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        t
    }
}

/// The prefix of raw-broadcast rooms: `~` never appears in an app room name, so the two never
/// meet.
pub const RAW_ROOM_PREFIX: &str = "~raw/";

/// The internal room of the raw-broadcast path `/raw/<room>`.
pub fn raw_room(room: &str) -> String {
    format!("{RAW_ROOM_PREFIX}{room}")
}

/// Tells every shard to shut down gracefully and marks the node not ready.
pub fn shutdown_all(global: &Global, mailboxes: &Mailboxes) {
    global.ready.store(false, Ordering::SeqCst);
    global.shutting_down.store(true, Ordering::SeqCst);
    mailboxes.broadcast(|| ShardMsg::Shutdown);
}
