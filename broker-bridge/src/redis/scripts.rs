//! The Lua scripts that make each room operation one atomic step on Redis, and their answers.
//!
//! Every script touches only the keys of one room (one hash tag), so it runs on one Redis
//! Cluster shard. Times come from Redis' `TIME`, so nodes with skewed clocks agree on expiry.

use bytes::Bytes;
use redis::{Script, Value};

use super::sequencer::{Entry, ReadResult};

/// Publish: the next offset (creating the epoch when the room has none), the stream entry
/// (trimmed to the history size, the key's TTL refreshed) and the echo on the room's channel,
/// in one step, so the stream id is the offset on every node.
///
/// KEYS: meta, stream. ARGV: channel, data, history size, history TTL ms, epoch candidate,
/// meta TTL ms, the publish command (`PUBLISH`, or `SPUBLISH` on a cluster). Returns
/// `{epoch, offset, ms}`.
pub const PUBLISH: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[5]
  redis.call('HSET', KEYS[1], 'e', e, 's', 0)
  redis.call('DEL', KEYS[2])
end
local s = redis.call('HINCRBY', KEYS[1], 's', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], s .. '-0', 'd', ARGV[2], 't', ms)
  if tonumber(ARGV[4]) > 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call(ARGV[7], ARGV[1], 'm' .. e .. '\n' .. s .. '\n' .. ms .. '\n' .. ARGV[2])
return {e, s, ms}
";

/// Read: the room's epoch and last offset (creating the epoch when asked and there is none),
/// Redis' time, and entries: after an offset (`after`), or the newest N (`last`).
///
/// KEYS: meta, stream. ARGV: mode (`after`, `last` or `none`), offset or count, limit, create
/// (`1`/`0`), epoch candidate, meta TTL ms, floor. Returns `{epoch or nil, offset, ms, entries}`.
///
/// `floor` is the last offset a node already delivered in this epoch. A room whose last offset is
/// below it lost acknowledged messages (a failover to a replica that had not received them): its
/// offsets would be handed out twice, so it starts a new epoch (clients resuming from the old one
/// are told `recovered: false`).
pub const READ: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
local s = 0
if not e then
  if ARGV[4] == '1' then
    e = ARGV[5]
    redis.call('HSET', KEYS[1], 'e', e, 's', 0)
    redis.call('PEXPIRE', KEYS[1], ARGV[6])
    redis.call('DEL', KEYS[2])
  else
    e = false
  end
else
  s = tonumber(redis.call('HGET', KEYS[1], 's'))
  if tonumber(ARGV[7]) > s then
    e = ARGV[5]
    s = 0
    redis.call('HSET', KEYS[1], 'e', e, 's', 0)
    redis.call('DEL', KEYS[2])
  end
  if ARGV[4] == '1' and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[6]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[6])
  end
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = {}
if e and s > 0 then
  if ARGV[1] == 'after' and tonumber(ARGV[2]) < s then
    entries = redis.call('XRANGE', KEYS[2], (tonumber(ARGV[2]) + 1) .. '-0', '+', 'COUNT', ARGV[3])
  elseif ARGV[1] == 'last' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
  end
end
return {e, s, ms, entries}
";

