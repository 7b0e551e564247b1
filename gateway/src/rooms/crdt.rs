//! Collaborative rooms (`kind = "crdt"`) on their home shard: one `yrs` document per room, the
//! y-protocols messages (sync and awareness) a y-websocket client speaks, and the awareness
//! states of the room's clients.
//!
//! Every update of a room goes through its home shard, which merges it into the document (the
//! CRDT resolves conflicts: applying updates in any order, or twice, gives the same document).
//! A joining client sends its state vector (sync step 1) and gets exactly what it lacks (sync
//! step 2), computed from the document, never a replay of every edit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use broker_bridge::{Epoch, RoomName};
use bytes::Bytes;
use proto_codec::ws::{encode_frame, OpCode};
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

use crate::contain::{contain, Contained};
use crate::ids::{ConnId, ShardId};
use crate::mailbox::PublishOrigin;

/// Why an update or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrdtError {
    /// Not a Yjs update (lib0 v1 encoding), or one the document cannot integrate.
    #[error("malformed Yjs update: {0}")]
    MalformedUpdate(String),
    /// Not a y-protocols message.
    #[error("malformed y-protocols message: {0}")]
    MalformedMessage(String),
    /// The document would pass `max_document_bytes`.
    #[error("the document is at its size limit")]
    DocumentTooLarge,
    /// The CRDT engine failed on it (a contained panic in yrs): refused, never stored, and the
    /// document it was tried on is rebuilt.
    #[error("Yjs update refused: the CRDT engine failed on it ({0})")]
    EngineFailed(String),
}

impl From<Contained> for CrdtError {
    fn from(c: Contained) -> CrdtError {
        CrdtError::EngineFailed(c.message)
    }
}

/// A y-websocket client message, decoded.
#[derive(Debug)]
pub enum ClientMessage {
    /// Sync step 1: the client's state vector (encoded); answered with what it lacks.
    SyncStep1(Bytes),
    /// Sync step 2 or an update: document changes (a Yjs update), and whether it changes
    /// nothing (a fresh client's step 2).
    Update(Vec<u8>, bool),
    /// Awareness states (the whole message, relayed as it is).
    Awareness,
    /// A request for every awareness state.
    AwarenessQuery,
    /// Auth and custom messages: ignored.
    Other,
}

/// Decodes a client's binary message (a panic of the decoder is contained: refused).
pub fn decode_client_message(payload: &[u8]) -> Result<ClientMessage, CrdtError> {
    contain("yrs decode", || decode_client_message_inner(payload))?
}

fn decode_client_message_inner(payload: &[u8]) -> Result<ClientMessage, CrdtError> {
    let msg =
        Message::decode_v1(payload).map_err(|e| CrdtError::MalformedMessage(e.to_string()))?;
    Ok(match msg {
        Message::Sync(SyncMessage::SyncStep1(sv)) => {
            ClientMessage::SyncStep1(Bytes::from(sv.encode_v1()))
        }
        Message::Sync(SyncMessage::SyncStep2(u)) | Message::Sync(SyncMessage::Update(u)) => {
            let update =
                Update::decode_v1(&u).map_err(|e| CrdtError::MalformedUpdate(e.to_string()))?;
            let empty = update.is_empty();
            ClientMessage::Update(u, empty)
        }
        Message::Awareness(_) => ClientMessage::Awareness,
        Message::AwarenessQuery => ClientMessage::AwarenessQuery,
        Message::Auth(_) | Message::Custom(..) => ClientMessage::Other,
    })
}

/// A y-protocols message's bytes (the payload of its binary frame).
fn message(msg: &Message) -> Bytes {
    Bytes::from(msg.encode_v1())
}

/// A y-protocols message as one binary WebSocket frame.
fn frame(msg: &Message) -> Bytes {
    encode_frame(OpCode::Binary, false, &msg.encode_v1())
}

/// Where a room's document is in its loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Reading the stored snapshot (`Broker::doc_load`).
    Snapshot,
    /// Reading the updates stored after it (`Broker::history`).
    Replay,
    /// Complete: syncs are answered, snapshots are taken.
    Ready,
}

/// One client's awareness state.
#[derive(Debug, Clone)]
struct AwarenessState {
    clock: u32,
    json: Arc<str>,
    /// The connection on this node that sent it (`None`: another node's client).
    owner: Option<(ShardId, ConnId)>,
    updated: Instant,
}

