//! [limits]: limits and abuse control.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// Limits and abuse control. 0 means "no limit" where noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections (handshaking or open) on this node; over it: 503 with `Retry-After`
    /// (0: no limit).
    pub max_connections: usize,
    /// Connections from one client IP address; over it: 429 (0: no limit).
    pub max_connections_per_ip: u32,
    /// New connections per second from one IP address; over it: 429 (0: no limit).
    pub handshakes_per_ip_per_second: u32,
    /// Burst of new connections from one IP address (0: equal to the rate).
    pub handshake_burst: u32,
    /// Open connections of one user (token `sub`); over it: close 4010 (0: no limit).
    pub max_connections_per_user: u32,
    /// Resident memory of the process above which handshakes get 503 (0: no limit).
    pub memory_budget_bytes: u64,
    /// `Retry-After` of a 503 is drawn uniformly from `[retry_after_min_s, retry_after_max_s]`.
    pub retry_after_min_s: u64,
    /// Upper end of the `Retry-After` range.
    pub retry_after_max_s: u64,
    /// Bytes a client may send before it is authenticated (the request head); over it: 431.
    pub max_request_head_bytes: usize,
    /// Bytes of messages one shard's inbox may hold (publishes, deliveries, answers from other
    /// shards); past it, a publish into a room of that shard (or with subscribers there) is
    /// refused with `unavailable` and an ephemeral event is dropped.
    pub shard_inbox_bytes: usize,
    /// Rooms one connection may be subscribed to.
    pub max_rooms_per_connection: usize,
    /// Ops per second per connection (0: no limit); over it: error `rate_limited`.
    pub ops_per_second: u32,
    /// Burst of ops above the rate (0: equal to the rate).
    pub ops_burst: u32,
    /// `rate_limited` errors within one second after which the connection is closed with 4009.
    pub rate_limit_strikes: u32,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_connections: 0,
            max_connections_per_ip: 0,
            handshakes_per_ip_per_second: 0,
            handshake_burst: 0,
            max_connections_per_user: 0,
            memory_budget_bytes: 0,
            retry_after_min_s: 1,
            retry_after_max_s: 30,
            max_request_head_bytes: proto_codec::http::MAX_HEAD_BYTES,
            shard_inbox_bytes: 64 << 20,
            max_rooms_per_connection: 1024,
            ops_per_second: 0,
            ops_burst: 0,
            rate_limit_strikes: 10,
        }
    }
}

impl LimitsConfig {
    /// Checks the section.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let limits = self;
        if limits.max_rooms_per_connection == 0 {
            return Err(invalid(
                "limits.max_rooms_per_connection",
                "must be above 0",
            ));
        }
        if limits.retry_after_min_s > limits.retry_after_max_s {
            return Err(invalid(
                "limits.retry_after_min_s",
                "must not be above limits.retry_after_max_s",
            ));
        }
        if limits.shard_inbox_bytes < 64 * 1024 {
            return Err(invalid(
                "limits.shard_inbox_bytes",
                "must be at least 65536",
            ));
        }
        if !(1024..=proto_codec::http::MAX_HEAD_BYTES).contains(&limits.max_request_head_bytes) {
            return Err(ConfigError::Invalid {
                key: "limits.max_request_head_bytes",
                reason: format!("must be 1024 to {}", proto_codec::http::MAX_HEAD_BYTES),
            });
        }
        Ok(())
    }
}
