//! Rooms this shard is home to: which shards have subscribers (interest), and how many of them
//! take compressed frames, so a message is encoded (and compressed) once and sent only where it
//! is wanted. Each room also counts its messages, for the admin page's publish rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use broker_bridge::RoomName;

use crate::ids::ShardId;

/// Interest in one room.
#[derive(Debug, Clone)]
pub struct Interest {
    /// Subscribers per shard.
    pub per_shard: Vec<u32>,
    /// Subscribers (all shards) that take shared compressed frames.
    pub deflate: u32,
    /// Messages fanned out since the room's first subscriber on the node arrived.
    pub messages: u64,
    /// `messages` at the last rate roll ([`HomeRooms::roll_rates`]).
    messages_at_roll: u64,
    /// Messages per second between the last two rolls.
    pub rate_per_s: f64,
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

/// The shortest time between two rate rolls: queries closer than this see the last rates.
pub const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// Interest of every room homed on this shard.
#[derive(Debug)]
pub struct HomeRooms {
    shards: usize,
    rooms: HashMap<RoomName, Interest>,
    /// When the rates were last rolled (`None`: never).
    rolled_at: Option<Instant>,
}

impl HomeRooms {
    /// No rooms yet, for a node of `shards` shards.
    pub fn new(shards: usize) -> HomeRooms {
        HomeRooms {
            shards,
            rooms: HashMap::new(),
            rolled_at: None,
        }
    }

    /// One more subscriber on `shard`.
    pub fn add(&mut self, room: &RoomName, shard: ShardId, deflate: bool) -> InterestChange {
        let shards = self.shards;
        let interest = self.rooms.entry(room.clone()).or_insert_with(|| Interest {
            per_shard: vec![0; shards],
            deflate: 0,
            messages: 0,
            messages_at_roll: 0,
            rate_per_s: 0.0,
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

    /// Counts one message fanned out to the room (one count per message, not per subscriber:
    /// the admin page's publish rate) and returns the room's interest (`None`, and nothing
    /// counted, when it has no subscriber). One lookup on the message path.
    pub fn count_message(&mut self, room: &str) -> Option<&Interest> {
        let interest = self.rooms.get_mut(room)?;
        interest.messages += 1;
        Some(interest)
    }

    /// Turns each room's message count into a rate over the time since the last roll, once at
    /// least [`RATE_INTERVAL`] passed (the admin page asks every second, so it sees the last
    /// second or two; the first roll only starts the clock). Walks every room: called by
    /// queries, never on the message path.
    pub fn roll_rates(&mut self, now: Instant) {
        let Some(last) = self.rolled_at else {
            for interest in self.rooms.values_mut() {
                interest.messages_at_roll = interest.messages;
            }
            self.rolled_at = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(last);
        if elapsed < RATE_INTERVAL {
            return;
        }
        let seconds = elapsed.as_secs_f64();
        for interest in self.rooms.values_mut() {
            interest.rate_per_s = (interest.messages - interest.messages_at_roll) as f64 / seconds;
            interest.messages_at_roll = interest.messages;
        }
        self.rolled_at = Some(now);
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

    #[test]
    fn rates_roll_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut h = HomeRooms::new(1);
        let r: RoomName = "a".into();
        h.add(&r, 0, false);
        h.count_message("a");
        h.count_message("nobody-here");
        h.roll_rates(t0);
        assert_eq!(
            h.get("a").unwrap().rate_per_s,
            0.0,
            "the first roll starts the clock"
        );
        for _ in 0..10 {
            h.count_message("a");
        }
        h.roll_rates(t0 + Duration::from_millis(500));
        assert_eq!(
            h.get("a").unwrap().rate_per_s,
            0.0,
            "too soon: the last rate stays"
        );
        h.roll_rates(t0 + Duration::from_secs(2));
        assert_eq!(h.get("a").unwrap().rate_per_s, 5.0);
        assert_eq!(h.get("a").unwrap().messages, 11);
        h.roll_rates(t0 + Duration::from_secs(3));
        assert_eq!(h.get("a").unwrap().rate_per_s, 0.0, "quiet since");
    }
}
