//! The bridge thread: the link to Redis, the command loop, and what runs on a timer.
//!
//! Two connections per link: one for commands (publishes, reads, presence) and one holding the
//! subscriptions, whose push messages feed the [`Sequencer`]. Any failure of either (an I/O
//! error, a command timing out, the subscription connection closing, the canary not coming back)
//! drops the whole link: pending requests fail with `unavailable`, and the link is rebuilt with
//! exponential backoff and full jitter; then every room subscribes again and reads its stream
//! from its last offset. Publishes go out in per-room pipelines, one batch at a time, so a room's
//! publishes from this node reach Redis in the order the node received them.
//!
//! This file holds the loop (commands from shards, push messages, task completions, the tick)
//! and the reads; the rest is split by job: `link.rs` (where Redis is, connecting, a link coming
//! up and going down), `publisher.rs` (the per-room publish pipelines), `canary.rs` (the probe
//! that proves the subscription connection alive), `presence.rs` (members across nodes),
//! `announce.rs` (this node in the deployment's node list).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::scripts::{self, Scripts};
use super::sequencer::{self, Action, Live, Sequencer};
use super::wire::{self, ChannelMsg, RoomKeys};
use super::{BridgeHealth, Command, RedisSettings, ShardQueue};
use crate::{BrokerEvent, Epoch, HistoryPolicy, RoomName, Token};

/// How often the loop checks the link, the canary and presence.
mod announce;
mod canary;
mod link;
mod presence;
mod publisher;

use canary::{Canary, CanarySub};
pub(super) use link::Target;
use link::{backoff, connect, report_link_error, Conn, Link};
use publisher::PublishReq;

const TICK: Duration = Duration::from_millis(100);

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
            self.announce();
        }
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
