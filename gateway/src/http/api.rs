//! The server API on the admin listener (docs/api.md): publish (one or a batch), a room's
//! presence and history, the room list with subscriber counts, disconnecting a user, and node
//! information, and the admin page's snapshot (`/api/overview`, in [`super::overview`]). Every
//! endpoint needs the API key; answers are JSON, errors are `error` events
//! with the code's HTTP status.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use proto_codec::http::{write_response, Request};
use proto_codec::protocol::{validate_room, ErrorCode, ServerEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::admin::Admin;
use crate::config::Config;
use crate::errors::OpFailure;
use crate::mailbox::{home_shard, AdminQuery, PublishOrigin, ShardMsg};
use crate::outgoing::Source;

/// How long the API waits for shards to answer.
const SHARD_TIMEOUT: Duration = Duration::from_secs(5);
/// The most messages one batch may carry.
pub const MAX_BATCH: usize = 1000;

pub(super) fn json_response(status: u16, body: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_response(
        &mut out,
        status,
        "application/json",
        &[],
        body.to_string().as_bytes(),
    );
    out
}

/// An `error` event with the code's status.
pub(super) fn error(code: ErrorCode, reason: &str) -> Vec<u8> {
    let event = ServerEvent::Error {
        id: None,
        code,
        reason: reason.into(),
    };
    let mut out = Vec::new();
    write_response(
        &mut out,
        code.http_status(),
        "application/json",
        &[],
        event.to_json().as_bytes(),
    );
    out
}

/// Whether the request carries the API key (compared in constant time).
fn authorized(config: &Config, req: &Request<'_>) -> bool {
    let Some(given) = req
        .header_str("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let want = config.api.key.expose().as_bytes();
    let given = given.trim().as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Routes one `/api/*` request.
pub async fn handle(admin: &Admin, req: &Request<'_>, body: &[u8]) -> Vec<u8> {
    if admin.config.api.key.is_empty() {
        return error(ErrorCode::NotFound, "the server API is off: set api.key");
    }
    if !authorized(&admin.config, req) {
        return error(ErrorCode::Unauthorized, "missing or wrong API key");
    }
    let method_not_allowed = |allow: &str| {
        let mut out = Vec::new();
        proto_codec::http::write_error_response(
            &mut out,
            405,
            &format!("use {allow}"),
            &[("Allow", allow)],
        );
        out
    };
    match (req.method, req.path) {
        ("POST", "/api/publish") => publish_one(admin, body).await,
        ("POST", "/api/publish/batch") => publish_batch(admin, body).await,
        ("GET", "/api/presence") => presence(admin, req).await,
        ("GET", "/api/history") => history(admin, req).await,
        ("GET", "/api/rooms") => rooms(admin).await,
        ("POST", "/api/disconnect") => disconnect(admin, body).await,
        ("GET", "/api/node") => node(admin),
        ("GET", "/api/slo") => slo(admin).await,
        ("GET", "/api/overview") => super::overview::overview(admin).await,
        (_, "/api/publish" | "/api/publish/batch" | "/api/disconnect") => {
            method_not_allowed("POST")
        }
        (
            _,
            "/api/presence" | "/api/history" | "/api/rooms" | "/api/node" | "/api/slo"
            | "/api/overview",
        ) => method_not_allowed("GET"),
        _ => error(ErrorCode::NotFound, "no such API endpoint"),
    }
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    room: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    messages: Vec<PublishBody<'a>>,
}

/// The room is valid and in a configured namespace, and `data` fits its limit.
fn check_publish(admin: &Admin, p: &PublishBody<'_>) -> Result<(), OpFailure> {
    validate_room(&p.room).map_err(|e| OpFailure::new(ErrorCode::BadRoom, e.to_string()))?;
    if p.data.get() == "null" {
        return Err(OpFailure::new(
            ErrorCode::BadRequest,
            "data must not be null",
        ));
    }
    // The server API may publish in every configured namespace (including `publish =
    // "server"` ones); it is held to the namespace's size limit.
    let ns = admin.namespaces.of(&p.room)?;
    if p.data.get().len() > ns.policy.max_data_bytes {
        return Err(OpFailure::new(
            ErrorCode::TooLarge,
            "data is over the size limit",
        ));
    }
    Ok(())
}

/// Hands a checked publish to the room's home shard; the receiver gets the position.
fn send_publish(
    admin: &Admin,
    p: &PublishBody<'_>,
) -> oneshot::Receiver<Result<(broker_bridge::Epoch, u64), ErrorCode>> {
    let (tx, rx) = oneshot::channel();
    let home = home_shard(&p.room, admin.mailboxes.len());
    if admin.mailboxes.is_full(home) {
        // Answered `unavailable` at once, as a client publish is (`ShardCtx::publish`).
        crate::metrics::limit_hit("shard_inbox");
        let _ = tx.send(Err(ErrorCode::Unavailable));
        return rx;
    }
    admin.mailboxes.send(
        home,
        ShardMsg::Publish {
            room: p.room.as_str().into(),
            data: Bytes::copy_from_slice(p.data.get().as_bytes()),
            origin: PublishOrigin::Api(tx),
            source: Source::Api,
        },
    );
    rx
}

async fn position(
    room: &str,
    rx: oneshot::Receiver<Result<(broker_bridge::Epoch, u64), ErrorCode>>,
) -> Result<Value, OpFailure> {
    match monoio::time::timeout(SHARD_TIMEOUT, rx).await {
        Ok(Ok(Ok((epoch, offset)))) => {
            Ok(json!({ "room": room, "epoch": &*epoch, "offset": offset }))
        }
        Ok(Ok(Err(code))) => Err(OpFailure::new(code, "publish failed; retry")),
        Ok(Err(_)) | Err(_) => Err(OpFailure::new(
            ErrorCode::Unavailable,
            "no answer from the room's shard; retry",
        )),
    }
}

fn draining(admin: &Admin) -> bool {
    admin.global.shutting_down.load(Ordering::SeqCst)
}

async fn publish_one(admin: &Admin, body: &[u8]) -> Vec<u8> {
    if draining(admin) {
        return error(ErrorCode::Unavailable, "shutting down");
    }
    let p: PublishBody<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return error(ErrorCode::BadRequest, &e.to_string()),
    };
    if let Err(OpFailure { code, reason }) = check_publish(admin, &p) {
        return error(code, &reason);
    }
    let rx = send_publish(admin, &p);
    match position(&p.room, rx).await {
        Ok(v) => json_response(200, &v),
        Err(OpFailure { code, reason }) => error(code, &reason),
    }
}

/// Publishes every message of a batch; each gets its own result, in order (a bad message does
/// not stop the others). Messages to one room keep their batch order.
async fn publish_batch(admin: &Admin, body: &[u8]) -> Vec<u8> {
    if draining(admin) {
        return error(ErrorCode::Unavailable, "shutting down");
    }
    let batch: BatchBody<'_> = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return error(ErrorCode::BadRequest, &e.to_string()),
    };
    if batch.messages.len() > MAX_BATCH {
        return error(
            ErrorCode::TooLarge,
            &format!("at most {MAX_BATCH} messages per batch"),
        );
    }
    // Send everything first (one mailbox push each), then collect.
    let pending: Vec<_> = batch
        .messages
        .iter()
        .map(|p| check_publish(admin, p).map(|()| send_publish(admin, p)))
        .collect();
    let mut results = Vec::with_capacity(pending.len());
    for (p, sent) in batch.messages.iter().zip(pending) {
        let result = match sent {
            Ok(rx) => position(&p.room, rx).await,
            Err(e) => Err(e),
        };
        results.push(match result {
            Ok(v) => v,
            Err(OpFailure { code, reason }) => {
                json!({"ev": "error", "code": code.as_str(), "reason": reason})
            }
        });
    }
    json_response(200, &json!({ "results": results }))
}

/// The `room` query parameter, checked: valid and in a configured namespace.
fn room_param(
    admin: &Admin,
    req: &Request<'_>,
) -> Result<(String, crate::namespaces::Namespace), Vec<u8>> {
    let Some(room) = req.query_param("room") else {
        return Err(error(
            ErrorCode::BadRequest,
            "the room parameter is required",
        ));
    };
    if let Err(e) = validate_room(&room) {
        return Err(error(ErrorCode::BadRoom, &e.to_string()));
    }
    let ns = admin
        .namespaces
        .of(&room)
        .map_err(|OpFailure { code, reason }| error(code, &reason))?
        .clone();
    Ok((room.into_owned(), ns))
}

/// Sends a query to a shard and waits for its answer (`None`: no answer in time).
pub(super) async fn ask<T>(
    admin: &Admin,
    shard: usize,
    query: impl FnOnce(oneshot::Sender<T>) -> AdminQuery,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    admin.mailboxes.send(shard, ShardMsg::Admin(query(tx)));
    monoio::time::timeout(SHARD_TIMEOUT, rx).await.ok()?.ok()
}

async fn presence(admin: &Admin, req: &Request<'_>) -> Vec<u8> {
    let (room, ns) = match room_param(admin, req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !ns.policy.presence {
        return error(ErrorCode::NotEnabled, "presence is off in this namespace");
    }
    let home = home_shard(&room, admin.mailboxes.len());
    let room_name: broker_bridge::RoomName = room.as_str().into();
    match ask(admin, home, |reply| AdminQuery::Presence {
        room: room_name,
        reply,
    })
    .await
    {
        Some(Ok(members)) => json_response(
            200,
            &json!({ "room": room, "count": members.len(), "members": members }),
        ),
        Some(Err(code)) => error(code, "presence not available now; retry"),
        None => error(ErrorCode::Unavailable, "no answer from the room's shard"),
    }
}

async fn history(admin: &Admin, req: &Request<'_>) -> Vec<u8> {
    let (room, ns) = match room_param(admin, req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let max = ns.policy.history_size;
    if max == 0 {
        return error(ErrorCode::NotEnabled, "no history in this namespace");
    }
    let since = match req.query_param("since") {
        None => None,
        Some(s) => match proto_codec::sse::parse_position_id(&s) {
            Some((epoch, offset)) => Some((epoch.to_string(), offset)),
            None => return error(ErrorCode::BadRequest, "since must be <epoch>:<offset>"),
        },
    };
    let limit = match req.query_param("limit").map(|l| l.parse::<usize>()) {
        None => max,
        Some(Ok(l)) => l.min(max),
        Some(Err(_)) => return error(ErrorCode::BadRequest, "limit must be a number"),
    };
    let home = home_shard(&room, admin.mailboxes.len());
    let room_name: broker_bridge::RoomName = room.as_str().into();
    match ask(admin, home, |reply| AdminQuery::History {
        room: room_name,
        since,
        limit,
        reply,
    })
    .await
    {
        Some(Ok(json)) => {
            let mut out = Vec::new();
            write_response(&mut out, 200, "application/json", &[], json.as_bytes());
            out
        }
        Some(Err(code)) => error(code, "history not available now; retry"),
        None => error(ErrorCode::Unavailable, "no answer from the room's shard"),
    }
}

async fn rooms(admin: &Admin) -> Vec<u8> {
    let mut all: Vec<(String, u64)> = Vec::new();
    for shard in 0..admin.mailboxes.len() {
        match ask(admin, shard, |reply| AdminQuery::Rooms { reply }).await {
            Some(list) => all.extend(list.into_iter().map(|(r, n)| (r.to_string(), n))),
            None => return error(ErrorCode::Unavailable, "a shard did not answer"),
        }
    }
    all.sort();
    let rooms: Vec<Value> = all
        .iter()
        .map(|(room, n)| json!({ "room": room, "subscribers": n }))
        .collect();
    json_response(200, &json!({ "count": rooms.len(), "rooms": rooms }))
}

#[derive(Deserialize)]
struct DisconnectBody {
    user: String,
}

async fn disconnect(admin: &Admin, body: &[u8]) -> Vec<u8> {
    let d: DisconnectBody = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(e) => return error(ErrorCode::BadRequest, &e.to_string()),
    };
    let mut closed = 0usize;
    for shard in 0..admin.mailboxes.len() {
        let user = d.user.clone();
        match ask(admin, shard, |reply| AdminQuery::Disconnect { user, reply }).await {
            Some(n) => closed += n,
            None => return error(ErrorCode::Unavailable, "a shard did not answer"),
        }
    }
    json_response(200, &json!({ "user": d.user, "closed": closed }))
}

/// Per namespace: publish→write latency percentiles of every written room frame over the
/// sliding window, against the namespace's target.
async fn slo(admin: &Admin) -> Vec<u8> {
    let mut merged: Vec<crate::slo::LatencyHist> = Vec::new();
    for shard in 0..admin.mailboxes.len() {
        let Some(hists) = ask(admin, shard, |reply| AdminQuery::Slo { reply }).await else {
            return error(ErrorCode::Unavailable, "a shard did not answer");
        };
        if merged.is_empty() {
            merged = hists;
        } else {
            for (m, h) in merged.iter_mut().zip(&hists) {
                m.merge(h);
            }
        }
    }
    json_response(200, &slo_report(admin, &merged))
}

/// The SLO report of histograms merged over the shards (one per namespace index): what
/// `GET /api/slo` answers and the admin page's SLO panel shows.
pub(super) fn slo_report(admin: &Admin, merged: &[crate::slo::LatencyHist]) -> Value {
    let ms = |us: Option<u64>| us.map(|u| u as f64 / 1000.0);
    let namespaces: Vec<Value> = merged
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let ns = admin.namespaces.by_index(i);
            let p99 = h.quantile_us(0.99);
            let target = ns.policy.latency_target_ms;
            json!({
                "namespace": &*ns.name,
                "target_p99_ms": target,
                "writes": h.count(),
                "p50_ms": ms(h.quantile_us(0.5)),
                "p99_ms": ms(p99),
                "p999_ms": ms(h.quantile_us(0.999)),
                "meets_target": p99.map(|p| p <= target * 1000),
            })
        })
        .collect();
    json!({
        "window_s": (crate::slo::SLOT * crate::slo::SLOTS as u32).as_secs(),
        "namespaces": namespaces,
    })
}

fn node(admin: &Admin) -> Vec<u8> {
    json_response(
        200,
        &json!({
            "node": &*admin.node,
            "version": env!("CARGO_PKG_VERSION"),
            "shards": admin.mailboxes.len(),
            "driver": admin.driver,
            "connections": admin.global.connections.load(Ordering::SeqCst),
            "uptime_s": admin.started.elapsed().as_secs(),
            "ready": admin.global.ready.load(Ordering::SeqCst)
                && admin.bridge.as_ref().is_none_or(|b| b.is_ready()),
            "draining": draining(admin),
            "broker": match &admin.bridge {
                None => json!({"kind": "embedded"}),
                Some(b) => json!({
                    "kind": admin.config.broker.kind,
                    "connected": b.is_connected(),
                    "canary_ok": b.canary_ok(),
                    "reconnects": b.reconnects(),
                }),
            },
        }),
    )
}
