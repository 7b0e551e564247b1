//! The ringcast gateway: thread-per-core shards serving WebSocket clients, rooms with ordered
//! offsets and history, and encode-once fan-out across shards.
//!
//! `main.rs` only wires these together; see `docs/architecture.md` for how a message travels.

pub mod admission;
pub mod auth;
pub mod config;
pub mod connection;
pub mod contain;
pub mod endpoint;
pub mod errors;
pub mod form;
pub mod http;
pub mod ids;
pub mod listener;
pub mod mailbox;
pub mod metrics;
pub mod namespaces;
pub mod outgoing;
pub mod pusher;
pub mod ratelimit;
pub mod rooms;
pub mod runtime;
pub mod secret;
pub mod shard;
pub mod slo;
pub mod tls;
pub mod tune;
