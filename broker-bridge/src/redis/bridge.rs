//! The bridge thread: the link to Redis, the command loop, and what runs on a timer.
//!
//! Two connections per link: one for commands (publishes, reads, presence) and one holding the
//! subscriptions, whose push messages feed the [`Sequencer`]. Any failure of either (an I/O
//! error, a command timing out, the subscription connection closing, the canary not coming back)
//! drops the whole link: pending requests fail with `unavailable`, and the link is rebuilt with
//! exponential backoff and full jitter; then every room subscribes again and reads its stream
//! from its last offset. Publishes go out in per-room pipelines, one batch at a time, so a room's
//! publishes from this node reach Redis in the order the node received them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline,
    ProtocolVersion, PushInfo, PushKind, RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::scripts::{self, Scripts};
use super::sequencer::{self, Action, Live, Sequencer};
use super::wire::{self, ChannelMsg, RoomKeys};
use super::{BridgeError, BridgeHealth, Command, RedisSettings, ShardQueue};
use crate::embedded::new_epoch;
use crate::{BrokerEvent, Epoch, HistoryPolicy, RoomName, Token};

/// How often the loop checks the link, the canary and presence.
const TICK: Duration = Duration::from_millis(100);

/// Where Redis is.
#[derive(Clone)]
pub(super) enum Target {
    Single(Client),
    Cluster(Vec<ConnectionInfo>),
    /// Sentinels and the service name; the primary is looked up on every connect.
    Sentinel(Vec<ConnectionInfo>, String),
}

impl Target {
    pub(super) fn parse(settings: &RedisSettings) -> Result<Target, BridgeError> {
        if settings.urls.is_empty() {
            return Err(BridgeError::NoUrl);
        }
        let mut infos = Vec::with_capacity(settings.urls.len());
        for url in &settings.urls {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| BridgeError::Url {
                    url: crate::redact_url(url),
                    reason: e.to_string(),
                })?;
            // RESP3: push messages share the connection with commands.
            let redis = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            infos.push(info.set_redis_settings(redis));
        }
        if settings.cluster {
            return Ok(Target::Cluster(infos));
        }
        if let Some(service) = &settings.sentinel_service {
            return Ok(Target::Sentinel(infos, service.clone()));
        }
        let info = infos.swap_remove(0);
        let client = Client::open(info).map_err(|e| BridgeError::Url {
            url: settings.urls[0].clone(),
            reason: e.to_string(),
        })?;
        Ok(Target::Single(client))
    }
}

/// A connection of either kind.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Subscribes to channels: one batched SUBSCRIBE on a single Redis; SSUBSCRIBE per channel
    /// on a cluster (a sharded subscribe takes channels of one slot only).
    async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channels).await,
            Conn::Cluster(c) => {
                for ch in channels {
                    c.ssubscribe(ch).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channels).await,
            Conn::Cluster(c) => {
                for ch in channels {
                    c.sunsubscribe(ch).await?;
                }
                Ok(())
            }
        }
    }
}

/// Hands events to shards.
struct Outlet {
    queues: Vec<Arc<ShardQueue>>,
    notify: Arc<dyn Fn(usize) + Send + Sync>,
    /// A shard's queue is full past this many bytes ([`RedisSettings::max_queued_bytes`]).
    bound: usize,
}

impl Outlet {
    fn emit(&self, shard: usize, event: BrokerEvent) {
        let Some(q) = self.queues.get(shard) else {
            return;
        };
        if let BrokerEvent::Gap { from, to, .. } = &event {
            metrics::counter!("ringcast_bridge_lost_total").increment(to - from + 1);
        }
        q.bytes.fetch_add(event.weight(), Ordering::Relaxed);
        q.events.push(event);
        if !q.poked.swap(true, Ordering::SeqCst) {
            (self.notify)(shard);
        }
    }

    /// Whether a shard's queue holds more than its bound: other nodes' messages wait in their
    /// streams, their live events are dropped. Answers to the shard's own requests still go.
    fn is_full(&self, shard: usize) -> bool {
        self.queues
            .get(shard)
            .is_some_and(|q| q.bytes.load(Ordering::Relaxed) > self.bound)
    }

    /// Whether a shard's queue has drained below half its bound: the rooms that fell behind
    /// for it may read what they missed.
    fn has_room(&self, shard: usize) -> bool {
        self.queues
            .get(shard)
            .is_some_and(|q| q.bytes.load(Ordering::Relaxed) <= self.bound / 2)
    }
}

