//! The `Broker` seam: where a room's order and history live.
//!
//! Each shard owns one broker handle for the rooms it is home to. A publish asks the broker for
//! the room's next offset; delivery starts when the broker answers. The embedded broker
//! ([`embedded::EmbeddedBroker`]) answers at once from memory on the home shard. A networked
//! broker ([`redis::RedisBroker`]) answers later through [`Broker::poll_events`], after its echo
//! comes back, so every node delivers in the order the broker chose. The trait is shaped for both:
//! every call may complete now ([`Completion::Ready`]) or later (as a [`BrokerEvent`]).

pub mod docs;
pub mod embedded;
pub mod redis;

pub use docs::DocSnapshot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A room name, shared without copying between shards.
pub type RoomName = Arc<str>;

/// A room's epoch: changes whenever the room's history is lost, so offsets from before cannot be
/// trusted.
pub type Epoch = Arc<str>;

/// Opaque token the caller attaches to a request and gets back with its answer.
pub type Token = u64;

/// History policy for a room (from its namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Messages kept.
    pub size: usize,
    /// How long a message stays recoverable.
    pub ttl: Duration,
}

/// A message as the broker stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The message's offset within its epoch.
    pub offset: u64,
    /// The published data (JSON), exactly as published.
    pub data: Bytes,
    /// When the broker took it.
    pub at: Instant,
}

/// The answer to a publish: where the message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The room.
    pub room: RoomName,
    /// The room's epoch.
    pub epoch: Epoch,
    /// The message's offset.
    pub offset: u64,
    /// The data as stored.
    pub data: Bytes,
    /// When it was published (for latency metrics).
    pub at: Instant,
}

/// The answer to a recovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The room's epoch.
    pub epoch: Epoch,
    /// The room's latest offset (0 when it has no message yet).
    pub latest: u64,
    /// Whether `messages` holds every message after the requested position.
    pub recovered: bool,
    /// The missed messages, oldest first (empty unless `recovered`).
    pub messages: Vec<Stored>,
}

/// A request that completes now or later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion<T> {
    /// Done.
    Ready(T),
    /// The answer will come as a [`BrokerEvent`] carrying the request's token.
    Pending,
}

/// Something that happened at the broker, for the home shard to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    /// A message was appended (ours or, with a networked broker, another node's).
    Appended {
        /// The publish's token, for messages this shard published.
        token: Option<Token>,
        /// The message.
        message: Appended,
    },
    /// A publish was stored (networked broker); delivery follows from the broker's echo as
    /// [`BrokerEvent::Appended`].
    Acked {
        /// The publish's token.
        token: Token,
        /// The room.
        room: RoomName,
        /// The room's epoch.
        epoch: Epoch,
        /// The message's offset.
        offset: u64,
    },
    /// A pending recovery or history read completed.
    Recovered {
        /// The request's token.
        token: Token,
        /// The room.
        room: RoomName,
        /// The result.
        recovery: Recovery,
    },
    /// A pending request (publish, recovery, history, presence) failed; the asker gets
    /// `unavailable` and may retry.
    Failed {
        /// The request's token.
        token: Token,
        /// Why.
        reason: String,
    },
    /// A pending presence query completed: every member across the nodes, as the JSON each
    /// node stored with [`Broker::presence_set`].
    Members {
        /// The query's token.
        token: Token,
        /// The room.
        room: RoomName,
        /// The members' JSON.
        members: Vec<Bytes>,
    },
    /// A live (never stored) event from another node.
    Live {
        /// The room.
        room: RoomName,
        /// The event.
        event: LiveEvent,
    },
    /// A pending [`Broker::doc_load`] completed.
    DocLoaded {
        /// The request's token.
        token: Token,
        /// The room.
        room: RoomName,
        /// The stored document, if there is one.
        snapshot: Option<DocSnapshot>,
    },
    /// Messages `from..=to` of a room can no longer be delivered on this node (the broker's
    /// stream lost them while this node was not listening); subscribers get a `gap` notice.
    Gap {
        /// The room.
        room: RoomName,
        /// The room's epoch.
        epoch: Epoch,
        /// First offset missed.
        from: u64,
        /// Last offset missed.
        to: u64,
    },
}

impl BrokerEvent {
    /// Bytes this event holds while it waits for its shard, for the bounds on queues of events
    /// (a fixed share for the event itself, plus every payload it carries).
    pub fn weight(&self) -> usize {
        const BASE: usize = 128;
        BASE + match self {
            BrokerEvent::Appended { message, .. } => message.data.len(),
            BrokerEvent::Recovered { recovery, .. } => {
                recovery.messages.iter().map(|m| m.data.len()).sum()
            }
            BrokerEvent::Members { members, .. } => members.iter().map(Bytes::len).sum(),
            BrokerEvent::Live { event, .. } => event.bytes().len(),
            BrokerEvent::DocLoaded { snapshot, .. } => snapshot.as_ref().map_or(0, |s| {
                s.state.len() + s.tail.iter().map(Bytes::len).sum::<usize>()
            }),
            BrokerEvent::Acked { .. } | BrokerEvent::Failed { .. } | BrokerEvent::Gap { .. } => 0,
        }
    }
}

/// A live (never stored) event between nodes, typed by what it is: the broker never looks
/// inside, and the receiving node never guesses what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// An app event (ephemeral event, join, leave), as the gateway encoded it.
    App(Bytes),
    /// A y-protocols awareness message of a collaborative room.
    Awareness(Bytes),
}

