//! One order per room on this node, merged from Redis' live echo and reads of its stream.
//!
//! Sans-I/O: the bridge feeds it what happened (interest, a subscription confirmed, a read's
//! result, a live message, the link going down or up) and carries out the [`Action`]s it returns.
//!
//! The rule for a room: messages reach its home shard in offset order, each once. A live message
//! is emitted when it is the next offset; an older one is a duplicate and dropped; a newer one
//! means the echo missed something, so the room reads the stream from its last offset and holds
//! live messages back until the read is merged. A recovery request is answered at the room's
//! current position: at once when it needs no message, else by a read whose answer is emitted
//! at the position the read reached, after every message before it and before every message
//! after it. Offsets the stream no longer holds become a `Gap` for the node's subscribers (or
//! `recovered: false` for a subscriber that asked for them). After the link is lost, every room
//! is subscribed again and read from its last offset, so what was published meanwhile is
//! delivered (while the stream still holds it).
//!
//! Nothing here holds a room's messages without bound. A live message that cannot be kept (the
//! room's held-back messages are at [`MAX_BUFFERED`] or [`MAX_BUFFERED_BYTES`], or the bridge
//! says the home shard's queue is full: [`Sequencer::missed`]) is dropped and the room falls
//! *behind*: it reads the stream from its last offset when [`Sequencer::catch_up`] finds its
//! home shard with room again. The stream holds the messages meanwhile; those it no longer
//! holds by then become a `Gap`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{Appended, BrokerEvent, Epoch, HistoryPolicy, Recovery, RoomName, Stored, Token};

/// Live messages held back per room while it reads; past it they are dropped and the room
/// falls behind (its next read fetches them from the stream again).
pub const MAX_BUFFERED: usize = 10_000;

/// Bytes of live messages held back per room while it reads; past it, as past [`MAX_BUFFERED`].
pub const MAX_BUFFERED_BYTES: usize = 4 << 20;

/// A room message from the live echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The room's epoch.
    pub epoch: Epoch,
    /// The message's offset.
    pub offset: u64,
    /// When Redis stored it (Unix ms).
    pub at_ms: u64,
    /// The data.
    pub data: Bytes,
}

/// A stream entry as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its offset.
    pub offset: u64,
    /// When Redis stored it (Unix ms).
    pub at_ms: u64,
    /// The data.
    pub data: Bytes,
}

/// What a read of a room found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// The room's epoch.
    pub epoch: Epoch,
    /// Its last offset.
    pub latest: u64,
    /// Redis' clock when it read (Unix ms).
    pub now_ms: u64,
    /// Entries after the read's `from`, oldest first.
    pub entries: Vec<Entry>,
}

/// Something for the bridge to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Subscribe upstream to the room's channel, then call [`Sequencer::subscribed`].
    Subscribe(RoomName),
    /// Unsubscribe upstream.
    Unsubscribe(RoomName),
    /// Read the room (creating its epoch when it has none) with entries after `from` (at most
    /// `limit`), then call [`Sequencer::read_done`] with `id`. A read that fails means the link
    /// failed: call [`Sequencer::down`].
    Read {
        /// The room.
        room: RoomName,
        /// The read's id (a late answer to an earlier read is ignored).
        id: u64,
        /// Entries after this offset; none when `None`.
        from: Option<u64>,
        /// At most this many entries.
        limit: usize,
        /// The room's last offset delivered in its epoch (0 before any): a room found below it
        /// lost messages and starts a new epoch.
        floor: u64,
    },
    /// Hand an event to a shard.
    Emit {
        /// The room's home shard.
        shard: usize,
        /// The event.
        event: BrokerEvent,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the upstream subscription.
    Subscribing,
    /// A read is in flight; live messages are held back.
    Reading,
    /// In order: live messages flow.
    Synced,
    /// Live messages were dropped (the home shard's queue was full, or too many were held back):
    /// the room waits for [`Sequencer::catch_up`] to read them from the stream.
    Behind,
    /// The link is down; everything waits for it.
    Down,
}