/// Presence set: members of this node, each with an expiry that Redis' clock sets; the hash
/// itself expires when no node refreshes it.
///
/// KEYS: presence. ARGV: TTL ms, then client id and member JSON pairs. (The node list,
/// `wire::nodes_key`, is written with it too: node name and info JSON.)
pub const PRESENCE_SET: &str = r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = ms + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], exp .. '|' .. ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Presence get: the members whose entry has not expired; expired entries (a dead node's
/// members) are removed.
///
/// KEYS: presence (or the node list). Returns the members' JSON.
pub const PRESENCE_GET: &str = r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sep = string.find(v, '|', 1, true)
  local exp = sep and tonumber(string.sub(v, 1, sep - 1))
  if exp and exp >= ms then
    table.insert(out, string.sub(v, sep + 1))
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
";

/// Canary probe: a write (so a demoted primary refuses it with READONLY and the link moves on)
/// and the probe on the node's canary channel.
///
/// KEYS: canary key. ARGV: channel, probe, the publish command.
pub const CANARY: &str = r"
redis.call('SET', KEYS[1], ARGV[2], 'PX', 60000)
redis.call(ARGV[3], ARGV[1], ARGV[2])
return 1
";

/// The scripts, hashed once.
pub struct Scripts {
    /// [`PUBLISH`].
    pub publish: Script,
    /// [`READ`].
    pub read: Script,
    /// [`PRESENCE_SET`].
    pub presence_set: Script,
    /// [`PRESENCE_GET`].
    pub presence_get: Script,
    /// [`CANARY`].
    pub canary: Script,
}

impl Scripts {
    /// Hashes every script.
    pub fn new() -> Scripts {
        Scripts {
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            presence_set: Script::new(PRESENCE_SET),
            presence_get: Script::new(PRESENCE_GET),
            canary: Script::new(CANARY),
        }
    }
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts::new()
    }
}

/// Which entries a [`READ`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// None: the room's epoch and last offset only.
    None,
    /// Entries after this offset (at most the read's limit).
    After(u64),
    /// The newest N entries.
    Last(usize),
}

/// Runs [`READ`] on a room (its ARGV in one place): `create` is the meta TTL in ms when the
/// read may create the room's epoch; `floor` as in [`READ`]. Entries come oldest first.
pub async fn read(
    conn: &mut impl redis::aio::ConnectionLike,
    script: &Script,
    keys: &super::wire::RoomKeys,
    mode: ReadMode,
    limit: usize,
    create: Option<u64>,
    floor: u64,
) -> Result<Option<ReadResult>, String> {
    let (name, arg) = match mode {
        ReadMode::None => ("none", 0),
        ReadMode::After(o) => ("after", o),
        ReadMode::Last(n) => ("last", n as u64),
    };
    let v: Value = script
        .key(&keys.meta)
        .key(&keys.stream)
        .arg(name)
        .arg(arg)
        .arg(limit.max(1))
        .arg(if create.is_some() { "1" } else { "0" })
        .arg(crate::embedded::new_epoch().as_ref())
        .arg(create.unwrap_or(1))
        .arg(floor)
        .invoke_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    parse_read(v, matches!(mode, ReadMode::Last(_))).map_err(|e| e.to_string())
}

/// An answer that does not have the shape its script returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected answer from Redis: {0}")]
pub struct BadAnswer(pub &'static str);

/// A publish's answer: the epoch and the offset.
pub fn parse_published(v: Value) -> Result<(String, u64), BadAnswer> {
    let items = array(v)?;
    let epoch = string(items.first())?;
    let offset = int(items.get(1))?;
    Ok((epoch, offset))
}

/// A read's answer; `None` when the room has no epoch (and none was created). `newest_first`
/// for the `last` mode, whose entries come newest first.
pub fn parse_read(v: Value, newest_first: bool) -> Result<Option<ReadResult>, BadAnswer> {
    let mut items = array(v)?.into_iter();
    let epoch = match items.next() {
        Some(Value::Nil) | None => return Ok(None),
        Some(v) => string(Some(&v))?,
    };
    let latest = int(items.next().as_ref())?;
    let now_ms = int(items.next().as_ref())?;
    let mut entries = Vec::new();
    if let Some(list) = items.next() {
        for entry in array(list)? {
            entries.push(parse_entry(entry)?);
        }
    }
    if newest_first {
        entries.reverse();
    }
    Ok(Some(ReadResult {
        epoch: epoch.into(),
        latest,
        now_ms,
        entries,
    }))
}

/// A presence answer: the members' JSON.
pub fn parse_members(v: Value) -> Result<Vec<Bytes>, BadAnswer> {
    array(v)?
        .into_iter()
        .map(|m| match m {
            Value::BulkString(b) => Ok(Bytes::from(b)),
            _ => Err(BadAnswer("member is not a string")),
        })
        .collect()
}

/// One stream entry: `[id, [field, value, ...]]`.
fn parse_entry(v: Value) -> Result<Entry, BadAnswer> {
    let mut parts = array(v)?.into_iter();
    let id = string(parts.next().as_ref())?;
    let offset = id
        .split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(BadAnswer("stream id"))?;
    let mut data = None;
    let mut at_ms = 0;
    let fields = array(parts.next().ok_or(BadAnswer("entry fields"))?)?;
    let mut fields = fields.into_iter();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        match (k, v) {
            (Value::BulkString(k), Value::BulkString(v)) if k == b"d" => {
                data = Some(Bytes::from(v))
            }
            (Value::BulkString(k), Value::BulkString(v)) if k == b"t" => {
                at_ms = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(BadAnswer("entry time"))?;
            }
            _ => {}
        }
    }
    Ok(Entry {
        offset,
        at_ms,
        data: data.ok_or(BadAnswer("entry data"))?,
    })
}