impl LiveEvent {
    /// Its bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            LiveEvent::App(b) | LiveEvent::Awareness(b) => b,
        }
    }
}

/// Why the broker refused a request now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker bridge's thread is gone (the node is stopping).
    #[error("broker unavailable: the broker bridge stopped")]
    Stopped,
    /// The bridge is not connected to Redis: a request is refused at once, never queued.
    #[error("broker unavailable: redis disconnected")]
    Disconnected,
    /// The bridge holds its bound of queued bytes (`max_queued_bytes`): retry.
    #[error("broker unavailable: the broker bridge is behind; retry")]
    Behind,
    /// The document store (a directory) failed doing `op`.
    #[error("broker unavailable: {op}: {reason}")]
    DocStore {
        /// What it was doing.
        op: &'static str,
        /// The I/O error, as text.
        reason: String,
    },
}

/// A room's order and its stored history: the seam every broker implements (the home shard
/// appends, recovers a subscriber's position and reads history through it).
pub trait OrderedHistory {
    /// Appends `data` to the room's stream.
    fn publish(
        &mut self,
        room: &RoomName,
        data: Bytes,
        policy: HistoryPolicy,
        token: Token,
        now: Instant,
    ) -> Result<Completion<Appended>, BrokerError>;

    /// The room's position, and the messages after `since` when they are all still held.
    fn recover(
        &mut self,
        room: &RoomName,
        since: Option<(&str, u64)>,
        policy: HistoryPolicy,
        token: Token,
        now: Instant,
    ) -> Result<Completion<Recovery>, BrokerError>;

    /// Stored messages of a room, for the `history` op: with `since`, the messages after it
    /// (at most `limit`, oldest first; `recovered` as for [`OrderedHistory::recover`]); without, the
    /// newest `limit` messages and `recovered: false`. Reading never creates the room.
    fn history(
        &mut self,
        room: &RoomName,
        since: Option<(&str, u64)>,
        limit: usize,
        policy: HistoryPolicy,
        token: Token,
        now: Instant,
    ) -> Result<Completion<Recovery>, BrokerError>;
}

/// Presence shared between nodes. A node-local broker holds none (the home shard's own list is
/// complete): the defaults.
pub trait PresenceStore {
    /// A member of a room on this node joined (`Some(member JSON)`) or left (`None`). A networked
    /// broker shares it with the other nodes; a node-local broker holds no presence (the home
    /// shard's own list is complete).
    fn presence_set(&mut self, _room: &RoomName, _client: &str, _member: Option<Bytes>) {}

    /// Every member of a room across the nodes: `Ready(None)` when the broker holds no presence
    /// (the home shard's own list is complete), else the members' JSON now or later as
    /// [`BrokerEvent::Members`].
    fn members(
        &mut self,
        _room: &RoomName,
        _token: Token,
    ) -> Result<Completion<Option<Vec<Bytes>>>, BrokerError> {
        Ok(Completion::Ready(None))
    }
}

/// Live (never stored) events between nodes. A node-local broker reaches none: the defaults.
pub trait LiveRelay {
    /// Whether other nodes share the rooms (live events are worth encoding for them).
    fn reaches_other_nodes(&self) -> bool {
        false
    }

    /// Sends a live event to the room's subscribers on the other nodes; a node-local broker has
    /// none.
    fn publish_live(&mut self, _room: &RoomName, _event: LiveEvent) {}
}

/// The document store of collaborative rooms (`kind = "crdt"`): snapshots and the updates after
/// them. The defaults store nothing.
pub trait DocumentStore {
    /// The stored document of a CRDT room (`crdt` namespaces): its last snapshot and the updates
    /// stored after it, now or later as [`BrokerEvent::DocLoaded`].
    fn doc_load(
        &mut self,
        _room: &RoomName,
        _token: Token,
    ) -> Result<Completion<Option<DocSnapshot>>, BrokerError> {
        Ok(Completion::Ready(None))
    }

    /// Keeps an accepted update of a CRDT room until the next snapshot covers it. A broker whose
    /// room history is durable (Redis streams) keeps nothing more: the update is in the stream.
    fn doc_append(&mut self, _room: &RoomName, _update: &[u8]) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Stores a CRDT room's snapshot, replacing the previous one and the updates it covers.
    fn doc_store(&mut self, _room: &RoomName, _snapshot: DocSnapshot) {}
}

/// A shard's handle on the broker, for the rooms the shard is home to: every seam, plus
/// interest, completions and upkeep. Not shared between threads: each shard has its own.
pub trait Broker: OrderedHistory + PresenceStore + LiveRelay + DocumentStore {
    /// This node has (or no longer has) local interest in a room; a networked broker subscribes
    /// upstream only while it has.
    fn set_interest(&mut self, room: &RoomName, interested: bool);

    /// Moves events that completed since the last call into `out`.
    fn poll_events(&mut self, out: &mut Vec<BrokerEvent>);

    /// Drops what expired (history past its TTL, rooms with neither history nor interest).
    fn expire(&mut self, now: Instant);

    /// Rooms the broker holds state for (for metrics).
    fn room_count(&self) -> usize;
}

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// One URL fit to print: its userinfo's password replaced by [`REDACTED`] (`user:<redacted>@`),
/// or all of a user-only userinfo (a token as the user name is a secret too). The gateway's
/// `CredentialUrl` prints with it; the bridge's errors name URLs with it.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The authority ends at the first `/`, `?` or `#`; an `@` after it is not userinfo.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}"),
        None => format!("{scheme}://{REDACTED}@{host}"),
    }
}
