//! The Pusher HTTP API (`/apps/<id>/…` on the public listener), as the Pusher server libraries
//! call it: `POST events` and `batch_events`, `GET channels`, `channels/<name>` and
//! `channels/<name>/users`, every request signed with the app's secret.
//!
//! Events are published into the channels' rooms like any message (stored, ordered, fanned out
//! once); queries read the shards' room and presence tables.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest, Md5};
use proto_codec::pusher::{self as p, ChannelKind, StoredEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::auth;
use crate::config::{Config, PusherApp};
use crate::http::public::{json_response, PusherRequest};
use crate::mailbox::{home_shard, AdminQuery, PublishOrigin, ShardMsg};
use crate::namespaces::Namespaces;
use crate::outgoing::Source;
use crate::shard::ShardCtx;

/// How far a request's `auth_timestamp` may be from the server's clock.
const TIMESTAMP_WINDOW_S: u64 = 600;
/// Pusher's limits: channels per event, events per batch, event name length.
const MAX_CHANNELS: usize = 100;
const MAX_BATCH: usize = 10;
const MAX_NAME: usize = 200;

fn error(status: u16, message: &str) -> Vec<u8> {
    json_response(
        status,
        json!({ "error": message }).to_string().as_bytes(),
        None,
    )
}

/// Answers one API request.
pub async fn answer(ctx: &ShardCtx, req: &PusherRequest, body: &[u8]) -> Vec<u8> {
    let Some(rest) = req.path.strip_prefix("/apps/") else {
        return error(404, "not found");
    };
    let (app_id, route) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(app) = super::app_by_id(&ctx.config, app_id) else {
        return error(404, "unknown app");
    };
    if let Err(reason) = check_signature(app, req, body) {
        crate::metrics::op_denied("unauthorized");
        return error(401, &reason);
    }
    let params = query_pairs(&req.query);
    let param = |k: &str| params.get(k).map(|v| decode(v));
    match Route::of(&req.method, route) {
        Route::Events => events(ctx, app, body).await,
        Route::BatchEvents => batch_events(ctx, app, body).await,
        Route::Channels => channels(ctx, app, param("filter_by_prefix"), param("info")).await,
        Route::Channel(channel) => channel_info(ctx, app, channel, param("info")).await,
        Route::ChannelUsers(channel) => users(ctx, app, channel).await,
        Route::TerminateConnections(user) => {
            let user = decode(user);
            let Some(index) = ctx.config.pusher.apps.iter().position(|a| a.id == app.id) else {
                return error(404, "unknown app");
            };
            ctx.mailboxes.broadcast(|| ShardMsg::PusherTerminate {
                app: index,
                user: user.clone(),
            });
            json_response(200, b"{}", None)
        }
        Route::NotFound => error(404, "no such API endpoint"),
    }
}

/// An API endpoint, found from the method and the path after `/apps/<id>/` (names as sent,
/// not decoded). Routing only slices at the prefixes and suffixes it found, so no path panics
/// (`gateway/fuzz` target `pusher_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST events`.
    Events,
    /// `POST batch_events`.
    BatchEvents,
    /// `GET channels`.
    Channels,
    /// `GET channels/<name>`.
    Channel(&'a str),
    /// `GET channels/<name>/users`.
    ChannelUsers(&'a str),
    /// `POST users/<id>/terminate_connections`.
    TerminateConnections(&'a str),
    /// Anything else (404).
    NotFound,
}

impl<'a> Route<'a> {
    /// The endpoint of `method` and `route` (the path after `/apps/<id>/`).
    pub fn of(method: &str, route: &'a str) -> Route<'a> {
        let nonempty = |s: &'a str| Some(s).filter(|s| !s.is_empty());
        match (method, route) {
            ("POST", "events") => Route::Events,
            ("POST", "batch_events") => Route::BatchEvents,
            ("GET", "channels") => Route::Channels,
            ("GET", r) => match r.strip_prefix("channels/") {
                Some(r) => match r.strip_suffix("/users") {
                    Some(channel) => nonempty(channel).map_or(Route::NotFound, Route::ChannelUsers),
                    None => nonempty(r).map_or(Route::NotFound, Route::Channel),
                },
                None => Route::NotFound,
            },
            ("POST", r) => r
                .strip_prefix("users/")
                .and_then(|r| r.strip_suffix("/terminate_connections"))
                .and_then(nonempty)
                .map_or(Route::NotFound, Route::TerminateConnections),
            _ => Route::NotFound,
        }
    }
}

/// Query parameters as sent (not decoded), by name.
fn query_pairs(query: &str) -> BTreeMap<&str, &str> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect()
}

/// A query value, percent-decoded (`+` is a space); as sent when it is not valid encoding.
fn decode(v: &str) -> String {
    proto_codec::http::percent_decode(v).map_or_else(|| v.to_string(), |d| d.into_owned())
}

/// Checks the request signature: `auth_signature` is the HMAC-SHA256 of
/// `METHOD\nPATH\n<the other query parameters, sorted by name, as sent>`, `auth_key` is the
/// app's, `auth_timestamp` within 600 s, `auth_version` 1.0, and `body_md5` the body's MD5.
fn check_signature(app: &PusherApp, req: &PusherRequest, body: &[u8]) -> Result<(), String> {
    let params = query_pairs(&req.query);
    let get = |k: &str| params.get(k).copied();
    let signature = get("auth_signature").ok_or("auth_signature is missing")?;
    if get("auth_key") != Some(app.key.as_str()) {
        return Err("unknown auth_key".into());
    }
    if get("auth_version") != Some("1.0") {
        return Err("auth_version must be 1.0".into());
    }
    let timestamp: u64 = get("auth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or("auth_timestamp is missing")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(timestamp) > TIMESTAMP_WINDOW_S {
        return Err("auth_timestamp is more than 600 s from the server's time".into());
    }
    if !body.is_empty() {
        let md5 = auth::hex(&Md5::digest(body));
        if get("body_md5") != Some(md5.as_str()) {
            return Err("body_md5 does not match the body".into());
        }
    }
    let signed: Vec<String> = params
        .iter()
        .filter(|(k, _)| **k != "auth_signature")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let message = format!("{}\n{}\n{}", req.method, req.path, signed.join("&"));
    if auth::same(signature, &auth::sign(app.secret.expose(), &message)) {
        Ok(())
    } else {
        Err("Invalid signature: you should have sent HmacSHA256Hex(\"METHOD\\nPATH\\nSORTED_PARAMS\", your_secret)".into())
    }
}

#[derive(Deserialize)]
struct Event<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    socket_id: Option<String>,
}

/// The room of a channel the API may publish to (a user's `#server-to-user-<id>` included).
fn target_room(app: &PusherApp, channel: &str) -> Option<String> {
    match channel.strip_prefix(super::USER_CHANNEL_PREFIX) {
        Some(user) => super::user_room(&app.id, user),
        None => p::room_of(&app.id, channel),
    }
}

/// A checked event of the API: per channel, the room and the data stored there.
pub type EventItems = Vec<(String, Bytes)>;

/// Checks a `POST events` body and turns it into (room, stored data) per channel; a refusal is
/// the HTTP status and reason to answer. Pure (the `pusher_api` fuzz target calls it).
pub fn parse_events(
    config: &Config,
    namespaces: &Namespaces,
    app: &PusherApp,
    body: &[u8],
) -> Result<EventItems, (u16, String)> {
    let event =
        serde_json::from_slice::<Event>(body).map_err(|e| (400, format!("invalid event: {e}")))?;
    prepare(config, namespaces, app, &event)
}

/// Checks a `POST batch_events` body (1 to 10 events, each checked as by [`parse_events`]) and
/// turns it into (room, stored data) per event and channel, in order. Pure.
pub fn parse_batch_events(
    config: &Config,
    namespaces: &Namespaces,
    app: &PusherApp,
    body: &[u8],
) -> Result<EventItems, (u16, String)> {
    #[derive(Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        batch: Vec<Event<'a>>,
    }
    let batch = serde_json::from_slice::<Batch>(body)
        .map_err(|e| (400, format!("invalid batch: {e}")))?
        .batch;
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err((400, format!("1 to {MAX_BATCH} events per batch")));
    }
    let mut items = Vec::new();
    for e in &batch {
        items.extend(prepare(config, namespaces, app, e)?);
    }
    Ok(items)
}