/// A publish waiting for its batch.
struct PublishReq {
    shard: usize,
    token: Token,
    room: RoomName,
    data: Bytes,
    policy: HistoryPolicy,
    /// Released when the request is dropped.
    _queued: super::QueuedBytes,
}

/// What a spawned task reports back to the loop.
enum Done {
    Connected {
        gen: u64,
        result: RedisResult<(Conn, Conn)>,
    },
    Subscribed {
        gen: u64,
        rooms: Vec<RoomName>,
        canary: bool,
        result: RedisResult<()>,
    },
    Read {
        gen: u64,
        room: RoomName,
        id: u64,
        result: Result<sequencer::ReadResult, String>,
    },
    LinkError {
        gen: u64,
        reason: String,
    },
}

/// The link while it is up.
struct Link {
    cmd: Conn,
    sub: Conn,
    publisher: UnboundedSender<PublishReq>,
    canary: CanarySub,
}

/// The canary channel's subscription on the current link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CanarySub {
    NotSent,
    Sent,
    InForce,
}

/// The last canary probe.
#[derive(Debug, Default)]
struct Canary {
    seq: u64,
    sent_at: Option<Instant>,
    back: bool,
}

struct Bridge {
    settings: Arc<RedisSettings>,
    target: Target,
    instance: Arc<str>,
    scripts: Arc<Scripts>,
    outlet: Arc<Outlet>,
    health: Arc<BridgeHealth>,
    seq: Sequencer,
    link: Option<Link>,
    gen: u64,
    connecting: bool,
    attempt: u32,
    next_connect: Instant,
    done_tx: UnboundedSender<Done>,
    push_tx: UnboundedSender<(u64, PushInfo)>,
    members: HashMap<RoomName, HashMap<String, Bytes>>,
    next_presence_refresh: Instant,
    canary: Canary,
    to_sub: Vec<RoomName>,
    to_unsub: Vec<RoomName>,
}

/// The bridge thread's body.
pub(super) fn run(
    settings: RedisSettings,
    target: Target,
    rx: UnboundedReceiver<Command>,
    queues: Vec<Arc<ShardQueue>>,
    notify: Arc<dyn Fn(usize) + Send + Sync>,
    health: Arc<BridgeHealth>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the broker bridge could not start its runtime");
            return;
        }
    };
    let bound = settings.max_queued_bytes;
    let (done_tx, done_rx) = unbounded_channel();
    let (push_tx, push_rx) = unbounded_channel();
    let now = Instant::now();
    let bridge = Bridge {
        settings: Arc::new(settings),
        target,
        instance: format!("{:016x}", fastrand::u64(..)).into(),
        scripts: Arc::new(Scripts::new()),
        outlet: Arc::new(Outlet {
            queues,
            notify,
            bound,
        }),
        health,
        seq: Sequencer::new(),
        link: None,
        gen: 0,
        connecting: false,
        attempt: 0,
        next_connect: now,
        done_tx,
        push_tx,
        members: HashMap::new(),
        next_presence_refresh: now,
        canary: Canary::default(),
        to_sub: Vec::new(),
        to_unsub: Vec::new(),
    };
    rt.block_on(bridge.run(rx, done_rx, push_rx));
}

impl Bridge {
    async fn run(
        mut self,
        mut rx: UnboundedReceiver<Command>,
        mut done_rx: UnboundedReceiver<Done>,
        mut push_rx: UnboundedReceiver<(u64, PushInfo)>,
    ) {
        // Starting Redis-less is allowed: the node is not ready until the link is up. The gauges
        // exist from the start, so an alert on them fires for a node that never connected.
        metrics::gauge!("ringcast_bridge_connected").set(0.0);
        metrics::gauge!("ringcast_bridge_canary_ok").set(0.0);
        metrics::counter!("ringcast_bridge_reconnects_total").increment(0);
        let mut out = Vec::new();
        self.seq.down("connecting to redis", &mut out);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(push) = push_rx.recv() => {
                    self.on_push(push);
                    while let Ok(p) = push_rx.try_recv() {
                        self.on_push(p);
                    }
                }
                Some(done) = done_rx.recv() => self.on_done(done),
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else {
                        // Every shard is gone.
                        return;
                    };
                    self.on_command(cmd);
                    while let Ok(c) = rx.try_recv() {
                        self.on_command(c);
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
            self.flush_subscriptions();
        }
    }

