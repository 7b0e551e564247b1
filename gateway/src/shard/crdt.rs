//! The home shard's side of collaborative rooms (`kind = "crdt"`): loading a room's document
//! (snapshot, then the updates stored after it), merging every update, answering y-websocket
//! syncs, relaying awareness, and snapshotting (on a schedule, after half the room's history,
//! and when the last subscriber on this node leaves).

use std::time::{Duration, Instant};

use broker_bridge::{Appended, Completion, DocSnapshot, Recovery, RoomName};
use bytes::Bytes;
use proto_codec::protocol::{binary_payload, ErrorCode};

use super::kinds::Admit;
use super::{Pending, ShardCtx};
use crate::config::RoomKind;
use crate::errors::OpFailure;
use crate::ids::{ConnId, ShardId};
use crate::mailbox::{PublishOrigin, ShardMsg};
use crate::namespaces::Namespace;
use crate::outgoing::{LiveEvent, Outgoing};
use crate::rooms::crdt::{AwarenessLimits, CrdtError, CrdtRoom, Load, ParkedPublish, WaitingSync};

/// Other nodes' awareness states are dropped when not renewed for this long (y-websocket
/// clients renew theirs every 15 s and time others out after 30 s).
const AWARENESS_TTL: Duration = Duration::from_secs(30);

/// Sync requests one loading document keeps waiting; past it a request is closed 1013 (retry).
const MAX_WAITING_SYNCS: usize = 1024;

impl ShardCtx {
    /// The room's namespace, if the room is collaborative.
    pub(super) fn crdt_namespace(&self, room: &str) -> Option<&Namespace> {
        self.namespaces
            .of(room)
            .ok()
            .filter(|ns| ns.policy.kind == RoomKind::Crdt)
    }

    /// Home: whether the room's document is loaded and complete.
    pub(super) fn crdt_ready(&self, room: &RoomName) -> bool {
        self.crdt
            .borrow()
            .rooms
            .get(room)
            .is_some_and(|d| d.load == Load::Ready)
    }

    /// Home: a publish into a collaborative room, before it is stored: merged into the loaded
    /// document (or refused), or parked until the document has loaded ([`ShardCtx::crdt_park`]).
    pub(super) fn crdt_admit(&self, room: &RoomName, data: Bytes, origin: PublishOrigin) -> Admit {
        let Some(ns) = self.crdt_namespace(room) else {
            return Admit::Store {
                data,
                origin,
                merged: false,
            };
        };
        if !self.crdt_ready(room) {
            self.crdt_park(room, data, origin, ns.policy.max_document_bytes);
            return Admit::Taken;
        }
        match self.crdt_accept(room, &data, ns) {
            Ok(()) => Admit::Store {
                data,
                origin,
                merged: true,
            },
            Err(refusal) => {
                self.answer_publish(origin, Err(refusal));
                Admit::Taken
            }
        }
    }

    /// Home: a publish into a collaborative room whose document is not loaded (or still
    /// loading) waits for it, so that it is checked against the whole document (size limit,
    /// engine) before it is stored. The room is opened for it; it is answered `unavailable`
    /// if the document cannot load. The parked publishes of a room hold at most
    /// `max_document_bytes` (more could not all be accepted): past it a publish is answered
    /// `unavailable` (retry once the document has loaded).
    pub(super) fn crdt_park(
        &self,
        room: &RoomName,
        data: Bytes,
        origin: PublishOrigin,
        max_bytes: usize,
    ) {
        let parked = ParkedPublish { data, origin };
        let opened = {
            let mut rooms = self.crdt.borrow_mut();
            match rooms.rooms.get_mut(room) {
                Some(doc) => {
                    let queued: usize = doc.parked.iter().map(|p| p.data.len()).sum();
                    if queued + parked.data.len() > max_bytes {
                        drop(rooms);
                        return self.answer_publish(
                            parked.origin,
                            Err(OpFailure::new(
                                ErrorCode::Unavailable,
                                "document loading; retry",
                            )),
                        );
                    }
                    doc.parked.push(parked);
                    false
                }
                None => {
                    let mut doc = CrdtRoom::new();
                    doc.parked.push(parked);
                    rooms.rooms.insert(room.clone(), doc);
                    true
                }
            }
        };
        // Parked first: a load that completes at once (the embedded broker) takes it.
        if opened {
            self.crdt_start_load(room);
        }
    }

