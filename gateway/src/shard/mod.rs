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
//! This file holds the state, the small helpers every family uses (`route`, `token`,
//! `with_deflater`) and the shard's loops (`run`).

mod admin;
mod completions;
mod crdt;
mod dispatch;
mod home;
mod kinds;
mod local;
mod sweep;

pub use home::conflation_key;
use home::Pending;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use broker_bridge::Broker;
use proto_codec::ws::MessageDeflater;

use crate::admission::Admission;
use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::connection::shared::ConnShared;
use crate::connection::Transport;
use crate::mailbox::{ConnId, Mailboxes, ShardId, ShardMsg};
use crate::metrics::ShardMetrics;
use crate::namespaces::Namespaces;
use crate::rooms::crdt::CrdtRooms;
use crate::rooms::home::HomeRooms;
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
