//! `POST /publish` on the public listener, carried out on the shard that read it.

use std::time::Duration;

use bytes::Bytes;
use proto_codec::protocol::{ErrorCode, ServerEvent};

use crate::auth::Principal;
use crate::errors::OpFailure;
use crate::http::public::{error_json, json_response, publish_body};
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
