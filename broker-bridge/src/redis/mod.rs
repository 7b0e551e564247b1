//! The Redis broker: many nodes share rooms, one order per room, history in Redis streams.
//!
//! One bridge thread per node runs a tokio current-thread runtime with the `redis` crate; each
//! shard holds a [`RedisBroker`] handle that sends it commands over a lock-free queue and gets
//! events back on its own queue (the bridge pokes the shard through the `notify` callback the
//! node gives it). A publish is one Lua script on Redis (next offset, stream entry, echo on the
//! room's channel), so the stream id is the room's offset on every node; every node, the
//! publishing one included, delivers from the echo, put in order by the [`sequencer`].
//!
//! What the bridge guarantees and how it is tested is in `docs/scaling.md`.

mod bridge;
pub mod scripts;
pub mod sequencer;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use tokio::sync::mpsc::UnboundedSender;

use crate::{
    Appended, Broker, BrokerError, BrokerEvent, Completion, DocumentStore, Epoch, HistoryPolicy,
    LiveEvent, LiveRelay, OrderedHistory, PresenceStore, Recovery, RoomName, Token,
};

/// How the bridge reaches Redis and paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The Redis URL (`redis://[user:pass@]host:port[/db]`), or with `cluster` the seed nodes.
    pub urls: Vec<String>,
    /// Redis Cluster: sharded pub/sub (SSUBSCRIBE/SPUBLISH) and hash-tagged keys.
    pub cluster: bool,
    /// Redis Sentinel: `urls` are sentinels, asked for this service's primary on every connect.
    pub sentinel_service: Option<String>,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// How long a room's epoch and last offset outlive its last publish.
    pub room_retention: Duration,
    /// A presence entry expires this long after its node last refreshed it (refreshed every
    /// third of it), so a dead node's members disappear within it.
    pub presence_ttl: Duration,
    /// How often the canary probe is published.
    pub canary_interval: Duration,
    /// A probe not back within this marks the subscription broken (`/readyz` fails) and forces a
    /// reconnect with gap recovery.
    pub canary_timeout: Duration,
    /// Reconnect backoff: exponential from `reconnect_min` to `reconnect_max`, full jitter.
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// Connecting gives up after this.
    pub connect_timeout: Duration,
    /// A command not answered within this fails (a hung Redis counts as down).
    pub response_timeout: Duration,
    /// Bytes of publishes the bridge may hold, from a shard's send until Redis answered (or the
    /// link that carried them is gone); past it a publish is refused at once (`BrokerError::Behind`).
    pub max_queued_bytes: usize,
    /// What this node tells the others about itself (`None`: it does not announce itself).
    pub announce: Option<NodeAnnouncement>,
}

/// A node's entry in the deployment's node list ([`wire::nodes_key`]): written on every
/// presence refresh with the presence TTL, so a node that stops refreshing drops out of the
/// list within that TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAnnouncement {
    /// The node's name (unique per deployment: the list's key).
    pub name: String,
    /// What the others read about it: a JSON object, stored as given.
    pub info: String,
}

/// The node list as the bridge last read it from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodes {
    /// When it was read (it is read again at every presence refresh while the link is up).
    pub read_at: Instant,
    /// Every node whose entry had not expired: its [`NodeAnnouncement::info`].
    pub nodes: Vec<Bytes>,
}

impl Default for RedisSettings {
    fn default() -> RedisSettings {
        RedisSettings {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            sentinel_service: None,
            prefix: "ringcast".into(),
            room_retention: Duration::from_secs(86_400),
            presence_ttl: Duration::from_secs(15),
            canary_interval: Duration::from_secs(2),
            canary_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            max_queued_bytes: 64 << 20,
            announce: None,
        }
    }
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A URL does not parse.
    #[error("invalid redis URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No URL was given.
    #[error("no redis URL configured")]
    NoUrl,
    /// The thread could not be spawned.
    #[error("spawning the bridge thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// The bridge's health, shared with the admin listener.
#[derive(Debug, Default)]
pub struct BridgeHealth {
    connected: AtomicBool,
    canary_ok: AtomicBool,
    /// The last link was dropped because its canary did not come back (cleared by the next
    /// probe that does).
    canary_failed: AtomicBool,
    reconnects: AtomicU64,
    /// Bytes of publishes held by the bridge ([`QueuedBytes`]).
    queued_bytes: AtomicUsize,
    /// The node list, once read (only when the node announces itself).
    nodes: Mutex<Option<ClusterNodes>>,
}

impl BridgeHealth {
    /// Connected, and the last canary probe came back: `/readyz` is green.
    pub fn is_ready(&self) -> bool {
        self.connected.load(Ordering::SeqCst) && self.canary_ok.load(Ordering::SeqCst)
    }

