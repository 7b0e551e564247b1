//! App protocol ops from a connection: decode, check (rate, namespace, permission, size), and
//! hand to the shard. Every refusal is an `error` event; none is a silent drop.

use std::rc::Rc;

use bytes::Bytes;
use proto_codec::protocol::codes::close;
use proto_codec::protocol::{
    decode_binary_op, decode_op, stored_binary, BinaryOp, ClientOp, ErrorCode, ServerEvent,
};

use super::shared::{CloseRequest, ConnShared};
use crate::auth::{Action, AuthError};
use crate::errors::OpFailure;
use crate::mailbox::PublishOrigin;
use crate::namespaces::Namespace;
use crate::outgoing::{error_event, Source};
use crate::ratelimit::{Bucket, Rate};
use crate::shard::ShardCtx;

/// Handles one text message of the app protocol.
pub fn handle(ctx: &ShardCtx, conn: &Rc<ConnShared>, payload: &[u8]) {
    let op = match decode_op(payload) {
        Ok(op) => op,
        Err(e) => return refuse(ctx, conn, e.id, e.code, &e.reason),
    };
    let now = ctx.now.get();
    let limits = &ctx.config.limits;
    let op_rate = Rate::new(limits.ops_per_second, limits.ops_burst);
    if !conn.limiter.borrow_mut().allow_op(op_rate, now) {
        return rate_limited(ctx, conn, op.id(), "ops", "too many ops; slow down");
    }
    match op {
        ClientOp::Subscribe { id, room, since } => {
            let Some(ns) = check(ctx, conn, id, Action::Subscribe, &room) else {
                return;
            };
            // Without recovery, `since` is ignored: the answer says `recovered: false`.
            let since = since
                .filter(|_| ns.policy.recovery)
                .map(|p| (p.epoch, p.offset));
            let presence = ns.policy.presence.then_some(ns.policy.join_leave);
            ctx.subscribe(conn, id, &room, since, presence);
        }
        ClientOp::Unsubscribe { id, room } => ctx.unsubscribe(conn, id, &room),
        ClientOp::Publish { id, room, data } => {
            let Some(ns) = check(ctx, conn, id, Action::Publish, &room) else {
                return;
            };
            let data = data.get().as_bytes();
            if !within_limits(ctx, conn, id, ns, data.len(), Bucket::Publish(ns.index)) {
                return;
            }
            ctx.publish(
                &room,
                Bytes::copy_from_slice(data),
                PublishOrigin::Conn {
                    shard: ctx.id,
                    conn: conn.id,
                    id,
                },
                Source::Client,
            );
        }
        ClientOp::Refresh { id, token } => refresh(ctx, conn, id, &token),
        ClientOp::Ping { id } => {
            conn.send(&ServerEvent::Pong { id });
        }
        ClientOp::Presence { id, room } => {
            let Some(ns) = check(ctx, conn, id, Action::Presence, &room) else {
                return;
            };
            if !enabled_and_subscribed(ctx, conn, id, &room, ns.policy.presence, "presence") {
                return;
            }
            ctx.ask_presence(conn, id, &room);
        }
        ClientOp::History {
            id,
            room,
            since,
            limit,
        } => {
            let Some(ns) = check(ctx, conn, id, Action::Subscribe, &room) else {
                return;
            };
            let max = ns.policy.history_size;
            if max == 0 {
                return refuse(
                    ctx,
                    conn,
                    id,
                    ErrorCode::NotEnabled,
                    "no history in this namespace",
                );
            }
            let limit = limit.map_or(max, |l| (l as usize).min(max));
            ctx.ask_history(conn, id, &room, since.map(|p| (p.epoch, p.offset)), limit);
        }
        ClientOp::Event { id, room, data } => {
            let Some(ns) = check(ctx, conn, id, Action::Publish, &room) else {
                return;
            };
            if !enabled_and_subscribed(ctx, conn, id, &room, ns.policy.events, "ephemeral events") {
                return;
            }
            if !within_limits(ctx, conn, id, ns, data.get().len(), Bucket::Event(ns.index)) {
                return;
            }
            let data = Bytes::copy_from_slice(data.get().as_bytes());
            ctx.send_event(conn, &room, data, Source::Client);
        }
    }
}

/// Handles one binary message of the app protocol (`protocol::binary`): a binary publish.
pub fn handle_binary(ctx: &ShardCtx, conn: &Rc<ConnShared>, payload: &[u8]) {
    let op = match decode_binary_op(payload) {
        Ok(op) => op,
        Err(e) => return refuse(ctx, conn, e.id, e.code, &e.reason),
    };
    let limits = &ctx.config.limits;
    let op_rate = Rate::new(limits.ops_per_second, limits.ops_burst);
    match op {
        BinaryOp::Publish { id, room, data } => {
            if !conn.limiter.borrow_mut().allow_op(op_rate, ctx.now.get()) {
                return rate_limited(ctx, conn, id, "ops", "too many ops; slow down");
            }
            let Some(ns) = check(ctx, conn, id, Action::Publish, room) else {
                return;
            };
            if !within_limits(ctx, conn, id, ns, data.len(), Bucket::Publish(ns.index)) {
                return;
            }
            ctx.publish(
                room,
                stored_binary(data),
                PublishOrigin::Conn {
                    shard: ctx.id,
                    conn: conn.id,
                    id,
                },
                Source::Client,
            );
        }
    }
}

