//! What the gateway sends, as typed values, and each endpoint's wire form built from them.
//!
//! Three kinds of value leave a shard for connections:
//! - a **room message** ([`RoomMsg`]): its WebSocket frame (and compressed twin) is built once
//!   at the room's home shard and shared by every subscriber; each other form (SSE, JSON,
//!   Pusher, y-protocols) is built from the message's fields at most once per shard, on first
//!   use ([`RoomForms`]);
//! - a **live event** ([`LiveMsg`]: an ephemeral event, a join, a leave, a gap, an awareness
//!   update), typed with where it came from ([`Source`]), its forms likewise built once per
//!   shard ([`LiveForms`]);
//! - an **answer to one connection** ([`Outgoing`]: acks, errors, subscription answers,
//!   presence, history), owned so it can cross shards, rendered for the connection it reaches.
//!
//! Nothing here reads bytes the gateway encoded: every form is built from the typed value
//! (design note: `core-v2.md`; issue 19's Pusher findings came from the old shape, where
//! transports parsed the shared frame back).

use std::borrow::Cow;
use std::sync::Arc;

use broker_bridge::{Epoch, RoomName};
use bytes::Bytes;
use proto_codec::protocol::{
    event_json, room_message_frame, room_message_json, ErrorCode, Member, ServerEvent,
};
use proto_codec::ws::{encode_frame, CloseCode, OpCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::connection::outbox::RoomMsg;
use crate::connection::shared::{CloseRequest, ConnShared, SubState};
use crate::form::{sse, Form};

/// Which path made a message or an event. A protocol bridge lets only its own paths speak its
/// wire form: in a Pusher room, a native message is delivered to Pusher clients as the event
/// `ringcast:message`, never as a Pusher event (docs/security.md, "Rooms two protocols reach").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A ringcast-protocol client (WebSocket, SSE, long-poll publish).
    Client,
    /// The server API (`POST /api/publish`).
    Api,
    /// A y-websocket client.
    Yjs,
    /// Raw broadcast (benchmarks).
    Raw,
    /// The Pusher paths (`/app/<key>` client events, the Pusher HTTP API).
    Pusher,
}

impl Source {
    /// Its name between nodes.
    pub fn name(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Api => "api",
            Source::Yjs => "yjs",
            Source::Raw => "raw",
            Source::Pusher => "pusher",
        }
    }
}

/// What an outgoing value does for one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Rendered {
    /// Queue these bytes.
    Send(Bytes),
    /// Nothing: the value has no form for this connection.
    Skip,
    /// Close the connection (a y-websocket client has no error message; a `gap` makes it
    /// reconnect and sync).
    Close(CloseRequest),
}

impl From<Option<Bytes>> for Rendered {
    fn from(form: Option<Bytes>) -> Rendered {
        form.map_or(Rendered::Skip, Rendered::Send)
    }
}

fn text_frame(json: &[u8]) -> Bytes {
    encode_frame(OpCode::Text, false, json)
}

/// The SSE id of a room message: its position, so a reconnecting stream resumes after it.
fn position_id(room: &str, epoch: &str, offset: u64) -> String {
    format!("{room}|{epoch}:{offset}")
}

/// The close that tells a y-websocket client it missed updates: it reconnects and syncs.
fn updates_lost() -> CloseRequest {
    CloseRequest {
        code: CloseCode::TRY_AGAIN_LATER,
        reason: "updates were lost on the way; reconnect to sync".into(),
        discard_queue: false,
    }
}

// ---- answers to one connection -------------------------------------------------------------

/// A stored message replayed to one subscriber after its `subscribed`.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The room.
    pub room: RoomName,
    /// The room's epoch.
    pub epoch: Epoch,
    /// The message's offset.
    pub offset: u64,
    /// The stored data (JSON, or binary behind its marker).
    pub data: Bytes,
}