    /// Connected to Redis.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The last canary probe came back in time.
    pub fn canary_ok(&self) -> bool {
        self.canary_ok.load(Ordering::SeqCst)
    }

    /// Times the link was lost and rebuilt.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::SeqCst)
    }

    /// The deployment's nodes as last read from Redis (`None` until the first read, or when
    /// the node does not announce itself).
    pub fn cluster_nodes(&self) -> Option<ClusterNodes> {
        // A poisoned lock still holds the last complete list (it is replaced whole).
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_cluster_nodes(&self, nodes: ClusterNodes) {
        *self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(nodes);
    }

    /// Why `/readyz` is red, if it is.
    pub fn problem(&self) -> Option<&'static str> {
        if self.canary_failed.load(Ordering::SeqCst) {
            Some("broker subscription stopped delivering (canary); reconnecting")
        } else if !self.is_connected() {
            Some("broker disconnected")
        } else if !self.canary_ok() {
            Some("broker subscription not confirmed yet (canary)")
        } else {
            None
        }
    }
}

/// Events from the bridge to one shard.
#[derive(Debug, Default)]
struct ShardQueue {
    events: SegQueue<BrokerEvent>,
    /// The [`BrokerEvent::weight`] of `events`: past [`RedisSettings::max_queued_bytes`] the
    /// bridge stops adding other nodes' messages (the rooms read them from their streams once the
    /// shard has drained; `sequencer`) and drops their live events.
    bytes: AtomicUsize,
    /// The shard was poked and has not drained since.
    poked: AtomicBool,
}

/// A request from a shard to the bridge.
#[derive(Debug)]
enum Command {
    Publish {
        shard: usize,
        token: Token,
        room: RoomName,
        data: Bytes,
        policy: HistoryPolicy,
        queued: QueuedBytes,
    },
    Recover {
        shard: usize,
        token: Token,
        room: RoomName,
        since: Option<(Epoch, u64)>,
        policy: HistoryPolicy,
    },
    History {
        shard: usize,
        token: Token,
        room: RoomName,
        since: Option<(Epoch, u64)>,
        limit: usize,
        policy: HistoryPolicy,
    },
    Interest {
        shard: usize,
        room: RoomName,
        on: bool,
    },
    PresenceSet {
        room: RoomName,
        client: String,
        member: Option<Bytes>,
    },
    Members {
        shard: usize,
        token: Token,
        room: RoomName,
    },
    Live {
        room: RoomName,
        event: LiveEvent,
        queued: QueuedBytes,
    },
    DocLoad {
        shard: usize,
        token: Token,
        room: RoomName,
    },
    DocStore {
        room: RoomName,
        snapshot: Vec<u8>,
        queued: QueuedBytes,
    },
}

/// Starts the bridge thread and returns one handle per shard, plus its health.
///
/// `notify(shard)` must make that shard call [`Broker::poll_events`] soon (its mailbox wake);
/// it is called at most once between two polls. `on_start` runs first on the bridge thread (the
/// node pins it to its cores there).
pub fn start(
    settings: RedisSettings,
    shards: usize,
    notify: Arc<dyn Fn(usize) + Send + Sync>,
    on_start: Box<dyn FnOnce() + Send>,
) -> Result<(Vec<RedisBroker>, Arc<BridgeHealth>), BridgeError> {
    let max_queued_bytes = settings.max_queued_bytes;
    let target = bridge::Target::parse(&settings)?;
    let health = Arc::new(BridgeHealth::default());
    let queues: Vec<Arc<ShardQueue>> = (0..shards).map(|_| Arc::default()).collect();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let queues = queues.clone();
        let health = health.clone();
        std::thread::Builder::new()
            .name("ringcast-bridge".into())
            .spawn(move || {
                on_start();
                bridge::run(settings, target, rx, queues, notify, health)
            })?;
    }
    let handles = queues
        .into_iter()
        .enumerate()
        .map(|(shard, queue)| RedisBroker {
            shard,
            tx: tx.clone(),
            queue,
            health: health.clone(),
            interest: 0,
            max_queued_bytes,
        })
        .collect();
    Ok((handles, health))
}

