//! `GET /api/overview`: one JSON snapshot of the node, what the admin page (`/admin`) shows and
//! polls every second. It gathers what each shard knows through its mailbox (one
//! [`AdminQuery::Overview`] each, sent to all before waiting for any), the node's own state
//! (readiness and why, uptime, driver) and the Redis bridge's health and node list.
//!
//! Publish rates are computed on the rooms' home shards ([`crate::rooms::home::HomeRooms`]),
//! so every reader of this endpoint sees the same figure; the page only draws them.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto_codec::protocol::ErrorCode;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::admin::{readiness, Admin};
use super::api::{error, json_response, slo_report};
use crate::form::Form;
use crate::mailbox::{AdminQuery, RoomActivity, ShardMsg, ShardOverview};

/// How many rooms the snapshot lists (each shard sends at most this many of its own).
pub const TOP_ROOMS: usize = 20;
/// How long the snapshot waits for the shards.
const SHARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers `GET /api/overview` (the API key was checked by the caller).
pub async fn overview(admin: &Admin) -> Vec<u8> {
    let shards = admin.mailboxes.len();
    let mut waiting = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (reply, rx) = oneshot::channel();
        admin.mailboxes.send(
            shard,
            ShardMsg::Admin(AdminQuery::Overview {
                top: TOP_ROOMS,
                reply,
            }),
        );
        waiting.push(rx);
    }
    let mut per_shard: Vec<ShardOverview> = Vec::with_capacity(shards);
    for (shard, rx) in waiting.into_iter().enumerate() {
        match monoio::time::timeout(SHARD_TIMEOUT, rx).await {
            Ok(Ok(o)) => per_shard.push(o),
            Ok(Err(_)) | Err(_) => {
                return error(
                    ErrorCode::Unavailable,
                    &format!("shard {shard} did not answer; retry"),
                )
            }
        }
    }
    json_response(200, &snapshot(admin, &per_shard))
}

/// Connections per transport as a JSON object, with their total.
fn by_transport(counts: &[u64; Form::ALL.len()]) -> Value {
    let mut map = Map::new();
    for form in Form::ALL {
        map.insert(form.transport().into(), json!(counts[form.index()]));
    }
    map.insert("total".into(), json!(counts.iter().sum::<u64>()));
    Value::Object(map)
}

/// Busier first: the higher message rate, then more subscribers, then the room's name.
fn busier(a: &RoomActivity, b: &RoomActivity) -> CmpOrdering {
    b.rate_per_s
        .partial_cmp(&a.rate_per_s)
        .unwrap_or(CmpOrdering::Equal)
        .then(b.subscribers.cmp(&a.subscribers))
        .then(a.room.cmp(&b.room))
}

fn snapshot(admin: &Admin, per_shard: &[ShardOverview]) -> Value {
    let mut totals = [0u64; Form::ALL.len()];
    let mut rooms_count = 0usize;
    let mut busiest: Vec<&RoomActivity> = Vec::new();
    let mut merged: Vec<crate::slo::LatencyHist> = Vec::new();
    let shards: Vec<Value> = per_shard
        .iter()
        .enumerate()
        .map(|(id, o)| {
            for (t, c) in totals.iter_mut().zip(&o.connections) {
                *t += c;
            }
            rooms_count += o.rooms;
            busiest.extend(&o.busiest);
            if merged.is_empty() {
                merged = o.slo.clone();
            } else {
                for (m, h) in merged.iter_mut().zip(&o.slo) {
                    m.merge(h);
                }
            }
            json!({
                "shard": id,
                "connections": by_transport(&o.connections),
                "rooms": o.rooms,
                "mailbox_depth": admin.mailboxes.depth(id),
            })
        })
        .collect();
    busiest.sort_by(|a, b| busier(a, b));
    busiest.truncate(TOP_ROOMS);
    let rooms: Vec<Value> = busiest
        .iter()
        .map(|r| {
            json!({
                "room": &*r.room,
                "namespace": admin.namespaces.of(&r.room).ok().map(|ns| &*ns.name),
                "subscribers": r.subscribers,
                "messages": r.messages,
                "rate_per_s": (r.rate_per_s * 10.0).round() / 10.0,
            })
        })
        .collect();
    let (ready, reason) = readiness(admin);
    let uptime = admin.started.elapsed();
    let started_unix_ms = SystemTime::now()
        .checked_sub(uptime)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64);
    json!({
        "node": {
            "name": &*admin.node,
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("GATEWAY_GIT_COMMIT"),
            "shards": per_shard.len(),
            "driver": admin.driver,
            "uptime_s": uptime.as_secs(),
            "started_unix_ms": started_unix_ms,
        },
        "ready": { "ok": ready, "reason": reason },
        "draining": admin.global.shutting_down.load(Ordering::SeqCst),
        "connections": by_transport(&totals),
        "shards": shards,
        "rooms": {
            "count": rooms_count,
            "rate_interval_s": crate::rooms::home::RATE_INTERVAL.as_secs(),
            "busiest": rooms,
        },
        "slo": slo_report(admin, &merged),
        "broker": broker(admin),
        "cluster": cluster(admin),
    })
}

/// The broker link: its kind, and with Redis the link, the canary and the reconnects.
fn broker(admin: &Admin) -> Value {
    match &admin.bridge {
        None => json!({ "kind": "embedded" }),
        Some(b) => json!({
            "kind": admin.config.broker.kind,
            "connected": b.is_connected(),
            "canary_ok": b.canary_ok(),
            "reconnects": b.reconnects(),
            "problem": b.problem(),
        }),
    }
}

/// The deployment's nodes as the bridge last read them (`null` with the embedded broker). An
/// entry that is not a JSON object (another version's) is counted, not shown.
fn cluster(admin: &Admin) -> Value {
    let Some(bridge) = &admin.bridge else {
        return Value::Null;
    };
    let Some(list) = bridge.cluster_nodes() else {
        return json!({ "read_ms_ago": null, "nodes": [], "unreadable": 0 });
    };
    let mut unreadable = 0usize;
    let mut nodes: Vec<Map<String, Value>> = list
        .nodes
        .iter()
        .filter_map(|raw| match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(mut node)) => {
                let me = node.get("name").and_then(Value::as_str) == Some(&*admin.node);
                node.insert("self".into(), json!(me));
                Some(node)
            }
            _ => {
                unreadable += 1;
                None
            }
        })
        .collect();
    let name = |n: &Map<String, Value>| n.get("name").and_then(Value::as_str).map(str::to_owned);
    nodes.sort_by_key(name);
    json!({
        "read_ms_ago": list.read_at.elapsed().as_millis() as u64,
        "nodes": nodes,
        "unreadable": unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, subscribers: u64, rate_per_s: f64) -> RoomActivity {
        RoomActivity {
            room: name.into(),
            subscribers,
            messages: 0,
            rate_per_s,
        }
    }

    #[test]
    fn busier_rooms_come_first() {
        let mut rooms = [
            room("b", 5, 0.0),
            room("a", 5, 0.0),
            room("c", 1, 10.0),
            room("d", 9, 0.0),
        ];
        rooms.sort_by(busier);
        let names: Vec<&str> = rooms.iter().map(|r| &*r.room).collect();
        assert_eq!(names, ["c", "d", "a", "b"]);
    }

    #[test]
    fn transports_are_named_with_their_total() {
        let v = by_transport(&[3, 1, 0, 2, 0]);
        assert_eq!(
            v,
            json!({"websocket": 3, "sse": 1, "long_poll": 0, "yjs": 2, "pusher": 0, "total": 6})
        );
    }
}
