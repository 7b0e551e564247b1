//! [shutdown]: graceful shutdown.

use serde::{Deserialize, Serialize};

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Window over which clients are closed with 1001 (spread to avoid a reconnect storm).
    pub drain_ms: u64,
    /// Upper bound of the reconnect hint sent to clients.
    pub reconnect_hint_max_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> ShutdownConfig {
        ShutdownConfig {
            drain_ms: 5_000,
            reconnect_hint_max_ms: 5_000,
        }
    }
}
