//! Rooms on a shard: the subscribers this shard serves ([`local`]) and the rooms this shard is
//! home to ([`home`]: interest per shard, and the broker that keeps order and history), and the
//! documents of collaborative rooms ([`crdt`]).

pub mod crdt;
pub mod home;
pub mod local;
pub mod presence;