/// Checks an event and turns it into (room, stored data) per channel.
fn prepare(
    config: &Config,
    namespaces: &Namespaces,
    app: &PusherApp,
    e: &Event<'_>,
) -> Result<EventItems, (u16, String)> {
    let channels: Vec<&str> = match (&e.channel, &e.channels) {
        (Some(c), None) => vec![c.as_str()],
        (None, Some(cs)) => cs.iter().map(String::as_str).collect(),
        _ => return Err((400, "give either channel or channels".into())),
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err((400, format!("1 to {MAX_CHANNELS} channels per event")));
    }
    if e.name.is_empty() || e.name.len() > MAX_NAME {
        return Err((400, format!("event name must be 1 to {MAX_NAME} bytes")));
    }
    if let Some(s) = &e.socket_id {
        if !p::valid_socket_id(s) {
            return Err((400, "invalid socket_id".into()));
        }
    }
    let mut out = Vec::with_capacity(channels.len());
    for channel in channels {
        let Some(room) = target_room(app, channel) else {
            return Err((400, format!("invalid channel name `{channel}`")));
        };
        let stored = StoredEvent {
            event: e.name.as_str().into(),
            channel: channel.into(),
            data: e.data,
            user_id: None,
            socket_id: e.socket_id.as_deref().map(Into::into),
        };
        let json = serde_json::to_vec(&stored).map_err(|e| (400, e.to_string()))?;
        let limit = namespaces
            .of(&room)
            .map_or(config.rooms.max_data_bytes, |ns| ns.policy.max_data_bytes);
        if json.len() > limit {
            return Err((413, format!("event over the size limit ({limit} bytes)")));
        }
        out.push((room, Bytes::from(json)));
    }
    Ok(out)
}

