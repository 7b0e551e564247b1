//! What a connection speaks, decided once when its request is routed
//! (`connection::route`): the endpoint, with the data it needs, and each endpoint's behaviour
//! in one place — which data frames it takes, how it authenticates, its heartbeat, how it
//! closes, and the wire form of what the gateway sends it ([`Form`]: the forms themselves are
//! built in `outgoing`).
//!
//! The rest of the gateway asks an [`Endpoint`] instead of matching on it: a new transport is a
//! new variant and its answers here.

use broker_bridge::RoomName;
use proto_codec::ws::{CloseCode, DataKind};

use crate::connection::shared::{CloseRequest, ConnShared};
use crate::form::Form;
use crate::outgoing::Outgoing;

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

/// The WebSocket subprotocol of the ringcast app protocol.
pub const SUBPROTOCOL: &str = "ringcast.v1";

/// Close code on `/yjs` for a missing or invalid token: y-websocket stops reconnecting on codes
/// 4400–4499 (and retries forever after a refused upgrade).
pub const YJS_AUTH_FAILED: CloseCode = CloseCode(4401);
/// Close code on `/yjs` for a token that may not open the room, or not edit it.
pub const YJS_FORBIDDEN: CloseCode = CloseCode(4403);

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
            Endpoint::App => Some(SUBPROTOCOL),
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
        self.form() == Form::Ws
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

    /// The wire form of what the gateway sends it.
    pub fn form(&self) -> Form {
        match self {
            Endpoint::App | Endpoint::Echo | Endpoint::Raw { .. } => Form::Ws,
            Endpoint::Sse => Form::Sse,
            Endpoint::Poll => Form::Json,
            Endpoint::Yjs { .. } => Form::Yjs,
            Endpoint::Pusher => Form::Pusher,
        }
    }

    /// Takes a subscription's answer (the `subscribed` event and the replay, or the error):
    /// queued in the connection's form, or for a y-websocket connection (which syncs from the
    /// document instead) a close to retry when its room could not be joined; a raw-broadcast
    /// connection gets no answer.
    pub fn subscribed(&self, conn: &ConnShared, ok: bool, answer: &[Outgoing]) {
        match self {
            Endpoint::Raw { .. } => {}
            Endpoint::Yjs { .. } if !ok => conn.request_close(CloseRequest {
                code: CloseCode::TRY_AGAIN_LATER,
                reason: "room unavailable; retry".into(),
                discard_queue: false,
            }),
            // The `subscribed` event and the replay are bounded by the history size: they are
            // not held to the live high-water mark, so a client can always catch up once.
            _ => {
                for out in answer {
                    conn.send_outgoing(out, true);
                }
            }
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