#[derive(Debug)]
struct Waiter {
    token: Token,
    since: Option<(Epoch, u64)>,
}

#[derive(Debug)]
struct Room {
    home: usize,
    phase: Phase,
    epoch: Option<Epoch>,
    last: u64,
    /// Messages have been delivered to the node's subscribers (a gap matters to someone).
    delivering: bool,
    policy: HistoryPolicy,
    buffered: Vec<Live>,
    /// Bytes of `buffered`'s data.
    buffered_bytes: usize,
    /// A live message was dropped during this read: the room falls behind after it.
    missed: bool,
    waiting: Vec<Waiter>,
    reading: Vec<Waiter>,
    read_from: Option<u64>,
    read_id: u64,
    /// The next read starts at offset 0 (the epoch changed under the room).
    from_zero: bool,
}

/// The per-room order of this node.
#[derive(Debug, Default)]
pub struct Sequencer {
    rooms: HashMap<RoomName, Room>,
    /// Rooms in [`Phase::Behind`].
    behind: HashSet<RoomName>,
    down: bool,
}

impl Sequencer {
    /// A sequencer whose link is up.
    pub fn new() -> Sequencer {
        Sequencer::default()
    }

    /// Rooms with local interest.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room has local interest.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The home shard of a room with local interest.
    pub fn home(&self, room: &str) -> Option<usize> {
        self.rooms.get(room).map(|r| r.home)
    }

    /// The node gained or lost local interest in a room (its home shard says so).
    pub fn interest(&mut self, room: &RoomName, home: usize, on: bool, out: &mut Vec<Action>) {
        if on {
            if self.rooms.contains_key(room) {
                return;
            }
            let phase = if self.down {
                Phase::Down
            } else {
                out.push(Action::Subscribe(room.clone()));
                Phase::Subscribing
            };
            self.rooms.insert(
                room.clone(),
                Room {
                    home,
                    phase,
                    epoch: None,
                    last: 0,
                    delivering: false,
                    policy: HistoryPolicy {
                        size: 0,
                        ttl: Duration::ZERO,
                    },
                    buffered: Vec::new(),
                    buffered_bytes: 0,
                    missed: false,
                    waiting: Vec::new(),
                    reading: Vec::new(),
                    read_from: None,
                    read_id: 0,
                    from_zero: false,
                },
            );
        } else if let Some(mut r) = self.rooms.remove(room) {
            self.behind.remove(room);
            fail_all(&mut r, "unsubscribed", out);
            if !self.down {
                out.push(Action::Unsubscribe(room.clone()));
            }
        }
    }

