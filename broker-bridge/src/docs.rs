//! Stored documents of CRDT rooms: a snapshot (the encoded document state) and the updates
//! accepted after it.
//!
//! The embedded broker keeps them with [`DocStore`]: in memory, and in a directory when one is
//! configured (one `<stem>.snap` file, written whole and renamed into place, and one
//! `<stem>.log` of length-prefixed updates appended as they are accepted). A snapshot
//! replaces the log it covers. The stem is the SHA-256 of the room name in hex (64 bytes,
//! whatever the room's length: a hex-encoded name passed `NAME_MAX` past 127 bytes), and each
//! file starts with the room's name, so an operator can tell which room a file holds and a
//! load never takes another room's file. Files of the earlier form (the name's bytes in hex,
//! no header) are read and rewritten in this form on first use. Applying an update twice is harmless for a CRDT, so a crash
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

/// A room's file name stem: the SHA-256 of its name, in hex (fixed length; names allow `/`).
fn stem(room: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(room.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stem of the earlier form: the room's bytes in hex.
fn legacy_stem(room: &str) -> String {
    room.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The header a snapshot file starts with: magic, then the room's name, length-prefixed.
const SNAP_MAGIC: &[u8; 4] = b"RCS1";
/// The first record of a log file: magic, then the room's name.
const LOG_MAGIC: &[u8; 4] = b"RCL1";

fn snapshot_file(room: &str, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + room.len() + state.len());
    out.extend_from_slice(SNAP_MAGIC);
    out.extend_from_slice(&(room.len() as u32).to_be_bytes());
    out.extend_from_slice(room.as_bytes());
    out.extend_from_slice(state);
    out
}

/// The state in a snapshot file of `room` (`None`: not a snapshot of that room).
fn parse_snapshot_file<'a>(room: &str, file: &'a [u8]) -> Option<&'a [u8]> {
    let rest = file.strip_prefix(SNAP_MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let (name, state) = rest.split_at_checked(len)?;
    (name == room.as_bytes()).then_some(state)
}

fn record(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The first record of a room's log (its payload: magic and name).
fn log_header(room: &str) -> Vec<u8> {
    [LOG_MAGIC.as_slice(), room.as_bytes()].concat()
}

fn io_error(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
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

    /// Reads a room's files: the snapshot's state and the log's updates.
    fn read_files(&self, room: &str) -> std::io::Result<(Bytes, Vec<Bytes>)> {
        let Some((snap, log)) = self.paths(room) else {
            return Ok((Bytes::new(), Vec::new()));
        };
        let state = match read_optional(&snap)? {
            Some(file) => {
                Bytes::copy_from_slice(parse_snapshot_file(room, &file).ok_or_else(|| {
                    io_error(format!("{} is not the snapshot of {room}", snap.display()))
                })?)
            }
            None => Bytes::new(),
        };
        let mut tail = read_log(&log)?;
        if !tail.is_empty() {
            if tail[0] != log_header(room) {
                return Err(io_error(format!(
                    "{} is not the log of {room}",
                    log.display()
                )));
            }
            tail.remove(0);
        }
        Ok((state, tail))
    }

    /// Moves a room's files of the earlier form (hex stem, no header) to the current form.
    fn migrate_legacy(&self, room: &str) -> std::io::Result<()> {
        let (Some(dir), Some((snap, log))) = (self.dir.as_ref(), self.paths(room)) else {
            return Ok(());
        };
        let legacy = legacy_stem(room);
        // A legacy stem too long for a file name was never written.
        if legacy.len() + ".snap".len() > 255 || snap.exists() || log.exists() {
            return Ok(());
        }
        let (old_snap, old_log) = (
            dir.join(format!("{legacy}.snap")),
            dir.join(format!("{legacy}.log")),
        );
        let state = read_optional(&old_snap)?;
        let tail = read_log(&old_log)?;
        if state.is_none() && tail.is_empty() {
            return Ok(());
        }
        write_atomically(
            &snap,
            &snapshot_file(room, state.as_deref().unwrap_or_default()),
        )?;
        let mut records = record(&log_header(room));
        for u in &tail {
            records.extend_from_slice(&record(u));
        }
        write_atomically(&log, &records)?;
        for old in [old_snap, old_log] {
            match std::fs::remove_file(&old) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The room's stored document, read from the directory the first time.
    fn entry(&mut self, room: &RoomName) -> std::io::Result<&mut Stored> {
        if !self.rooms.contains_key(room) {
            self.migrate_legacy(room)?;
            let (state, tail) = self.read_files(room)?;
            self.rooms.insert(
                room.clone(),
                Stored {
                    state,
                    tail,
                    log: None,
                },
            );
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
            let mut f = OpenOptions::new().create(true).append(true).open(log)?;
            if f.metadata()?.len() == 0 {
                f.write_all(&record(&log_header(room)))?;
            }
            stored.log = Some(f);
        }
        if let Some(f) = stored.log.as_mut() {
            f.write_all(&record(update))?;
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
        write_atomically(&snap, &snapshot_file(room, &state))?;
        stored.log = None;
        File::create(log)?.write_all(&record(&log_header(room)))?;
        Ok(())
    }

    /// Forgets a room's in-memory copy when it is on disk (it is read again on the next load).
    pub fn release(&mut self, room: &str) {
        if self.dir.is_some() {
            self.rooms.remove(room);
        }
    }
}

/// A file's bytes (`None` if there is no such file).
fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a file whole: to a temporary file, synced, then renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// The records of a log; a record cut short by a crash ends it.
fn read_log(path: &Path) -> std::io::Result<Vec<Bytes>> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(Vec::new());
    };
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
        assert_eq!(stem("docs.a/b").len(), 64);
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
    fn a_long_room_name_is_stored_and_files_of_the_earlier_form_are_migrated() {
        // Finding 10 of issue 19: a hex stem of a 200-byte name is past NAME_MAX.
        let dir = std::env::temp_dir().join(format!("ringcast-docs-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let long: RoomName = format!("docs.{}", "n".repeat(200)).as_str().into();
        let mut a = DocStore::new(Some(dir.clone()));
        a.append(&long, b"u1").unwrap();
        a.store(&long, Bytes::from("S")).unwrap();
        a.append(&long, b"u2").unwrap();
        let loaded = DocStore::new(Some(dir.clone()))
            .load(&long)
            .unwrap()
            .unwrap();
        assert_eq!(
            (loaded.state, loaded.tail),
            (Bytes::from("S"), vec![Bytes::from("u2")])
        );
        // The earlier form: hex stem, no headers.
        let old: RoomName = "docs.old".into();
        let legacy = legacy_stem(&old);
        std::fs::write(dir.join(format!("{legacy}.snap")), b"OLDSTATE").unwrap();
        std::fs::write(dir.join(format!("{legacy}.log")), record(b"u9")).unwrap();
        let mut b = DocStore::new(Some(dir.clone()));
        let loaded = b.load(&old).unwrap().unwrap();
        assert_eq!(
            (loaded.state, loaded.tail),
            (Bytes::from("OLDSTATE"), vec![Bytes::from("u9")])
        );
        assert!(!dir.join(format!("{legacy}.snap")).exists());
        // A file of another room under a room's stem is refused, not taken.
        let (snap, _) = b.paths("docs.other").unwrap();
        std::fs::write(&snap, snapshot_file("docs.old", b"x")).unwrap();
        assert!(b.load(&"docs.other".into()).is_err());
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