/// What a room keeps of its clients' awareness (`[crdt]`): the table is bounded in entries and
/// bytes, and a connection sets only the states of the client ids it introduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwarenessLimits {
    /// States kept per room (every node's clients together).
    pub max_states: usize,
    /// Bytes of one state's JSON.
    pub max_state_bytes: usize,
    /// Client ids one connection may own.
    pub max_per_connection: usize,
}

/// A client id whose state was not renewed for this long may be set by another connection (the
/// same client reconnected before its old connection was found dead; clients renew every 15 s).
const AWARENESS_TAKEOVER: std::time::Duration = std::time::Duration::from_secs(20);

/// The awareness sync answer is cut into messages of about this many bytes of states, so that
/// no single frame is large (the whole table is bounded below the high-water mark by
/// `Config::validate`).
const AWARENESS_CHUNK_BYTES: usize = 16 * 1024;

/// A sync step 1 waiting for the document to load.
#[derive(Debug)]
pub struct WaitingSync {
    /// The asking connection.
    pub from: (ShardId, ConnId),
    /// Its state vector.
    pub state_vector: Bytes,
}

/// A publish that arrived before the room's document was loaded: it is checked against the
/// complete document (size limit, engine) once it is.
#[derive(Debug)]
pub struct ParkedPublish {
    /// The stored message (the binary mark, then the update).
    pub data: Bytes,
    /// Who to answer.
    pub origin: PublishOrigin,
}

/// One collaborative room's document on its home shard.
pub struct CrdtRoom {
    doc: Doc,
    /// Loading state.
    pub load: Load,
    /// Syncs to answer once loaded.
    pub waiting: Vec<WaitingSync>,
    /// Connections whose subscription the broker has not answered yet, with the state vector
    /// of the newest sync each sent meanwhile. A sync is answered once its connection receives
    /// the room's messages: answered from the document before, the messages merged between the
    /// answer and the subscription's position would reach the client in neither.
    pub subscribing: HashMap<(ShardId, ConnId), Option<Bytes>>,
    /// Publishes to take once loaded, in their order.
    pub parked: Vec<ParkedPublish>,
    /// The engine failed on an update of the loaded document, or the loaded document cannot
    /// be encoded: it must be loaded again from the store (which never holds a refused update,
    /// and whose load drops a stored one the document cannot be encoded after: `ready`).
    pub poisoned: bool,
    /// While loading: the updates merged so far, to rebuild from when the engine fails on a
    /// stored update (one stored before the engine's failures were contained).
    loaded: Vec<Bytes>,
    /// The newest stored message merged (the position a snapshot covers).
    pub position: Option<(Epoch, u64)>,
    /// Updates merged since the last snapshot.
    pub unsnapshotted: usize,
    /// When the oldest of them was merged.
    pub dirty_since: Option<Instant>,
    /// The document's size, counted as its last encoded size plus the updates since.
    pub approx_bytes: usize,
    awareness: HashMap<u64, AwarenessState>,
    /// Client ids per owning connection of this node.
    owned: HashMap<(ShardId, ConnId), usize>,
}

impl std::fmt::Debug for CrdtRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdtRoom")
            .field("load", &self.load)
            .field("position", &self.position)
            .field("unsnapshotted", &self.unsnapshotted)
            .field("approx_bytes", &self.approx_bytes)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Default for CrdtRoom {
    fn default() -> CrdtRoom {
        CrdtRoom::new()
    }
}

/// Decodes and merges an update into `doc`, a panic of yrs contained.
fn apply_to(doc: &Doc, update: &[u8]) -> Result<(), CrdtError> {
    contain("yrs update", || {
        let update =
            Update::decode_v1(update).map_err(|e| CrdtError::MalformedUpdate(e.to_string()))?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|e| CrdtError::MalformedUpdate(e.to_string()))
    })?
}

/// A document's whole state, encoded inside `contain` and checked to load into a new document.
fn encode_checked(doc: &Doc) -> Result<Vec<u8>, CrdtError> {
    let state = contain("yrs encode", || {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    })?;
    apply_to(&Doc::new(), &state)
        .map_err(|e| CrdtError::EngineFailed(format!("the snapshot does not load back: {e}")))?;
    Ok(state)
}

