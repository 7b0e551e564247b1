//! `GET /poll`: a long poll, the last resort where neither WebSocket nor an event stream gets
//! through (docs/protocol.md §20). Its request is checked in `http::public::stream_request`;
//! here the rooms are subscribed (with recovery), the request is held until something is
//! queued or the hold ends, and everything queued is answered as one JSON array.

use std::future::poll_fn;
use std::rc::Rc;
use std::task;
use std::time::Duration;

use super::Endpoint;
use crate::auth::Principal;
use crate::endpoint::profile::{Heartbeat, Profile};
use crate::form::Form;
use crate::http::public::StreamRoom;
use crate::shard::ShardCtx;

/// A long poll: events queued as their JSON, no heartbeat (it ends by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll;

impl Endpoint for Poll {
    fn profile(&self) -> Profile {
        Profile {
            heartbeat: Heartbeat::None,
            ..Profile::websocket(Form::Json)
        }
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
    let conn = ctx.register_conn(Poll.profile(), false, principal);
    for (room, since) in rooms {
        ctx.subscribe(&conn, None, &room, since, None);
    }
    let ready = poll_fn(|cx| {
        conn.set_waker(cx.waker());
        if !conn.outbox().borrow().is_empty()
            || conn.take_close_request().is_some()
            || conn.force_end.get()
        {
            task::Poll::Ready(())
        } else {
            task::Poll::Pending
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
