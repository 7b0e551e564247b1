//! Rooms this shard is home to: which shards have subscribers (interest), and how many of them
//! take compressed frames, so a message is encoded (and compressed) once and sent only where it
//! is wanted.

use std::collections::HashMap;

use broker_bridge::RoomName;

use crate::ids::ShardId;

/// Interest in one room.
#[derive(Debug, Clone)]
pub struct Interest {
    /// Subscribers per shard.
    pub per_shard: Vec<u32>,
    /// Subscribers (all shards) that take shared compressed frames.
    pub deflate: u32,
}

impl Interest {
    /// Subscribers on every shard of the node.
    pub fn total(&self) -> u32 {
        self.per_shard.iter().sum()
    }
}

/// What changed in a room's interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterestChange {
    /// The first subscriber anywhere arrived.
    First,
    /// The last subscriber anywhere left.
    Last,
    /// Neither.
    Other,
}

/// Interest of every room homed on this shard.
#[derive(Debug)]
pub struct HomeRooms {
    shards: usize,
    rooms: HashMap<RoomName, Interest>,
}

impl HomeRooms {
    /// No rooms yet, for a node of `shards` shards.
    pub fn new(shards: usize) -> HomeRooms {
        HomeRooms {
            shards,
            rooms: HashMap::new(),
        }
    }

    /// One more subscriber on `shard`.
    pub fn add(&mut self, room: &RoomName, shard: ShardId, deflate: bool) -> InterestChange {
        let shards = self.shards;
        let interest = self.rooms.entry(room.clone()).or_insert_with(|| Interest {
            per_shard: vec![0; shards],
            deflate: 0,
        });
        let first = interest.total() == 0;
        if let Some(c) = interest.per_shard.get_mut(shard) {
            *c += 1;
        }
        if deflate {
            interest.deflate += 1;
        }
        if first {
            InterestChange::First
        } else {
            InterestChange::Other
        }
    }

    /// One subscriber fewer on `shard`.
    pub fn remove(&mut self, room: &str, shard: ShardId, deflate: bool) -> InterestChange {
        let Some(interest) = self.rooms.get_mut(room) else {
            return InterestChange::Other;
        };
        if let Some(c) = interest.per_shard.get_mut(shard) {
            *c = c.saturating_sub(1);
        }
        if deflate {
            interest.deflate = interest.deflate.saturating_sub(1);
        }
        if interest.total() == 0 {
            self.rooms.remove(room);
            InterestChange::Last
        } else {
            InterestChange::Other
        }
    }

    /// The room's interest, if anyone is subscribed.
    pub fn get(&self, room: &str) -> Option<&Interest> {
        self.rooms.get(room)
    }

    /// Every room with subscribers, and how many.
    pub fn iter(&self) -> impl Iterator<Item = (&RoomName, &Interest)> {
        self.rooms.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last() {
        let mut h = HomeRooms::new(2);
        let r: RoomName = "a".into();
        assert_eq!(h.add(&r, 0, false), InterestChange::First);
        assert_eq!(h.add(&r, 1, true), InterestChange::Other);
        assert_eq!(h.get("a").unwrap().per_shard, [1, 1]);
        assert_eq!(h.get("a").unwrap().deflate, 1);
        assert_eq!(h.remove("a", 0, false), InterestChange::Other);
        assert_eq!(h.remove("a", 1, true), InterestChange::Last);
        assert!(h.get("a").is_none());
    }
}
