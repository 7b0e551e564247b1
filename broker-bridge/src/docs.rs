//! Stored documents of CRDT rooms: a snapshot (the encoded document state) and the updates
//! accepted after it.
//!
//! The embedded broker keeps them with [`DocStore`]: in memory, and in a directory when one is
//! configured (one `<hex room>.snap` file, written whole and renamed into place, and one
//! `<hex room>.log` of length-prefixed updates appended as they are accepted). A snapshot
//! replaces the log it covers. Applying an update twice is harmless for a CRDT, so a crash
//! between the rename and the log's truncation loses nothing and breaks nothing.
//!
//! The Redis broker stores the snapshot under a key and needs no log: its stream holds every
//! update, and [`DocSnapshot::replay_from`] tells the home shard where to read on.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::{Epoch, RoomName};

const MAGIC: &[u8; 4] = b"RCD1";

/// A CRDT room's document as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSnapshot {
    /// The encoded document state (a Yjs v1 update of the whole document); empty if none.
    pub state: Bytes,
    /// Updates accepted after the snapshot (embedded broker).
    pub tail: Vec<Bytes>,
    /// The room position the snapshot covers: every stored message up to it is in `state`. A
    /// broker whose history is the update log (Redis) sets it, and the loader reads the room's
    /// messages after it.
    pub replay_from: Option<(Epoch, u64)>,
}

impl DocSnapshot {
    /// The snapshot's wire form (a Redis value): magic, offset, epoch, state.
    pub fn encode(&self) -> Vec<u8> {
        let (epoch, offset) = self
            .replay_from
            .as_ref()
            .map_or(("", 0), |(e, o)| (e.as_ref(), *o));
        let epoch = &epoch.as_bytes()[..epoch.len().min(255)];
        let mut out = Vec::with_capacity(14 + epoch.len() + self.state.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&offset.to_be_bytes());
        out.push(epoch.len() as u8);
        out.extend_from_slice(epoch);
        out.extend_from_slice(&self.state);
        out
    }

    /// Reads the wire form; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<DocSnapshot> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (offset, rest) = rest.split_first_chunk::<8>()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if rest.len() < len {
            return None;
        }
        let (epoch, state) = rest.split_at(len);
        let epoch = std::str::from_utf8(epoch).ok()?;
        Some(DocSnapshot {
            state: Bytes::copy_from_slice(state),
            tail: Vec::new(),
            replay_from: (!epoch.is_empty()).then(|| (epoch.into(), u64::from_be_bytes(*offset))),
        })
    }
}

#[derive(Debug, Default)]
struct Stored {
    state: Bytes,
    tail: Vec<Bytes>,
    log: Option<File>,
}

/// Snapshots and update logs of the rooms one shard is home to, in memory and optionally in a
/// directory (which survives restarts).
#[derive(Debug, Default)]
pub struct DocStore {
    dir: Option<PathBuf>,
    rooms: HashMap<RoomName, Stored>,
}

/// A room's file name stem: its bytes in hex (room names allow `/`).
fn stem(room: &str) -> String {
    room.bytes().map(|b| format!("{b:02x}")).collect()
}

impl DocStore {
    /// A store; with `dir`, documents persist there.
    pub fn new(dir: Option<PathBuf>) -> DocStore {
        DocStore {
            dir,
            rooms: HashMap::new(),
        }
    }

    fn paths(&self, room: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.as_ref()?;
        let stem = stem(room);
        Some((
            dir.join(format!("{stem}.snap")),
            dir.join(format!("{stem}.log")),
        ))
    }