/// A document from `updates`, without each update the engine fails on or after which the
/// document cannot be encoded (tried where an update starts a pending state, or after every
/// update); returns it and how many updates it kept.
fn rebuild_encodable(updates: &[Bytes], every_update: bool) -> (Doc, usize) {
    let mut doc = Doc::new();
    let mut kept: Vec<&Bytes> = Vec::new();
    for u in updates {
        let had_pending = doc.transact().has_missing_updates();
        let fine = apply_to(&doc, u).is_ok() && {
            let trial = every_update || (!had_pending && doc.transact().has_missing_updates());
            !(trial && encode_checked(&doc).is_err())
        };
        if fine {
            kept.push(u);
        } else {
            // Without it: a new document from the updates kept so far.
            doc = Doc::new();
            kept.retain(|k| apply_to(&doc, k).is_ok());
        }
    }
    (doc, kept.len())
}

impl CrdtRoom {
    /// An empty document, loading.
    pub fn new() -> CrdtRoom {
        CrdtRoom {
            doc: Doc::new(),
            load: Load::Snapshot,
            waiting: Vec::new(),
            subscribing: HashMap::new(),
            parked: Vec::new(),
            poisoned: false,
            loaded: Vec::new(),
            position: None,
            unsnapshotted: 0,
            dirty_since: None,
            approx_bytes: 0,
            awareness: HashMap::new(),
            owned: HashMap::new(),
        }
    }

    /// The same room with an empty document, loading again (after the engine failed on the
    /// loaded one): the clients' awareness, the waiting syncs and the parked publishes stay.
    pub fn reloading(self) -> CrdtRoom {
        CrdtRoom {
            waiting: self.waiting,
            subscribing: self.subscribing,
            parked: self.parked,
            awareness: self.awareness,
            owned: self.owned,
            ..CrdtRoom::new()
        }
    }

    /// Merges an update into the document. While loading, an update the engine fails on is
    /// skipped and the document rebuilt from the updates before it; once loaded, such a failure
    /// sets [`CrdtRoom::poisoned`].
    pub fn apply(&mut self, update: &Bytes) -> Result<(), CrdtError> {
        let result = apply_to(&self.doc, update);
        match (&result, self.load) {
            (Ok(()), Load::Ready) => {}
            (Ok(()), _) => self.loaded.push(update.clone()),
            (Err(CrdtError::EngineFailed(_)), Load::Ready) => self.poisoned = true,
            (Err(CrdtError::EngineFailed(_)), _) => self.rebuild(),
            (Err(_), _) => {}
        }
        result
    }

    /// A new document from the updates merged while loading (each merged before without
    /// failing; one that fails now is dropped too).
    fn rebuild(&mut self) {
        self.doc = Doc::new();
        let doc = &self.doc;
        self.loaded.retain(|u| apply_to(doc, u).is_ok());
    }

    /// The document is complete; returns whether stored updates were dropped. If a stored
    /// update left it unable to encode (see `accept`), it is rebuilt without each update after
    /// which it could not: first trying an encoding only where an update starts a pending
    /// state (as `accept` does), and if that is not enough, after every update. The loaded
    /// document always encodes (an empty one does), so a document loaded again after a failed
    /// encoding ([`CrdtRoom::poisoned`]) does not fail the same way. The size limit counts
    /// from the loaded document's encoded size (the replay may repeat what a snapshot holds).
    pub fn ready(&mut self) -> bool {
        let loaded = std::mem::take(&mut self.loaded);
        let mut dropped = false;
        let mut state = self.encode_state();
        for every_update in [false, true] {
            if state.is_ok() {
                break;
            }
            let (doc, kept) = rebuild_encodable(&loaded, every_update);
            dropped = kept < loaded.len();
            self.doc = doc;
            state = self.encode_state();
        }
        if let Ok(state) = state {
            self.approx_bytes = state.len();
        }
        self.load = Load::Ready;
        dropped
    }