/// Describes the bridge's metrics (call once after installing the recorder).
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "ringcast_bridge_connected",
        "1 while the Redis bridge is connected"
    );
    metrics::describe_gauge!(
        "ringcast_bridge_canary_ok",
        "1 while the bridge's canary probe comes back through its subscription"
    );
    metrics::describe_counter!(
        "ringcast_bridge_reconnects_total",
        "Times the Redis link was lost and rebuilt"
    );
    metrics::describe_histogram!(
        "ringcast_bridge_lag_seconds",
        metrics::Unit::Seconds,
        "Time from Redis storing a message to the bridge receiving its echo"
    );
    metrics::describe_counter!(
        "ringcast_bridge_stream_reads_total",
        "Reads of a room's stream: a room's first sync, a hole in its echo, a resync after a reconnect, a recovery"
    );
    metrics::describe_counter!(
        "ringcast_bridge_lost_total",
        "Messages the stream no longer held when a room resynced (sent as gap notices)"
    );
    metrics::describe_counter!(
        "ringcast_bridge_dropped_total",
        "What the bridge dropped at its bound: another node's message for a shard whose queue is full (kind=behind; its room reads it from the stream later), a live event to or from Redis (live_in, live_out), a document snapshot (snapshot; the next one replaces it)"
    );
    metrics::describe_gauge!(
        "ringcast_bridge_rooms",
        "Rooms this node is subscribed to upstream"
    );
}

/// A publish's bytes, counted against [`RedisSettings::max_queued_bytes`] until this is
/// dropped: with the request once Redis answered it, or refused, or lost with its link. (The
/// count cannot leak: every way a request ends drops it.)
#[derive(Debug)]
pub(crate) struct QueuedBytes {
    bytes: usize,
    health: Arc<BridgeHealth>,
}

