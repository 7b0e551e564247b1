//! A connection's outbound queue: encoded frames waiting to be written, bounded in bytes, with
//! the namespace's slow-consumer policy applied when a room message finds it past its mark.
//!
//! Frames are `Bytes` shared with every other subscriber of the same message; pushing one is a
//! reference-count increment, and its metadata ([`RoomMsg`]) is one `Rc` shared by every
//! subscriber on the shard. The writer takes many frames per `writev`.
//!
//! Past the high-water mark:
//! - live frames (ephemeral `event`, `join`, `leave`) are dropped first, under every policy;
//! - `disconnect`: the push fails and the connection is closed with 4008;
//! - `drop-oldest`: the oldest queued room messages are dropped;
//! - `conflate`: queued messages of the same room and conflation key are dropped (the newest
//!   replaces them, at the end of the queue, so offsets stay increasing);
//! - `max_age` (any policy): a room message older than its limit when the writer reaches it is
//!   dropped.
//!
//! A dropped room message leaves a `gap` marker in its place (adjacent markers of a room merge),
//! so the client learns exactly which offsets it missed, in order, and can fill them with
//! `history` or ignore them.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::{Duration, Instant};

use broker_bridge::{Epoch, RoomName};
use bytes::Bytes;

use crate::config::SlowConsumer;
use crate::form::{gap_notice, Form};

/// The most frames handed to one `writev`.
pub const MAX_IOVECS: usize = 64;

/// A conflating queue may grow past its mark with messages it cannot conflate (no key, or keys
/// it has not queued yet); past this many times the mark it disconnects after all.
pub const CONFLATE_HARD_LIMIT: usize = 2;

/// Pongs waiting to be written before a new one replaces the newest of them (each at most 127
/// bytes). More than one, so that a client that pings several times before reading gets every
/// answer (Autobahn 2.10 sends ten).
pub const MAX_PENDING_PONGS: usize = 16;

/// One room message as every subscriber on a shard shares it (one `Rc` per shard).
#[derive(Debug)]
pub struct RoomMsg {
    /// The room.
    pub room: RoomName,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its offset.
    pub offset: u64,
    /// The stored data (JSON, or binary behind its marker): the other forms are built from it.
    pub data: Bytes,
    /// When it was published (latency metric, `max_age`).
    pub published_at: Instant,
    /// The slow-consumer policy of its namespace.
    pub policy: SlowConsumer,
    /// Its conflation key (`None`: never conflated).
    pub key: Option<u64>,
    /// Dropped when older than this when its turn to be written comes.
    pub max_age: Option<Duration>,
    /// Its namespace's index (latency SLOs).
    pub namespace: usize,
}

/// What an entry of the queue is.
#[derive(Debug)]
enum Kind {
    /// Protocol and op answers: never dropped.
    Control,
    /// The answer to a ping: at most [`MAX_PENDING_PONGS`] wait (past them the newest is
    /// replaced: RFC 6455 §5.5.3 allows answering only the most recent ping), so a ping flood
    /// cannot grow the queue.
    Pong,
    /// Ephemeral events, join, leave: dropped first under pressure.
    Live,
    /// A room message.
    Room(Rc<RoomMsg>),
    /// Offsets `from..=to` of a room were dropped here.
    Gap(Box<GapMark>),
}

#[derive(Debug)]
struct GapMark {
    room: RoomName,
    epoch: Epoch,
    from: u64,
    to: u64,
}

impl GapMark {
    /// The notice in the queue's form; a form without one ([`gap_notice`]) is never asked.
    fn frame(&self, form: Form) -> Bytes {
        gap_notice(form, &self.room, &self.epoch, self.from, self.to).unwrap_or_default()
    }
}

#[derive(Debug)]
struct Entry {
    frame: Bytes,
    kind: Kind,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued; the queue was empty before (the writer may need a wake).
    QueuedFirst,
    /// Queued behind others.
    Queued,
    /// Not queued, and the connection must close (policy `disconnect`, or a conflating queue
    /// past its hard limit).
    Overflow,
    /// Not queued: a live frame on a full queue.
    Dropped,
}

/// What a slow-consumer policy did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyActions {
    /// Room messages dropped by `drop-oldest`.
    pub dropped_oldest: u64,
    /// Room messages replaced by a newer one of the same key.
    pub conflated: u64,
    /// Room messages dropped for `max_age`.
    pub expired: u64,
    /// Live frames dropped.
    pub live_dropped: u64,
}