/// An `error` event (an op refused).
pub fn error_event(id: Option<u64>, code: ErrorCode, reason: &str) -> ServerEvent<'_> {
    ServerEvent::Error {
        id,
        code,
        reason: reason.into(),
    }
}

/// An answer to one connection, owned so it can cross shards.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// An app-protocol event without raw JSON in it (acks, errors, `subscribed`, presence…).
    Event(ServerEvent<'static>),
    /// A stored message after `subscribed`.
    Replayed(Replayed),
    /// A `history` answer, as its JSON (its items borrow the stored data).
    History(Bytes),
    /// A y-protocols message for a y-websocket connection (a sync answer, awareness states).
    Yjs(Bytes),
}

impl Outgoing {
    /// An `error` event.
    pub fn error(id: Option<u64>, code: ErrorCode, reason: &str) -> Self {
        Outgoing::Event(ServerEvent::Error {
            id,
            code,
            reason: Cow::Owned(reason.to_string()),
        })
    }

    /// The bytes it holds, for the bounds on queues between shards.
    pub fn weight(&self) -> usize {
        match self {
            Outgoing::Event(ServerEvent::Presence { members, .. }) => members
                .iter()
                .map(|m| {
                    32 + m.client.len()
                        + m.user.as_ref().map_or(0, String::len)
                        + m.info.as_ref().map_or(0, |i| i.get().len())
                })
                .sum(),
            Outgoing::Event(ServerEvent::Error { reason, .. }) => reason.len(),
            Outgoing::Event(_) => 64,
            Outgoing::Replayed(r) => r.data.len(),
            Outgoing::History(json) | Outgoing::Yjs(json) => json.len(),
        }
    }

    /// Its form for `conn`.
    pub fn render(&self, conn: &ConnShared) -> Rendered {
        match self {
            Outgoing::Event(ev) => render_event(conn, ev),
            Outgoing::Replayed(r) => {
                let msg = MsgRef {
                    room: &r.room,
                    epoch: &r.epoch,
                    offset: r.offset,
                    data: &r.data,
                };
                RoomForms::new(msg, None, None)
                    .for_conn(conn)
                    .cloned()
                    .into()
            }
            Outgoing::History(json) => match conn.profile.form {
                Form::Ws => Rendered::Send(text_frame(json)),
                Form::Sse => Rendered::Send(sse("history", None, json)),
                Form::Json => Rendered::Send(json.clone()),
                Form::Yjs | Form::Pusher => Rendered::Skip,
            },
            Outgoing::Yjs(frame) => match conn.profile.form {
                Form::Yjs => Rendered::Send(frame.clone()),
                _ => Rendered::Skip,
            },
        }
    }
}

/// An app-protocol event's form for `conn`.
pub fn render_event(conn: &ConnShared, ev: &ServerEvent<'_>) -> Rendered {
    match conn.profile.form {
        Form::Ws => Rendered::Send(ev.to_frame()),
        Form::Sse => Rendered::Send(sse(ev.name(), None, ev.to_json().as_bytes())),
        // A long poll answers the messages after a recovered `since`, not its `subscribed`
        // (docs/protocol.md §20).
        Form::Json => match ev {
            ServerEvent::Subscribed {
                recovered: true, ..
            } => Rendered::Skip,
            _ => Rendered::Send(Bytes::from(ev.to_json())),
        },
        // y-websocket reads y-protocols messages only: an error is the close that says why.
        Form::Yjs => match ev {
            ServerEvent::Error { code, reason, .. } => {
                Rendered::Close(yjs_close_for_error(*code, reason))
            }
            _ => Rendered::Skip,
        },
        Form::Pusher => {
            let active = |room: &str| conn.rooms.borrow().get(room) == Some(&SubState::Active);
            crate::pusher::wire::event(ev, &active).into()
        }
    }
}

