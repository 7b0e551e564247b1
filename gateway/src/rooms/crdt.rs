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

use crate::mailbox::{ConnId, ShardId};

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

/// Decodes a client's binary message.
pub fn decode_client_message(payload: &[u8]) -> Result<ClientMessage, CrdtError> {
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

/// Checks that bytes are a Yjs update (without applying them anywhere).
pub fn check_update(update: &[u8]) -> Result<(), CrdtError> {
    Update::decode_v1(update)
        .map(|_| ())
        .map_err(|e| CrdtError::MalformedUpdate(e.to_string()))
}

/// A y-protocols message as one binary WebSocket frame.
fn frame(msg: &Message) -> Bytes {
    encode_frame(OpCode::Binary, false, &msg.encode_v1())
}

/// The frame that carries a room update to y-websocket clients (sync `update`).
pub fn update_frame(update: &[u8]) -> Bytes {
    frame(&Message::Sync(SyncMessage::Update(update.to_vec())))
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

/// A sync step 1 waiting for the document to load.
#[derive(Debug)]
pub struct WaitingSync {
    /// The asking connection.
    pub from: (ShardId, ConnId),
    /// Its state vector.
    pub state_vector: Bytes,
}

/// One collaborative room's document on its home shard.
pub struct CrdtRoom {
    doc: Doc,
    /// Loading state.
    pub load: Load,
    /// Syncs to answer once loaded.
    pub waiting: Vec<WaitingSync>,
    /// The newest stored message merged (the position a snapshot covers).
    pub position: Option<(Epoch, u64)>,
    /// Updates merged since the last snapshot.
    pub unsnapshotted: usize,
    /// When the oldest of them was merged.
    pub dirty_since: Option<Instant>,
    /// The document's size, counted as its last encoded size plus the updates since.
    pub approx_bytes: usize,
    awareness: HashMap<u64, AwarenessState>,
}

impl std::fmt::Debug for CrdtRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdtRoom")
            .field("load", &self.load)
            .field("position", &self.position)
            .field("unsnapshotted", &self.unsnapshotted)
            .field("approx_bytes", &self.approx_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for CrdtRoom {
    fn default() -> CrdtRoom {
        CrdtRoom::new()
    }
}

impl CrdtRoom {
    /// An empty document, loading.
    pub fn new() -> CrdtRoom {
        CrdtRoom {
            doc: Doc::new(),
            load: Load::Snapshot,
            waiting: Vec::new(),
            position: None,
            unsnapshotted: 0,
            dirty_since: None,
            approx_bytes: 0,
            awareness: HashMap::new(),
        }
    }

    /// Merges an update into the document.
    pub fn apply(&mut self, update: &[u8]) -> Result<(), CrdtError> {
        let update =
            Update::decode_v1(update).map_err(|e| CrdtError::MalformedUpdate(e.to_string()))?;
        self.doc
            .transact_mut()
            .apply_update(update)
            .map_err(|e| CrdtError::MalformedUpdate(e.to_string()))
    }

    /// Merges a client's update within the size limit (refused whole, never half-applied).
    pub fn accept(&mut self, update: &[u8], max_bytes: usize) -> Result<(), CrdtError> {
        if self.approx_bytes.saturating_add(update.len()) > max_bytes {
            return Err(CrdtError::DocumentTooLarge);
        }
        self.apply(update)?;
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

    /// The whole document, encoded (a snapshot's state).
    pub fn encode_state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// A snapshot was taken of `size` bytes.
    pub fn snapshotted(&mut self, size: usize) {
        self.unsnapshotted = 0;
        self.dirty_since = None;
        self.approx_bytes = size;
    }

    /// The answer to a client's sync step 1: what it lacks (step 2), the server's own state
    /// vector (step 1, so the client sends what the server lacks), and every awareness state.
    pub fn answer_sync(&self, state_vector: &[u8]) -> Result<Vec<Bytes>, CrdtError> {
        let sv = StateVector::decode_v1(state_vector)
            .map_err(|e| CrdtError::MalformedMessage(e.to_string()))?;
        let txn = self.doc.transact();
        let mut frames = vec![
            frame(&Message::Sync(SyncMessage::SyncStep2(
                txn.encode_state_as_update_v1(&sv),
            ))),
            frame(&Message::Sync(SyncMessage::SyncStep1(txn.state_vector()))),
        ];
        frames.extend(self.awareness_frame());
        Ok(frames)
    }

    /// Every known awareness state as one message (`None` when there is none).
    pub fn awareness_frame(&self) -> Option<Bytes> {
        if self.awareness.is_empty() {
            return None;
        }
        let clients = self
            .awareness
            .iter()
            .map(|(id, s)| {
                (
                    ClientID::new(*id),
                    AwarenessUpdateEntry {
                        clock: s.clock,
                        json: s.json.clone(),
                    },
                )
            })
            .collect();
        Some(frame(&Message::Awareness(AwarenessUpdate { clients })))
    }

    /// Takes in an awareness message (from a client of this node, or relayed from another
    /// node); returns the frame to relay to the room's other clients.
    pub fn awareness_update(
        &mut self,
        payload: &[u8],
        owner: Option<(ShardId, ConnId)>,
        now: Instant,
    ) -> Result<Bytes, CrdtError> {
        let Message::Awareness(update) =
            Message::decode_v1(payload).map_err(|e| CrdtError::MalformedMessage(e.to_string()))?
        else {
            return Err(CrdtError::MalformedMessage(
                "not an awareness message".into(),
            ));
        };
        for (id, entry) in &update.clients {
            let id = id.get();
            let newer = self.awareness.get(&id).is_none_or(|s| {
                entry.clock > s.clock || (entry.clock == s.clock && &*entry.json == "null")
            });
            if !newer {
                continue;
            }
            if &*entry.json == "null" {
                self.awareness.remove(&id);
            } else {
                self.awareness.insert(
                    id,
                    AwarenessState {
                        clock: entry.clock,
                        json: entry.json.clone(),
                        owner,
                        updated: now,
                    },
                );
            }
        }
        Ok(encode_frame(OpCode::Binary, false, payload))
    }

    /// A connection left: its clients' awareness states are removed; returns the removal to
    /// relay (`None` if it had none).
    pub fn remove_owner(&mut self, owner: (ShardId, ConnId)) -> Option<Bytes> {
        let gone: Vec<(u64, u32)> = self
            .awareness
            .iter()
            .filter(|(_, s)| s.owner == Some(owner))
            .map(|(id, s)| (*id, s.clock))
            .collect();
        if gone.is_empty() {
            return None;
        }
        let mut clients = HashMap::new();
        for (id, clock) in gone {
            self.awareness.remove(&id);
            clients.insert(
                ClientID::new(id),
                AwarenessUpdateEntry {
                    clock: clock + 1,
                    json: "null".into(),
                },
            );
        }
        Some(frame(&Message::Awareness(AwarenessUpdate { clients })))
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
    use yrs::{GetString, Text};

    fn edit(doc: &Doc, at: u32, s: &str) -> Vec<u8> {
        let text = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, at, s);
        txn.encode_update_v1()
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
        let full = text_of(&room.encode_state());
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
        assert!(diff.len() < room.encode_state().len());
    }

    #[test]
    fn malformed_updates_and_the_size_limit_are_refused_unapplied() {
        let mut room = CrdtRoom::new();
        assert!(matches!(
            room.accept(&[255, 255, 255, 255, 255], 1 << 20),
            Err(CrdtError::MalformedUpdate(_))
        ));
        assert!(check_update(&[255, 255, 255]).is_err());
        assert!(matches!(
            decode_client_message(&[0, 2, 5, 255, 255, 255, 255, 255]),
            Err(CrdtError::MalformedUpdate(_))
        ));
        let a = Doc::with_client_id(1);
        let big = edit(&a, 0, &"x".repeat(1000));
        assert_eq!(room.accept(&big, 500), Err(CrdtError::DocumentTooLarge));
        assert_eq!(text_of(&room.encode_state()), "");
        room.accept(&big, 5000).unwrap();
        assert_eq!(text_of(&room.encode_state()).len(), 1000);
    }

    #[test]
    fn awareness_is_kept_newest_first_and_removed_with_its_connection() {
        let mut room = CrdtRoom::new();
        let now = Instant::now();
        let msg = |id: u64, clock: u32, json: &str| {
            let mut clients = HashMap::new();
            clients.insert(
                ClientID::new(id),
                AwarenessUpdateEntry {
                    clock,
                    json: json.into(),
                },
            );
            Message::Awareness(AwarenessUpdate { clients }).encode_v1()
        };
        room.awareness_update(&msg(7, 1, "{\"u\":1}"), Some((0, 1)), now)
            .unwrap();
        room.awareness_update(&msg(7, 0, "{\"u\":0}"), Some((0, 1)), now)
            .unwrap();
        room.awareness_update(&msg(8, 3, "{\"v\":3}"), None, now)
            .unwrap();
        let all = room.awareness_frame().unwrap();
        let Message::Awareness(u) = Message::decode_v1(&all[2..]).unwrap() else {
            panic!()
        };
        assert_eq!(u.clients.len(), 2);
        assert_eq!(&*u.clients[&ClientID::new(7)].json, "{\"u\":1}");
        let removal = room.remove_owner((0, 1)).unwrap();
        let Message::Awareness(u) = Message::decode_v1(&removal[2..]).unwrap() else {
            panic!()
        };
        assert_eq!(&*u.clients[&ClientID::new(7)].json, "null");
        assert_eq!(u.clients[&ClientID::new(7)].clock, 2);
        room.expire_awareness(
            now + std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(30),
        );
        assert!(room.awareness_frame().is_none());
    }
}
