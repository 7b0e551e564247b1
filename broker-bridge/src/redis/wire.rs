//! Names and payloads on Redis: the keys and channel of a room, and what travels on the channel.
//!
//! Every key of a room carries the room in a hash tag (`{room}`), so in a Redis Cluster a room's
//! meta hash, stream, presence hash and sharded channel all live on one shard:
//!
//! | name | type | holds |
//! |---|---|---|
//! | `<prefix>:{<room>}` | sharded channel | room messages and live events |
//! | `<prefix>:{<room>}:m` | hash | `e` the epoch, `s` the last offset |
//! | `<prefix>:{<room>}:s` | stream | the history, entry id `<offset>-0`, fields `d` data, `t` ms |
//! | `<prefix>:{<room>}:p` | hash | presence: client id → `<expiry ms>|<member JSON>` |
//! | `<prefix>:{<room>}:d` | string | a CRDT room's document snapshot (`DocSnapshot::encode`) |
//!
//! A room message on the channel is `m<epoch>\n<offset>\n<unix ms>\n<data>`; a live event is
//! `l<node instance>\n<event JSON>`. A node's canary is the room-like name `~canary/<instance>`
//! (no app room contains `~`): its channel carries `c<seq>`, its key `:c` the last probe.

use bytes::Bytes;

use crate::LiveEvent;

/// The Redis names of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    /// The sharded channel.
    pub channel: String,
    /// The meta hash (epoch, last offset).
    pub meta: String,
    /// The history stream.
    pub stream: String,
    /// The presence hash.
    pub presence: String,
    /// The CRDT document snapshot (`crdt` namespaces).
    pub doc: String,
}

impl RoomKeys {
    /// The names of `room` under `prefix`.
    pub fn new(prefix: &str, room: &str) -> RoomKeys {
        let channel = format!("{prefix}:{{{room}}}");
        RoomKeys {
            meta: format!("{channel}:m"),
            stream: format!("{channel}:s"),
            presence: format!("{channel}:p"),
            doc: format!("{channel}:d"),
            channel,
        }
    }
}

/// The room a channel name belongs to, if it is a room channel under `prefix`.
pub fn room_of_channel<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')
}

/// The canary's names for a node instance: (channel, key), in one hash slot.
pub fn canary_names(prefix: &str, instance: &str) -> (String, String) {
    let channel = format!("{prefix}:{{~canary/{instance}}}");
    let key = format!("{channel}:c");
    (channel, key)
}

/// The hash where every node announces itself (field: node name, value: `<expiry ms>|<info
/// JSON>`, as presence entries), under one hash tag so it lives on one Redis Cluster shard. `~`
/// never appears in a room name, so it cannot meet a room's keys.
pub fn nodes_key(prefix: &str) -> String {
    format!("{prefix}:{{~nodes}}")
}

/// What arrived on a room channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMsg {
    /// A stored room message.
    Message {
        /// The room's epoch.
        epoch: String,
        /// Its offset.
        offset: u64,
        /// When Redis stored it (Unix ms, Redis' clock).
        at_ms: u64,
        /// The published data.
        data: Bytes,
    },
    /// A live event from a node.
    Live {
        /// The sending node's instance id.
        instance: String,
        /// The event.
        event: LiveEvent,
    },
}