    fn act(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Subscribe(room) => self.to_sub.push(room),
                Action::Unsubscribe(room) => self.to_unsub.push(room),
                Action::Read {
                    room,
                    id,
                    from,
                    limit,
                    floor,
                } => self.spawn_read(room, id, from, limit, floor),
                Action::Emit { shard, event } => self.outlet.emit(shard, event),
            }
        }
    }

    fn keys(&self, room: &str) -> RoomKeys {
        RoomKeys::new(&self.settings.prefix, room)
    }

    fn publish_cmd(&self) -> &'static str {
        if self.settings.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    // ---- commands from shards ------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        let mut out = Vec::new();
        match cmd {
            Command::Publish {
                shard,
                token,
                room,
                data,
                policy,
                queued,
            } => {
                let req = PublishReq {
                    shard,
                    token,
                    room,
                    data,
                    policy,
                    _queued: queued,
                };
                let refused = match &self.link {
                    Some(link) => link.publisher.send(req).err().map(|e| e.0),
                    None => Some(req),
                };
                if let Some(req) = refused {
                    self.outlet.emit(
                        req.shard,
                        BrokerEvent::Failed {
                            token: req.token,
                            reason: "redis disconnected".into(),
                        },
                    );
                }
            }
            Command::Recover {
                shard,
                token,
                room,
                since,
                policy,
            } => self
                .seq
                .recover(&room, shard, token, since, policy, &mut out),
            Command::History {
                shard,
                token,
                room,
                since,
                limit,
                policy,
            } => self.spawn_history(shard, token, room, since, limit, policy),
            Command::Interest { shard, room, on } => {
                self.seq.interest(&room, shard, on, &mut out);
                metrics::gauge!("ringcast_bridge_rooms").set(self.seq.len() as f64);
            }
            Command::PresenceSet {
                room,
                client,
                member,
            } => self.presence_set(room, client, member),
            Command::Members { shard, token, room } => self.spawn_members(shard, token, room),
            Command::DocLoad { shard, token, room } => self.spawn_doc_load(shard, token, room),
            Command::DocStore {
                room,
                snapshot,
                queued,
            } => {
                if let Some(link) = &self.link {
                    let mut conn = link.cmd.clone();
                    let key = self.keys(&room).doc;
                    let done = self.done_tx.clone();
                    let gen = self.gen;
                    tokio::spawn(async move {
                        let _queued = queued;
                        let r: RedisResult<Value> = redis::cmd("SET")
                            .arg(key)
                            .arg(snapshot)
                            .query_async(&mut conn)
                            .await;
                        if let Err(e) = r {
                            report_link_error(&done, gen, &e);
                        }
                    });
                }
            }
            Command::Live {
                room,
                event,
                queued,
            } => {
                if let Some(link) = &self.link {
                    let mut conn = link.cmd.clone();
                    let channel = self.keys(&room).channel;
                    let body = wire::live_payload(&self.instance, &event);
                    let cmd = self.publish_cmd();
                    let done = self.done_tx.clone();
                    let gen = self.gen;
                    tokio::spawn(async move {
                        let _queued = queued;
                        let r: RedisResult<Value> = redis::cmd(cmd)
                            .arg(channel)
                            .arg(body)
                            .query_async(&mut conn)
                            .await;
                        if let Err(e) = r {
                            report_link_error(&done, gen, &e);
                        }
                    });
                }
            }
        }
        self.act(out);
    }

    fn presence_set(&mut self, room: RoomName, client: String, member: Option<Bytes>) {
        let keys = self.keys(&room);
        match &member {
            Some(m) => {
                self.members
                    .entry(room)
                    .or_default()
                    .insert(client.clone(), m.clone());
            }
            None => {
                if let Some(map) = self.members.get_mut(&room) {
                    map.remove(&client);
                    if map.is_empty() {
                        self.members.remove(&room);
                    }
                }
            }
        }
        let Some(link) = &self.link else {
            // Joins are written by the refresh after the link is back; a leave lost now
            // expires with its entry.
            return;
        };
        let mut conn = link.cmd.clone();
        let scripts = self.scripts.clone();
        let ttl = self.settings.presence_ttl.as_millis() as u64;
        tokio::spawn(async move {
            let _: RedisResult<Value> = match member {
                Some(m) => {
                    scripts
                        .presence_set
                        .key(&keys.presence)
                        .arg(ttl)
                        .arg(&client)
                        .arg(m.as_ref())
                        .invoke_async(&mut conn)
                        .await
                }
                None => {
                    redis::cmd("HDEL")
                        .arg(&keys.presence)
                        .arg(&client)
                        .query_async(&mut conn)
                        .await
                }
            };
        });
    }

    fn spawn_members(&mut self, shard: usize, token: Token, room: RoomName) {
        let Some(link) = &self.link else {
            self.outlet.emit(shard, failed(token, "redis disconnected"));
            return;
        };
        let mut conn = link.cmd.clone();
        let scripts = self.scripts.clone();
        let outlet = self.outlet.clone();
        let keys = self.keys(&room);
        tokio::spawn(async move {
            let r: RedisResult<Value> = scripts
                .presence_get
                .key(&keys.presence)
                .invoke_async(&mut conn)
                .await;
            let event = match r
                .map_err(|e| e.to_string())
                .and_then(|v| scripts::parse_members(v).map_err(|e| e.to_string()))
            {
                Ok(members) => BrokerEvent::Members {
                    token,
                    room,
                    members,
                },
                Err(reason) => failed(token, &reason),
            };
            outlet.emit(shard, event);
        });
    }

    fn spawn_doc_load(&mut self, shard: usize, token: Token, room: RoomName) {
        let Some(link) = &self.link else {
            self.outlet.emit(shard, failed(token, "redis disconnected"));
            return;
        };
        let mut conn = link.cmd.clone();
        let outlet = self.outlet.clone();
        let key = self.keys(&room).doc;
        tokio::spawn(async move {
            let r: RedisResult<Option<Vec<u8>>> =
                redis::cmd("GET").arg(key).query_async(&mut conn).await;
            let event = match r {
                Ok(value) => BrokerEvent::DocLoaded {
                    token,
                    room,
                    snapshot: value.and_then(|v| crate::DocSnapshot::decode(&v)),
                },
                Err(e) => failed(token, &e.to_string()),
            };
            outlet.emit(shard, event);
        });
    }

    fn spawn_history(
        &mut self,
        shard: usize,
        token: Token,
        room: RoomName,
        since: Option<(Epoch, u64)>,
        limit: usize,
        policy: HistoryPolicy,
    ) {
        let Some(link) = &self.link else {
            self.outlet.emit(shard, failed(token, "redis disconnected"));
            return;
        };
        let mut conn = link.cmd.clone();
        let scripts = self.scripts.clone();
        let outlet = self.outlet.clone();
        let keys = self.keys(&room);
        let limit = limit.max(1);
        let mode = match &since {
            Some((_, o)) => scripts::ReadMode::After(*o),
            None => scripts::ReadMode::Last(limit),
        };
        tokio::spawn(async move {
            let parsed = scripts::read(&mut conn, &scripts.read, &keys, mode, limit, None, 0).await;
            let event = match parsed {
                Ok(result) => BrokerEvent::Recovered {
                    token,
                    room,
                    recovery: sequencer::history(result, since, limit, policy),
                },
                Err(reason) => failed(token, &reason),
            };
            outlet.emit(shard, event);
        });
    }

    fn spawn_read(&mut self, room: RoomName, id: u64, from: Option<u64>, limit: usize, floor: u64) {
        let Some(link) = &self.link else {
            return;
        };
        metrics::counter!("ringcast_bridge_stream_reads_total").increment(1);
        let mut conn = link.cmd.clone();
        let scripts = self.scripts.clone();
        let done = self.done_tx.clone();
        let gen = self.gen;
        let keys = self.keys(&room);
        let meta_ttl = self.settings.room_retention.as_millis().max(1) as u64;
        let mode = from.map_or(scripts::ReadMode::None, scripts::ReadMode::After);
        tokio::spawn(async move {
            let result = scripts::read(
                &mut conn,
                &scripts.read,
                &keys,
                mode,
                limit,
                Some(meta_ttl),
                floor,
            )
            .await
            .and_then(|r| r.ok_or_else(|| "the room has no epoch after a creating read".into()));
            let _ = done.send(Done::Read {
                gen,
                room,
                id,
                result,
            });
        });
    }

    // ---- what Redis pushed ---------------------------------------------------------------

    fn on_push(&mut self, (gen, push): (u64, PushInfo)) {
        if gen != self.gen {
            return;
        }
        match push.kind {
            PushKind::Disconnection => self.link_down("the subscription connection closed"),
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return;
                };
                let Ok(channel) = std::str::from_utf8(&channel) else {
                    return;
                };
                if channel == wire::canary_names(&self.settings.prefix, &self.instance).0 {
                    if payload == format!("c{}", self.canary.seq).as_bytes() {
                        self.canary.back = true;
                        self.health.canary_ok.store(true, Ordering::SeqCst);
                        self.health.canary_failed.store(false, Ordering::SeqCst);
                        metrics::gauge!("ringcast_bridge_canary_ok").set(1.0);
                    }
                    return;
                }
                let Some(room) = wire::room_of_channel(&self.settings.prefix, channel) else {
                    return;
                };
                let room: RoomName = room.into();
                match wire::parse(Bytes::from(payload)) {
                    Ok(ChannelMsg::Message {
                        epoch,
                        offset,
                        at_ms,
                        data,
                    }) => {
                        let lag_ms = unix_ms().saturating_sub(at_ms);
                        metrics::histogram!("ringcast_bridge_lag_seconds")
                            .record(lag_ms as f64 / 1000.0);
                        if self
                            .seq
                            .home(&room)
                            .is_some_and(|home| self.outlet.is_full(home))
                        {
                            metrics::counter!("ringcast_bridge_dropped_total", "kind" => "behind")
                                .increment(1);
                            self.seq.missed(&room);
                            return;
                        }
                        let mut out = Vec::new();
                        self.seq.live(
                            &room,
                            Live {
                                epoch: epoch.into(),
                                offset,
                                at_ms,
                                data,
                            },
                            &mut out,
                        );
                        self.act(out);
                    }
                    Ok(ChannelMsg::Live { instance, event }) => {
                        if *instance != *self.instance {
                            if let Some(home) = self.seq.home(&room) {
                                if self.outlet.is_full(home) {
                                    metrics::counter!("ringcast_bridge_dropped_total", "kind" => "live_in")
                                        .increment(1);
                                } else {
                                    self.outlet.emit(home, BrokerEvent::Live { room, event });
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "ignoring a payload on a room channel")
                    }
                }
            }
            _ => {}
        }
    }

    // ---- completions ---------------------------------------------------------------------

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Connected { gen, result } => {
                if gen != self.gen {
                    return;
                }
                self.connecting = false;
                match result {
                    Ok((cmd, sub)) => self.link_up(cmd, sub),
                    Err(e) => {
                        self.attempt = self.attempt.saturating_add(1);
                        let delay = backoff(&self.settings, self.attempt);
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach redis");
                        self.next_connect = Instant::now() + delay;
                    }
                }
            }
            Done::Subscribed {
                gen,
                rooms,
                canary,
                result,
            } => {
                if gen != self.gen {
                    return;
                }
                match result {
                    Ok(()) => {
                        if canary {
                            if let Some(link) = &mut self.link {
                                link.canary = CanarySub::InForce;
                            }
                        }
                        let mut out = Vec::new();
                        for room in rooms {
                            self.seq.subscribed(&room, &mut out);
                        }
                        self.act(out);
                    }
                    Err(e) => self.link_down(&format!("subscribe failed: {e}")),
                }
            }
            Done::Read {
                gen,
                room,
                id,
                result,
            } => {
                if gen != self.gen {
                    return;
                }
                match result {
                    Ok(r) => {
                        let mut out = Vec::new();
                        self.seq.read_done(&room, id, r, &mut out);
                        self.act(out);
                    }
                    Err(e) => self.link_down(&format!("reading {room}: {e}")),
                }
            }
            Done::LinkError { gen, reason } => {
                if gen == self.gen {
                    self.link_down(&reason);
                }
            }
        }
    }

    fn link_up(&mut self, cmd: Conn, sub: Conn) {
        tracing::info!(gen = self.gen, "connected to redis");
        self.attempt = 0;
        let (publisher, publishes) = unbounded_channel();
        tokio::spawn(publisher_task(
            cmd.clone(),
            publishes,
            self.scripts.clone(),
            self.outlet.clone(),
            self.done_tx.clone(),
            self.gen,
            self.settings.clone(),
        ));
        self.link = Some(Link {
            cmd,
            sub,
            publisher,
            canary: CanarySub::NotSent,
        });
        self.health.connected.store(true, Ordering::SeqCst);
        metrics::gauge!("ringcast_bridge_connected").set(1.0);
        self.canary = Canary {
            seq: 0,
            sent_at: None,
            back: true,
        };
        self.next_presence_refresh = Instant::now();
        let mut out = Vec::new();
        self.seq.up(&mut out);
        self.act(out);
    }

    fn link_down(&mut self, reason: &str) {
        if self.link.take().is_none() {
            return;
        }
        tracing::warn!(%reason, "redis link lost; reconnecting");
        self.gen += 1;
        self.health.connected.store(false, Ordering::SeqCst);
        // The next link is ready only once its own probe came back.
        self.health.canary_ok.store(false, Ordering::SeqCst);
        metrics::gauge!("ringcast_bridge_canary_ok").set(0.0);
        self.health.reconnects.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!("ringcast_bridge_connected").set(0.0);
        metrics::counter!("ringcast_bridge_reconnects_total").increment(1);
        self.to_sub.clear();
        self.to_unsub.clear();
        let mut out = Vec::new();
        self.seq.down(reason, &mut out);
        self.act(out);
        self.next_connect = Instant::now() + backoff(&self.settings, self.attempt);
    }

    fn flush_subscriptions(&mut self) {
        let Some(link) = &mut self.link else {
            return;
        };
        let canary = link.canary == CanarySub::NotSent;
        if canary {
            link.canary = CanarySub::Sent;
        }
        let sub = link.sub.clone();
        if self.to_sub.is_empty() && self.to_unsub.is_empty() && !canary {
            return;
        }
        let gen = self.gen;
        let sub_rooms = std::mem::take(&mut self.to_sub);
        let mut unsub: Vec<RoomName> = std::mem::take(&mut self.to_unsub);
        // A room left and joined again in one batch only needs its subscribe.
        unsub.retain(|r| !sub_rooms.contains(r));
        if !unsub.is_empty() {
            let channels = unsub.iter().map(|r| self.keys(r).channel).collect();
            let mut conn = sub.clone();
            let done = self.done_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.unsubscribe(channels).await {
                    report_link_error(&done, gen, &e);
                }
            });
        }
        if sub_rooms.is_empty() && !canary {
            return;
        }
        let mut channels: Vec<String> = sub_rooms.iter().map(|r| self.keys(r).channel).collect();
        if canary {
            channels.push(wire::canary_names(&self.settings.prefix, &self.instance).0);
        }
        let mut conn = sub;
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = conn.subscribe(channels).await;
            let _ = done.send(Done::Subscribed {
                gen,
                rooms: sub_rooms,
                canary,
                result,
            });
        });
    }

    // ---- timer ---------------------------------------------------------------------------

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.link.is_none() {
            if !self.connecting && now >= self.next_connect {
                self.connecting = true;
                let gen = self.gen;
                let target = self.target.clone();
                let settings = self.settings.clone();
                let push = self.push_tx.clone();
                let done = self.done_tx.clone();
                tokio::spawn(async move {
                    let result = connect(&target, &settings, gen, push).await;
                    let _ = done.send(Done::Connected { gen, result });
                });
            }
            return;
        }
        self.canary_tick(now);
        if self.seq.behind() > 0 {
            let mut out = Vec::new();
            let outlet = self.outlet.clone();
            self.seq.catch_up(|shard| outlet.has_room(shard), &mut out);
            self.act(out);
        }
        if now >= self.next_presence_refresh {
            self.next_presence_refresh = now + self.settings.presence_ttl / 3;
            self.refresh_presence();
        }
    }

    fn canary_tick(&mut self, now: Instant) {
        let Some(link) = &self.link else {
            return;
        };
        if link.canary != CanarySub::InForce {
            return;
        }
        if let Some(sent) = self.canary.sent_at {
            let waited = now.saturating_duration_since(sent);
            if !self.canary.back {
                if waited > self.settings.canary_timeout {
                    self.health.canary_ok.store(false, Ordering::SeqCst);
                    self.health.canary_failed.store(true, Ordering::SeqCst);
                    metrics::gauge!("ringcast_bridge_canary_ok").set(0.0);
                    self.link_down("the canary probe did not come back through the subscription");
                }
                return;
            }
            if waited < self.settings.canary_interval {
                return;
            }
        }
        self.canary.seq += 1;
        self.canary.back = false;
        self.canary.sent_at = Some(now);
        let mut conn = link.cmd.clone();
        let (channel, key) = wire::canary_names(&self.settings.prefix, &self.instance);
        let probe = format!("c{}", self.canary.seq);
        let cmd = self.publish_cmd();
        let scripts = self.scripts.clone();
        let done = self.done_tx.clone();
        let gen = self.gen;
        tokio::spawn(async move {
            // A probe that fails to go out shows up as one that did not come back, except for a
            // link error (a demoted primary answers READONLY), which moves the link at once.
            let r: RedisResult<Value> = scripts
                .canary
                .key(key)
                .arg(channel)
                .arg(probe)
                .arg(cmd)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = r {
                report_link_error(&done, gen, &e);
            }
        });
    }

    fn refresh_presence(&mut self) {
        let Some(link) = &self.link else {
            return;
        };
        let ttl = self.settings.presence_ttl.as_millis() as u64;
        for (room, members) in &self.members {
            let keys = self.keys(room);
            let mut conn = link.cmd.clone();
            let scripts = self.scripts.clone();
            let members: Vec<(String, Bytes)> = members
                .iter()
                .map(|(c, m)| (c.clone(), m.clone()))
                .collect();
            tokio::spawn(async move {
                let mut inv = scripts.presence_set.key(&keys.presence);
                inv.arg(ttl);
                for (client, member) in &members {
                    inv.arg(client).arg(member.as_ref());
                }
                let _: RedisResult<Value> = inv.invoke_async(&mut conn).await;
            });
        }
    }
}

