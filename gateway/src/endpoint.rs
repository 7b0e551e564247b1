//! What a connection speaks, decided once when its request is routed
//! (`connection::route`): the endpoint, with the data it needs, and each endpoint's behaviour
//! in one place — which data frames it takes, how it authenticates, its heartbeat, how it
//! closes, and the wire form of what the gateway sends it.
//!
//! The rest of the gateway asks an [`Endpoint`] instead of matching on it: a new transport is a
//! new variant and its answers here.

use std::rc::Rc;

use broker_bridge::RoomName;
use bytes::Bytes;
use proto_codec::ws::{CloseCode, DataKind};

use crate::connection::outbox::RoomMsg;
use crate::connection::shared::{CloseRequest, ConnShared};

/// What a connection speaks after its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The ringcast app protocol over WebSocket (`/ws`).
    App,
    /// The echo endpoint (conformance testing, off by default).
    Echo,
    /// Raw broadcast (benchmarks, off by default): text frames published as they are.
    Raw {
        /// The internal room (`crate::shard::raw_room`).
        room: RoomName,
        /// Only publishes (`?role=pub`): not subscribed.
        publisher: bool,
    },
    /// A Server-Sent Events stream (`/sse`).
    Sse,
    /// A long-poll request (`/poll`): events collected, answered as one JSON array.
    Poll,
    /// A y-websocket client (`/yjs/<room>`): y-protocols messages of one collaborative room.
    Yjs {
        /// The room.
        room: RoomName,
    },
    /// A Pusher Channels client (`/app/<key>`, docs/pusher.md); its app is in its Pusher
    /// state (`ConnShared::pusher`), set when the connection is established.
    Pusher,
}

/// How an endpoint's connection is authenticated at its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A token, or the request is refused with an HTTP status.
    Token,
    /// A token, or the connection is closed right after the upgrade (y-websocket retries a
    /// refused upgrade forever and stops only on a close code).
    TokenOrClose,
    /// None: anonymous (Pusher authorizes per channel with signatures; test endpoints).
    Anonymous,
}

/// How an endpoint keeps an idle connection alive and finds a dead one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// WebSocket pings, answered or the connection is closed.
    Ping,
    /// An SSE comment line (an event stream cannot answer).
    Comment,
    /// None: a long poll ends by itself.
    None,
}

/// Close code for a data frame of the wrong type.
const UNSUPPORTED: CloseCode = CloseCode::UNSUPPORTED_DATA;

impl Endpoint {
    /// How the connection is authenticated.
    pub fn credential(&self) -> Credential {
        match self {
            Endpoint::App | Endpoint::Sse | Endpoint::Poll => Credential::Token,
            Endpoint::Yjs { .. } => Credential::TokenOrClose,
            Endpoint::Echo | Endpoint::Raw { .. } | Endpoint::Pusher => Credential::Anonymous,
        }
    }

