//! A Pusher client's frames (protocol 7): ping, subscribe and unsubscribe with channel auth,
//! client events, user sign-in. Every refusal is a Pusher frame (`pusher:error`,
//! `pusher:subscription_error`), never a silent drop.

use std::rc::Rc;

use bytes::Bytes;
use proto_codec::protocol::Member;
use proto_codec::pusher::{
    self as p, ChannelData, ChannelKind, ClientFrame, PusherCode, StoredEvent,
};
use proto_codec::ws::{encode_frame, OpCode};
use serde_json::value::RawValue;

use super::auth;
use crate::connection::shared::{ConnShared, SubState};
use crate::outgoing::Source;
use crate::ratelimit::{Bucket, Rate};
use crate::shard::ShardCtx;

fn send(conn: &ConnShared, frame: String) {
    conn.push_wire(encode_frame(OpCode::Text, false, frame.as_bytes()));
}

/// The connection's app, socket id and signed-in user.
fn state(conn: &ConnShared) -> Option<(usize, String)> {
    conn.pusher
        .borrow()
        .as_ref()
        .map(|s| (s.app, s.socket_id.clone()))
}

/// Handles one text message from a Pusher client.
pub fn handle(ctx: &ShardCtx, conn: &Rc<ConnShared>, payload: &[u8]) {
    let Ok(frame) = serde_json::from_slice::<ClientFrame>(payload) else {
        return send(
            conn,
            p::error(PusherCode::GENERIC_RECONNECT, "invalid JSON frame"),
        );
    };
    let Some((app_index, socket_id)) = state(conn) else {
        return;
    };
    let Some(app) = ctx.config.pusher.apps.get(app_index) else {
        return;
    };
    let data = frame.data.map(RawValue::get).unwrap_or("{}");
    match frame.event.as_ref() {
        "pusher:ping" => send(conn, p::ping_pong("pusher:pong")),
        "pusher:pong" => {}
        "pusher:subscribe" => {
            let Ok(sub) = serde_json::from_str::<p::Subscribe>(data) else {
                return send(
                    conn,
                    p::error(
                        PusherCode::GENERIC_RECONNECT,
                        "pusher:subscribe needs {channel}",
                    ),
                );
            };
            subscribe(ctx, conn, app, &socket_id, sub);
        }
        "pusher:unsubscribe" => {
            let Ok(unsub) = serde_json::from_str::<p::Unsubscribe>(data) else {
                return send(
                    conn,
                    p::error(
                        PusherCode::GENERIC_RECONNECT,
                        "pusher:unsubscribe needs {channel}",
                    ),
                );
            };
            let Some(room) = p::room_of(&app.id, &unsub.channel) else {
                return;
            };
            // Pusher ignores unsubscribing from a channel one is not in.
            if conn.rooms.borrow().contains_key(room.as_str()) {
                if let Some(s) = conn.pusher.borrow_mut().as_mut() {
                    s.presence_users.remove(room.as_str());
                }
                ctx.unsubscribe(conn, None, &room);
            }
        }
        "pusher:signin" => {
            let Ok(signin) = serde_json::from_str::<p::Signin>(data) else {
                return send(
                    conn,
                    p::error(
                        PusherCode::UNAUTHORIZED,
                        "pusher:signin needs {auth, user_data}",
                    ),
                );
            };
            signin_user(ctx, conn, app, &socket_id, signin);
        }
        event if event.starts_with("client-") => {
            client_event(ctx, conn, app, event, frame.channel.as_deref(), frame.data);
        }
        // Other events (unknown pusher:* ones) are ignored, as Pusher does.
        _ => {}
    }
}