    /// Home: checks and merges an update published to a collaborative room (its document
    /// loaded: [`ShardCtx::crdt_ready`]) before it is stored; a refused update is never stored.
    /// An update the engine fails on also rebuilds the document from the store.
    pub(super) fn crdt_accept(
        &self,
        room: &RoomName,
        data: &Bytes,
        ns: &Namespace,
    ) -> Result<(), OpFailure> {
        let Some(update) = binary_payload(data).map(|_| data.slice(1..)) else {
            return Err(OpFailure::new(
                ErrorCode::BadRequest,
                "a collaborative room takes binary Yjs updates",
            ));
        };
        let (result, poisoned) = match self.crdt.borrow_mut().rooms.get_mut(room) {
            Some(doc) => (
                doc.accept(&update, ns.policy.max_document_bytes),
                doc.poisoned,
            ),
            None => {
                return Err(OpFailure::new(
                    ErrorCode::Unavailable,
                    "document unavailable; retry",
                ))
            }
        };
        if poisoned {
            self.crdt_reload(room);
        }
        if let Err(e) = result {
            let code = match e {
                CrdtError::DocumentTooLarge => ErrorCode::TooLarge,
                _ => ErrorCode::BadRequest,
            };
            crate::metrics::crdt_refused(code.as_str());
            return Err(OpFailure::new(code, e.to_string()));
        }
        self.broker
            .borrow_mut()
            .doc_append(room, &update)
            .map_err(|e| OpFailure::new(ErrorCode::Unavailable, e.to_string()))
    }

    /// Home: the engine failed on an update of the loaded document, or the document could not
    /// be encoded: it is dropped and loaded again from the store (which never took the refused
    /// update; its load drops a stored one the document cannot be encoded after); its clients
    /// stay.
    fn crdt_reload(&self, room: &RoomName) {
        let Some(doc) = self.crdt.borrow_mut().rooms.remove(room) else {
            return;
        };
        tracing::warn!(room = %room, "collaborative document reloaded after the engine failed on it");
        self.crdt
            .borrow_mut()
            .rooms
            .insert(room.clone(), doc.reloading());
        self.crdt_start_load(room);
    }

    /// The awareness table's bounds (`[crdt]`).
    fn awareness_limits(&self) -> AwarenessLimits {
        let c = &self.config.crdt;
        AwarenessLimits {
            max_states: c.max_awareness_states,
            max_state_bytes: c.max_awareness_state_bytes,
            max_per_connection: c.max_awareness_clients_per_connection,
        }
    }

    /// Home: a stored update (this node's or another's) is merged into the loaded document,
    /// unless `merged` says it already is (accepted here and stored at once: the embedded
    /// broker). A networked broker's echo of an update accepted here is merged again, which
    /// changes nothing.
    pub(super) fn crdt_appended(&self, m: &Appended, merged: bool) {
        let Some(ns) = self.crdt_namespace(&m.room) else {
            return;
        };
        if binary_payload(&m.data).is_none() {
            return;
        }
        let update = m.data.slice(1..);
        let mut rooms = self.crdt.borrow_mut();
        let Some(doc) = rooms.rooms.get_mut(&m.room) else {
            return;
        };
        if !merged {
            if let Err(e) = doc.apply(&update) {
                tracing::warn!(room = %m.room, offset = m.offset, error = %e, "stored update not merged");
                if doc.poisoned {
                    drop(rooms);
                    self.crdt_reload(&m.room);
                }
                return;
            }
        }
        doc.merged((m.epoch.clone(), m.offset), self.now.get());
        if doc.load == Load::Ready && doc.unsnapshotted >= (ns.policy.history_size / 2).max(1) {
            self.crdt_snapshot(&m.room, doc);
            if doc.poisoned {
                drop(rooms);
                self.crdt_reload(&m.room);
            }
        }
    }

    /// Home: a collaborative room got interest on this node: load its document.
    pub(super) fn crdt_open(&self, room: &RoomName) {
        if self.crdt_namespace(room).is_none() || self.crdt.borrow().rooms.contains_key(room) {
            return;
        }
        self.crdt
            .borrow_mut()
            .rooms
            .insert(room.clone(), CrdtRoom::new());
        self.crdt_start_load(room);
    }

    /// Home: reads the room's stored snapshot (into its empty, loading document).
    fn crdt_start_load(&self, room: &RoomName) {
        let token = self.token();
        let result = self.broker.borrow_mut().doc_load(room, token);
        match result {
            Ok(Completion::Ready(snapshot)) => self.crdt_doc_loaded(room, snapshot),
            Ok(Completion::Pending) => {
                self.pending
                    .borrow_mut()
                    .insert(token, Pending::DocLoad { room: room.clone() });
            }
            Err(e) => self.crdt_load_failed(room, &e.to_string()),
        }
    }

