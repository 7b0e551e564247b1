//! A y-websocket connection (`/yjs/<room>`): the y-protocols messages of one collaborative room.
//!
//! The connection subscribed to its room when it was accepted (so it gets every update, as a
//! sync `update` message, and the room's awareness relays). Its messages go to the room's home
//! shard: a sync step 1 is answered from the document there (once the subscription is in force,
//! so that every update is in the answer or reaches the connection after it); an update is checked here
//! (permission, size, rate) and published like any binary message, which merges it into the
//! document on the home shard, stores it and fans it out. y-websocket has no error message: a
//! refusal closes the connection with a code that says why (docs/collaboration.md).

use std::rc::Rc;

use bytes::Bytes;
use proto_codec::protocol::codes::close;
use proto_codec::protocol::stored_binary;
use proto_codec::ws::CloseCode;

use super::shared::{CloseRequest, ConnShared};
use crate::auth::Action;
use crate::endpoint::YJS_FORBIDDEN as FORBIDDEN;
use crate::errors::OpFailure;
use crate::mailbox::{home_shard, PublishOrigin, ShardMsg};
use crate::outgoing::Source;
use crate::ratelimit::{Bucket, Rate};
use crate::rooms::crdt::{decode_client_message, ClientMessage};
use crate::shard::ShardCtx;

fn refuse(code: CloseCode, reason: impl Into<String>) -> CloseRequest {
    CloseRequest {
        code,
        reason: reason.into(),
        discard_queue: false,
    }
}

/// Handles one binary message from a y-websocket client; `Err` is the close to answer with.
pub fn handle(
    ctx: &ShardCtx,
    conn: &Rc<ConnShared>,
    room: &str,
    payload: &[u8],
) -> Result<(), CloseRequest> {
    let msg =
        decode_client_message(payload).map_err(|e| refuse(close::BAD_REQUEST, e.to_string()))?;
    let ns = ctx
        .namespaces
        .of(room)
        .map_err(|OpFailure { reason, .. }| refuse(close::BAD_REQUEST, reason))?;
    let from = (ctx.id, conn.id);
    let home = home_shard(room, ctx.mailboxes.len());
    match msg {
        ClientMessage::SyncStep1(state_vector) => {
            ctx.route(
                home,
                ShardMsg::CrdtSync {
                    room: room.into(),
                    from,
                    state_vector,
                },
            );
        }
        // A fresh client's sync step 2 changes nothing: no permission needed.
        ClientMessage::Update(_, true) => {}
        ClientMessage::Update(update, false) => {
            conn.principal
                .borrow()
                .authorize(Action::Publish, room, ns)
                .map_err(|OpFailure { reason, .. }| {
                    refuse(FORBIDDEN, format!("read-only document: {reason}"))
                })?;
            if update.len() > ns.policy.max_data_bytes {
                return Err(refuse(
                    CloseCode::MESSAGE_TOO_BIG,
                    "update over the namespace's max_data_bytes",
                ));
            }
            let rate = Rate::new(ns.policy.publish_rate, ns.policy.publish_burst);
            if !conn
                .limiter
                .borrow_mut()
                .allow(Bucket::Publish(ns.index), rate, ctx.now.get())
            {
                crate::metrics::limit_hit("publish");
                return Err(refuse(close::RATE_LIMITED, "update rate exceeded"));
            }
            ctx.publish(
                room,
                stored_binary(&update),
                PublishOrigin::Conn {
                    shard: ctx.id,
                    conn: conn.id,
                    id: None,
                },
                Source::Yjs,
            );
        }
        ClientMessage::Awareness => {
            if payload.len() > ns.policy.max_data_bytes {
                return Err(refuse(
                    CloseCode::MESSAGE_TOO_BIG,
                    "awareness update over the namespace's max_data_bytes",
                ));
            }
            let rate = Rate::new(ns.policy.event_rate, ns.policy.event_burst);
            if !conn
                .limiter
                .borrow_mut()
                .allow(Bucket::Event(ns.index), rate, ctx.now.get())
            {
                // Awareness is ephemeral and sent again by the client: a state over the rate
                // is dropped, not a reason to close.
                crate::metrics::limit_hit("event");
                return Ok(());
            }
            ctx.route(
                home,
                ShardMsg::CrdtAwareness {
                    room: room.into(),
                    from,
                    update: Bytes::copy_from_slice(payload),
                },
            );
        }
        ClientMessage::AwarenessQuery => {
            ctx.route(
                home,
                ShardMsg::CrdtAwarenessQuery {
                    room: room.into(),
                    from,
                },
            );
        }
        ClientMessage::Other => {}
    }
    Ok(())
}
