//! The codes of the app protocol: error codes carried by `error` events, and ringcast's own
//! close codes (4000–4999). The tables in `docs/protocol.md` list the same codes.

use serde::{Deserialize, Serialize};

use crate::ws::CloseCode;

/// Why an op was refused. Carried in an `error` event; the connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not a JSON object, or a field is missing or has the wrong type.
    BadRequest,
    /// The `op` is not one this server knows.
    UnknownOp,
    /// The room name is not valid.
    BadRoom,
    /// No valid credentials for this op.
    Unauthorized,
    /// The credentials do not allow this op on this room.
    Forbidden,
    /// The room's namespace is not configured.
    NotFound,
    /// The connection is not subscribed to the room.
    NotSubscribed,
    /// The connection is already subscribed to the room.
    AlreadySubscribed,
    /// The message data is over the namespace's size limit.
    TooLarge,
    /// Too many ops in a short time; retry later.
    RateLimited,
    /// A per-connection limit (rooms per connection, …) was reached.
    LimitExceeded,
    /// The op is not enabled for this room's namespace.
    NotEnabled,
    /// The server cannot take the op now (broker unavailable, shutting down); retry.
    Unavailable,
    /// An unexpected server-side failure.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of this code on the HTTP endpoints (docs/protocol.md §11).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnknownOp | ErrorCode::BadRoom => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::NotEnabled => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::NotSubscribed | ErrorCode::AlreadySubscribed => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The code as it appears on the wire (`bad_request`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::NotEnabled => "not_enabled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// ringcast's close codes, in the private range 4000–4999.
pub mod close {
    use super::CloseCode;

    /// The token was invalid when it was refreshed on a live connection.
    pub const AUTH_FAILED: CloseCode = CloseCode(4001);
    /// The token expired and no fresh one came within the grace period.
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4002);
    /// The connection lost a permission it needs (or its user was banned).
    pub const FORBIDDEN: CloseCode = CloseCode(4003);
    /// The client kept sending ops that are not valid protocol.
    pub const BAD_REQUEST: CloseCode = CloseCode(4004);
    /// The client did not answer pings in time.
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(4005);
    /// The connection was idle (no op) for longer than allowed.
    pub const IDLE_TIMEOUT: CloseCode = CloseCode(4006);
    /// The client read too slowly: its outbound queue passed the high-water mark. It resumes
    /// from its last offset.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);
    /// The client kept exceeding its rate limit.
    pub const RATE_LIMITED: CloseCode = CloseCode(4009);
    /// Too many connections (for this user, or on this node).
    pub const TOO_MANY_CONNECTIONS: CloseCode = CloseCode(4010);
}

/// The close codes of a y-websocket connection (`/yjs/<room>`, docs/collaboration.md):
/// y-websocket stops reconnecting on codes 4400–4499 only (it retries a refused upgrade
/// forever), so its refusals have codes of their own in that range.
pub mod yjs_close {
    use super::CloseCode;

    /// A missing or invalid token.
    pub const AUTH_FAILED: CloseCode = CloseCode(4401);
    /// A token that may not open the room, or not edit it.
    pub const FORBIDDEN: CloseCode = CloseCode(4403);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::UnknownOp,
            ErrorCode::BadRoom,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::NotSubscribed,
            ErrorCode::AlreadySubscribed,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
            ErrorCode::LimitExceeded,
            ErrorCode::NotEnabled,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn close_codes_are_sendable() {
        for c in [
            close::AUTH_FAILED,
            close::TOKEN_EXPIRED,
            close::FORBIDDEN,
            close::BAD_REQUEST,
            close::HEARTBEAT_TIMEOUT,
            close::IDLE_TIMEOUT,
            close::SLOW_CONSUMER,
            close::RATE_LIMITED,
            close::TOO_MANY_CONNECTIONS,
        ] {
            assert!(c.is_sendable());
        }
    }
}