/// The close that answers an `error` event meant for a y-websocket client (a refused update):
/// y-protocols has no error message.
pub fn yjs_close_for_error(code: ErrorCode, reason: &str) -> CloseRequest {
    use proto_codec::protocol::codes::close;
    let close_code = match code {
        ErrorCode::TooLarge => CloseCode::MESSAGE_TOO_BIG,
        ErrorCode::RateLimited => close::RATE_LIMITED,
        ErrorCode::Forbidden | ErrorCode::Unauthorized => {
            proto_codec::protocol::codes::yjs_close::FORBIDDEN
        }
        ErrorCode::Unavailable | ErrorCode::Internal => CloseCode::TRY_AGAIN_LATER,
        _ => close::BAD_REQUEST,
    };
    CloseRequest {
        code: close_code,
        reason: format!("{}: {reason}", code.as_str()),
        discard_queue: false,
    }
}

/// The frame that carries a room update to y-websocket clients (a y-protocols sync `update`).
pub fn yjs_update_frame(update: &[u8]) -> Bytes {
    use yrs::updates::encoder::Encode;
    let message = yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(update.to_vec()));
    encode_frame(OpCode::Binary, false, &message.encode_v1())
}

// ---- room messages ---------------------------------------------------------------------------

/// The fields of a room message its forms are built from.
#[derive(Debug, Clone, Copy)]
pub struct MsgRef<'a> {
    /// The room.
    pub room: &'a str,
    /// Its epoch.
    pub epoch: &'a str,
    /// Its offset.
    pub offset: u64,
    /// The stored data.
    pub data: &'a Bytes,
}

impl<'a> From<&'a RoomMsg> for MsgRef<'a> {
    fn from(m: &'a RoomMsg) -> MsgRef<'a> {
        MsgRef {
            room: &m.room,
            epoch: &m.epoch,
            offset: m.offset,
            data: &m.data,
        }
    }
}

/// A Pusher form and the socket it must not reach (the server API's `socket_id`).
type PusherForm = Option<(Bytes, Option<String>)>;

/// One room message's wire forms for the subscribers of one shard: the shared WebSocket frame
/// (and its compressed twin) as the home shard built them, and each other form built at most
/// once, on first use, from the message's fields.
pub struct RoomForms<'a> {
    msg: MsgRef<'a>,
    ws: Option<Bytes>,
    deflated: Option<&'a Bytes>,
    json: Option<Bytes>,
    sse: Option<Bytes>,
    yjs: Option<Option<Bytes>>,
    pusher: Option<PusherForm>,
}

impl<'a> RoomForms<'a> {
    /// The forms of `msg`, with its shared frames when the home shard built them (else the
    /// WebSocket frame is built on first use: a replayed message).
    pub fn new(msg: MsgRef<'a>, ws: Option<Bytes>, deflated: Option<&'a Bytes>) -> Self {
        RoomForms {
            msg,
            ws,
            deflated,
            json: None,
            sse: None,
            yjs: None,
            pusher: None,
        }
    }

    fn json(&mut self) -> &Bytes {
        let m = self.msg;
        self.json.get_or_insert_with(|| {
            Bytes::from(room_message_json(m.room, m.epoch, m.offset, m.data))
        })
    }

    /// The form for this subscriber (`None`: the message has no form for it).
    pub fn for_conn(&mut self, conn: &ConnShared) -> Option<&Bytes> {
        let m = self.msg;
        match conn.profile.form {
            Form::Ws if conn.takes_shared_deflate && self.deflated.is_some() => self.deflated,
            Form::Ws => Some(self.ws.get_or_insert_with(|| {
                room_message_frame(m.room, m.epoch, m.offset, m.data).into_frame()
            })),
            Form::Json => Some(self.json()),
            Form::Sse => {
                if self.sse.is_none() {
                    let id = position_id(m.room, m.epoch, m.offset);
                    let event = sse("msg", Some(&id), self.json());
                    self.sse = Some(event);
                }
                self.sse.as_ref()
            }
            Form::Yjs => self
                .yjs
                .get_or_insert_with(|| {
                    proto_codec::protocol::binary_payload(m.data).map(yjs_update_frame)
                })
                .as_ref(),
            Form::Pusher => {
                let (f, exclude) = self
                    .pusher
                    .get_or_insert_with(|| crate::pusher::wire::room_message(m.room, m.data))
                    .as_ref()?;
                // The server API's `socket_id`: every subscriber but that one.
                let excluded = exclude.is_some()
                    && conn.pusher.borrow().as_ref().map(|s| &s.socket_id) == exclude.as_ref();
                (!excluded).then_some(f)
            }
        }
    }
}

