//! The publisher: per-room pipelines of publishes, one batch at a time, so that a room's
//! publishes from this node reach Redis in the order the node received them.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use redis::{RedisResult, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::embedded::new_epoch;
use crate::redis::scripts::{self, Scripts};
use crate::redis::wire::RoomKeys;
use crate::redis::RedisSettings;
use crate::{BrokerEvent, HistoryPolicy, RoomName, Token};

use super::link::{report_link_error, Conn};
use super::{failed, Done, Outlet};

/// A publish waiting for its batch.
pub(super) struct PublishReq {
    pub(super) shard: usize,
    pub(super) token: Token,
    pub(super) room: RoomName,
    pub(super) data: Bytes,
    pub(super) policy: HistoryPolicy,
    /// Released when the request is dropped.
    pub(super) _queued: crate::redis::QueuedBytes,
}

/// Sends publishes in batches: every publish that arrived while the previous batch was in
/// flight goes out together, one pipeline per room, and the next batch waits for this one, so
/// a room's publishes reach Redis in the order this node got them.
pub(super) async fn publisher_task(
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
