//! The home shard's side of collaborative rooms (`kind = "crdt"`): loading a room's document
//! (snapshot, then the updates stored after it), merging every update, answering y-websocket
//! syncs, relaying awareness, and snapshotting (on a schedule, after half the room's history,
//! and when the last subscriber on this node leaves).

use std::time::{Duration, Instant};

use broker_bridge::{Appended, Completion, DocSnapshot, Recovery, RoomName};
use bytes::Bytes;
use proto_codec::protocol::{binary_payload, ErrorCode};

use super::{Pending, ShardCtx};
use crate::config::RoomKind;
use crate::mailbox::{ConnId, ShardId, ShardMsg};
use crate::namespaces::Namespace;
use crate::rooms::crdt::{check_update, CrdtError, CrdtRoom, Load, WaitingSync};

/// Other nodes' awareness states are dropped when not renewed for this long (y-websocket
/// clients renew theirs every 15 s and time others out after 30 s).
const AWARENESS_TTL: Duration = Duration::from_secs(30);

impl ShardCtx {
    /// The room's namespace, if the room is collaborative.
    pub(super) fn crdt_namespace(&self, room: &str) -> Option<&Namespace> {
        self.namespaces
            .of(room)
            .ok()
            .filter(|ns| ns.policy.kind == RoomKind::Crdt)
    }

    /// Home: checks and merges an update published to a collaborative room before it is stored;
    /// a refused update is never stored nor applied. Returns whether it was merged into a loaded
    /// document.
    pub(super) fn crdt_accept(
        &self,
        room: &RoomName,
        data: &Bytes,
        ns: &Namespace,
    ) -> Result<bool, (ErrorCode, String)> {
        let Some(update) = binary_payload(data) else {
            return Err((
                ErrorCode::BadRequest,
                "a collaborative room takes binary Yjs updates".into(),
            ));
        };
        let refused = |e: CrdtError| {
            let code = match e {
                CrdtError::DocumentTooLarge => ErrorCode::TooLarge,
                _ => ErrorCode::BadRequest,
            };
            crate::metrics::crdt_refused(code.as_str());
            (code, e.to_string())
        };
        let merged = match self.crdt.borrow_mut().rooms.get_mut(room) {
            Some(doc) => {
                doc.accept(update, ns.policy.max_document_bytes)
                    .map_err(refused)?;
                true
            }
            // No document loaded on this node: checked now, merged when one loads.
            None => {
                check_update(update).map_err(refused)?;
                false
            }
        };
        self.broker
            .borrow_mut()
            .doc_append(room, update)
            .map_err(|e| (ErrorCode::Unavailable, e.to_string()))?;
        Ok(merged)
    }