fn subscribe(
    ctx: &ShardCtx,
    conn: &Rc<ConnShared>,
    app: &crate::config::PusherApp,
    socket_id: &str,
    sub: p::Subscribe,
) {
    let channel = sub.channel;
    // A signed-in user's own channel (pusher-js subscribes to it after `signin_success`).
    if let Some(user) = channel.strip_prefix(super::USER_CHANNEL_PREFIX) {
        let signed_in = conn.pusher.borrow().as_ref().and_then(|s| s.user.clone());
        let room = super::user_room(&app.id, user);
        return match (signed_in.as_deref() == Some(user), room) {
            (true, Some(room)) => {
                if !conn.rooms.borrow().contains_key(room.as_str()) {
                    ctx.subscribe_member(conn, &room, None, false);
                }
            }
            _ => send(
                conn,
                p::subscription_error(&channel, "AuthError", "not signed in as this user", 403),
            ),
        };
    }
    let Some(room) = p::room_of(&app.id, &channel) else {
        return send(
            conn,
            p::subscription_error(&channel, "InvalidChannel", "invalid channel name", 400),
        );
    };
    let kind = ChannelKind::of(&channel);
    let channel_data = sub
        .channel_data
        .as_deref()
        .filter(|_| kind == ChannelKind::Presence);
    if kind.needs_auth() {
        let ok = sub.auth.as_deref().is_some_and(|a| {
            auth::channel_auth_ok(
                &app.key,
                app.secret.expose(),
                socket_id,
                &channel,
                channel_data,
                a,
            )
        });
        if !ok {
            crate::metrics::op_denied("forbidden");
            return send(
                conn,
                p::subscription_error(
                    &channel,
                    "AuthError",
                    "Invalid signature: the channel auth does not match this socket and channel",
                    401,
                ),
            );
        }
    }
    let member = if kind == ChannelKind::Presence {
        let parsed = channel_data.and_then(|d| serde_json::from_str::<ChannelData>(d).ok());
        let Some((user_id, info)) = parsed.and_then(|d| Some((d.user_id()?, d.user_info))) else {
            return send(
                conn,
                p::subscription_error(
                    &channel,
                    "AuthError",
                    "presence channels need channel_data with a user_id",
                    400,
                ),
            );
        };
        if let Some(s) = conn.pusher.borrow_mut().as_mut() {
            s.presence_users
                .insert(room.as_str().into(), user_id.clone());
        }
        Some(Member {
            client: ctx.client_id(conn.id),
            user: Some(user_id),
            info,
        })
    } else {
        None
    };
    if conn.rooms.borrow().contains_key(room.as_str()) {
        // Subscribing twice succeeds twice in Pusher; the subscription is already in force.
        return;
    }
    let presence = member.is_some();
    ctx.subscribe_member(conn, &room, member, presence);
    if presence {
        // Its answer becomes `subscription_succeeded` with the member list (wire.rs).
        ctx.ask_presence(conn, None, &room);
    }
}

fn client_event(
    ctx: &ShardCtx,
    conn: &Rc<ConnShared>,
    app: &crate::config::PusherApp,
    event: &str,
    channel: Option<&str>,
    data: Option<&RawValue>,
) {
    let Some(channel) = channel else {
        return send(
            conn,
            p::error(
                PusherCode::GENERIC_RECONNECT,
                "a client event needs a channel",
            ),
        );
    };
    if !app.enable_client_messages {
        return send(
            conn,
            p::error(
                PusherCode::CLIENT_EVENT_REJECTED,
                "client events are not enabled for this app (enable_client_messages)",
            ),
        );
    }
    let kind = ChannelKind::of(channel);
    if !matches!(kind, ChannelKind::Private | ChannelKind::Presence) {
        return send(
            conn,
            p::error(
                PusherCode::CLIENT_EVENT_REJECTED,
                "client events are only allowed on private and presence channels",
            ),
        );
    }
    let Some(room) = p::room_of(&app.id, channel) else {
        return;
    };
    if conn.rooms.borrow().get(room.as_str()) != Some(&SubState::Active) {
        return send(
            conn,
            p::error(
                PusherCode::CLIENT_EVENT_REJECTED,
                "subscribe to the channel before sending client events",
            ),
        );
    }
    let Ok(ns) = ctx.namespaces.of(&room) else {
        return;
    };
    let limit = match app.max_client_events_per_second {
        0 => Rate::new(ns.policy.event_rate, ns.policy.event_burst),
        n => Rate::new(n, n),
    };
    if !conn
        .limiter
        .borrow_mut()
        .allow(Bucket::Event(ns.index), limit, ctx.now.get())
    {
        crate::metrics::limit_hit("event");
        return send(
            conn,
            p::error(
                PusherCode::CLIENT_EVENT_REJECTED,
                "client event rate limit exceeded",
            ),
        );
    }
    let null = RawValue::NULL;
    let user_id = conn
        .pusher
        .borrow()
        .as_ref()
        .and_then(|s| s.presence_users.get(room.as_str()).cloned());
    let stored = StoredEvent {
        event: event.into(),
        channel: channel.into(),
        data: data.unwrap_or(null),
        user_id: user_id.map(Into::into),
        socket_id: None,
    };
    let Ok(json) = serde_json::to_string(&stored) else {
        return;
    };
    if json.len() > ns.policy.max_data_bytes {
        return send(
            conn,
            p::error(
                PusherCode::CLIENT_EVENT_REJECTED,
                "client event over the size limit",
            ),
        );
    }
    ctx.send_event(conn, &room, Bytes::from(json), Source::Pusher);
}