    /// Merges a client's update within the size limit (refused whole, never half-applied).
    pub fn accept(&mut self, update: &Bytes, max_bytes: usize) -> Result<(), CrdtError> {
        if self.approx_bytes.saturating_add(update.len()) > max_bytes {
            return Err(CrdtError::DocumentTooLarge);
        }
        let had_pending = self.doc.transact().has_missing_updates();
        self.apply(update)?;
        // An update that leaves structs waiting for missing ones can leave yrs unable to encode
        // the document (issue 19's fuzzing: every later sync and snapshot failed): then it is
        // refused like one the engine failed on, and the document rebuilt without it. The trial
        // costs one encoding, paid only by an update that starts a pending state (not by every
        // update while one lasts, which would let one update make every later one expensive).
        if self.load == Load::Ready && !had_pending && self.doc.transact().has_missing_updates() {
            if let Err(e) = self.encode_state() {
                self.poisoned = true;
                return Err(e);
            }
        }
        self.approx_bytes += update.len();
        Ok(())
    }

    /// Counts a stored update merged at `position` (for the snapshot schedule).
    pub fn merged(&mut self, position: (Epoch, u64), now: Instant) {
        if self.position.as_ref().is_none_or(|(_, o)| position.1 > *o) {
            self.position = Some(position);
        }
        self.unsnapshotted += 1;
        self.dirty_since.get_or_insert(now);
    }

    /// The whole document, encoded (a snapshot's state), checked to load into a new document
    /// (a snapshot is taken every few seconds of edits at most, so the check's cost is small
    /// beside what it guards). yrs may
    /// panic encoding a document that took a crafted update, or encode one it cannot read back
    /// (issue 19's fuzzing): both are `EngineFailed`, and no such snapshot is ever stored (the
    /// stored updates stay the document's record).
    pub fn encode_state(&self) -> Result<Vec<u8>, CrdtError> {
        encode_checked(&self.doc)
    }

    /// [`CrdtRoom::encode_state`] for a snapshot: a document that cannot be encoded is
    /// [`CrdtRoom::poisoned`] (a pending state lets updates in without a trial encoding, see
    /// `accept`; the first failed encoding is where it shows).
    pub fn snapshot_state(&mut self) -> Result<Vec<u8>, CrdtError> {
        let state = self.encode_state();
        if state.is_err() {
            self.poisoned = true;
        }
        state
    }

    /// A snapshot was taken of `size` bytes.
    pub fn snapshotted(&mut self, size: usize) {
        self.unsnapshotted = 0;
        self.dirty_since = None;
        self.approx_bytes = size;
    }

    /// The answer to a client's sync step 1: what it lacks (step 2), the server's own state
    /// vector (step 1, so the client sends what the server lacks), and every awareness state.
    /// The document is only read. A contained panic refuses the state vector, unless the
    /// document cannot be encoded at all: then the document is [`CrdtRoom::poisoned`] (the
    /// state vector was not at fault).
    pub fn answer_sync(&mut self, state_vector: &[u8]) -> Result<Vec<Bytes>, CrdtError> {
        let answer = contain("yrs sync", || {
            let sv = StateVector::decode_v1(state_vector)
                .map_err(|e| CrdtError::MalformedMessage(e.to_string()))?;
            let txn = self.doc.transact();
            Ok::<_, CrdtError>((txn.encode_state_as_update_v1(&sv), txn.state_vector()))
        });
        let (step2, step1) = match answer {
            Ok(answer) => answer?,
            Err(contained) => {
                if self.encode_state().is_err() {
                    self.poisoned = true;
                }
                return Err(contained.into());
            }
        };
        let mut frames = vec![
            frame(&Message::Sync(SyncMessage::SyncStep2(step2))),
            frame(&Message::Sync(SyncMessage::SyncStep1(step1))),
        ];
        frames.extend(self.awareness_frames());
        Ok(frames)
    }

    /// Every known awareness state, as messages of about [`AWARENESS_CHUNK_BYTES`] each (none
    /// when there is no state).
    pub fn awareness_frames(&self) -> Vec<Bytes> {
        let mut frames = Vec::new();
        let mut clients = HashMap::new();
        let mut bytes = 0;
        for (id, s) in &self.awareness {
            bytes += s.json.len() + 16;
            clients.insert(
                ClientID::new(*id),
                AwarenessUpdateEntry {
                    clock: s.clock,
                    json: s.json.clone(),
                },
            );
            if bytes >= AWARENESS_CHUNK_BYTES {
                let clients = std::mem::take(&mut clients);
                frames.push(frame(&Message::Awareness(AwarenessUpdate { clients })));
                bytes = 0;
            }
        }
        if !clients.is_empty() {
            frames.push(frame(&Message::Awareness(AwarenessUpdate { clients })));
        }
        frames
    }

