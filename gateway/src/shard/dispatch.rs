//! Message dispatch: one arm per [`ShardMsg`], each a call into the side that handles it (the
//! local side, `local.rs`; the home side, `home.rs`; documents, `crdt.rs`; queries, `admin.rs`;
//! shutdown, `sweep.rs`). No logic lives in the arms.

use super::home::Answer;
use super::ShardCtx;
use crate::mailbox::ShardMsg;

impl ShardCtx {
    /// Handles one mailbox message.
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            // Home side: rooms this shard is home to.
            ShardMsg::Subscribe(req) => self.home_subscribe(*req),
            ShardMsg::Unsubscribe {
                room,
                origin,
                conn,
                deflate,
            } => self.home_unsubscribe(room, (origin, conn), deflate),
            ShardMsg::Publish {
                room,
                data,
                origin,
                source,
            } => self.home_publish_from(room, data, origin, source),
            ShardMsg::Event {
                room,
                data,
                from,
                source,
            } => self.home_event(room, data, from, source),
            ShardMsg::Presence { room, from, id } => {
                self.home_members(room, Answer::Conn { to: from, id })
            }
            ShardMsg::History {
                room,
                from,
                id,
                since,
                limit,
            } => self.home_history(room, Answer::Conn { to: from, id }, since, limit),
            ShardMsg::CrdtSync {
                room,
                from,
                state_vector,
            } => self.crdt_sync(room, from, state_vector),
            ShardMsg::CrdtAwareness { room, from, update } => {
                self.crdt_awareness(room, from, update)
            }
            ShardMsg::CrdtAwarenessQuery { room, from } => self.crdt_awareness_query(room, from),
            // Local side: this shard's connections.
            ShardMsg::Subscribed {
                room,
                conn,
                seq,
                ok,
                answer,
            } => self.local_subscribed(room, conn, seq, ok, answer),
            ShardMsg::Deliver {
                room,
                frame,
                deflated,
                meta,
            } => self.deliver_here(room, &frame, deflated.as_ref(), meta),
            ShardMsg::DeliverLive { live, except } => self.deliver_live_here(&live, except),
            ShardMsg::ToConn { conn, out } => self.to_conn(conn, &out),
            ShardMsg::CloseConn { conn, code, reason } => self.close_conn(conn, code, reason),
            ShardMsg::PusherTerminate { app, user } => self.pusher_terminate(app, &user),
            // The broker's events are polled after every batch.
            ShardMsg::BrokerReady => {}
            ShardMsg::Admin(query) => self.admin_query(query),
            ShardMsg::Shutdown => self.begin_shutdown(),
        }
    }
}