    /// The WebSocket subprotocol it answers with, if the client offers it.
    pub fn subprotocol(&self) -> Option<&'static str> {
        match self {
            Endpoint::App => Some(crate::connection::handshake::SUBPROTOCOL),
            _ => None,
        }
    }

    /// Whether its data frames of this type are taken; the close that answers them if not.
    pub fn takes(&self, kind: DataKind) -> Result<(), CloseRequest> {
        let refuse = |reason: &str| {
            Err(CloseRequest {
                code: UNSUPPORTED,
                reason: reason.into(),
                discard_queue: false,
            })
        };
        match (self, kind) {
            (Endpoint::App | Endpoint::Echo | Endpoint::Sse | Endpoint::Poll, _) => Ok(()),
            (Endpoint::Raw { .. }, DataKind::Text) => Ok(()),
            (Endpoint::Raw { .. }, _) => refuse("raw mode carries text frames"),
            (Endpoint::Yjs { .. }, DataKind::Binary) => Ok(()),
            (Endpoint::Yjs { .. }, _) => refuse("y-websocket speaks binary messages"),
            (Endpoint::Pusher, DataKind::Text) => Ok(()),
            (Endpoint::Pusher, _) => refuse("the Pusher protocol speaks text messages"),
        }
    }

    /// Whether it gets the app protocol's `hello` and app events.
    pub fn says_hello(&self) -> bool {
        matches!(self, Endpoint::App | Endpoint::Sse)
    }

    /// Whether it takes room messages in the shared WebSocket form (and so may take the shared
    /// compressed frames): not a y-websocket or Pusher client, which take their own forms.
    pub fn takes_shared_frames(&self) -> bool {
        !matches!(self, Endpoint::Yjs { .. } | Endpoint::Pusher)
    }

    /// Its heartbeat.
    pub fn heartbeat(&self) -> Heartbeat {
        match self {
            Endpoint::Sse => Heartbeat::Comment,
            Endpoint::Poll => Heartbeat::None,
            _ => Heartbeat::Ping,
        }
    }

    /// Whether `limits.idle_timeout_ms` applies (a client that sends no op is closed).
    pub fn idles_out(&self) -> bool {
        matches!(self, Endpoint::App)
    }

    /// Whether it is an event stream: no close frame (it ends once its queue is written), the
    /// reconnect hint of a shutdown as a `retry:` line, and its input is not read (a client
    /// sends nothing after its request).
    pub fn is_stream(&self) -> bool {
        matches!(self, Endpoint::Sse)
    }

    /// A y-websocket connection: the room it speaks for.
    pub fn yjs_room(&self) -> Option<&RoomName> {
        match self {
            Endpoint::Yjs { room } => Some(room),
            _ => None,
        }
    }

    /// Takes a subscription's answer (the `subscribed` event and the replay, or the error):
    /// queued for an app client; a raw-broadcast or y-websocket connection gets no app events
    /// (a y-websocket client syncs from the document instead, and is closed to retry when its
    /// room could not be joined).
    pub fn subscribed(&self, conn: &ConnShared, ok: bool, frames: Vec<Bytes>) {
        match self {
            Endpoint::Raw { .. } => {}
            Endpoint::Yjs { .. } if !ok => conn.request_close(CloseRequest {
                code: CloseCode::TRY_AGAIN_LATER,
                reason: "room unavailable; retry".into(),
                discard_queue: false,
            }),
            Endpoint::Yjs { .. } => {}
            // The `subscribed` event and the replay are bounded by the history size: they are
            // not held to the live high-water mark, so a client can always catch up once.
            _ => {
                for f in frames {
                    conn.push_control(f);
                }
            }
        }
    }

    /// Takes an answer to one of its requests (an app event: an ack, an error): queued, or for
    /// a y-websocket client, which has no error message, an `error` is the close that says why.
    pub fn answer(&self, conn: &ConnShared, frame: Bytes) {
        match self {
            Endpoint::Yjs { .. } if frame.first() == Some(&0x81) => {
                conn.request_close(crate::connection::yjs::close_for_error(&frame));
            }
            _ => {
                conn.push(frame);
            }
        }
    }

    /// A frame the gateway built as a WebSocket frame (an app event, a control frame), in
    /// this endpoint's wire form: unchanged, or for an event stream its SSE event (`None` for
    /// frames with no form there, such as pings and closes).
    pub fn wire(&self, conn: &ConnShared, frame: Bytes) -> Option<Bytes> {
        match self {
            Endpoint::Sse => {
                // Live messages get their id where they are fanned out; a replayed one (sent
                // after `subscribed`) gets it here, so a resume starts after it too.
                let id = proto_codec::sse::json_payload(&frame).and_then(|p| msg_position_id(&p));
                proto_codec::sse::event_from_ws_frame(&frame, id.as_deref()).map(Bytes::from)
            }
            // A long poll answers the messages after a recovered `since`, not its `subscribed`
            // (docs/protocol.md §20); only frames with a JSON form are collected.
            Endpoint::Poll => {
                let payload = proto_codec::sse::json_payload(&frame)?;
                const RECOVERED: &[u8] = br#""recovered":true"#;
                let recovered_subscribed = payload.starts_with(br#"{"ev":"subscribed""#)
                    && payload.windows(RECOVERED.len()).any(|w| w == RECOVERED);
                (!recovered_subscribed).then_some(frame)
            }
            // A y-websocket client reads y-protocols messages only: app events (acks, errors,
            // `token_expiring`) have no form there (errors close the connection instead).
            Endpoint::Yjs { .. } => (frame.first() != Some(&0x81)).then_some(frame),
            // A Pusher client reads Pusher frames: app events are translated (or dropped).
            Endpoint::Pusher => crate::pusher::wire::translate(conn, frame),
            Endpoint::App | Endpoint::Echo | Endpoint::Raw { .. } => Some(frame),
        }
    }
}