    /// Takes in an awareness message (from a client of this node, or relayed from another
    /// node); returns the message to relay to the room's other clients: the states it was allowed
    /// to set (`None` when none). A connection sets only client ids that are free or its own,
    /// at most `max_per_connection` of them; a room keeps at most `max_states`, each of at most
    /// `max_state_bytes`; another node's message sets only ids no client of this node owns.
    pub fn awareness_update(
        &mut self,
        payload: &[u8],
        owner: Option<(ShardId, ConnId)>,
        now: Instant,
        limits: AwarenessLimits,
    ) -> Result<Option<Bytes>, CrdtError> {
        let Message::Awareness(update) = contain("yrs decode", || Message::decode_v1(payload))?
            .map_err(|e| CrdtError::MalformedMessage(e.to_string()))?
        else {
            return Err(CrdtError::MalformedMessage(
                "not an awareness message".into(),
            ));
        };
        let mut relayed = HashMap::new();
        for (id, entry) in update.clients {
            let key = id.get();
            let removal = &*entry.json == "null";
            let kept = self.awareness.get(&key);
            if let Some(s) = kept {
                if !(entry.clock > s.clock || (entry.clock == s.clock && removal)) {
                    continue; // not newer than what is kept: not news
                }
            } else if removal {
                continue;
            }
            let owners_full = |o: &(ShardId, ConnId)| {
                self.owned.get(o).copied().unwrap_or(0) >= limits.max_per_connection
            };
            let refused = match kept {
                // Another connection's (or node's) client, still renewing its state.
                Some(s)
                    if s.owner != owner
                        && now.saturating_duration_since(s.updated) < AWARENESS_TAKEOVER =>
                {
                    Some("foreign")
                }
                None if self.awareness.len() >= limits.max_states => Some("room_full"),
                Some(s) if s.owner == owner => None,
                _ if !removal && owner.as_ref().is_some_and(owners_full) => Some("per_connection"),
                _ => None,
            };
            let refused = refused.or((entry.json.len() > limits.max_state_bytes).then_some("size"));
            if let Some(reason) = refused {
                crate::metrics::awareness_refused(reason);
                continue;
            }
            let previous = if removal {
                self.awareness.remove(&key)
            } else {
                let state = AwarenessState {
                    clock: entry.clock,
                    json: entry.json.clone(),
                    owner,
                    updated: now,
                };
                if let Some(o) = owner {
                    *self.owned.entry(o).or_default() += 1;
                }
                self.awareness.insert(key, state)
            };
            if let Some(o) = previous.and_then(|p| p.owner) {
                self.disown(o);
            }
            relayed.insert(id, entry);
        }
        Ok((!relayed.is_empty())
            .then(|| message(&Message::Awareness(AwarenessUpdate { clients: relayed }))))
    }

    fn disown(&mut self, owner: (ShardId, ConnId)) {
        if let Some(n) = self.owned.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.owned.remove(&owner);
            }
        }
    }

    /// A connection left: its clients' awareness states are removed; returns the removal
    /// message to relay (`None` if it had none).
    pub fn remove_owner(&mut self, owner: (ShardId, ConnId)) -> Option<Bytes> {
        self.owned.remove(&owner)?;
        let gone: Vec<(u64, u32)> = self
            .awareness
            .iter()
            .filter(|(_, s)| s.owner == Some(owner))
            .map(|(id, s)| (*id, s.clock))
            .collect();
        let mut clients = HashMap::new();
        for (id, clock) in gone {
            self.awareness.remove(&id);
            clients.insert(
                ClientID::new(id),
                AwarenessUpdateEntry {
                    clock: clock.saturating_add(1),
                    json: "null".into(),
                },
            );
        }
        Some(message(&Message::Awareness(AwarenessUpdate { clients })))
    }

    /// Drops other nodes' awareness states not renewed within `ttl` (clients renew theirs every
    /// 15 s; a node that died cannot send their removal).
    pub fn expire_awareness(&mut self, now: Instant, ttl: std::time::Duration) {
        self.awareness
            .retain(|_, s| s.owner.is_some() || now.saturating_duration_since(s.updated) < ttl);
    }
}

