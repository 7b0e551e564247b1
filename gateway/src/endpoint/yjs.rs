//! `/yjs/<room>`: a y-websocket client, the y-protocols messages of one collaborative room.
//!
//! The room's namespace must be `kind = "crdt"` (checked by the route) and the token may read
//! the room (checked before the upgrade; a refusal is a close, y-websocket retries a refused
//! upgrade forever). The connection subscribes to its room when it was accepted (so it gets every update, as a
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

use broker_bridge::RoomName;
use proto_codec::protocol::codes::yjs_close::{AUTH_FAILED, FORBIDDEN};
use proto_codec::protocol::ErrorCode;
use proto_codec::ws::DataKind;

use super::{only, path_room, Credential, Data, Endpoint, NoRoute};
use crate::auth::{Action, Principal};
use crate::config::RoomKind;
use crate::connection::gate::Gate;
use crate::connection::shared::{CloseRequest, ConnShared};
use crate::endpoint::profile::{Answer, Profile};
use crate::errors::OpFailure;
use crate::form::Form;
use crate::mailbox::{home_shard, PublishOrigin, ShardMsg};
use crate::namespaces::Namespaces;
use crate::outgoing::Source;
use crate::ratelimit::{Bucket, Rate};
use crate::rooms::crdt::{decode_client_message, ClientMessage};
use crate::shard::ShardCtx;

use super::close as refuse;

/// A y-websocket client of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Yjs {
    /// The room.
    pub room: RoomName,
}

impl Yjs {
    /// The endpoint of a `/yjs/<room>` request (`rest` is the path after `/yjs/`): the room's
    /// namespace must be collaborative.
    pub fn route(rest: &str, namespaces: &Namespaces) -> Result<Yjs, NoRoute> {
        let room = path_room(rest)?;
        match namespaces.of(room) {
            Ok(ns) if ns.policy.kind == RoomKind::Crdt => Ok(Yjs { room: room.into() }),
            Ok(_) => Err(NoRoute::new(
                404,
                "not_found",
                "not a collaborative room (its namespace is not kind = \"crdt\")",
            )),
            Err(OpFailure { reason, .. }) => Err(NoRoute::new(404, "not_found", reason)),
        }
    }
}

impl Endpoint for Yjs {
    fn profile(&self) -> Profile {
        Profile {
            answer: Answer::CloseIfRefused,
            ..Profile::websocket(Form::Yjs)
        }
    }

    fn credential(&self) -> Credential {
        Credential::TokenOrClose(AUTH_FAILED)
    }

    /// The connection is a subscription to its room: closed right after the upgrade when the
    /// token may not read it.
    fn admit(&self, principal: &Principal, gate: &Gate<'_>) -> Result<(), CloseRequest> {
        let room = &self.room;
        gate.namespaces
            .of(room)
            .and_then(|ns| principal.authorize(Action::Subscribe, room, ns))
            .map_err(|OpFailure { code, reason }| {
                let code = if code == ErrorCode::Unauthorized {
                    AUTH_FAILED
                } else {
                    FORBIDDEN
                };
                refuse(code, reason)
            })
    }

    /// Subscribes to its room, as a presence member where the namespace has presence.
    fn start(&mut self, ctx: &Rc<ShardCtx>, conn: &Rc<ConnShared>) {
        let presence = ctx
            .namespaces
            .of(&self.room)
            .ok()
            .and_then(|ns| ns.policy.presence.then_some(ns.policy.join_leave));
        ctx.subscribe(conn, None, &self.room, None, presence);
    }

    fn takes(&self, kind: DataKind) -> Result<(), CloseRequest> {
        only(kind, DataKind::Binary, "y-websocket speaks binary messages")
    }

    fn on_data(
        &self,
        ctx: &ShardCtx,
        conn: &Rc<ConnShared>,
        data: Data<'_>,
    ) -> Result<(), CloseRequest> {
        handle(ctx, conn, &self.room, data.payload)
    }
}

/// Handles one binary message from a y-websocket client; `Err` is the close to answer with.
fn handle(
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