/// Sends publishes in batches: every publish that arrived while the previous batch was in
/// flight goes out together, one pipeline per room, and the next batch waits for this one, so
/// a room's publishes reach Redis in the order this node got them.
async fn publisher_task(
    conn: Conn,
    mut publishes: UnboundedReceiver<PublishReq>,
    scripts: Arc<Scripts>,
    outlet: Arc<Outlet>,
    done: UnboundedSender<Done>,
    gen: u64,
    settings: Arc<RedisSettings>,
) {
    let publish_cmd = if settings.cluster {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    let hash = scripts.publish.get_hash().to_string();
    let mut batch = Vec::new();
    while let Some(first) = publishes.recv().await {
        batch.push(first);
        while let Ok(p) = publishes.try_recv() {
            batch.push(p);
        }
        let mut by_room: HashMap<RoomName, Vec<PublishReq>> = HashMap::new();
        for p in batch.drain(..) {
            by_room.entry(p.room.clone()).or_default().push(p);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (room, reqs) in by_room {
            let keys = RoomKeys::new(&settings.prefix, &room);
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for p in &reqs {
                let meta_ttl = p.policy.ttl.max(settings.room_retention).as_millis().max(1) as u64;
                pipe.cmd("EVALSHA")
                    .arg(&hash)
                    .arg(2)
                    .arg(&keys.meta)
                    .arg(&keys.stream)
                    .arg(&keys.channel)
                    .arg(p.data.as_ref())
                    .arg(p.policy.size)
                    .arg(p.policy.ttl.as_millis() as u64)
                    .arg(new_epoch().as_ref())
                    .arg(meta_ttl)
                    .arg(publish_cmd);
            }
            let mut conn = conn.clone();
            tasks.spawn(async move {
                let results: RedisResult<Vec<RedisResult<Value>>> =
                    pipe.query_async(&mut conn).await;
                (room, reqs, results)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((room, reqs, results)) = joined else {
                continue;
            };
            match results {
                Ok(results) => {
                    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                        report_link_error(&done, gen, e);
                    }
                    for (p, r) in reqs.into_iter().zip(results) {
                        let event = match r
                            .map_err(|e| e.to_string())
                            .and_then(|v| scripts::parse_published(v).map_err(|e| e.to_string()))
                        {
                            Ok((epoch, offset)) => BrokerEvent::Acked {
                                token: p.token,
                                room: room.clone(),
                                epoch: epoch.into(),
                                offset,
                            },
                            Err(reason) => failed(p.token, &reason),
                        };
                        outlet.emit(p.shard, event);
                    }
                }
                Err(e) => {
                    for p in reqs {
                        outlet.emit(p.shard, failed(p.token, &e.to_string()));
                    }
                    report_link_error(&done, gen, &e);
                }
            }
        }
    }
}

async fn connect(
    target: &Target,
    settings: &RedisSettings,
    gen: u64,
    push: UnboundedSender<(u64, PushInfo)>,
) -> RedisResult<(Conn, Conn)> {
    let sender = move |info: PushInfo| push.send((gen, info));
    let (mut cmd, sub) = match target {
        Target::Single(client) => connect_single(client, settings, sender).await?,
        Target::Sentinel(sentinels, service) => {
            // The primary's connections use the sentinels' credentials and RESP3.
            let node = sentinels.first().map(|s| {
                redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(s.redis_settings().clone())
            });
            let mut sentinel = redis::sentinel::SentinelClient::build(
                sentinels.clone(),
                service.clone(),
                node,
                redis::sentinel::SentinelServerType::Master,
            )?;
            let client =
                tokio::time::timeout(settings.connect_timeout, sentinel.async_get_client())
                    .await
                    .map_err(|_| {
                        redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "asking the sentinels for the primary timed out",
                        ))
                    })??;
            connect_single(&client, settings, sender).await?
        }
        Target::Cluster(nodes) => {
            let builder = || {
                redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(settings.response_timeout)
            };
            let cmd = builder().build()?.get_async_connection().await?;
            let sub = builder()
                .push_sender(sender)
                .build()?
                .get_async_connection()
                .await?;
            (Conn::Cluster(cmd), Conn::Cluster(sub))
        }
    };
    // Loaded up front so that no publish meets NOSCRIPT (a retry could reorder a room's
    // publishes); a Redis restart drops the link, and the next link loads them again.
    for src in [
        scripts::PUBLISH,
        scripts::READ,
        scripts::PRESENCE_SET,
        scripts::PRESENCE_GET,
        scripts::CANARY,
    ] {
        let _: Value = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(src)
            .query_async(&mut cmd)
            .await?;
    }
    Ok((cmd, sub))
}

/// A command connection and a subscription connection to one Redis.
async fn connect_single(
    client: &Client,
    settings: &RedisSettings,
    sender: impl redis::aio::AsyncPushSender,
) -> RedisResult<(Conn, Conn)> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    let cmd = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    // The same timeout on the subscription connection: (un)subscribe commands are answered at
    // once, and one that is not (a hung Redis) must drop the link rather than leave the rooms
    // it was for waiting forever. Push messages are not answers and are not timed.
    let sub = client
        .get_multiplexed_async_connection_with_config(&config.set_push_sender(sender))
        .await?;
    Ok((Conn::Single(cmd), Conn::Single(sub)))
}