/// The collaborative rooms a shard is home to and has a document loaded for.
#[derive(Debug, Default)]
pub struct CrdtRooms {
    /// By room.
    pub rooms: HashMap<RoomName, CrdtRoom>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Map, Text};

    fn edit(doc: &Doc, at: u32, s: &str) -> Bytes {
        let text = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, at, s);
        Bytes::from(txn.encode_update_v1())
    }

    /// Finding 1 of issue 19: this update made yrs 0.28.1 underflow and index out of bounds.
    pub(crate) const POISON_HEX: &str = "0101acdcdaa5b1d8b306fba185e9a9859c97820b000202acdcdaa5b1d8b30601000285e9a9859c9782730200050d01";

    fn unhex(hex: &str) -> Bytes {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    const LIMITS: AwarenessLimits = AwarenessLimits {
        max_states: 3,
        max_state_bytes: 20,
        max_per_connection: 2,
    };

    #[test]
    fn an_update_the_engine_fails_on_is_refused_and_the_document_flagged() {
        let a = Doc::with_client_id(1);
        let mut room = CrdtRoom::new();
        room.ready();
        room.accept(&edit(&a, 0, "kept"), 1 << 20).unwrap();
        let err = room.accept(&unhex(POISON_HEX), 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                CrdtError::EngineFailed(_) | CrdtError::MalformedUpdate(_)
            ),
            "{err:?}"
        );
        if matches!(err, CrdtError::EngineFailed(_)) {
            assert!(room.poisoned);
        }
    }

    /// A document already waiting for missing structs takes further updates without a trial
    /// encoding (`accept`); one of them can leave it unable to encode. The first failed
    /// encoding (a snapshot, a sync) flags it, and loading it again from its stored updates
    /// drops the one it cannot be encoded after.
    #[test]
    fn a_document_that_cannot_be_encoded_is_flagged_and_loads_again_without_the_cause() {
        let a = Doc::with_client_id(1);
        let kept = edit(&a, 0, "kept");
        // Client 2's second edit without its first: waits for it.
        let b = Doc::with_client_id(2);
        let _first = edit(&b, 0, "x");
        let pending = edit(&b, 1, "y");
        let cause = Bytes::from_static(include_bytes!(
            "../../fuzz/regressions/yrs_update/encode-state-panics-outside-contain"
        ));
        let mut room = CrdtRoom::new();
        room.ready();
        room.accept(&kept, 1 << 20).unwrap();
        room.accept(&pending, 1 << 20).unwrap();
        assert!(room.doc.transact().has_missing_updates());
        // Not tried: a pending state lasts.
        room.accept(&cause, 1 << 20).unwrap();
        assert!(!room.poisoned);
        assert!(room
            .answer_sync(&StateVector::default().encode_v1())
            .is_err());
        assert!(
            room.poisoned,
            "a sync that cannot be answered flags the document"
        );
        room.poisoned = false;
        assert!(room.snapshot_state().is_err());
        assert!(
            room.poisoned,
            "a snapshot that cannot be taken flags the document"
        );

        let mut loaded = CrdtRoom::new();
        for u in [&kept, &pending, &cause] {
            let _ = loaded.apply(u);
        }
        assert!(loaded.ready(), "a stored update is dropped");
        assert_eq!(text_of(&loaded.encode_state().unwrap()), "kept");
        assert!(loaded
            .answer_sync(&StateVector::default().encode_v1())
            .is_ok());
        assert!(!loaded.poisoned);
    }

    /// Issue 19 (F6): yrs held a strong reference from a sub-document's item to the document it
    /// is in, so such a document owned itself and was never freed (found by LeakSanitizer in
    /// the `yrs_update` fuzz target). Patched in `vendor/yrs` (`WeakDoc`).
    #[test]
    fn a_document_holding_a_sub_document_is_freed() {
        let doc = Doc::new();
        let map = doc.get_or_insert_map("map");
        map.insert(&mut doc.transact_mut(), "sub", Doc::new());
        let weak = doc.downgrade();
        drop(doc);
        assert!(
            weak.upgrade().is_none(),
            "the document outlived its last handle"
        );

        // The same from the fuzzer's input, merged into a room's document and encoded.
        let input = Bytes::from_static(include_bytes!(
            "../../fuzz/regressions/yrs_update/leak-a-subdocument-owns-its-document"
        ));
        let mut room = CrdtRoom::new();
        let _ = room.apply(&input);
        room.ready();
        let _ = room.encode_state();
        let weak = room.doc.downgrade();
        drop(room);
        assert!(
            weak.upgrade().is_none(),
            "the room's document outlived the room"
        );
    }

    #[test]
    fn while_loading_an_update_the_engine_fails_on_is_skipped_and_the_rest_kept() {
        let a = Doc::with_client_id(1);
        let first = edit(&a, 0, "ab");
        let second = edit(&a, 2, "cd");
        let mut room = CrdtRoom::new();
        room.apply(&first).unwrap();
        assert!(room.apply(&unhex(POISON_HEX)).is_err());
        room.apply(&second).unwrap();
        room.ready();
        assert!(!room.poisoned);
        assert_eq!(text_of(&room.encode_state().unwrap()), "abcd");
    }

    fn text_of(update: &[u8]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
        let s = text.get_string(&doc.transact());
        s
    }

    #[test]
    fn concurrent_edits_merge_and_a_joiner_gets_only_what_it_lacks() {
        let (a, b) = (Doc::with_client_id(1), Doc::with_client_id(2));
        let ua = edit(&a, 0, "hello");
        let ub = edit(&b, 0, "world");
        let mut room = CrdtRoom::new();
        room.accept(&ua, 1 << 20).unwrap();
        room.accept(&ub, 1 << 20).unwrap();
        // Twice, in another order: nothing changes.
        room.apply(&ub).unwrap();
        room.apply(&ua).unwrap();
        let full = text_of(&room.encode_state().unwrap());
        assert_eq!(full.len(), 10);
        // A joiner that already has a's edit gets b's only.
        let sv = a.transact().state_vector().encode_v1();
        let frames = room.answer_sync(&sv).unwrap();
        assert_eq!(frames.len(), 2, "step 2 and step 1, no awareness yet");
        let payload = &frames[0][2..];
        let Message::Sync(SyncMessage::SyncStep2(diff)) = Message::decode_v1(payload).unwrap()
        else {
            panic!("not step 2")
        };
        a.transact_mut()
            .apply_update(Update::decode_v1(&diff).unwrap())
            .unwrap();
        assert_eq!(a.get_or_insert_text("text").get_string(&a.transact()), full);
        assert!(diff.len() < room.encode_state().unwrap().len());
    }

    #[test]
    fn malformed_updates_and_the_size_limit_are_refused_unapplied() {
        let mut room = CrdtRoom::new();
        assert!(matches!(
            room.accept(&Bytes::from_static(&[255, 255, 255, 255, 255]), 1 << 20),
            Err(CrdtError::MalformedUpdate(_))
        ));
        assert!(matches!(
            room.accept(&Bytes::from_static(&[255, 255, 255]), 1 << 20),
            Err(CrdtError::MalformedUpdate(_))
        ));
        assert!(matches!(
            decode_client_message(&[0, 2, 5, 255, 255, 255, 255, 255]),
            Err(CrdtError::MalformedUpdate(_))
        ));
        let a = Doc::with_client_id(1);
        let big = edit(&a, 0, &"x".repeat(1000));
        assert_eq!(room.accept(&big, 500), Err(CrdtError::DocumentTooLarge));
        assert_eq!(text_of(&room.encode_state().unwrap()), "");
        room.accept(&big, 5000).unwrap();
        assert_eq!(text_of(&room.encode_state().unwrap()).len(), 1000);
    }

    fn awareness_msg(entries: &[(u64, u32, &str)]) -> Vec<u8> {
        let clients = entries
            .iter()
            .map(|(id, clock, json)| {
                (
                    ClientID::new(*id),
                    AwarenessUpdateEntry {
                        clock: *clock,
                        json: (*json).into(),
                    },
                )
            })
            .collect();
        Message::Awareness(AwarenessUpdate { clients }).encode_v1()
    }

    fn states_of(frames: &[Bytes]) -> HashMap<u64, (u32, String)> {
        let mut all = HashMap::new();
        for f in frames {
            // A frame (`awareness_frames`) or a message (`awareness_update`, `remove_owner`).
            let payload = proto_codec::sse::payload_of(f, 0x82).unwrap_or(f);
            let Message::Awareness(u) = Message::decode_v1(payload).unwrap() else {
                panic!("not awareness")
            };
            for (id, e) in u.clients {
                all.insert(id.get(), (e.clock, e.json.to_string()));
            }
        }
        all
    }

    #[test]
    fn awareness_is_kept_newest_first_and_removed_with_its_connection() {
        let mut room = CrdtRoom::new();
        let now = Instant::now();
        let up = |room: &mut CrdtRoom, e: &[(u64, u32, &str)], owner| {
            room.awareness_update(&awareness_msg(e), owner, now, LIMITS)
                .unwrap()
        };
        assert!(up(&mut room, &[(7, 1, "{\"u\":1}")], Some((0, 1))).is_some());
        assert!(up(&mut room, &[(7, 0, "{\"u\":0}")], Some((0, 1))).is_none());
        assert!(up(&mut room, &[(8, 3, "{\"v\":3}")], None).is_some());
        let all = states_of(&room.awareness_frames());
        assert_eq!(all.len(), 2);
        assert_eq!(all[&7].1, "{\"u\":1}");
        let removal = room.remove_owner((0, 1)).unwrap();
        assert_eq!(states_of(&[removal])[&7], (2, "null".to_string()));
        room.expire_awareness(
            now + std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(30),
        );
        assert!(room.awareness_frames().is_empty());
    }

    #[test]
    fn a_connection_sets_only_its_own_client_ids_within_the_caps() {
        // Finding 5 of issue 19: one connection named client ids without bound.
        let mut room = CrdtRoom::new();
        let now = Instant::now();
        let (alice, mallory) = (Some((0, 1)), Some((1, 9)));
        let relay = |room: &mut CrdtRoom, e: &[(u64, u32, &str)], owner| {
            room.awareness_update(&awareness_msg(e), owner, now, LIMITS)
                .unwrap()
                .map(|f| states_of(&[f]))
                .unwrap_or_default()
        };
        assert_eq!(relay(&mut room, &[(1, 1, "{}")], alice).len(), 1);
        // Alice's id is not Mallory's to set or to remove, and only what was kept is relayed.
        let relayed = relay(&mut room, &[(1, 9, "{\"evil\":1}"), (2, 1, "{}")], mallory);
        assert_eq!(relayed.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(relay(&mut room, &[(1, 10, "null")], mallory).is_empty());
        // Two ids per connection; a state over 20 bytes is not kept.
        assert!(relay(&mut room, &[(3, 1, "{}")], mallory).len() == 1);
        assert!(relay(&mut room, &[(4, 1, "{}")], mallory).is_empty());
        assert!(relay(&mut room, &[(1, 2, &"x".repeat(21))], alice).is_empty());
        // Three states per room.
        assert!(relay(&mut room, &[(5, 1, "{}")], Some((2, 2))).is_empty());
        assert_eq!(states_of(&room.awareness_frames()).len(), 3);
        // Alice's state, no longer renewed, may be taken over by her new connection.
        let later = now + AWARENESS_TAKEOVER;
        let f = room
            .awareness_update(&awareness_msg(&[(1, 3, "{}")]), Some((0, 7)), later, LIMITS)
            .unwrap();
        assert!(f.is_some());
        assert!(
            room.remove_owner((0, 1)).is_none(),
            "alice's old connection owns nothing"
        );
    }

    #[test]
    fn a_large_awareness_table_is_answered_in_pieces() {
        let mut room = CrdtRoom::new();
        let limits = AwarenessLimits {
            max_states: 1000,
            max_state_bytes: 1000,
            max_per_connection: 1000,
        };
        let json = format!("{{\"name\":\"{}\"}}", "n".repeat(900));
        let entries: Vec<(u64, u32, &str)> = (0..100).map(|i| (i, 1, json.as_str())).collect();
        room.awareness_update(
            &awareness_msg(&entries),
            Some((0, 1)),
            Instant::now(),
            limits,
        )
        .unwrap();
        let frames = room.awareness_frames();
        assert!(frames.len() >= 5, "{} frames", frames.len());
        assert!(frames.iter().all(|f| f.len() < 2 * AWARENESS_CHUNK_BYTES));
        assert_eq!(states_of(&frames).len(), 100);
    }
}