/// Publishes every (room, data) and waits for each to be stored.
async fn publish_all(ctx: &ShardCtx, items: EventItems) -> Result<(), Vec<u8>> {
    if ctx.is_shutting_down() {
        return Err(error(503, "shutting down"));
    }
    let mut waits = Vec::with_capacity(items.len());
    for (room, data) in items {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx.publish(&room, data, PublishOrigin::Api(tx), Source::Pusher);
        waits.push(rx);
    }
    for rx in waits {
        match monoio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(code))) => {
                return Err(error(
                    code.http_status(),
                    &format!("publish failed: {}", code.as_str()),
                ))
            }
            _ => return Err(error(503, "no answer from the channel's shard; retry")),
        }
    }
    Ok(())
}

async fn events(ctx: &ShardCtx, app: &PusherApp, body: &[u8]) -> Vec<u8> {
    match parse_events(&ctx.config, &ctx.namespaces, app, body) {
        Ok(items) => publish(ctx, items).await,
        Err((status, reason)) => error(status, &reason),
    }
}

async fn batch_events(ctx: &ShardCtx, app: &PusherApp, body: &[u8]) -> Vec<u8> {
    match parse_batch_events(&ctx.config, &ctx.namespaces, app, body) {
        Ok(items) => publish(ctx, items).await,
        Err((status, reason)) => error(status, &reason),
    }
}

/// Publishes checked events and answers the request.
async fn publish(ctx: &ShardCtx, items: EventItems) -> Vec<u8> {
    match publish_all(ctx, items).await {
        Ok(()) => json_response(200, b"{}", None),
        Err(response) => response,
    }
}

/// Rooms with subscribers on this node, and their subscriber counts, from every shard.
async fn occupied_rooms(ctx: &ShardCtx) -> Vec<(String, u64)> {
    let mut waits = Vec::new();
    for shard in 0..ctx.mailboxes.len() {
        let (reply, rx) = tokio::sync::oneshot::channel();
        ctx.route(shard, ShardMsg::Admin(AdminQuery::Rooms { reply }));
        waits.push(rx);
    }
    let mut out = Vec::new();
    for rx in waits {
        if let Ok(Ok(rooms)) = monoio::time::timeout(Duration::from_secs(5), rx).await {
            out.extend(rooms.into_iter().map(|(r, n)| (r.to_string(), n)));
        }
    }
    out
}

/// The distinct user ids of a presence room.
async fn presence_users(ctx: &ShardCtx, room: &str) -> Result<Vec<String>, Vec<u8>> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    ctx.route(
        home_shard(room, ctx.mailboxes.len()),
        ShardMsg::Admin(AdminQuery::Presence {
            room: room.into(),
            reply,
        }),
    );
    match monoio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Ok(members))) => {
            let mut users: Vec<String> = members.into_iter().filter_map(|m| m.user).collect();
            users.sort();
            users.dedup();
            Ok(users)
        }
        _ => Err(error(503, "presence not available now; retry")),
    }
}

fn wants(info: &Option<String>, attribute: &str) -> bool {
    info.as_deref()
        .is_some_and(|i| i.split(',').any(|a| a.trim() == attribute))
}

async fn channels(
    ctx: &ShardCtx,
    app: &PusherApp,
    prefix: Option<String>,
    info: Option<String>,
) -> Vec<u8> {
    let prefix = prefix.unwrap_or_default();
    let user_count = wants(&info, "user_count");
    if user_count && !prefix.starts_with("presence-") {
        return error(400, "info=user_count needs filter_by_prefix=presence-");
    }
    let mut channels = serde_json::Map::new();
    for (room, _) in occupied_rooms(ctx).await {
        let Some((room_app, channel)) = p::channel_of(&room) else {
            continue;
        };
        if room_app != app.id || !channel.starts_with(&prefix) || !p::valid_channel(&channel) {
            continue;
        }
        let mut attributes = serde_json::Map::new();
        if user_count {
            match presence_users(ctx, &room).await {
                Ok(users) => {
                    attributes.insert("user_count".into(), users.len().into());
                }
                Err(response) => return response,
            }
        }
        channels.insert(channel, Value::Object(attributes));
    }
    json_response(
        200,
        json!({ "channels": channels }).to_string().as_bytes(),
        None,
    )
}