    /// A subscriber asks for the room's position and what it missed after `since`.
    pub fn recover(
        &mut self,
        room: &RoomName,
        shard: usize,
        token: Token,
        since: Option<(Epoch, u64)>,
        policy: HistoryPolicy,
        out: &mut Vec<Action>,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            // The home shard registers interest before it recovers; this is a bug upstream,
            // answered rather than left hanging.
            out.push(emit_failed(shard, token, "room not registered"));
            return;
        };
        r.policy = policy;
        if r.phase == Phase::Down {
            out.push(emit_failed(r.home, token, "broker unavailable"));
            return;
        }
        enqueue(room, r, Waiter { token, since }, out);
    }

    /// The upstream subscription of a room is in force.
    pub fn subscribed(&mut self, room: &RoomName, out: &mut Vec<Action>) {
        if let Some(r) = self.rooms.get_mut(room) {
            if r.phase == Phase::Subscribing {
                start_read(room, r, out);
            }
        }
    }

    /// A read completed.
    pub fn read_done(
        &mut self,
        room: &RoomName,
        id: u64,
        result: ReadResult,
        out: &mut Vec<Action>,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.phase != Phase::Reading || r.read_id != id {
            return;
        }
        let epoch_changed = r.epoch.as_ref().is_some_and(|e| *e != result.epoch);
        if r.delivering && epoch_changed && r.read_from != Some(0) && result.latest > 0 {
            // The room started over (its meta expired, or Redis lost it): read the new epoch
            // from its start before merging.
            r.from_zero = true;
            start_read(room, r, out);
            return;
        }
        if r.delivering {
            let base = if epoch_changed { 0 } else { r.last };
            emit_range(room, r.home, &result, base, out);
        }
        if !epoch_changed {
            r.last = r.last.max(result.latest);
        } else {
            r.last = result.latest;
        }
        r.epoch = Some(result.epoch.clone());
        r.delivering = true;
        let held = held(&result, r.policy);
        for w in std::mem::take(&mut r.reading) {
            let recovery = recovery_for(&w, &result, &held);
            out.push(Action::Emit {
                shard: r.home,
                event: BrokerEvent::Recovered {
                    token: w.token,
                    room: room.clone(),
                    recovery,
                },
            });
        }
        r.phase = Phase::Synced;
        r.read_from = None;
        r.buffered_bytes = 0;
        let missed = std::mem::take(&mut r.missed);
        let buffered = std::mem::take(&mut r.buffered);
        for w in std::mem::take(&mut r.waiting) {
            enqueue(room, r, w, out);
        }
        for m in buffered {
            self.live(room, m, out);
        }
        if missed {
            self.fall_behind(room);
        }
    }

    /// The bridge dropped a live message of the room because its home shard's queue is full:
    /// the room falls behind and reads it from the stream later ([`Sequencer::catch_up`]).
    pub fn missed(&mut self, room: &RoomName) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        match r.phase {
            Phase::Synced => self.fall_behind(room),
            Phase::Subscribing | Phase::Reading => r.missed = true,
            // The link's return reads every room from its last offset anyway.
            Phase::Behind | Phase::Down => {}
        }
    }

    /// Rooms behind whose home shard has room again (`has_room(shard)`) read the stream from
    /// their last offset. The bridge calls it on its timer.
    pub fn catch_up(&mut self, has_room: impl Fn(usize) -> bool, out: &mut Vec<Action>) {
        let ready: Vec<RoomName> = self
            .behind
            .iter()
            .filter(|room| self.rooms.get(*room).is_some_and(|r| has_room(r.home)))
            .cloned()
            .collect();
        for room in ready {
            self.behind.remove(&room);
            if let Some(r) = self.rooms.get_mut(&room) {
                if r.phase == Phase::Behind {
                    start_read(&room, r, out);
                }
            }
        }
    }

    /// Rooms behind, waiting for [`Sequencer::catch_up`].
    pub fn behind(&self) -> usize {
        self.behind.len()
    }

    /// A synced room stops delivering live messages until it catches up.
    fn fall_behind(&mut self, room: &RoomName) {
        if let Some(r) = self.rooms.get_mut(room) {
            if r.phase == Phase::Synced {
                r.phase = Phase::Behind;
                self.behind.insert(room.clone());
            }
        }
    }

    /// A room message arrived on the room's channel.
    pub fn live(&mut self, room: &RoomName, m: Live, out: &mut Vec<Action>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        match r.phase {
            Phase::Synced => {}
            Phase::Subscribing | Phase::Reading => {
                hold_back(r, m);
                return;
            }
            Phase::Behind | Phase::Down => return,
        }
        if r.epoch.as_ref() != Some(&m.epoch) {
            hold_back(r, m);
            r.from_zero = true;
            start_read(room, r, out);
            return;
        }
        if m.offset <= r.last {
            return;
        }
        if m.offset == r.last + 1 {
            r.last = m.offset;
            out.push(Action::Emit {
                shard: r.home,
                event: appended(room, &m.epoch, m.offset, m.data, m.at_ms),
            });
            return;
        }
        hold_back(r, m);
        start_read(room, r, out);
    }

    /// The link to Redis is lost: pending requests fail; rooms wait for it.
    pub fn down(&mut self, reason: &str, out: &mut Vec<Action>) {
        self.down = true;
        self.behind.clear();
        for r in self.rooms.values_mut() {
            fail_all(r, reason, out);
            r.phase = Phase::Down;
            r.buffered.clear();
            r.buffered_bytes = 0;
            r.missed = false;
            r.read_from = None;
        }
    }

    /// The link is back: every room subscribes again (then reads from its last offset).
    pub fn up(&mut self, out: &mut Vec<Action>) {
        self.down = false;
        for (room, r) in &mut self.rooms {
            r.phase = Phase::Subscribing;
            out.push(Action::Subscribe(room.clone()));
        }
    }
}