    /// Home: the snapshot (and, embedded, the updates after it) arrived; read the stored
    /// updates after it.
    pub(super) fn crdt_doc_loaded(&self, room: &RoomName, snapshot: Option<DocSnapshot>) {
        let since = {
            let mut rooms = self.crdt.borrow_mut();
            let Some(doc) = rooms.rooms.get_mut(room) else {
                return;
            };
            let mut since = None;
            if let Some(s) = snapshot {
                for update in std::iter::once(&s.state)
                    .filter(|u| !u.is_empty())
                    .chain(s.tail.iter())
                {
                    // An update the engine fails on is skipped (one stored before such
                    // failures were contained): the document is rebuilt without it.
                    if let Err(e) = doc.apply(update) {
                        tracing::warn!(room = %room, error = %e, "stored update not merged");
                    }
                }
                since = s.replay_from;
            }
            doc.load = Load::Replay;
            since
        };
        let policy = self.history_policy(room);
        let token = self.token();
        let since_ref = since.as_ref().map(|(e, o)| (e.as_ref(), *o));
        let result = self.broker.borrow_mut().history(
            room,
            since_ref,
            policy.size.max(1),
            policy,
            token,
            self.now.get(),
        );
        match result {
            Ok(Completion::Ready(rec)) => self.crdt_replayed(room, rec),
            Ok(Completion::Pending) => {
                self.pending
                    .borrow_mut()
                    .insert(token, Pending::DocReplay { room: room.clone() });
            }
            Err(e) => self.crdt_load_failed(room, &e.to_string()),
        }
    }

    /// Home: the updates stored after the snapshot arrived: the document is complete; answer
    /// the syncs that waited for it.
    pub(super) fn crdt_replayed(&self, room: &RoomName, rec: Recovery) {
        let waiting = {
            let mut rooms = self.crdt.borrow_mut();
            let Some(doc) = rooms.rooms.get_mut(room) else {
                return;
            };
            for m in &rec.messages {
                if binary_payload(&m.data).is_some() {
                    let update = m.data.slice(1..);
                    if let Err(e) = doc.apply(&update) {
                        tracing::warn!(room = %room, offset = m.offset, error = %e, "stored update not merged");
                    }
                }
            }
            if doc.position.as_ref().is_none_or(|(_, o)| rec.latest > *o) {
                doc.position = Some((rec.epoch.clone(), rec.latest));
            }
            // A document rebuilt without stored updates is snapshotted at once: the next load
            // starts past them.
            if doc.ready() {
                tracing::warn!(room = %room, "stored updates dropped: the document could not be encoded with them");
                doc.unsnapshotted = doc.unsnapshotted.max(1);
                self.crdt_snapshot(room, doc);
            }
            (
                std::mem::take(&mut doc.waiting),
                std::mem::take(&mut doc.parked),
            )
        };
        crate::metrics::crdt_loaded();
        let (waiting, parked) = waiting;
        for w in waiting {
            self.crdt_answer_sync(room, w.from, w.state_vector);
        }
        if parked.is_empty() {
            return;
        }
        for p in parked {
            self.home_publish(room.clone(), p.data, p.origin);
        }
        // Opened only for those publishes: unloaded again, as when its last subscriber leaves.
        let idle = self.home.borrow().get(room).is_none();
        if idle && self.crdt_ready(room) {
            if let Some(mut doc) = self.crdt.borrow_mut().rooms.remove(room) {
                if doc.unsnapshotted > 0 {
                    self.crdt_snapshot(room, &mut doc);
                }
            }
        }
    }

    /// Home: the document could not be loaded (broker unreachable): it is forgotten, never
    /// snapshotted half-loaded, and the waiting clients are closed to retry.
    pub(super) fn crdt_load_failed(&self, room: &RoomName, reason: &str) {
        tracing::warn!(room = %room, reason, "collaborative document not loaded");
        let Some(doc) = self.crdt.borrow_mut().rooms.remove(room) else {
            return;
        };
        let syncs_waiting_subscription = doc
            .subscribing
            .into_iter()
            .filter_map(|(who, sv)| sv.map(|_| who));
        for who in doc
            .waiting
            .into_iter()
            .map(|w| w.from)
            .chain(syncs_waiting_subscription)
        {
            self.close_remote(who, "document unavailable; retry");
        }
        for p in doc.parked {
            self.answer_publish(
                p.origin,
                Err(OpFailure::new(
                    ErrorCode::Unavailable,
                    "document unavailable; retry",
                )),
            );
        }
    }