impl Drop for QueuedBytes {
    fn drop(&mut self) {
        self.health
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A shard's handle on the Redis bridge.
#[derive(Debug)]
pub struct RedisBroker {
    shard: usize,
    tx: UnboundedSender<Command>,
    queue: Arc<ShardQueue>,
    health: Arc<BridgeHealth>,
    interest: usize,
    max_queued_bytes: usize,
}

impl RedisBroker {
    /// Counts `bytes` against the bridge's bound until the returned value is dropped; `None`
    /// when the bridge already holds its bound.
    fn reserve(&self, bytes: usize) -> Option<QueuedBytes> {
        if self.health.queued_bytes.load(Ordering::Relaxed) > self.max_queued_bytes {
            return None;
        }
        self.health.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        Some(QueuedBytes {
            bytes,
            health: self.health.clone(),
        })
    }

    fn send(&self, cmd: Command) -> Result<(), BrokerError> {
        self.tx.send(cmd).map_err(|_| BrokerError::Stopped)
    }

    fn check_connected(&self) -> Result<(), BrokerError> {
        if self.health.is_connected() {
            Ok(())
        } else {
            Err(BrokerError::Disconnected)
        }
    }
}

impl OrderedHistory for RedisBroker {
    fn publish(
        &mut self,
        room: &RoomName,
        data: Bytes,
        policy: HistoryPolicy,
        token: Token,
        _now: Instant,
    ) -> Result<Completion<Appended>, BrokerError> {
        // While Redis is down a publish is refused at once, never queued into the void; and
        // while the bridge holds its bound of publishes, too.
        self.check_connected()?;
        let Some(queued) = self.reserve(data.len()) else {
            metrics::counter!("ringcast_bridge_refused_total", "reason" => "queue_full")
                .increment(1);
            return Err(BrokerError::Behind);
        };
        self.send(Command::Publish {
            shard: self.shard,
            token,
            room: room.clone(),
            data,
            policy,
            queued,
        })?;
        Ok(Completion::Pending)
    }

    fn recover(
        &mut self,
        room: &RoomName,
        since: Option<(&str, u64)>,
        policy: HistoryPolicy,
        token: Token,
        _now: Instant,
    ) -> Result<Completion<Recovery>, BrokerError> {
        self.check_connected()?;
        self.send(Command::Recover {
            shard: self.shard,
            token,
            room: room.clone(),
            since: since.map(|(e, o)| (e.into(), o)),
            policy,
        })?;
        Ok(Completion::Pending)
    }

    fn history(
        &mut self,
        room: &RoomName,
        since: Option<(&str, u64)>,
        limit: usize,
        policy: HistoryPolicy,
        token: Token,
        _now: Instant,
    ) -> Result<Completion<Recovery>, BrokerError> {
        self.check_connected()?;
        self.send(Command::History {
            shard: self.shard,
            token,
            room: room.clone(),
            since: since.map(|(e, o)| (e.into(), o)),
            limit,
            policy,
        })?;
        Ok(Completion::Pending)
    }
}

impl PresenceStore for RedisBroker {
    fn presence_set(&mut self, room: &RoomName, client: &str, member: Option<Bytes>) {
        let _ = self.send(Command::PresenceSet {
            room: room.clone(),
            client: client.to_string(),
            member,
        });
    }

    fn members(
        &mut self,
        room: &RoomName,
        token: Token,
    ) -> Result<Completion<Option<Vec<Bytes>>>, BrokerError> {
        self.check_connected()?;
        self.send(Command::Members {
            shard: self.shard,
            token,
            room: room.clone(),
        })?;
        Ok(Completion::Pending)
    }
}

impl LiveRelay for RedisBroker {
    fn reaches_other_nodes(&self) -> bool {
        true
    }

    fn publish_live(&mut self, room: &RoomName, event: LiveEvent) {
        if !self.health.is_connected() {
            return;
        }
        // Live events are never stored: while the bridge holds its bound they are dropped.
        let Some(queued) = self.reserve(event.bytes().len()) else {
            metrics::counter!("ringcast_bridge_dropped_total", "kind" => "live_out").increment(1);
            return;
        };
        let _ = self.send(Command::Live {
            room: room.clone(),
            event,
            queued,
        });
    }
}

impl DocumentStore for RedisBroker {
    fn doc_load(
        &mut self,
        room: &RoomName,
        token: Token,
    ) -> Result<Completion<Option<crate::DocSnapshot>>, BrokerError> {
        self.check_connected()?;
        self.send(Command::DocLoad {
            shard: self.shard,
            token,
            room: room.clone(),
        })?;
        Ok(Completion::Pending)
    }

    fn doc_store(&mut self, room: &RoomName, snapshot: crate::DocSnapshot) {
        // Best effort: a snapshot that is not stored (Redis behind, or down) is replaced by
        // the next one, and the stream holds every update meanwhile.
        let snapshot = snapshot.encode();
        let Some(queued) = self.reserve(snapshot.len()) else {
            metrics::counter!("ringcast_bridge_dropped_total", "kind" => "snapshot").increment(1);
            return;
        };
        let _ = self.send(Command::DocStore {
            room: room.clone(),
            snapshot,
            queued,
        });
    }
}

impl Broker for RedisBroker {
    fn set_interest(&mut self, room: &RoomName, interested: bool) {
        if interested {
            self.interest += 1;
        } else {
            self.interest = self.interest.saturating_sub(1);
        }
        // The bridge keeps the room's order even while Redis is down (it resubscribes later).
        let _ = self.send(Command::Interest {
            shard: self.shard,
            room: room.clone(),
            on: interested,
        });
    }

    fn poll_events(&mut self, out: &mut Vec<BrokerEvent>) {
        // Cleared before draining: an event pushed after the drain pokes the shard again.
        self.queue.poked.store(false, Ordering::SeqCst);
        while let Some(ev) = self.queue.events.pop() {
            self.queue.bytes.fetch_sub(ev.weight(), Ordering::Relaxed);
            out.push(ev);
        }
    }

    fn expire(&mut self, _now: Instant) {
        // Redis expires streams, meta and presence itself.
    }

    fn room_count(&self) -> usize {
        self.interest
    }
}
