//! [crdt]: collaborative rooms.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// Collaborative rooms (`kind = "crdt"` namespaces, docs/collaboration.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrdtConfig {
    /// With the embedded broker: the directory documents persist in (a snapshot and a log of
    /// updates per room), so a restart keeps them. Empty: in memory only. (With Redis, documents
    /// live in Redis.)
    pub snapshot_dir: String,
    /// A room's document is snapshotted this long after its first unsnapshotted update (and on
    /// the last unsubscribe, on shutdown, and after half its namespace's `history_size` updates).
    pub snapshot_interval_ms: u64,
    /// Awareness states (cursors, names) a room keeps, every node's clients together; a new
    /// client's state past it is not kept nor relayed.
    pub max_awareness_states: usize,
    /// Bytes of one awareness state's JSON; a larger state is not kept nor relayed.
    pub max_awareness_state_bytes: usize,
    /// Client ids one connection may set awareness states for (y-websocket uses one).
    pub max_awareness_clients_per_connection: usize,
}

impl Default for CrdtConfig {
    fn default() -> CrdtConfig {
        CrdtConfig {
            snapshot_dir: String::new(),
            snapshot_interval_ms: 5_000,
            max_awareness_states: 200,
            max_awareness_state_bytes: 2048,
            max_awareness_clients_per_connection: 4,
        }
    }
}

impl CrdtConfig {
    /// Checks the section; `has_crdt`: some namespace is collaborative, whose joiners get the awareness table in a queue of `outbound_high_water_bytes`.
    pub(super) fn validate(
        &self,
        has_crdt: bool,
        outbound_high_water_bytes: usize,
    ) -> Result<(), ConfigError> {
        let c = self;
        if c.max_awareness_states == 0
            || c.max_awareness_state_bytes == 0
            || c.max_awareness_clients_per_connection == 0
        {
            return Err(invalid(
                "crdt.max_awareness_states",
                "the awareness bounds (max_awareness_states, max_awareness_state_bytes, max_awareness_clients_per_connection) must be above 0",
            ));
        }
        // A joiner is sent the whole table: it must fit in half its queue's high-water mark.
        if has_crdt
            && c.max_awareness_states
                .saturating_mul(c.max_awareness_state_bytes + 32)
                > outbound_high_water_bytes / 2
        {
            return Err(invalid(
                "crdt.max_awareness_states",
                "with crdt namespaces, max_awareness_states × (max_awareness_state_bytes + 32) must be at most half of websocket.outbound_high_water_bytes (a joiner gets the whole table)",
            ));
        }
        if self.snapshot_interval_ms == 0 {
            return Err(invalid("crdt.snapshot_interval_ms", "must be above 0"));
        }
        Ok(())
    }
}