/// Exponential backoff with full jitter: uniform in [min, min(max, min·2^attempt)].
fn backoff(settings: &RedisSettings, attempt: u32) -> Duration {
    let min = settings.reconnect_min.as_millis() as u64;
    let max = settings.reconnect_max.as_millis() as u64;
    let cap = min
        .saturating_mul(1u64 << attempt.min(20))
        .min(max)
        .max(min);
    Duration::from_millis(fastrand::u64(min..=cap))
}

/// Whether an error means the link must be rebuilt: the connection failed or timed out, or the
/// server cannot take writes now (a demoted primary after a failover, a primary still loading).
fn is_link_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
}

fn report_link_error(done: &UnboundedSender<Done>, gen: u64, e: &redis::RedisError) {
    if is_link_error(e) {
        let _ = done.send(Done::LinkError {
            gen,
            reason: e.to_string(),
        });
    }
}

fn failed(token: Token, reason: &str) -> BrokerEvent {
    BrokerEvent::Failed {
        token,
        reason: reason.to_string(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let s = RedisSettings {
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(5000),
            ..RedisSettings::default()
        };
        for attempt in 0..40 {
            let d = backoff(&s, attempt).as_millis() as u64;
            let cap = (100u64 << attempt.min(20)).min(5000);
            assert!((100..=cap).contains(&d), "attempt {attempt}: {d} ms");
        }
        let late: Vec<u64> = (0..200)
            .map(|_| backoff(&s, 10).as_millis() as u64)
            .collect();
        assert!(
            late.iter().any(|d| *d > 2500),
            "jitter spreads up to the cap"
        );
        assert!(late.iter().any(|d| *d < 2500), "jitter spreads down");
    }
}