/// Why a channel payload was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed channel payload: {0}")]
pub struct Malformed(&'static str);

/// Parses a channel payload (zero-copy: `data` and `payload` share `raw`).
pub fn parse(raw: Bytes) -> Result<ChannelMsg, Malformed> {
    let (kind, rest) = raw.split_first().ok_or(Malformed("empty"))?;
    match kind {
        b'm' => {
            let mut fields = rest.splitn(4, |b| *b == b'\n');
            let epoch = fields.next().ok_or(Malformed("no epoch"))?;
            let offset = number(fields.next())?;
            let at_ms = number(fields.next())?;
            let data = fields.next().ok_or(Malformed("no data"))?;
            let epoch = std::str::from_utf8(epoch)
                .map_err(|_| Malformed("epoch is not UTF-8"))?
                .to_string();
            let start = raw.len() - data.len();
            Ok(ChannelMsg::Message {
                epoch,
                offset,
                at_ms,
                data: raw.slice(start..),
            })
        }
        kind @ (b'l' | b'a') => {
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or(Malformed("no instance"))?;
            let instance = std::str::from_utf8(&rest[..nl])
                .map_err(|_| Malformed("instance is not UTF-8"))?
                .to_string();
            let payload = raw.slice(2 + nl..);
            Ok(ChannelMsg::Live {
                instance,
                event: if *kind == b'l' {
                    LiveEvent::App(payload)
                } else {
                    LiveEvent::Awareness(payload)
                },
            })
        }
        _ => Err(Malformed("unknown kind")),
    }
}

/// A live event's channel payload: `l` (an app event) or `a` (an awareness message), the
/// sending instance, a newline, the event's bytes.
pub fn live_payload(instance: &str, event: &LiveEvent) -> Vec<u8> {
    let (kind, payload) = match event {
        LiveEvent::App(p) => (b'l', p),
        LiveEvent::Awareness(p) => (b'a', p),
    };
    let mut out = Vec::with_capacity(2 + instance.len() + payload.len());
    out.push(kind);
    out.extend_from_slice(instance.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// A decimal field; Lua prints whole numbers up to 14 digits without an exponent.
fn number(field: Option<&[u8]>) -> Result<u64, Malformed> {
    let field = field.ok_or(Malformed("missing number"))?;
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed("bad number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_room_hash_tag() {
        let k = RoomKeys::new("rc", "prices.BTC");
        assert_eq!(k.channel, "rc:{prices.BTC}");
        assert_eq!(k.meta, "rc:{prices.BTC}:m");
        assert_eq!(k.stream, "rc:{prices.BTC}:s");
        assert_eq!(k.presence, "rc:{prices.BTC}:p");
        assert_eq!(room_of_channel("rc", &k.channel), Some("prices.BTC"));
        assert_eq!(room_of_channel("rc", "rc:other"), None);
        let (channel, key) = canary_names("rc", "abc");
        assert_eq!(
            (channel.as_str(), key.as_str()),
            ("rc:{~canary/abc}", "rc:{~canary/abc}:c")
        );
        assert_eq!(nodes_key("rc"), "rc:{~nodes}");
        assert_eq!(room_of_channel("other", &k.channel), None);
        // Braces inside a room name still give one tag for all of the room's names.
        let odd = RoomKeys::new("rc", "a}b{c");
        assert_eq!(room_of_channel("rc", &odd.channel), Some("a}b{c"));
    }

    #[test]
    fn messages_and_live_events_round_trip() {
        let raw = Bytes::from_static(b"mep0ch\n42\n1764090000000\n{\"p\":\"a\\nb\"}");
        assert_eq!(
            parse(raw).unwrap(),
            ChannelMsg::Message {
                epoch: "ep0ch".into(),
                offset: 42,
                at_ms: 1_764_090_000_000,
                data: Bytes::from_static(b"{\"p\":\"a\\nb\"}"),
            }
        );
        for event in [
            LiveEvent::App(Bytes::from_static(b"{\"ev\":\"event\"}\n")),
            LiveEvent::Awareness(Bytes::from_static(b"\x01\x01\n{")),
        ] {
            let live = live_payload("node-1", &event);
            assert_eq!(
                parse(Bytes::from(live)).unwrap(),
                ChannelMsg::Live {
                    instance: "node-1".into(),
                    event,
                }
            );
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for bad in [
            &b""[..],
            b"x",
            b"m",
            b"mep\n",
            b"mep\nx\n1\n{}",
            b"mep\n1\n\n{}",
            b"mep\n1\n2",
            b"lnode",
            b"m\xff\n1\n2\n{}",
        ] {
            assert!(parse(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
