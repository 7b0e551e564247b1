//! The link to Redis: where it is (`Target`), the two connections of a link (`Conn`, `Link`),
//! connecting with backoff, and what the loop does when the link comes up or goes down.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline,
    ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::redis::scripts::{self};
use crate::redis::wire::{self};
use crate::redis::{BridgeError, RedisSettings};
use crate::RoomName;

use super::canary::{Canary, CanarySub};
use super::publisher::{publisher_task, PublishReq};
use super::{Bridge, Done};

/// Where Redis is.
#[derive(Clone)]
pub(in crate::redis) enum Target {
    Single(Client),
    Cluster(Vec<ConnectionInfo>),
    /// Sentinels and the service name; the primary is looked up on every connect.
    Sentinel(Vec<ConnectionInfo>, String),
}

impl Target {
    pub(in crate::redis) fn parse(settings: &RedisSettings) -> Result<Target, BridgeError> {
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
pub(super) enum Conn {
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
    pub(super) async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
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

    pub(super) async fn unsubscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
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

/// The link while it is up.
pub(super) struct Link {
    pub(super) cmd: Conn,
    pub(super) sub: Conn,
    pub(super) publisher: UnboundedSender<PublishReq>,
    pub(super) canary: CanarySub,
}

pub(super) async fn connect(
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
pub(super) async fn connect_single(
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
pub(super) fn backoff(settings: &RedisSettings, attempt: u32) -> Duration {
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
pub(super) fn is_link_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
}

pub(super) fn report_link_error(done: &UnboundedSender<Done>, gen: u64, e: &redis::RedisError) {
    if is_link_error(e) {
        let _ = done.send(Done::LinkError {
            gen,
            reason: e.to_string(),
        });
    }
}

impl Bridge {
    pub(super) fn link_up(&mut self, cmd: Conn, sub: Conn) {
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

    pub(super) fn link_down(&mut self, reason: &str) {
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

    pub(super) fn flush_subscriptions(&mut self) {
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
}