/// Holds a live message back until the room's read is merged, within [`MAX_BUFFERED`] and
/// [`MAX_BUFFERED_BYTES`]; past them it is dropped and the room falls behind after the read.
fn hold_back(r: &mut Room, m: Live) {
    if r.buffered.len() < MAX_BUFFERED && r.buffered_bytes + m.data.len() <= MAX_BUFFERED_BYTES {
        r.buffered_bytes += m.data.len();
        r.buffered.push(m);
    } else {
        r.missed = true;
    }
}

/// Answers a waiter at once when it needs no message, else queues it for a read.
fn enqueue(room: &RoomName, r: &mut Room, w: Waiter, out: &mut Vec<Action>) {
    if r.phase == Phase::Synced {
        let at_position = match (&w.since, &r.epoch) {
            (None, Some(_)) => true,
            (Some((e, o)), Some(epoch)) => e == epoch && *o == r.last,
            _ => false,
        };
        if let (true, Some(epoch)) = (at_position, &r.epoch) {
            out.push(Action::Emit {
                shard: r.home,
                event: BrokerEvent::Recovered {
                    token: w.token,
                    room: room.clone(),
                    recovery: Recovery {
                        epoch: epoch.clone(),
                        latest: r.last,
                        recovered: w.since.is_some(),
                        messages: Vec::new(),
                    },
                },
            });
            return;
        }
        r.waiting.push(w);
        start_read(room, r, out);
    } else {
        r.waiting.push(w);
    }
}

fn start_read(room: &RoomName, r: &mut Room, out: &mut Vec<Action>) {
    r.phase = Phase::Reading;
    r.reading.append(&mut r.waiting);
    let mut from: Option<u64> = if r.from_zero {
        Some(0)
    } else if r.delivering {
        Some(r.last)
    } else {
        None
    };
    for w in &r.reading {
        if let Some((e, o)) = &w.since {
            if r.epoch.is_none() || r.epoch.as_ref() == Some(e) {
                from = Some(from.map_or(*o, |f| f.min(*o)));
            }
        }
    }
    r.from_zero = false;
    r.read_from = from;
    r.read_id += 1;
    out.push(Action::Read {
        room: room.clone(),
        id: r.read_id,
        from,
        limit: r.policy.size.max(1),
        floor: if r.delivering { r.last } else { 0 },
    });
}

fn fail_all(r: &mut Room, reason: &str, out: &mut Vec<Action>) {
    for w in r.reading.drain(..).chain(r.waiting.drain(..)) {
        out.push(emit_failed(r.home, w.token, reason));
    }
}

fn emit_failed(shard: usize, token: Token, reason: &str) -> Action {
    Action::Emit {
        shard,
        event: BrokerEvent::Failed {
            token,
            reason: reason.to_string(),
        },
    }
}

/// Emits the entries after `base` up to the read's latest offset, with a `Gap` for each run of
/// offsets the stream no longer holds.
fn emit_range(
    room: &RoomName,
    shard: usize,
    result: &ReadResult,
    base: u64,
    out: &mut Vec<Action>,
) {
    let mut next = base + 1;
    let gap = |from: u64, to: u64, out: &mut Vec<Action>| {
        out.push(Action::Emit {
            shard,
            event: BrokerEvent::Gap {
                room: room.clone(),
                epoch: result.epoch.clone(),
                from,
                to,
            },
        });
    };
    for e in &result.entries {
        if e.offset < next || e.offset > result.latest {
            continue;
        }
        if e.offset > next {
            gap(next, e.offset - 1, out);
        }
        out.push(Action::Emit {
            shard,
            event: appended(room, &result.epoch, e.offset, e.data.clone(), e.at_ms),
        });
        next = e.offset + 1;
    }
    if next <= result.latest {
        gap(next, result.latest, out);
    }
}