/// The outbound queue.
#[derive(Debug)]
pub struct Outbox {
    entries: VecDeque<Entry>,
    queued_bytes: usize,
    /// Bytes of the front frame already written.
    front_written: usize,
    high_water: usize,
    /// Queued room messages with a `max_age`.
    aged: usize,
    /// Queued live frames (so a full queue without any is not scanned for them on every push).
    live: usize,
    /// Queued pongs.
    pongs: usize,
    actions: PolicyActions,
    /// The connection's wire form (gap notices are written in it).
    form: Form,
}

impl Outbox {
    /// An empty queue whose mark is `high_water` bytes, of a connection taking `form`.
    pub fn new(high_water: usize, form: Form) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            queued_bytes: 0,
            front_written: 0,
            high_water,
            aged: 0,
            live: 0,
            pongs: 0,
            actions: PolicyActions::default(),
            form,
        }
    }

    /// The slow-consumer policy for a room message. A y-websocket client cannot skip document
    /// updates (it has no `gap`, and would diverge from the document): whatever its namespace's
    /// policy, a full queue closes it (4008) and it syncs again when it reconnects.
    fn policy(&self, msg: &RoomMsg) -> SlowConsumer {
        match self.form {
            Form::Yjs => SlowConsumer::Disconnect,
            _ => msg.policy,
        }
    }

    /// Whether a room message may expire in this queue (`max_age`; never for a y-websocket
    /// client, as above).
    fn ages(&self, msg: &RoomMsg) -> bool {
        msg.max_age.is_some() && self.form != Form::Yjs
    }

    fn fits(&self, len: usize) -> bool {
        self.entries.is_empty() || self.queued_bytes + len <= self.high_water
    }

    /// Queues a frame that is neither a room message nor live (a plain data frame: echo, raw
    /// broadcast, op answers), held to the mark like a `disconnect` room message.
    pub fn push(&mut self, frame: Bytes) -> Push {
        if !self.fits(frame.len()) {
            return Push::Overflow;
        }
        self.enqueue(frame, Kind::Control)
    }

    /// Queues a control frame (close, pong, replay) regardless of the mark.
    pub fn push_control(&mut self, frame: Bytes) -> Push {
        self.enqueue(frame, Kind::Control)
    }

    /// Queues a pong; with [`MAX_PENDING_PONGS`] waiting it replaces the newest of them
    /// (issue 19, finding 4: pongs were queued without bound while the client read nothing).
    pub fn push_pong(&mut self, frame: Bytes) -> Push {
        if self.pongs >= MAX_PENDING_PONGS {
            let start = self.first_unstarted();
            if let Some(e) = self
                .entries
                .iter_mut()
                .skip(start)
                .rev()
                .find(|e| matches!(e.kind, Kind::Pong))
            {
                self.queued_bytes = self.queued_bytes - e.frame.len() + frame.len();
                e.frame = frame;
                return Push::Queued;
            }
        }
        self.pongs += 1;
        self.enqueue(frame, Kind::Pong)
    }

    /// Queues a live frame (ephemeral event, join, leave): dropped when past the mark.
    pub fn push_live(&mut self, frame: Bytes) -> Push {
        if !self.fits(frame.len()) {
            self.actions.live_dropped += 1;
            return Push::Dropped;
        }
        self.live += 1;
        self.enqueue(frame, Kind::Live)
    }

    /// Queues a room message, applying its namespace's slow-consumer policy past the mark.
    pub fn push_room(&mut self, frame: Bytes, msg: Rc<RoomMsg>) -> Push {
        if !self.fits(frame.len()) {
            self.drop_live();
        }
        if !self.fits(frame.len()) {
            match self.policy(&msg) {
                SlowConsumer::Disconnect => return Push::Overflow,
                SlowConsumer::DropOldest => self.drop_oldest(frame.len()),
                SlowConsumer::Conflate => {
                    let replaced = self.conflate(&msg);
                    if replaced == 0
                        && self.queued_bytes + frame.len()
                            > self.high_water.saturating_mul(CONFLATE_HARD_LIMIT)
                    {
                        return Push::Overflow;
                    }
                }
            }
        }
        if self.ages(&msg) {
            self.aged += 1;
        }
        self.enqueue(frame, Kind::Room(msg))
    }

    fn enqueue(&mut self, frame: Bytes, kind: Kind) -> Push {
        let first = self.entries.is_empty();
        self.queued_bytes += frame.len();
        self.entries.push_back(Entry { frame, kind });
        if first {
            Push::QueuedFirst
        } else {
            Push::Queued
        }
    }

    /// The first index that may be changed (a partly written front frame may not).
    fn first_unstarted(&self) -> usize {
        usize::from(self.front_written > 0)
    }

    fn drop_live(&mut self) {
        if self.live == 0 {
            return;
        }
        let start = self.first_unstarted();
        let mut i = start;
        while i < self.entries.len() {
            if matches!(self.entries[i].kind, Kind::Live) {
                if let Some(e) = self.entries.remove(i) {
                    self.queued_bytes -= e.frame.len();
                    self.actions.live_dropped += 1;
                    self.live -= 1;
                }
            } else {
                i += 1;
            }
        }
    }

    /// Drops the oldest room messages until `incoming` more bytes fit (or none is left).
    fn drop_oldest(&mut self, incoming: usize) {
        let mut i = self.first_unstarted();
        while !self.fits(incoming) && i < self.entries.len() {
            if matches!(self.entries[i].kind, Kind::Room(_)) {
                i = self.replace_with_gap(i);
                self.actions.dropped_oldest += 1;
            } else {
                i += 1;
            }
        }
    }

    /// Drops queued messages with the same room and key as `msg`; returns how many.
    fn conflate(&mut self, msg: &RoomMsg) -> u64 {
        let Some(key) = msg.key else {
            return 0;
        };
        let mut replaced = 0;
        let mut i = self.first_unstarted();
        while i < self.entries.len() {
            let same = matches!(&self.entries[i].kind,
                Kind::Room(m) if m.key == Some(key) && m.room == msg.room);
            if same {
                i = self.replace_with_gap(i);
                replaced += 1;
            } else {
                i += 1;
            }
        }
        self.actions.conflated += replaced;
        replaced
    }

    /// Drops room messages whose `max_age` passed; the writer calls this before each write.
    pub fn drop_stale(&mut self, now: Instant) {
        if self.aged == 0 {
            return;
        }
        let mut i = self.first_unstarted();
        while i < self.entries.len() {
            let stale = matches!(&self.entries[i].kind,
                Kind::Room(m) if self.ages(m) && m.max_age.is_some_and(|a| now.saturating_duration_since(m.published_at) > a));
            if stale {
                i = self.replace_with_gap(i);
                self.actions.expired += 1;
            } else {
                i += 1;
            }
        }
    }

    /// Replaces the room message at `i` by a gap marker (merged with an adjacent marker of the
    /// same room when the offsets touch). Returns the index to look at next.
    fn replace_with_gap(&mut self, i: usize) -> usize {
        let Some(Entry {
            frame,
            kind: Kind::Room(msg),
        }) = self.entries.remove(i)
        else {
            return i + 1;
        };
        self.queued_bytes -= frame.len();
        if self.ages(&msg) {
            self.aged -= 1;
        }
        if !self.form.has_gap_notice() {
            // A form without a gap notice (Pusher): the message is only dropped.
            return i;
        }
        let start = self.first_unstarted();
        // Merge into the marker just before, or just after, when the offsets are contiguous.
        if i > start {
            if let Some(Entry {
                kind: Kind::Gap(g),
                frame,
            }) = self.entries.get_mut(i - 1)
            {
                if g.room == msg.room && g.epoch == msg.epoch && g.to + 1 == msg.offset {
                    g.to = msg.offset;
                    let f = g.frame(self.form);
                    self.queued_bytes = self.queued_bytes - frame.len() + f.len();
                    *frame = f;
                    // It may now touch the marker after it (issue 19: conflation left runs of
                    // touching gaps, where the protocol promises one).
                    self.coalesce(i - 1);
                    return i;
                }
            }
        }
        if let Some(Entry {
            kind: Kind::Gap(g),
            frame,
        }) = self.entries.get_mut(i)
        {
            if g.room == msg.room && g.epoch == msg.epoch && msg.offset + 1 == g.from {
                g.from = msg.offset;
                let f = g.frame(self.form);
                self.queued_bytes = self.queued_bytes - frame.len() + f.len();
                *frame = f;
                if i > start && self.coalesce(i - 1) {
                    return i;
                }
                return i + 1;
            }
        }
        let mark = GapMark {
            room: msg.room.clone(),
            epoch: msg.epoch.clone(),
            from: msg.offset,
            to: msg.offset,
        };
        let f = mark.frame(self.form);
        self.queued_bytes += f.len();
        self.entries.insert(
            i,
            Entry {
                frame: f,
                kind: Kind::Gap(Box::new(mark)),
            },
        );
        i + 1
    }

    /// Merges the gap marker at `j + 1` into the one at `j` when both are of one room and their
    /// offsets touch; returns whether it did. `j` must not be a partly written front.
    fn coalesce(&mut self, j: usize) -> bool {
        let (
            Some(Entry {
                kind: Kind::Gap(next),
                frame: next_frame,
            }),
            Some(Entry {
                kind: Kind::Gap(g), ..
            }),
        ) = (self.entries.get(j + 1), self.entries.get(j))
        else {
            return false;
        };
        if !(g.room == next.room && g.epoch == next.epoch && g.to + 1 == next.from) {
            return false;
        }
        let (to, removed) = (next.to, next_frame.len());
        self.entries.remove(j + 1);
        self.queued_bytes -= removed;
        if let Some(Entry {
            kind: Kind::Gap(g),
            frame,
        }) = self.entries.get_mut(j)
        {
            g.to = to;
            let f = g.frame(self.form);
            self.queued_bytes = self.queued_bytes - frame.len() + f.len();
            *frame = f;
        }
        true
    }

    /// Drops everything not yet started (a frame partly written is kept, so the stream stays
    /// well-formed).
    pub fn discard_unstarted(&mut self) {
        let keep = self.first_unstarted();
        while self.entries.len() > keep {
            if let Some(e) = self.entries.pop_back() {
                self.queued_bytes -= e.frame.len();
            }
        }
        self.live = usize::from(matches!(
            self.entries.front(),
            Some(Entry {
                kind: Kind::Live,
                ..
            })
        ));
        self.pongs = usize::from(matches!(
            self.entries.front(),
            Some(Entry {
                kind: Kind::Pong,
                ..
            })
        ));
        // The kept (partly written) front frame may be one with a `max_age`.
        self.aged = usize::from(
            matches!(self.entries.front(), Some(Entry { kind: Kind::Room(m), .. }) if self.ages(m)),
        );
    }

    /// Takes every queued frame (a long poll's answer).
    pub fn take_all(&mut self) -> Vec<Bytes> {
        self.queued_bytes = 0;
        self.front_written = 0;
        self.aged = 0;
        self.live = 0;
        self.pongs = 0;
        self.entries.drain(..).map(|e| e.frame).collect()
    }

    /// Frees the queue's allocation when nothing is queued (the shard's sweep calls it once a
    /// second), so an idle connection's outbox owns no memory; a busy one keeps its capacity
    /// between sweeps and reallocates at most once a second.
    pub fn release_if_empty(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes queued (including the unwritten part of a partly written frame).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes - self.front_written
    }

    /// Takes the policy actions counted since the last call.
    pub fn take_actions(&mut self) -> PolicyActions {
        std::mem::take(&mut self.actions)
    }

    /// Frames queued (a partly written one included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Fills `slices` with the next frames to write (as many as fit, at most
    /// [`MAX_IOVECS`]); returns how many, and the oldest room message among them (its publish
    /// time and namespace).
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> (usize, Option<(Instant, usize)>) {
        let mut n = 0;
        let mut oldest = None;
        let max = slices.len().min(MAX_IOVECS);
        for (i, e) in self.entries.iter().take(max).enumerate() {
            let bytes = if i == 0 {
                &e.frame[self.front_written..]
            } else {
                &e.frame[..]
            };
            slices[n] = IoSlice::new(bytes);
            n += 1;
            if oldest.is_none() {
                if let Kind::Room(m) = &e.kind {
                    oldest = Some((m.published_at, m.namespace));
                }
            }
        }
        (n, oldest)
    }

    /// Marks `written` bytes as sent; returns how many whole frames left the queue.
    pub fn advance(&mut self, written: usize) -> usize {
        self.advance_with(written, |_| {})
    }

    /// [`Outbox::advance`], calling `on_room` for every room message fully written.
    pub fn advance_with(&mut self, mut written: usize, mut on_room: impl FnMut(&RoomMsg)) -> usize {
        let mut frames_done = 0;
        while written > 0 {
            let Some(front) = self.entries.front() else {
                break;
            };
            let left = front.frame.len() - self.front_written;
            if written >= left {
                written -= left;
                self.queued_bytes -= front.frame.len();
                match &front.kind {
                    Kind::Room(m) => {
                        if self.form != Form::Yjs && m.max_age.is_some() {
                            self.aged -= 1;
                        }
                        on_room(m);
                    }
                    Kind::Live => self.live -= 1,
                    Kind::Pong => self.pongs -= 1,
                    Kind::Control | Kind::Gap(_) => {}
                }
                self.front_written = 0;
                self.entries.pop_front();
                frames_done += 1;
            } else {
                self.front_written += written;
                written = 0;
            }
        }
        frames_done
    }
}

#[cfg(test)]
mod tests;
