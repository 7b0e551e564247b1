//! [rooms] and [namespaces.X]: a namespace's policy, and what it may hold.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// What a namespace's rooms are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomKind {
    /// Rooms of messages (JSON or binary), the default.
    Messages,
    /// Collaborative documents: every message is a Yjs update, merged on the room's home shard
    /// into one document that joining clients sync from (docs/collaboration.md).
    Crdt,
}

/// The policy of one namespace (or of the default namespace, `[rooms]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespacePolicy {
    /// What the rooms are: `messages` or `crdt` (never inherited from `[rooms]`).
    pub kind: RoomKind,
    /// For `crdt` rooms: the largest document, in encoded bytes; an update that would pass it
    /// is refused.
    pub max_document_bytes: usize,
    /// Messages kept per room for recovery (0: no history).
    pub history_size: usize,
    /// How long a message stays recoverable.
    pub history_ttl_ms: u64,
    /// Whether `subscribe` with `since` replays missed messages (false: always
    /// `recovered: false`).
    pub recovery: bool,
    /// Whether the `presence` op is allowed.
    pub presence: bool,
    /// Whether `join`/`leave` events are sent to subscribers.
    pub join_leave: bool,
    /// Who may publish: clients (with permission) or only the server API.
    pub publish: Publishers,
    /// What happens to a connection that reads too slowly.
    pub slow_consumer: SlowConsumer,
    /// For `slow_consumer = "conflate"`: the top-level JSON field of `data` whose value is the
    /// conflation key (messages with equal values replace each other); empty: the whole room is
    /// one key (only the newest message matters). Messages without the field are not conflated.
    pub conflation_key: String,
    /// A queued room message older than this when its turn to be written comes is dropped for
    /// that subscriber, with a `gap` (0: never).
    pub max_age_ms: u64,
    /// Whether ephemeral `event`s are allowed.
    pub events: bool,
    /// Ephemeral events per second one connection may send into this namespace (0: no limit).
    pub event_rate: u32,
    /// Burst above `event_rate` (0: equal to the rate).
    pub event_burst: u32,
    /// Largest `data` of one published message, in bytes.
    pub max_data_bytes: usize,
    /// Messages per second one connection may publish into this namespace (0: no limit).
    pub publish_rate: u32,
    /// Burst allowed above `publish_rate` (0: equal to the rate).
    pub publish_burst: u32,
    /// What a connection without a token may do here.
    pub anonymous: Access,
    /// The p99 publish→write latency this namespace should meet (`GET /api/slo`).
    pub latency_target_ms: u64,
}

impl Default for NamespacePolicy {
    fn default() -> NamespacePolicy {
        NamespacePolicy {
            kind: RoomKind::Messages,
            max_document_bytes: 16 * 1024 * 1024,
            history_size: 256,
            history_ttl_ms: 300_000,
            recovery: true,
            presence: false,
            join_leave: false,
            publish: Publishers::Clients,
            slow_consumer: SlowConsumer::Disconnect,
            conflation_key: String::new(),
            max_age_ms: 0,
            events: true,
            event_rate: 50,
            event_burst: 100,
            max_data_bytes: 60 * 1024,
            publish_rate: 0,
            publish_burst: 0,
            anonymous: Access::None,
            latency_target_ms: 10,
        }
    }
}

/// Who may publish in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Publishers {
    /// Clients whose token allows it, and the server API.
    Clients,
    /// Only the server API.
    Server,
}

/// The slow-consumer policy: what happens to a connection whose outbound queue is past
/// `websocket.outbound_high_water_bytes` when a room message arrives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumer {
    /// Close with 4008; the client resumes from history.
    Disconnect,
    /// Drop the oldest queued room messages, leaving a `gap` notice.
    DropOldest,
    /// Replace queued messages of the same conflation key by the newest, leaving a `gap`
    /// notice; fast clients still get every message.
    Conflate,
}

/// What a kind of connection may do in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Nothing.
    None,
    /// Subscribe, history and presence.
    Subscribe,
    /// Subscribe and publish.
    Publish,
}

impl NamespacePolicy {
    /// Checks one namespace's policy (`name`: its name, `""` for `[rooms]`).
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if self.max_data_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "max_data_bytes",
                reason: format!("namespace `{name}`: must be above 0"),
            });
        }
        if self.kind == RoomKind::Crdt {
            // A document is its updates: none may be dropped for a slow reader, and the
            // updates after a snapshot are read back from the room's history.
            if self.slow_consumer != SlowConsumer::Disconnect {
                return Err(ConfigError::Invalid {
                key: "slow_consumer",
                reason: format!(
                    "namespace `{name}`: a crdt namespace needs \"disconnect\" (a dropped update would leave a client's document behind)"
                ),
                });
            }
            if self.history_size < 2 || self.max_document_bytes == 0 {
                return Err(ConfigError::Invalid {
                key: "history_size",
                reason: format!(
                    "namespace `{name}`: a crdt namespace needs history_size of at least 2 and max_document_bytes above 0"
                ),
                });
            }
        }
        Ok(())
    }
}

/// Checks a namespace's name (a key of `[namespaces]`).
pub(super) fn validate_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains('.') || proto_codec::protocol::validate_room(name).is_err()
    {
        return Err(ConfigError::Invalid {
            key: "namespaces",
            reason: format!(
                "`{name}` is not a namespace name (room characters, no `.`; the default \
                 namespace is configured in [rooms])"
            ),
        });
    }
    Ok(())
}