// ---- live events -----------------------------------------------------------------------------

/// A live (never stored) event of a room.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// An ephemeral event: its data (valid JSON) and the path that made it.
    Event {
        /// The data.
        data: Bytes,
        /// Who made it.
        source: Source,
    },
    /// A member joined.
    Join(Member),
    /// A member left.
    Leave(Member),
    /// Messages `from..=to` can no longer be delivered on this node.
    Gap {
        /// The room's epoch.
        epoch: Epoch,
        /// First offset missed.
        from: u64,
        /// Last offset missed.
        to: u64,
    },
    /// A y-protocols awareness message of a collaborative room.
    Awareness(Bytes),
}

/// A live event with its shared WebSocket frame, built once at the room's home shard and sent
/// to every shard with subscribers (one `Arc`).
#[derive(Debug)]
pub struct LiveMsg {
    /// The room.
    pub room: RoomName,
    /// The event.
    pub event: LiveEvent,
    /// The WebSocket frame: the app event's text frame, or the awareness binary frame.
    ws: Bytes,
    /// The app event's JSON (the text frame's payload), empty for awareness.
    json: Bytes,
}

impl LiveMsg {
    /// The event with its frame.
    pub fn new(room: RoomName, event: LiveEvent) -> Arc<LiveMsg> {
        let json: Vec<u8> = match &event {
            LiveEvent::Event { data, .. } => event_json(&room, data),
            LiveEvent::Join(member) => ServerEvent::Join {
                room: room.as_ref().into(),
                member: member.clone(),
            }
            .to_json()
            .into_bytes(),
            LiveEvent::Leave(member) => ServerEvent::Leave {
                room: room.as_ref().into(),
                member: member.clone(),
            }
            .to_json()
            .into_bytes(),
            LiveEvent::Gap { epoch, from, to } => ServerEvent::Gap {
                room: room.as_ref().into(),
                epoch: epoch.as_ref().into(),
                from: *from,
                to: *to,
            }
            .to_json()
            .into_bytes(),
            LiveEvent::Awareness(update) => {
                let ws = encode_frame(OpCode::Binary, false, update);
                return Arc::new(LiveMsg {
                    room,
                    event,
                    ws,
                    json: Bytes::new(),
                });
            }
        };
        let ws = text_frame(&json);
        // The frame is its header and then the JSON: share the JSON from it.
        let json = ws.slice(ws.len() - json.len()..);
        Arc::new(LiveMsg {
            room,
            event,
            ws,
            json,
        })
    }