    fn close_remote(&self, to: (ShardId, ConnId), reason: &str) {
        self.route(
            to.0,
            ShardMsg::CloseConn {
                conn: to.1,
                code: proto_codec::ws::CloseCode::TRY_AGAIN_LATER.0,
                reason: reason.into(),
            },
        );
    }

    /// Home: a y-websocket connection's subscription waits for the broker's answer (its
    /// position in the room's order): its syncs wait with it ([`CrdtRoom::subscribing`]).
    pub(super) fn crdt_subscribing(&self, room: &RoomName, who: (ShardId, ConnId)) {
        if let Some(doc) = self.crdt.borrow_mut().rooms.get_mut(room) {
            doc.subscribing.insert(who, None);
        }
    }

    /// Home: the subscription of `who` was answered (and sent to its shard before anything
    /// sent from here on): the sync it sent meanwhile is answered now, or dropped with a
    /// refused subscription (its connection is closed to retry).
    pub(super) fn crdt_subscribed(&self, room: &RoomName, who: (ShardId, ConnId), ok: bool) {
        let waiting = match self.crdt.borrow_mut().rooms.get_mut(room) {
            Some(doc) => doc.subscribing.remove(&who).flatten(),
            None => return,
        };
        if let Some(sv) = waiting.filter(|_| ok) {
            self.crdt_sync(room.clone(), who, sv);
        }
    }

    /// Home: a y-websocket client's sync step 1.
    pub(super) fn crdt_sync(&self, room: RoomName, from: (ShardId, ConnId), sv: Bytes) {
        self.crdt_open(&room);
        {
            let mut rooms = self.crdt.borrow_mut();
            let Some(doc) = rooms.rooms.get_mut(&room) else {
                drop(rooms);
                return self.close_remote(from, "document unavailable; retry");
            };
            if let Some(waiting) = doc.subscribing.get_mut(&from) {
                // The newest is kept: its answer is what the client asks for now.
                *waiting = Some(sv);
                return;
            }
            if doc.load != Load::Ready {
                if doc.waiting.len() >= MAX_WAITING_SYNCS {
                    drop(rooms);
                    return self.close_remote(from, "document loading; retry");
                }
                doc.waiting.push(WaitingSync {
                    from,
                    state_vector: sv,
                });
                return;
            }
        }
        self.crdt_answer_sync(&room, from, sv);
    }

    fn crdt_answer_sync(&self, room: &RoomName, to: (ShardId, ConnId), sv: Bytes) {
        let answer = self.crdt.borrow_mut().rooms.get_mut(room).map(|d| {
            let answer = d.answer_sync(&sv);
            (answer, d.poisoned)
        });
        let frames = match answer {
            Some((Ok(frames), _)) => frames,
            // The document could not be encoded: loaded again (which drops the stored update
            // it cannot be encoded after), and the sync answered from it then.
            Some((Err(_), true)) => {
                self.crdt_reload(room);
                let mut rooms = self.crdt.borrow_mut();
                match rooms.rooms.get_mut(room) {
                    // Loaded at once (the embedded broker): answered below once more.
                    Some(doc) if doc.load == Load::Ready => {}
                    Some(doc) => {
                        return doc.waiting.push(WaitingSync {
                            from: to,
                            state_vector: sv,
                        })
                    }
                    None => return,
                }
                match rooms.rooms.get_mut(room).map(|d| d.answer_sync(&sv)) {
                    Some(Ok(frames)) => frames,
                    _ => {
                        drop(rooms);
                        return self.close_remote(to, "document unavailable; retry");
                    }
                }
            }
            Some((Err(e), false)) => {
                return self.route(
                    to.0,
                    ShardMsg::CloseConn {
                        conn: to.1,
                        code: proto_codec::protocol::codes::close::BAD_REQUEST.0,
                        reason: e.to_string(),
                    },
                )
            }
            None => return,
        };
        for frame in frames {
            let out = Outgoing::Yjs(frame);
            self.route(to.0, ShardMsg::ToConn { conn: to.1, out });
        }
    }