/// The SSE id (`<room>|<epoch>:<offset>`) of a `msg` event's JSON; `None` for other events.
fn msg_position_id(payload: &[u8]) -> Option<String> {
    if !payload.starts_with(br#"{"ev":"msg""#) {
        return None;
    }
    match proto_codec::protocol::ServerEvent::decode(payload) {
        Ok(
            proto_codec::protocol::ServerEvent::Msg {
                room,
                epoch,
                offset,
                ..
            }
            | proto_codec::protocol::ServerEvent::MsgBinary {
                room,
                epoch,
                offset,
                ..
            },
        ) => Some(format!("{room}|{epoch}:{offset}")),
        _ => None,
    }
}

/// One room message's wire forms for the subscribers of one shard: the shared WebSocket frame
/// (and its compressed twin), and each other endpoint's form built at most once, on first use.
pub struct RoomForms<'a> {
    frame: &'a Bytes,
    deflated: Option<&'a Bytes>,
    msg: &'a Rc<RoomMsg>,
    sse: Option<Option<Bytes>>,
    yjs: Option<Option<Bytes>>,
    pusher: Option<Option<(Bytes, Option<String>)>>,
}

impl<'a> RoomForms<'a> {
    /// The forms of the message whose shared frame is `frame`.
    pub fn new(frame: &'a Bytes, deflated: Option<&'a Bytes>, msg: &'a Rc<RoomMsg>) -> Self {
        RoomForms {
            frame,
            deflated,
            msg,
            sse: None,
            yjs: None,
            pusher: None,
        }
    }

    /// The form for this subscriber (`None`: the message has no form for it).
    pub fn for_conn(&mut self, conn: &ConnShared) -> Option<&Bytes> {
        match &conn.endpoint {
            _ if conn.takes_shared_deflate && self.deflated.is_some() => self.deflated,
            Endpoint::Pusher => {
                let frame = self.frame;
                let (f, exclude) = self
                    .pusher
                    .get_or_insert_with(|| crate::pusher::wire::room_message(frame))
                    .as_ref()?;
                // The server API's `socket_id`: every subscriber but that one.
                let excluded = exclude.is_some()
                    && conn.pusher.borrow().as_ref().map(|s| &s.socket_id) == exclude.as_ref();
                (!excluded).then_some(f)
            }
            Endpoint::Sse => {
                let (frame, msg) = (self.frame, self.msg);
                self.sse
                    .get_or_insert_with(|| sse_form(frame, msg))
                    .as_ref()
            }
            Endpoint::Yjs { .. } => {
                let frame = self.frame;
                self.yjs.get_or_insert_with(|| yjs_form(frame)).as_ref()
            }
            Endpoint::App | Endpoint::Echo | Endpoint::Raw { .. } | Endpoint::Poll => {
                Some(self.frame)
            }
        }
    }
}

/// A room message as an SSE event whose id is its position.
fn sse_form(frame: &Bytes, msg: &RoomMsg) -> Option<Bytes> {
    let id = format!("{}|{}:{}", msg.room, msg.epoch, msg.offset);
    proto_codec::sse::event_from_ws_frame(frame, Some(&id)).map(Bytes::from)
}