fn signin_user(
    ctx: &ShardCtx,
    conn: &Rc<ConnShared>,
    app: &crate::config::PusherApp,
    socket_id: &str,
    signin: p::Signin,
) {
    if !auth::signin_auth_ok(
        &app.key,
        app.secret.expose(),
        socket_id,
        &signin.user_data,
        &signin.auth,
    ) {
        crate::metrics::op_denied("forbidden");
        return send(
            conn,
            p::error(
                PusherCode::UNAUTHORIZED,
                "Invalid signature for pusher:signin",
            ),
        );
    }
    let id = serde_json::from_str::<serde_json::Value>(&signin.user_data)
        .ok()
        .and_then(|v| match &v["id"] {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let Some((id, room)) = id.and_then(|id| Some((id.clone(), super::user_room(&app.id, &id)?)))
    else {
        return send(
            conn,
            p::error(
                PusherCode::UNAUTHORIZED,
                "user_data needs an id of channel-name characters",
            ),
        );
    };
    let previous = conn
        .pusher
        .borrow_mut()
        .as_mut()
        .and_then(|s| s.user.replace(id));
    // Signing in as someone else ends the previous user's channel.
    if let Some(old) = previous.and_then(|old| super::user_room(&app.id, &old)) {
        if old != room && conn.rooms.borrow().contains_key(old.as_str()) {
            ctx.unsubscribe(conn, None, &old);
        }
    }
    send(conn, p::signin_success(&signin.user_data));
}

/// Ends a connection for the API's `terminate_connections`: `pusher:error` 4009, then close
/// 4009 (pusher-js does not reconnect on 4000-4099).
pub fn terminate(conn: &ConnShared) {
    send(
        conn,
        p::error(
            PusherCode::UNAUTHORIZED,
            "Connection terminated by the server",
        ),
    );
    conn.request_close(crate::connection::shared::CloseRequest {
        code: PusherCode::UNAUTHORIZED.close_code(),
        reason: "terminated".into(),
        discard_queue: false,
    });
}

/// What a new Pusher connection is told first: `connection_established`, or `pusher:error`
/// 4004 (and close 4004) when its app is at `max_connections` on this node.
pub fn established(ctx: &ShardCtx, conn: &ConnShared, app: usize) -> Bytes {
    let limit = ctx
        .config
        .pusher
        .apps
        .get(app)
        .map_or(0, |a| a.max_connections);
    if let Some(open) = ctx.global.pusher_connections.get(app) {
        let before = open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if limit > 0 && before >= limit {
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            crate::metrics::limit_hit("pusher_app_connections");
            conn.request_close(crate::connection::shared::CloseRequest {
                code: PusherCode::OVER_CONNECTION_QUOTA.close_code(),
                reason: "Application is over connection quota".into(),
                discard_queue: false,
            });
            let frame = p::error(
                PusherCode::OVER_CONNECTION_QUOTA,
                "Application is over connection quota",
            );
            return encode_frame(OpCode::Text, false, frame.as_bytes());
        }
    }
    let socket_id = super::socket_id(ctx.id, conn.id);
    let frame = p::connection_established(&socket_id, ctx.config.pusher.activity_timeout_s);
    *conn.pusher.borrow_mut() = Some(Box::new(super::PusherConn {
        app,
        socket_id,
        user: None,
        presence_users: Default::default(),
    }));
    encode_frame(OpCode::Text, false, frame.as_bytes())
}