    /// Home: a stored update (this node's or another's) is merged into the loaded document,
    /// unless `merged` says it already is (accepted here and stored at once: the embedded
    /// broker). A networked broker's echo of an update accepted here is merged again, which
    /// changes nothing.
    pub(super) fn crdt_appended(&self, m: &Appended, merged: bool) {
        let Some(ns) = self.crdt_namespace(&m.room) else {
            return;
        };
        let Some(update) = binary_payload(&m.data) else {
            return;
        };
        let mut rooms = self.crdt.borrow_mut();
        let Some(doc) = rooms.rooms.get_mut(&m.room) else {
            return;
        };
        if !merged {
            if let Err(e) = doc.apply(update) {
                tracing::warn!(room = %m.room, offset = m.offset, error = %e, "stored update not merged");
                return;
            }
        }
        doc.merged((m.epoch.clone(), m.offset), self.now.get());
        if doc.load == Load::Ready && doc.unsnapshotted >= (ns.policy.history_size / 2).max(1) {
            self.crdt_snapshot(&m.room, doc);
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
                let mut size = 0;
                for update in std::iter::once(&s.state)
                    .filter(|u| !u.is_empty())
                    .chain(s.tail.iter())
                {
                    if let Err(e) = doc.apply(update) {
                        tracing::warn!(room = %room, error = %e, "stored update not merged");
                    }
                    size += update.len();
                }
                doc.approx_bytes = size;
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
                if let Some(update) = binary_payload(&m.data) {
                    if let Err(e) = doc.apply(update) {
                        tracing::warn!(room = %room, offset = m.offset, error = %e, "stored update not merged");
                    }
                    doc.approx_bytes += update.len();
                }
            }
            if doc.position.as_ref().is_none_or(|(_, o)| rec.latest > *o) {
                doc.position = Some((rec.epoch.clone(), rec.latest));
            }
            doc.load = Load::Ready;
            std::mem::take(&mut doc.waiting)
        };
        crate::metrics::crdt_loaded();
        for w in waiting {
            self.crdt_answer_sync(room, w.from, &w.state_vector);
        }
    }

    /// Home: the document could not be loaded (broker unreachable): it is forgotten, never
    /// snapshotted half-loaded, and the waiting clients are closed to retry.
    pub(super) fn crdt_load_failed(&self, room: &RoomName, reason: &str) {
        tracing::warn!(room = %room, reason, "collaborative document not loaded");
        let Some(doc) = self.crdt.borrow_mut().rooms.remove(room) else {
            return;
        };
        for w in doc.waiting {
            self.close_remote(w.from, "document unavailable; retry");
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

    /// Home: a y-websocket client's sync step 1.
    pub(super) fn crdt_sync(&self, room: RoomName, from: (ShardId, ConnId), sv: Bytes) {
        self.crdt_open(&room);
        {
            let mut rooms = self.crdt.borrow_mut();
            let Some(doc) = rooms.rooms.get_mut(&room) else {
                drop(rooms);
                return self.close_remote(from, "document unavailable; retry");
            };
            if doc.load != Load::Ready {
                doc.waiting.push(WaitingSync {
                    from,
                    state_vector: sv,
                });
                return;
            }
        }
        self.crdt_answer_sync(&room, from, &sv);
    }

    fn crdt_answer_sync(&self, room: &RoomName, to: (ShardId, ConnId), sv: &[u8]) {
        let frames = match self
            .crdt
            .borrow()
            .rooms
            .get(room)
            .map(|d| d.answer_sync(sv))
        {
            Some(Ok(frames)) => frames,
            Some(Err(e)) => {
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
            self.route(to.0, ShardMsg::ToConn { conn: to.1, frame });
        }
    }

    /// Home: an awareness message from a client of this node: kept, and relayed to the room's
    /// y-websocket clients here and on the other nodes.
    pub(super) fn crdt_awareness(&self, room: RoomName, from: (ShardId, ConnId), update: Bytes) {
        self.crdt_open(&room);
        let relayed = match self.crdt.borrow_mut().rooms.get_mut(&room) {
            Some(doc) => doc.awareness_update(&update, Some(from), self.now.get()),
            None => return,
        };
        match relayed {
            // To the sender too, as the reference server does: y-websocket drops a connection
            // that hears nothing for 30 s, and its awareness renewal every 15 s is what a lone
            // editor hears.
            Ok(frame) => self.broadcast_live(&room, frame, None),
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

    /// Home: another node relayed an awareness message (its frame payload).
    pub(super) fn crdt_remote_awareness(&self, room: &RoomName, payload: &[u8]) {
        if let Some(doc) = self.crdt.borrow_mut().rooms.get_mut(room) {
            let _ = doc.awareness_update(payload, None, self.now.get());
        }
    }

    /// Home: a client asks for every awareness state.
    pub(super) fn crdt_awareness_query(&self, room: RoomName, from: (ShardId, ConnId)) {
        let frame = self
            .crdt
            .borrow()
            .rooms
            .get(&room)
            .and_then(CrdtRoom::awareness_frame);
        if let Some(frame) = frame {
            self.route(
                from.0,
                ShardMsg::ToConn {
                    conn: from.1,
                    frame,
                },
            );
        }
    }

    /// Home: a subscriber left; its awareness states go with it, and with the last subscriber
    /// on this node the document is snapshotted and unloaded.
    pub(super) fn crdt_left(&self, room: &RoomName, who: (ShardId, ConnId), last: bool) {
        let removal = self
            .crdt
            .borrow_mut()
            .rooms
            .get_mut(room)
            .and_then(|d| d.remove_owner(who));
        if let Some(frame) = removal {
            self.broadcast_live(room, frame, Some(who));
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
    fn crdt_snapshot(&self, room: &RoomName, doc: &mut CrdtRoom) {
        let state = doc.encode_state();
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
        let mut rooms = self.crdt.borrow_mut();
        for (room, doc) in rooms.rooms.iter_mut() {
            doc.expire_awareness(now, AWARENESS_TTL);
            let due = doc
                .dirty_since
                .is_some_and(|t| now.saturating_duration_since(t) >= interval);
            if due && doc.load == Load::Ready {
                self.crdt_snapshot(room, doc);
            }
        }
    }
}