/// The entries a subscriber may recover: within the history's time limit.
fn held(result: &ReadResult, policy: HistoryPolicy) -> Vec<&Entry> {
    let ttl = policy.ttl.as_millis() as u64;
    result
        .entries
        .iter()
        .filter(|e| policy.size > 0 && e.at_ms.saturating_add(ttl) >= result.now_ms)
        .filter(|e| e.offset <= result.latest)
        .collect()
}

fn recovery_for(w: &Waiter, result: &ReadResult, held: &[&Entry]) -> Recovery {
    let mut recovery = Recovery {
        epoch: result.epoch.clone(),
        latest: result.latest,
        recovered: false,
        messages: Vec::new(),
    };
    let Some((epoch, offset)) = &w.since else {
        return recovery;
    };
    if *epoch != result.epoch || *offset > result.latest {
        return recovery;
    }
    let wanted: Vec<&&Entry> = held.iter().filter(|e| e.offset > *offset).collect();
    // Every offset after `since` must be there: the first is since + 1 and they are contiguous.
    let contiguous = wanted
        .iter()
        .enumerate()
        .all(|(i, e)| e.offset == offset + 1 + i as u64);
    if contiguous && wanted.len() as u64 == result.latest - offset {
        recovery.recovered = true;
        recovery.messages = wanted
            .iter()
            .map(|e| Stored {
                offset: e.offset,
                data: e.data.clone(),
                at: instant_of(e.at_ms),
            })
            .collect();
    }
    recovery
}

/// The answer to a `history` request from a read (`None`: the room has no epoch): with `since`,
/// the held messages after it (at most `limit`; `recovered` when none is missing up to that
/// limit); without, the newest `limit` held messages and `recovered: false`.
pub fn history(
    result: Option<ReadResult>,
    since: Option<(Epoch, u64)>,
    limit: usize,
    policy: HistoryPolicy,
) -> Recovery {
    let Some(result) = result else {
        // Nothing was ever published (or it all expired): an empty answer in a fresh epoch.
        return Recovery {
            epoch: crate::embedded::new_epoch(),
            latest: 0,
            recovered: false,
            messages: Vec::new(),
        };
    };
    let held = held(&result, policy);
    let stored = |e: &&Entry| Stored {
        offset: e.offset,
        data: e.data.clone(),
        at: instant_of(e.at_ms),
    };
    let mut recovery = Recovery {
        epoch: result.epoch.clone(),
        latest: result.latest,
        recovered: false,
        messages: Vec::new(),
    };
    match since {
        Some((epoch, offset)) => {
            if epoch != result.epoch || offset > result.latest {
                return recovery;
            }
            let wanted: Vec<&&Entry> = held
                .iter()
                .filter(|e| e.offset > offset)
                .take(limit)
                .collect();
            let contiguous = wanted
                .iter()
                .enumerate()
                .all(|(i, e)| e.offset == offset + 1 + i as u64);
            let expected = (result.latest - offset).min(limit as u64);
            if contiguous && wanted.len() as u64 == expected {
                recovery.recovered = true;
                recovery.messages = wanted.into_iter().map(stored).collect();
            }
        }
        None => {
            let skip = held.len().saturating_sub(limit);
            recovery.messages = held.iter().skip(skip).map(stored).collect();
        }
    }
    recovery
}

fn appended(room: &RoomName, epoch: &Epoch, offset: u64, data: Bytes, at_ms: u64) -> BrokerEvent {
    BrokerEvent::Appended {
        token: None,
        message: Appended {
            room: room.clone(),
            epoch: epoch.clone(),
            offset,
            data,
            at: instant_of(at_ms),
        },
    }
}

/// The local `Instant` of a Unix time in ms (Redis' clock; for latency metrics only).
pub fn instant_of(at_ms: u64) -> Instant {
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.checked_sub(Duration::from_millis(unix_now.saturating_sub(at_ms)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests;