/// A room message as a y-protocols sync `update` (a collaborative room's binary message).
fn yjs_form(frame: &Bytes) -> Option<Bytes> {
    let payload = proto_codec::sse::payload_of(frame, 0x82)?;
    let msg = proto_codec::protocol::decode_binary_msg(payload).ok()?;
    Some(crate::rooms::crdt::update_frame(msg.data))
}

/// What a live frame (an app event in a text frame, or a y-protocols awareness message in a
/// binary one) does for one subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum LiveAction<'f> {
    /// Queue this.
    Send(&'f Bytes),
    /// Nothing: it has no form for this endpoint.
    Skip,
    /// Close it: a y-websocket client told of a `gap` reconnects and syncs what it missed.
    Close(CloseRequest),
}

/// One live frame's wire forms for the subscribers of one shard (the Pusher form built at
/// most once, on first use).
pub struct LiveForms<'a> {
    frame: &'a Bytes,
    binary: bool,
    pusher: Option<Option<Bytes>>,
}

impl<'a> LiveForms<'a> {
    /// The forms of `frame`.
    pub fn new(frame: &'a Bytes) -> Self {
        LiveForms {
            frame,
            binary: frame.first() == Some(&0x82),
            pusher: None,
        }
    }

    /// What the frame does for this subscriber. App events (`event`, `join`, `leave`, `gap`;
    /// text frames) go to app connections, and y-protocols awareness messages (binary
    /// frames) to y-websocket connections.
    pub fn for_conn(&mut self, conn: &ConnShared) -> LiveAction<'_> {
        match &conn.endpoint {
            Endpoint::Pusher => {
                let frame = self.frame;
                match self
                    .pusher
                    .get_or_insert_with(|| crate::pusher::wire::live_frame(frame))
                {
                    Some(f) => LiveAction::Send(f),
                    None => LiveAction::Skip,
                }
            }
            Endpoint::Yjs { .. } if self.binary => LiveAction::Send(self.frame),
            Endpoint::Yjs { .. } => {
                let gap = proto_codec::sse::payload_of(self.frame, 0x81)
                    .is_some_and(|p| p.starts_with(br#"{"ev":"gap""#));
                if gap {
                    LiveAction::Close(CloseRequest {
                        code: CloseCode::TRY_AGAIN_LATER,
                        reason: "updates were lost on the way; reconnect to sync".into(),
                        discard_queue: false,
                    })
                } else {
                    LiveAction::Skip
                }
            }
            _ if self.binary => LiveAction::Skip,
            _ => LiveAction::Send(self.frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_takes_its_data_frames_only() {
        let room: RoomName = "r".into();
        let cases = [
            (Endpoint::App, true, true),
            (Endpoint::Echo, true, true),
            (
                Endpoint::Raw {
                    room: room.clone(),
                    publisher: false,
                },
                true,
                false,
            ),
            (Endpoint::Yjs { room }, false, true),
            (Endpoint::Pusher, true, false),
        ];
        for (endpoint, text, binary) in cases {
            assert_eq!(endpoint.takes(DataKind::Text).is_ok(), text, "{endpoint:?}");
            assert_eq!(
                endpoint.takes(DataKind::Binary).is_ok(),
                binary,
                "{endpoint:?}"
            );
            if let Err(close) = endpoint.takes(DataKind::Binary) {
                assert_eq!(close.code, CloseCode::UNSUPPORTED_DATA);
            }
        }
    }

    #[test]
    fn heartbeats_and_credentials() {
        assert_eq!(Endpoint::Sse.heartbeat(), Heartbeat::Comment);
        assert_eq!(Endpoint::Poll.heartbeat(), Heartbeat::None);
        assert_eq!(Endpoint::App.heartbeat(), Heartbeat::Ping);
        assert_eq!(Endpoint::App.credential(), Credential::Token);
        assert_eq!(
            Endpoint::Yjs { room: "r".into() }.credential(),
            Credential::TokenOrClose
        );
        assert_eq!(Endpoint::Pusher.credential(), Credential::Anonymous);
        assert!(Endpoint::App.idles_out() && !Endpoint::Sse.idles_out());
    }
}
