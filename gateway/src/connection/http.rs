//! `POST /publish` and `GET /poll` on the public listener, carried out on the shard that read
//! them.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use proto_codec::protocol::{ErrorCode, ServerEvent};

use crate::auth::Principal;
use crate::endpoint::Endpoint;
use crate::errors::OpFailure;
use crate::http::public::{error_json, json_response, publish_body, StreamRoom};
use crate::mailbox::PublishOrigin;
use crate::outgoing::Source;
use crate::shard::ShardCtx;

/// Publishes a checked HTTP body and returns the whole response: `200` with the `published`
/// event, or the code's status with the `error` event.
pub async fn publish(
    ctx: &ShardCtx,
    principal: &Principal,
    body: &[u8],
    cors: Option<String>,
) -> Vec<u8> {
    let cors = cors.as_deref();
    let p = match publish_body(body, principal, &ctx.namespaces) {
        Ok(p) => p,
        Err(OpFailure { code, reason }) => {
            ctx.metrics.op_errors.increment(1);
            return error_json(code, &reason, cors);
        }
    };
    if ctx.is_shutting_down() {
        return error_json(ErrorCode::Unavailable, "shutting down", cors);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    ctx.publish(
        &p.room,
        Bytes::from(p.data),
        PublishOrigin::Api(tx),
        Source::Api,
    );
    match monoio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Ok((epoch, offset)))) => {
            let event = ServerEvent::Published {
                id: p.id,
                room: p.room.as_str().into(),
                epoch: epoch.as_ref().into(),
                offset,
            };
            json_response(200, event.to_json().as_bytes(), cors)
        }
        Ok(Ok(Err(code))) => error_json(code, "publish failed; retry", cors),
        Ok(Err(_)) | Err(_) => error_json(
            ErrorCode::Unavailable,
            "no answer from the room's shard; retry",
            cors,
        ),
    }
}

/// `GET /poll`: subscribes to the rooms (with recovery), waits until something is queued or
/// the hold ends, and answers everything queued as one JSON array (docs/protocol.md §20).
pub async fn long_poll(
    ctx: &Rc<ShardCtx>,
    principal: Principal,
    rooms: Vec<StreamRoom>,
    cors: Option<String>,
) -> Vec<u8> {
    let conn = ctx.register_conn(Endpoint::Poll, false, principal);
    for (room, since) in rooms {
        ctx.subscribe(&conn, None, &room, since, None);
    }
    let ready = poll_fn(|cx| {
        conn.set_waker(cx.waker());
        if !conn.outbox().borrow().is_empty()
            || conn.take_close_request().is_some()
            || conn.force_end.get()
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let hold = Duration::from_millis(ctx.config.websocket.long_poll_hold_ms);
    let _ = monoio::time::timeout(hold, ready).await;
    // A long poll's queue holds its events' JSON (`outgoing::Form::Json`).
    let events = conn.outbox().borrow_mut().take_all();
    ctx.unregister_conn(&conn);
    let mut body = Vec::with_capacity(2 + events.iter().map(|e| e.len() + 1).sum::<usize>());
    body.push(b'[');
    for json in &events {
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.push(b']');
    let mut out = Vec::with_capacity(200 + body.len());
    // One request per connection: say so, or a client that pools connections reuses a socket
    // the gateway is closing.
    let mut headers = vec![("Cache-Control", "no-store"), ("Connection", "close")];
    if let Some(o) = cors.as_deref() {
        headers.push(("Access-Control-Allow-Origin", o));
        headers.push(("Vary", "Origin"));
    }
    proto_codec::http::write_response(&mut out, 200, "application/json", &headers, &body);
    out
}