    /// The room's stored document, read from the directory the first time.
    fn entry(&mut self, room: &RoomName) -> std::io::Result<&mut Stored> {
        if !self.rooms.contains_key(room) {
            let mut stored = Stored::default();
            if let Some((snap, log)) = self.paths(room) {
                stored.state = match std::fs::read(&snap) {
                    Ok(b) => Bytes::from(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Bytes::new(),
                    Err(e) => return Err(e),
                };
                stored.tail = read_log(&log)?;
            }
            self.rooms.insert(room.clone(), stored);
        }
        self.rooms
            .get_mut(room)
            .ok_or_else(|| std::io::Error::other("room vanished"))
    }

    /// The stored document (`None` if the room has none).
    pub fn load(&mut self, room: &RoomName) -> std::io::Result<Option<DocSnapshot>> {
        let s = self.entry(room)?;
        if s.state.is_empty() && s.tail.is_empty() {
            return Ok(None);
        }
        Ok(Some(DocSnapshot {
            state: s.state.clone(),
            tail: s.tail.clone(),
            replay_from: None,
        }))
    }

    /// Appends an accepted update.
    pub fn append(&mut self, room: &RoomName, update: &[u8]) -> std::io::Result<()> {
        let paths = self.paths(room);
        let stored = self.entry(room)?;
        stored.tail.push(Bytes::copy_from_slice(update));
        let Some((_, log)) = paths else {
            return Ok(());
        };
        if stored.log.is_none() {
            stored.log = Some(OpenOptions::new().create(true).append(true).open(log)?);
        }
        if let Some(f) = stored.log.as_mut() {
            let mut record = Vec::with_capacity(4 + update.len());
            record.extend_from_slice(&(update.len() as u32).to_be_bytes());
            record.extend_from_slice(update);
            f.write_all(&record)?;
        }
        Ok(())
    }

    /// Replaces the room's snapshot and empties its log.
    pub fn store(&mut self, room: &RoomName, state: Bytes) -> std::io::Result<()> {
        let paths = self.paths(room);
        let stored = self.entry(room)?;
        stored.state = state.clone();
        stored.tail.clear();
        let Some((snap, log)) = paths else {
            return Ok(());
        };
        let tmp = snap.with_extension("snap.tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&state)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &snap)?;
        stored.log = None;
        File::create(log)?;
        Ok(())
    }

    /// Forgets a room's in-memory copy when it is on disk (it is read again on the next load).
    pub fn release(&mut self, room: &str) {
        if self.dir.is_some() {
            self.rooms.remove(room);
        }
    }
}

/// The records of a log; a record cut short by a crash ends it.
fn read_log(path: &Path) -> std::io::Result<Vec<Bytes>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            break;
        }
        out.push(Bytes::copy_from_slice(&tail[..len]));
        rest = &tail[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_wire_form_round_trips() {
        let s = DocSnapshot {
            state: Bytes::from_static(b"\x01\x02state"),
            tail: Vec::new(),
            replay_from: Some(("abcd".into(), 42)),
        };
        assert_eq!(DocSnapshot::decode(&s.encode()), Some(s));
        assert_eq!(DocSnapshot::decode(b"nope"), None);
        assert_eq!(DocSnapshot::decode(b"RCD1\x00"), None);
    }

    #[test]
    fn directory_store_survives_a_new_store_and_compacts() {
        let dir = std::env::temp_dir().join(format!("ringcast-docs-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let room: RoomName = "docs.a/b".into();
        let mut a = DocStore::new(Some(dir.clone()));
        assert_eq!(a.load(&room).unwrap(), None);
        a.append(&room, b"u1").unwrap();
        a.append(&room, b"u2").unwrap();
        // A second store (a restarted node) reads the log.
        let mut b = DocStore::new(Some(dir.clone()));
        let loaded = b.load(&room).unwrap().unwrap();
        assert_eq!(loaded.tail, vec![Bytes::from("u1"), Bytes::from("u2")]);
        assert!(loaded.state.is_empty());
        // A snapshot replaces the log; appends after it are kept.
        b.store(&room, Bytes::from("S")).unwrap();
        b.append(&room, b"u3").unwrap();
        // A torn last record (a crash mid-write) is ignored.
        let log = dir.join(format!("{}.log", stem("docs.a/b")));
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[0, 0, 0, 9, b'x']).unwrap();
        let mut c = DocStore::new(Some(dir.clone()));
        let loaded = c.load(&room).unwrap().unwrap();
        assert_eq!(
            (loaded.state, loaded.tail),
            (Bytes::from("S"), vec![Bytes::from("u3")])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_store_keeps_documents_for_the_process() {
        let room: RoomName = "docs.x".into();
        let mut m = DocStore::new(None);
        m.append(&room, b"u1").unwrap();
        m.release(&room);
        assert_eq!(
            m.load(&room).unwrap().unwrap().tail,
            vec![Bytes::from("u1")]
        );
        m.store(&room, Bytes::from("S")).unwrap();
        let loaded = m.load(&room).unwrap().unwrap();
        assert_eq!((loaded.state, loaded.tail.len()), (Bytes::from("S"), 0));
    }
}
