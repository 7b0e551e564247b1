//! [broker]: where rooms' order and history live.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use crate::secret::CredentialUrl;

/// Which broker holds rooms' order and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    /// In this process; one node (the default: no dependency).
    Embedded,
    /// One Redis primary (plain URL) shared by every node.
    Redis,
    /// A Redis Cluster (`url` lists seed nodes, comma-separated): sharded pub/sub.
    RedisCluster,
    /// One primary found through Redis Sentinel (`url` lists sentinels, comma-separated;
    /// `sentinel_service` names the primary).
    RedisSentinel,
}

/// The broker (docs/scaling.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `embedded`, `redis`, `redis-cluster` or `redis-sentinel`.
    pub kind: BrokerKind,
    /// Redis URL (`redis://[user:password@]host:port[/db]`); for a cluster, seed nodes separated
    /// by commas.
    pub url: CredentialUrl,
    /// Prefix of every Redis key and channel (nodes of one deployment share it).
    pub prefix: String,
    /// With `kind = "redis-sentinel"`: the monitored primary's name.
    pub sentinel_service: String,
    /// How long a room's epoch and last offset outlive its last publish.
    pub room_retention_s: u64,
    /// A node's presence entries expire this long after its last refresh (every third of it).
    pub presence_ttl_ms: u64,
    /// How often each node publishes its canary probe.
    pub canary_interval_ms: u64,
    /// A probe not back within this turns `/readyz` red and forces a reconnect.
    pub canary_timeout_ms: u64,
    /// Reconnect backoff floor (exponential, full jitter).
    pub reconnect_min_ms: u64,
    /// Reconnect backoff ceiling.
    pub reconnect_max_ms: u64,
    /// Connecting to Redis gives up after this.
    pub connect_timeout_ms: u64,
    /// A Redis command not answered within this fails and the link is rebuilt.
    pub response_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            kind: BrokerKind::Embedded,
            url: "redis://127.0.0.1:6379".into(),
            prefix: "ringcast".into(),
            sentinel_service: "mymaster".into(),
            room_retention_s: 86_400,
            presence_ttl_ms: 15_000,
            canary_interval_ms: 2_000,
            canary_timeout_ms: 3_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 2_000,
        }
    }
}

impl BrokerConfig {
    /// The Redis bridge's settings (for `redis` and `redis-cluster`).
    pub fn redis_settings(&self) -> broker_bridge::redis::RedisSettings {
        let ms = Duration::from_millis;
        broker_bridge::redis::RedisSettings {
            urls: self
                .url
                .expose()
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect(),
            cluster: self.kind == BrokerKind::RedisCluster,
            sentinel_service: (self.kind == BrokerKind::RedisSentinel)
                .then(|| self.sentinel_service.clone()),
            prefix: self.prefix.clone(),
            room_retention: Duration::from_secs(self.room_retention_s),
            presence_ttl: ms(self.presence_ttl_ms),
            canary_interval: ms(self.canary_interval_ms),
            canary_timeout: ms(self.canary_timeout_ms),
            reconnect_min: ms(self.reconnect_min_ms),
            reconnect_max: ms(self.reconnect_max_ms),
            connect_timeout: ms(self.connect_timeout_ms),
            response_timeout: ms(self.response_timeout_ms),
            // The gateway's `limits.shard_inbox_bytes` applies (set where the bridge starts).
            max_queued_bytes: broker_bridge::redis::RedisSettings::default().max_queued_bytes,
            // The node's own facts (set where the bridge starts).
            announce: None,
        }
    }
}

impl BrokerConfig {
    /// Checks the section (the Redis keys when the broker is Redis).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let b = self;
        if b.kind != BrokerKind::Embedded {
            let urls = b.redis_settings().urls;
            if urls.is_empty() {
                return Err(invalid("broker.url", "a Redis broker needs a URL"));
            }
            if let Some(bad) = urls.iter().find(|u| !u.starts_with("redis://")) {
                return Err(ConfigError::Invalid {
                    key: "broker.url",
                    reason: format!("`{}` is not a redis:// URL", crate::secret::redact_url(bad)),
                });
            }
            if b.kind == BrokerKind::RedisSentinel && b.sentinel_service.is_empty() {
                return Err(invalid(
                    "broker.sentinel_service",
                    "redis-sentinel needs the monitored primary's name",
                ));
            }
            if b.kind == BrokerKind::Redis && urls.len() > 1 {
                return Err(invalid(
                    "broker.url",
                    "several URLs are cluster seed nodes: set kind = \"redis-cluster\"",
                ));
            }
            if b.prefix.is_empty() || b.prefix.contains(['{', '}']) {
                return Err(invalid(
                    "broker.prefix",
                    "must be non-empty, without `{` or `}`",
                ));
            }
            for (key, v) in [
                ("broker.presence_ttl_ms", b.presence_ttl_ms),
                ("broker.canary_interval_ms", b.canary_interval_ms),
                ("broker.canary_timeout_ms", b.canary_timeout_ms),
                ("broker.reconnect_min_ms", b.reconnect_min_ms),
                ("broker.connect_timeout_ms", b.connect_timeout_ms),
                ("broker.response_timeout_ms", b.response_timeout_ms),
                ("broker.room_retention_s", b.room_retention_s),
            ] {
                if v == 0 {
                    return Err(invalid(key, "must be above 0"));
                }
            }
            if b.reconnect_max_ms < b.reconnect_min_ms {
                return Err(invalid(
                    "broker.reconnect_max_ms",
                    "must be at least broker.reconnect_min_ms",
                ));
            }
        }
        Ok(())
    }
}