/// The namespace of a room, if the connection may do `action` there; otherwise answers the
/// error and returns `None`.
fn check<'c>(
    ctx: &'c ShardCtx,
    conn: &ConnShared,
    id: Option<u64>,
    action: Action,
    room: &str,
) -> Option<&'c Namespace> {
    let verdict = ctx.namespaces.of(room).and_then(|ns| {
        conn.principal
            .borrow()
            .authorize(action, room, ns)
            .map(|()| ns)
    });
    match verdict {
        Ok(ns) => Some(ns),
        Err(OpFailure { code, reason }) => {
            if matches!(code, ErrorCode::Forbidden | ErrorCode::Unauthorized) {
                crate::metrics::op_denied(code.as_str());
            }
            refuse(ctx, conn, id, code, &reason);
            None
        }
    }
}

/// The namespace's size limit and per-connection rate for a publish or an event; answers the
/// refusal and returns false when one is passed.
fn within_limits(
    ctx: &ShardCtx,
    conn: &ConnShared,
    id: Option<u64>,
    ns: &Namespace,
    len: usize,
    bucket: Bucket,
) -> bool {
    if len > ns.policy.max_data_bytes {
        refuse(
            ctx,
            conn,
            id,
            ErrorCode::TooLarge,
            "data is over the size limit",
        );
        return false;
    }
    let (rate, scope, reason) = match bucket {
        Bucket::Publish(_) => (
            Rate::new(ns.policy.publish_rate, ns.policy.publish_burst),
            "publish",
            "publish rate of this namespace exceeded; slow down",
        ),
        Bucket::Event(_) => (
            Rate::new(ns.policy.event_rate, ns.policy.event_burst),
            "event",
            "event rate of this namespace exceeded; slow down",
        ),
    };
    if conn.limiter.borrow_mut().allow(bucket, rate, ctx.now.get()) {
        return true;
    }
    rate_limited(ctx, conn, id, scope, reason);
    false
}

/// A presence request or an event needs its feature on in the namespace and a subscription in
/// force; answers the refusal and returns false otherwise.
fn enabled_and_subscribed(
    ctx: &ShardCtx,
    conn: &ConnShared,
    id: Option<u64>,
    room: &str,
    enabled: bool,
    feature: &str,
) -> bool {
    if !enabled {
        let reason = format!("{feature} is off in this namespace");
        refuse(ctx, conn, id, ErrorCode::NotEnabled, &reason);
        return false;
    }
    if conn.rooms.borrow().get(room) != Some(&super::shared::SubState::Active) {
        refuse(
            ctx,
            conn,
            id,
            ErrorCode::NotSubscribed,
            "subscribe to the room first",
        );
        return false;
    }
    true
}

fn refuse(ctx: &ShardCtx, conn: &ConnShared, id: Option<u64>, code: ErrorCode, reason: &str) {
    ctx.metrics.op_errors.increment(1);
    conn.send(&error_event(id, code, reason));
}

/// Answers `rate_limited`, and closes with 4009 once the strikes within a second reach the
/// configured count.
fn rate_limited(
    ctx: &ShardCtx,
    conn: &ConnShared,
    id: Option<u64>,
    scope: &'static str,
    reason: &str,
) {
    crate::metrics::limit_hit(scope);
    refuse(ctx, conn, id, ErrorCode::RateLimited, reason);
    let strikes = ctx.config.limits.rate_limit_strikes;
    if conn.limiter.borrow_mut().strike(ctx.now.get(), strikes) {
        crate::metrics::limit_hit("rate_limit_close");
        conn.request_close(CloseRequest {
            code: close::RATE_LIMITED,
            reason: "rate limit exceeded repeatedly".into(),
            discard_queue: false,
        });
    }
}

/// `refresh`: a new token for the same user. Valid → `refreshed`, and subscriptions the new
/// token no longer allows are removed (`unsubscribed` with reason `forbidden`); invalid → 4001.
fn refresh(ctx: &ShardCtx, conn: &Rc<ConnShared>, id: Option<u64>, token: &str) {
    let current = conn.principal.borrow().clone();
    let Some(user) = current.user.as_deref() else {
        return refuse(
            ctx,
            conn,
            id,
            ErrorCode::Forbidden,
            "an anonymous connection cannot become authenticated; reconnect with a token",
        );
    };
    let fresh = match ctx.auth.verify(token) {
        Ok(p) if p.user.as_deref() == Some(user) => p,
        Ok(_) => return auth_failed(conn, "refresh token is for another user"),
        Err(AuthError::Denied) => {
            crate::metrics::limit_hit("refresh_denied");
            conn.request_close(CloseRequest {
                code: close::FORBIDDEN,
                reason: "user is not allowed to connect".into(),
                discard_queue: false,
            });
            return;
        }
        Err(e) => return auth_failed(conn, &e.to_string()),
    };
    let expires_at = fresh.expires_at;
    *conn.principal.borrow_mut() = Rc::new(fresh);
    conn.expiry_warned.set(false);
    conn.send(&ServerEvent::Refreshed { id, expires_at });
    let lost: Vec<String> = {
        let principal = conn.principal.borrow();
        conn.rooms
            .borrow()
            .keys()
            .filter(|room| {
                ctx.namespaces
                    .of(room)
                    .and_then(|ns| principal.authorize(Action::Subscribe, room, ns))
                    .is_err()
            })
            .map(|r| r.to_string())
            .collect()
    };
    for room in lost {
        ctx.drop_subscription(conn, &room, "forbidden");
    }
}

fn auth_failed(conn: &ConnShared, reason: &str) {
    crate::metrics::limit_hit("refresh_failed");
    conn.request_close(CloseRequest {
        code: close::AUTH_FAILED,
        reason: reason.into(),
        discard_queue: false,
    });
}
