//! Presence of the rooms this shard is home to: one member per subscribed connection, anywhere
//! on the node. Kept only for namespaces with presence on. A connection that dies without a
//! close leaves through the same `Unsubscribe` as any other, so members never outlive their
//! connections.

use std::collections::HashMap;

use broker_bridge::RoomName;
use proto_codec::protocol::Member;

use crate::ids::{ConnId, ShardId};

/// A connection anywhere on the node.
type Who = (ShardId, ConnId);

/// Members per room.
#[derive(Debug, Default)]
pub struct Presence {
    rooms: HashMap<RoomName, Vec<(Who, Member)>>,
}

impl Presence {
    /// A connection joined.
    pub fn add(&mut self, room: &RoomName, who: Who, member: Member) {
        self.rooms
            .entry(room.clone())
            .or_default()
            .push((who, member));
    }

    /// A connection left; its member, if it was one.
    pub fn remove(&mut self, room: &str, who: Who) -> Option<Member> {
        let list = self.rooms.get_mut(room)?;
        let at = list.iter().position(|(w, _)| *w == who)?;
        let (_, member) = list.swap_remove(at);
        if list.is_empty() {
            self.rooms.remove(room);
        }
        Some(member)
    }

    /// The members of a room.
    pub fn members(&self, room: &str) -> Vec<Member> {
        self.rooms
            .get(room)
            .map(|l| l.iter().map(|(_, m)| m.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether a member of the room has this user.
    pub fn has_user(&self, room: &str, user: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|l| l.iter().any(|(_, m)| m.user.as_deref() == Some(user)))
    }

    /// How many members a room has.
    pub fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: &str) -> Member {
        Member {
            client: c.into(),
            user: None,
            info: None,
        }
    }

    #[test]
    fn add_remove_count() {
        let mut p = Presence::default();
        let r: RoomName = "doc.1".into();
        p.add(&r, (0, 1), m("a"));
        p.add(&r, (1, 1), m("b"));
        assert_eq!(p.count("doc.1"), 2);
        assert_eq!(
            p.remove("doc.1", (0, 1)).map(|m| m.client),
            Some("a".into())
        );
        assert_eq!(p.remove("doc.1", (0, 1)), None);
        assert_eq!(p.members("doc.1").len(), 1);
        assert!(p.remove("doc.1", (1, 1)).is_some());
        assert!(p.rooms.is_empty());
    }
}
