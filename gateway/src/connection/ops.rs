//! App protocol ops from a connection: decode, check, and hand to the shard.

use std::rc::Rc;

use bytes::Bytes;
use proto_codec::protocol::{decode_op, ClientOp, ErrorCode, ServerEvent};

use super::shared::ConnShared;
use crate::mailbox::PublishOrigin;
use crate::shard::{error_frame, ShardCtx};

/// Handles one text message of the app protocol.
pub fn handle(ctx: &ShardCtx, conn: &Rc<ConnShared>, payload: &[u8]) {
    let op = match decode_op(payload) {
        Ok(op) => op,
        Err(e) => {
            ctx.metrics.op_errors.increment(1);
            conn.push(error_frame(e.id, e.code, &e.reason), None);
            return;
        }
    };
    match op {
        ClientOp::Subscribe { id, room, since } => {
            ctx.subscribe(conn, id, &room, since.map(|p| (p.epoch, p.offset)));
        }
        ClientOp::Unsubscribe { id, room } => ctx.unsubscribe(conn, id, &room),
        ClientOp::Publish { id, room, data } => {
            let data = data.get().as_bytes();
            if data.len() > ctx.config.rooms.max_data_bytes {
                ctx.metrics.op_errors.increment(1);
                conn.push(
                    error_frame(id, ErrorCode::TooLarge, "data is over the size limit"),
                    None,
                );
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
            );
        }
        ClientOp::Ping { id } => {
            conn.push(ServerEvent::Pong { id }.to_frame(), None);
        }
        other => {
            ctx.metrics.op_errors.increment(1);
            conn.push(
                error_frame(
                    other.id(),
                    ErrorCode::NotEnabled,
                    "this op is not enabled on this server",
                ),
                None,
            );
        }
    }
}
