//! The ids every part of a node names things by (a base module: it imports nothing of the
//! gateway, so anything may import it).

/// A shard's index.
pub type ShardId = usize;
/// A connection's id, unique within its shard.
pub type ConnId = u64;