    /// Home: an awareness message from a client of this node: kept, and relayed to the room's
    /// y-websocket clients here and on the other nodes.
    pub(super) fn crdt_awareness(&self, room: RoomName, from: (ShardId, ConnId), update: Bytes) {
        self.crdt_open(&room);
        let limits = self.awareness_limits();
        let relayed = match self.crdt.borrow_mut().rooms.get_mut(&room) {
            Some(doc) => doc.awareness_update(&update, Some(from), self.now.get(), limits),
            None => return,
        };
        match relayed {
            // To the sender too, as the reference server does: y-websocket drops a connection
            // that hears nothing for 30 s, and its awareness renewal every 15 s is what a lone
            // editor hears. Only the states it was allowed to set are relayed.
            Ok(Some(message)) => self.broadcast_live(&room, LiveEvent::Awareness(message), None),
            Ok(None) => {}
            Err(e) => self.route(
                from.0,
                ShardMsg::CloseConn {
                    conn: from.1,
                    code: proto_codec::protocol::codes::close::BAD_REQUEST.0,
                    reason: e.to_string(),
                },
            ),
        }
    }

    /// Home: another node relayed an awareness message; returns the message of the states it
    /// may set, for this node's clients of the room.
    pub(super) fn crdt_remote_awareness(&self, room: &RoomName, payload: &[u8]) -> Option<Bytes> {
        let limits = self.awareness_limits();
        let mut rooms = self.crdt.borrow_mut();
        let doc = rooms.rooms.get_mut(room)?;
        doc.awareness_update(payload, None, self.now.get(), limits)
            .ok()
            .flatten()
    }

    /// Home: a client asks for every awareness state.
    pub(super) fn crdt_awareness_query(&self, room: RoomName, from: (ShardId, ConnId)) {
        let frames = self
            .crdt
            .borrow()
            .rooms
            .get(&room)
            .map(CrdtRoom::awareness_frames)
            .unwrap_or_default();
        for frame in frames {
            self.route(
                from.0,
                ShardMsg::ToConn {
                    conn: from.1,
                    out: Outgoing::Yjs(frame),
                },
            );
        }
    }

    /// Home: a subscriber left; its awareness states go with it, and with the last subscriber
    /// on this node the document is snapshotted and unloaded.
    pub(super) fn crdt_left(&self, room: &RoomName, who: (ShardId, ConnId), last: bool) {
        let removal = self.crdt.borrow_mut().rooms.get_mut(room).and_then(|d| {
            d.subscribing.remove(&who);
            d.remove_owner(who)
        });
        if let Some(message) = removal {
            self.broadcast_live(room, LiveEvent::Awareness(message), Some(who));
        }
        if last {
            let doc = self.crdt.borrow_mut().rooms.remove(room);
            if let Some(mut doc) = doc {
                if doc.load == Load::Ready && doc.unsnapshotted > 0 {
                    self.crdt_snapshot(room, &mut doc);
                }
            }
        }
    }

    /// Stores the document's snapshot through the broker.
    ///
    /// A document that cannot be encoded is left [`CrdtRoom::poisoned`]: the caller that keeps
    /// it loads it again ([`ShardCtx::crdt_reload`]).
    fn crdt_snapshot(&self, room: &RoomName, doc: &mut CrdtRoom) {
        let state = match doc.snapshot_state() {
            Ok(state) => state,
            Err(e) => {
                // Its stored updates stay the record.
                tracing::warn!(room = %room, error = %e, "snapshot not taken");
                crate::metrics::crdt_refused("snapshot_failed");
                return;
            }
        };
        let size = state.len();
        self.broker.borrow_mut().doc_store(
            room,
            DocSnapshot {
                state: Bytes::from(state),
                tail: Vec::new(),
                replay_from: doc.position.clone(),
            },
        );
        doc.snapshotted(size);
        crate::metrics::crdt_snapshot(size);
    }

    /// Sweep: snapshots documents whose oldest unsnapshotted update is `snapshot_interval_ms`
    /// old; drops other nodes' stale awareness states.
    pub(super) fn crdt_sweep(&self, now: Instant) {
        let interval = Duration::from_millis(self.config.crdt.snapshot_interval_ms);
        let mut poisoned = Vec::new();
        let mut rooms = self.crdt.borrow_mut();
        for (room, doc) in rooms.rooms.iter_mut() {
            doc.expire_awareness(now, AWARENESS_TTL);
            let due = doc
                .dirty_since
                .is_some_and(|t| now.saturating_duration_since(t) >= interval);
            if due && doc.load == Load::Ready {
                self.crdt_snapshot(room, doc);
                if doc.poisoned {
                    poisoned.push(room.clone());
                }
            }
        }
        drop(rooms);
        for room in poisoned {
            self.crdt_reload(&room);
        }
    }
}