fn array(v: Value) -> Result<Vec<Value>, BadAnswer> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        _ => Err(BadAnswer("not an array")),
    }
}

fn string(v: Option<&Value>) -> Result<String, BadAnswer> {
    match v {
        Some(Value::BulkString(b)) => {
            String::from_utf8(b.clone()).map_err(|_| BadAnswer("not UTF-8"))
        }
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        _ => Err(BadAnswer("not a string")),
    }
}

fn int(v: Option<&Value>) -> Result<u64, BadAnswer> {
    match v {
        Some(Value::Int(n)) => u64::try_from(*n).map_err(|_| BadAnswer("negative")),
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BadAnswer("not a number")),
        _ => Err(BadAnswer("not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn read_answers_parse() {
        let v = Value::Array(vec![
            bulk("ep"),
            Value::Int(7),
            Value::Int(1_764_090_000_000),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("6-0"),
                    Value::Array(vec![
                        bulk("d"),
                        bulk("{}"),
                        bulk("t"),
                        bulk("1764089999000"),
                    ]),
                ]),
                Value::Array(vec![
                    bulk("7-0"),
                    Value::Array(vec![
                        bulk("d"),
                        bulk("[1]"),
                        bulk("t"),
                        bulk("1764089999500"),
                    ]),
                ]),
            ]),
        ]);
        let r = parse_read(v.clone(), false).unwrap().unwrap();
        assert_eq!((r.epoch.as_ref(), r.latest), ("ep", 7));
        assert_eq!(
            r.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [6, 7]
        );
        assert_eq!(r.entries[1].data, Bytes::from_static(b"[1]"));
        assert_eq!(r.entries[0].at_ms, 1_764_089_999_000);
        let newest_first = parse_read(v, true).unwrap().unwrap();
        assert_eq!(newest_first.entries[0].offset, 7);
        let none = Value::Array(vec![
            Value::Nil,
            Value::Int(0),
            Value::Int(1),
            Value::Array(vec![]),
        ]);
        assert_eq!(parse_read(none, false).unwrap(), None);
    }

    #[test]
    fn bad_answers_are_errors_not_panics() {
        for v in [
            Value::Nil,
            Value::Array(vec![bulk("e")]),
            Value::Array(vec![bulk("e"), Value::Int(-1), Value::Int(1)]),
            Value::Array(vec![
                bulk("e"),
                Value::Int(1),
                Value::Int(1),
                Value::Array(vec![Value::Array(vec![bulk("x-0"), Value::Array(vec![])])]),
            ]),
            Value::Array(vec![
                bulk("e"),
                Value::Int(1),
                Value::Int(1),
                Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Array(vec![])])]),
            ]),
        ] {
            assert!(parse_read(v, false).is_err());
        }
        assert!(parse_published(Value::Okay).is_err());
        assert!(parse_members(Value::Array(vec![Value::Int(1)])).is_err());
        assert_eq!(
            parse_published(Value::Array(vec![bulk("e"), Value::Int(3), Value::Int(9)])).unwrap(),
            ("e".to_string(), 3)
        );
    }
}