    /// The event's name in the app protocol.
    fn name(&self) -> &'static str {
        match self.event {
            LiveEvent::Event { .. } => "event",
            LiveEvent::Join(_) => "join",
            LiveEvent::Leave(_) => "leave",
            LiveEvent::Gap { .. } => "gap",
            LiveEvent::Awareness(_) => "awareness",
        }
    }

    /// The bytes it holds, for the bounds on queues between shards.
    pub fn weight(&self) -> usize {
        self.ws.len()
            + match &self.event {
                LiveEvent::Event { data, .. } => data.len(),
                _ => 0,
            }
    }

    /// Its form between nodes (the broker's live channel); `None` for a gap, which each node
    /// finds for itself.
    pub fn to_node(&self) -> Option<broker_bridge::LiveEvent> {
        let json = match &self.event {
            LiveEvent::Awareness(update) => {
                return Some(broker_bridge::LiveEvent::Awareness(update.clone()))
            }
            LiveEvent::Gap { .. } => return None,
            // The app event's JSON and where it came from, spliced (the data is valid JSON).
            LiveEvent::Event { source, .. } => {
                let mut json = Vec::with_capacity(self.json.len() + 16);
                json.extend_from_slice(&self.json[..self.json.len() - 1]);
                json.extend_from_slice(br#","src":""#);
                json.extend_from_slice(source.name().as_bytes());
                json.extend_from_slice(b"\"}");
                json
            }
            LiveEvent::Join(_) | LiveEvent::Leave(_) => self.json.to_vec(),
        };
        Some(broker_bridge::LiveEvent::App(Bytes::from(json)))
    }

    /// An app event from another node (input: `None` when it does not parse): the event's
    /// app-protocol JSON plus `src` (a node older than `src` sends none: read as a client's).
    pub fn app_from_node(json: &[u8]) -> Option<LiveEvent> {
        let wire: NodeLive<'_> = serde_json::from_slice(json).ok()?;
        Some(match (wire.ev.as_ref(), wire.data, wire.member) {
            ("event", Some(data), _) => LiveEvent::Event {
                data: Bytes::copy_from_slice(data.get().as_bytes()),
                source: wire.src.unwrap_or(Source::Client),
            },
            ("join", _, Some(member)) => LiveEvent::Join(member),
            ("leave", _, Some(member)) => LiveEvent::Leave(member),
            _ => return None,
        })
    }
}

/// A live app event between nodes, as read (written by [`LiveMsg::to_node`]).
#[derive(Debug, Deserialize)]
struct NodeLive<'a> {
    #[serde(borrow)]
    ev: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    member: Option<Member>,
    #[serde(default)]
    src: Option<Source>,
}

/// The Pusher frame of a live event (a client event, a member added or removed).
fn pusher_live(room: &str, event: &LiveEvent) -> Option<Bytes> {
    use crate::pusher::wire;
    match event {
        LiveEvent::Event { data, .. } => wire::live_event(data),
        LiveEvent::Join(member) => wire::member_added(room, member),
        LiveEvent::Leave(member) => wire::member_removed(room, member),
        LiveEvent::Gap { .. } | LiveEvent::Awareness(_) => None,
    }
}

/// One live event's wire forms for the subscribers of one shard (each built at most once, on
/// first use).
pub struct LiveForms<'a> {
    live: &'a LiveMsg,
    sse: Option<Bytes>,
    pusher: Option<Option<Bytes>>,
}

impl<'a> LiveForms<'a> {
    /// The forms of `live`.
    pub fn new(live: &'a LiveMsg) -> Self {
        LiveForms {
            live,
            sse: None,
            pusher: None,
        }
    }

    /// What the event does for this subscriber: app events go to app-protocol connections
    /// and Pusher clients, awareness updates to y-websocket connections, and a `gap` closes a
    /// y-websocket connection (its client reconnects and syncs what it missed).
    pub fn for_conn(&mut self, conn: &ConnShared) -> Rendered {
        let live = self.live;
        let awareness = matches!(live.event, LiveEvent::Awareness(_));
        match conn.profile.form {
            Form::Yjs => match live.event {
                LiveEvent::Awareness(_) => Rendered::Send(live.ws.clone()),
                LiveEvent::Gap { .. } => Rendered::Close(updates_lost()),
                _ => Rendered::Skip,
            },
            _ if awareness => Rendered::Skip,
            Form::Ws => Rendered::Send(live.ws.clone()),
            Form::Json => Rendered::Send(live.json.clone()),
            Form::Sse => Rendered::Send(
                self.sse
                    .get_or_insert_with(|| sse(live.name(), None, &live.json))
                    .clone(),
            ),
            Form::Pusher => self
                .pusher
                .get_or_insert_with(|| pusher_live(&live.room, &live.event))
                .clone()
                .into(),
        }
    }
}

#[cfg(test)]
mod tests;
