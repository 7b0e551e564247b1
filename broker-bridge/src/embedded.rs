//! The embedded broker: room offsets and history in memory on each room's home shard.
//!
//! It answers every request at once. A room's epoch is random when its log is created; a node
//! restart (or a log dropped after its history expired with no one interested for
//! [`EMPTY_ROOM_RETENTION`]) starts a new epoch, so clients resuming from an older epoch are told
//! `recovered: false`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::docs::DocStore;
use crate::{
    Appended, Broker, BrokerError, BrokerEvent, Completion, DocSnapshot, DocumentStore, Epoch,
    HistoryPolicy, LiveRelay, OrderedHistory, PresenceStore, Recovery, RoomName, Stored, Token,
};

/// How long a room with no stored message and no subscriber keeps its epoch and offset, so a
/// client that comes back to it soon (a reconnect, the next long poll) resumes cleanly instead of
/// being told `recovered: false`.
pub const EMPTY_ROOM_RETENTION: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct RoomLog {
    epoch: Epoch,
    last_offset: u64,
    history: VecDeque<Stored>,
    policy: HistoryPolicy,
    /// Since when the room has had neither history nor interest.
    idle_since: Option<Instant>,
}

impl RoomLog {
    fn new(policy: HistoryPolicy) -> RoomLog {
        RoomLog {
            epoch: new_epoch(),
            last_offset: 0,
            history: VecDeque::new(),
            policy,
            idle_since: None,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.history.front() {
            if now.saturating_duration_since(front.at) > self.policy.ttl {
                self.history.pop_front();
            } else {
                break;
            }
        }
    }
}

/// A fresh random epoch: 16 hex digits.
pub(crate) fn new_epoch() -> Epoch {
    format!("{:016x}", fastrand::u64(..)).into()
}

/// In-memory room logs for the rooms one shard is home to.
#[derive(Debug, Default)]
pub struct EmbeddedBroker {
    rooms: HashMap<RoomName, RoomLog>,
    interested: HashSet<RoomName>,
    docs: DocStore,
}

impl EmbeddedBroker {
    /// An empty broker; CRDT documents stay in memory.
    pub fn new() -> EmbeddedBroker {
        EmbeddedBroker::default()
    }

    /// An empty broker whose CRDT documents persist in `dir` (when given).
    pub fn with_doc_dir(dir: Option<PathBuf>) -> EmbeddedBroker {
        EmbeddedBroker {
            docs: DocStore::new(dir),
            ..EmbeddedBroker::default()
        }
    }
}

impl OrderedHistory for EmbeddedBroker {
    fn publish(
        &mut self,
        room: &RoomName,
        data: Bytes,
        policy: HistoryPolicy,
        _token: Token,
        now: Instant,
    ) -> Result<Completion<Appended>, BrokerError> {
        let log = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| RoomLog::new(policy));
        log.policy = policy;
        log.last_offset += 1;
        let offset = log.last_offset;
        if policy.size > 0 {
            if log.history.len() >= policy.size {
                log.history.pop_front();
            }
            log.history.push_back(Stored {
                offset,
                data: data.clone(),
                at: now,
            });
        }
        Ok(Completion::Ready(Appended {
            room: room.clone(),
            epoch: log.epoch.clone(),
            offset,
            data,
            at: now,
        }))
    }