async fn channel_info(
    ctx: &ShardCtx,
    app: &PusherApp,
    channel: &str,
    info: Option<String>,
) -> Vec<u8> {
    let Some(room) = p::room_of(&app.id, channel) else {
        return error(400, "invalid channel name");
    };
    let presence = ChannelKind::of(channel) == ChannelKind::Presence;
    if wants(&info, "user_count") && !presence {
        return error(400, "user_count is only available for presence channels");
    }
    let subscriptions = occupied_rooms(ctx)
        .await
        .into_iter()
        .find(|(r, _)| *r == room)
        .map_or(0, |(_, n)| n);
    let mut out = serde_json::Map::new();
    out.insert("occupied".into(), (subscriptions > 0).into());
    if wants(&info, "subscription_count") {
        out.insert("subscription_count".into(), subscriptions.into());
    }
    if wants(&info, "user_count") {
        match presence_users(ctx, &room).await {
            Ok(users) => {
                out.insert("user_count".into(), users.len().into());
            }
            Err(response) => return response,
        }
    }
    json_response(200, Value::Object(out).to_string().as_bytes(), None)
}

async fn users(ctx: &ShardCtx, app: &PusherApp, channel: &str) -> Vec<u8> {
    if ChannelKind::of(channel) != ChannelKind::Presence {
        return error(400, "users are only available for presence channels");
    }
    let Some(room) = p::room_of(&app.id, channel) else {
        return error(400, "invalid channel name");
    };
    match presence_users(ctx, &room).await {
        Ok(users) => {
            let users: Vec<Value> = users.into_iter().map(|id| json!({ "id": id })).collect();
            json_response(200, json!({ "users": users }).to_string().as_bytes(), None)
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_prefix_and_suffix_and_never_overlap() {
        use Route::*;
        assert_eq!(Route::of("POST", "events"), Events);
        assert_eq!(Route::of("POST", "batch_events"), BatchEvents);
        assert_eq!(Route::of("GET", "channels"), Channels);
        assert_eq!(Route::of("GET", "channels/a"), Channel("a"));
        assert_eq!(Route::of("GET", "channels/a/users"), ChannelUsers("a"));
        assert_eq!(
            Route::of("POST", "users/u1/terminate_connections"),
            TerminateConnections("u1")
        );
        // Finding 6: the prefix and the suffix overlap (`&r[6..5]` once).
        assert_eq!(Route::of("POST", "users/terminate_connections"), NotFound);
        assert_eq!(Route::of("POST", "users//terminate_connections"), NotFound);
        assert_eq!(Route::of("GET", "channels/"), NotFound);
        assert_eq!(Route::of("GET", "channels//users"), NotFound);
        assert_eq!(Route::of("GET", "channels/users"), Channel("users"));
        assert_eq!(Route::of("GET", "events"), NotFound);
        assert_eq!(Route::of("DELETE", "channels"), NotFound);
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(decode("presence-%2Cx+y"), "presence-,x y");
        assert_eq!(decode("a%zz"), "a%zz");
        assert_eq!(decode("%"), "%");
    }

    #[test]
    fn signature_over_the_sorted_parameters() {
        let app = PusherApp {
            id: "1".into(),
            key: "k".into(),
            secret: "s".into(),
            enable_client_messages: false,
            max_connections: 0,
            max_client_events_per_second: 0,
            webhooks: Vec::new(),
        };
        let body = br#"{"name":"e","channel":"c","data":"x"}"#;
        let md5 = auth::hex(&Md5::digest(body));
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signed = format!("auth_key=k&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}");
        let sig = auth::sign("s", &format!("POST\n/apps/1/events\n{signed}"));
        let req = |q: String| PusherRequest {
            method: "POST".into(),
            path: "/apps/1/events".into(),
            query: q,
        };
        assert_eq!(
            check_signature(&app, &req(format!("{signed}&auth_signature={sig}")), body),
            Ok(())
        );
        assert!(check_signature(&app, &req(format!("{signed}&auth_signature=00")), body).is_err());
        assert!(
            check_signature(&app, &req(format!("{signed}&auth_signature={sig}")), b"{}").is_err()
        );
        assert!(check_signature(&app, &req(signed.clone()), body).is_err());
    }
}