    fn recover(
        &mut self,
        room: &RoomName,
        since: Option<(&str, u64)>,
        _policy: HistoryPolicy,
        _token: Token,
        now: Instant,
    ) -> Result<Completion<Recovery>, BrokerError> {
        let Some(log) = self.rooms.get_mut(room) else {
            // No log: the room has no message. Create it so the epoch handed out now stays valid
            // for the subscriber's next resume.
            let log = RoomLog::new(HistoryPolicy {
                size: 0,
                ttl: std::time::Duration::ZERO,
            });
            // A fresh epoch: no earlier position can be in it.
            let recovery = Recovery {
                epoch: log.epoch.clone(),
                latest: 0,
                recovered: false,
                messages: Vec::new(),
            };
            self.rooms.insert(room.clone(), log);
            return Ok(Completion::Ready(recovery));
        };
        log.expire(now);
        let mut recovery = Recovery {
            epoch: log.epoch.clone(),
            latest: log.last_offset,
            recovered: false,
            messages: Vec::new(),
        };
        if let Some((epoch, offset)) = since {
            if *epoch == *log.epoch && offset <= log.last_offset {
                // Everything after `offset` must still be held: the first held offset is at most
                // offset + 1 (or nothing was missed at all).
                let first_held = log
                    .history
                    .front()
                    .map_or(log.last_offset + 1, |m| m.offset);
                if offset + 1 >= first_held || offset == log.last_offset {
                    recovery.recovered = true;
                    recovery.messages = log
                        .history
                        .iter()
                        .filter(|m| m.offset > offset)
                        .cloned()
                        .collect();
                }
            }
        }
        Ok(Completion::Ready(recovery))
    }

    fn history(
        &mut self,
        room: &RoomName,
        since: Option<(&str, u64)>,
        limit: usize,
        policy: HistoryPolicy,
        token: Token,
        now: Instant,
    ) -> Result<Completion<Recovery>, BrokerError> {
        if !self.rooms.contains_key(room) {
            // Nothing was ever published (or it all expired with the room): an empty answer
            // in a fresh epoch, without creating the room.
            return Ok(Completion::Ready(Recovery {
                epoch: new_epoch(),
                latest: 0,
                recovered: false,
                messages: Vec::new(),
            }));
        }
        let Completion::Ready(mut rec) = self.recover(room, since, policy, token, now)? else {
            return Ok(Completion::Pending);
        };
        if since.is_some() {
            rec.messages.truncate(limit);
        } else if let Some(log) = self.rooms.get(room) {
            let skip = log.history.len().saturating_sub(limit);
            rec.messages = log.history.iter().skip(skip).cloned().collect();
        }
        Ok(Completion::Ready(rec))
    }
}

impl PresenceStore for EmbeddedBroker {}

impl LiveRelay for EmbeddedBroker {}

impl DocumentStore for EmbeddedBroker {
    fn doc_load(
        &mut self,
        room: &RoomName,
        _token: Token,
    ) -> Result<Completion<Option<DocSnapshot>>, BrokerError> {
        self.docs
            .load(room)
            .map(Completion::Ready)
            .map_err(|e| BrokerError::DocStore {
                op: "reading the document",
                reason: e.to_string(),
            })
    }

    fn doc_append(&mut self, room: &RoomName, update: &[u8]) -> Result<(), BrokerError> {
        self.docs
            .append(room, update)
            .map_err(|e| BrokerError::DocStore {
                op: "storing the update",
                reason: e.to_string(),
            })
    }

    fn doc_store(&mut self, room: &RoomName, snapshot: DocSnapshot) {
        if let Err(e) = self.docs.store(room, snapshot.state) {
            // The log still holds every update: nothing is lost, the next snapshot retries.
            tracing::warn!(room = %room, error = %e, "could not store a document snapshot");
        }
    }
}

impl Broker for EmbeddedBroker {
    fn set_interest(&mut self, room: &RoomName, interested: bool) {
        if interested {
            self.interested.insert(room.clone());
        } else {
            self.interested.remove(room);
        }
    }

    fn poll_events(&mut self, _out: &mut Vec<BrokerEvent>) {}

    fn expire(&mut self, now: Instant) {
        let interested = &self.interested;
        self.rooms.retain(|room, log| {
            log.expire(now);
            if !log.history.is_empty() || interested.contains(room) {
                log.idle_since = None;
                return true;
            }
            let since = *log.idle_since.get_or_insert(now);
            now.saturating_duration_since(since) < EMPTY_ROOM_RETENTION
        });
    }

    fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POLICY: HistoryPolicy = HistoryPolicy {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    fn room(name: &str) -> RoomName {
        name.into()
    }

    fn publish(b: &mut EmbeddedBroker, r: &RoomName, data: &str, now: Instant) -> Appended {
        match b
            .publish(r, Bytes::from(data.to_string()), POLICY, 0, now)
            .unwrap()
        {
            Completion::Ready(a) => a,
            Completion::Pending => panic!("embedded is never pending"),
        }
    }

    fn recover(
        b: &mut EmbeddedBroker,
        r: &RoomName,
        since: Option<(&str, u64)>,
        now: Instant,
    ) -> Recovery {
        match b.recover(r, since, POLICY, 0, now).unwrap() {
            Completion::Ready(r) => r,
            Completion::Pending => panic!("embedded is never pending"),
        }
    }

    #[test]
    fn offsets_grow_by_one_per_room() {
        let mut b = EmbeddedBroker::new();
        let now = Instant::now();
        let (r1, r2) = (room("a"), room("b"));
        assert_eq!(publish(&mut b, &r1, "1", now).offset, 1);
        assert_eq!(publish(&mut b, &r1, "2", now).offset, 2);
        assert_eq!(publish(&mut b, &r2, "x", now).offset, 1);
    }

    #[test]
    fn recovery_within_and_beyond_history() {
        let mut b = EmbeddedBroker::new();
        let now = Instant::now();
        let r = room("a");
        let first = publish(&mut b, &r, "1", now);
        for d in ["2", "3", "4", "5"] {
            publish(&mut b, &r, d, now);
        }
        let epoch = first.epoch.clone();
        // History holds 3..=5.
        let rec = recover(&mut b, &r, Some((&epoch, 2)), now);
        assert!(rec.recovered);
        assert_eq!(
            rec.messages.iter().map(|m| m.offset).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let rec = recover(&mut b, &r, Some((&epoch, 1)), now);
        assert!(!rec.recovered, "offset 2 is gone");
        assert!(rec.messages.is_empty());
        let rec = recover(&mut b, &r, Some((&epoch, 5)), now);
        assert!(rec.recovered && rec.messages.is_empty());
        let rec = recover(&mut b, &r, Some(("other", 5)), now);
        assert!(!rec.recovered);
        let rec = recover(&mut b, &r, Some((&epoch, 9)), now);
        assert!(!rec.recovered, "an offset from the future is not trusted");
        let rec = recover(&mut b, &r, None, now);
        assert_eq!((rec.latest, rec.recovered), (5, false));
    }

    #[test]
    fn ttl_expiry_ends_recovery_and_drops_idle_rooms() {
        let mut b = EmbeddedBroker::new();
        let t0 = Instant::now();
        let r = room("a");
        let a = publish(&mut b, &r, "1", t0);
        publish(&mut b, &r, "2", t0);
        let later = t0 + Duration::from_secs(61);
        let rec = recover(&mut b, &r, Some((&a.epoch, 1)), later);
        assert!(!rec.recovered);
        b.set_interest(&r, true);
        b.expire(later);
        assert_eq!(b.room_count(), 1, "kept while interested");
        b.set_interest(&r, false);
        b.expire(later);
        assert_eq!(
            b.room_count(),
            1,
            "an empty room keeps its epoch for a while"
        );
        let rec = recover(
            &mut b,
            &r,
            Some((&a.epoch, 2)),
            later + Duration::from_secs(30),
        );
        assert!(
            rec.recovered,
            "a client at the latest offset resumes cleanly"
        );
        b.expire(later + Duration::from_secs(30));
        b.expire(later + EMPTY_ROOM_RETENTION + Duration::from_secs(1));
        assert_eq!(b.room_count(), 0, "forgotten after the retention");
    }

    #[test]
    fn empty_room_epoch_is_stable_for_a_subscriber() {
        let mut b = EmbeddedBroker::new();
        let now = Instant::now();
        let r = room("a");
        b.set_interest(&r, true);
        let rec = recover(&mut b, &r, None, now);
        assert_eq!(rec.latest, 0);
        let a = publish(&mut b, &r, "1", now);
        assert_eq!(a.epoch, rec.epoch);
        let again = recover(&mut b, &r, Some((&rec.epoch, 0)), now);
        assert!(again.recovered);
        assert_eq!(again.messages.len(), 1);
    }
}
