//! What a connection speaks, decided once when its request is routed (`connection::route`):
//! an [`Endpoint`], one file each, holding everything that endpoint does — how it
//! authenticates, which data frames it takes and what it does with them, what it does right
//! after the upgrade, and its [`Profile`] (wire form, heartbeat, close semantics), the facts the
//! shard reads. The connection's task holds the endpoint and asks it; nothing else matches on
//! what a connection speaks, so a new transport is a new file here and a line in the route table
//! (docs/architecture.md §10).
//!
//! | file | path | speaks |
//! |---|---|---|
//! | `app.rs` | `/ws` | the ringcast app protocol over WebSocket |
//! | `echo.rs` | `/echo` | echo (conformance tests; off by default) |
//! | `raw.rs` | `/raw/<room>` | raw broadcast (benchmarks; off by default) |
//! | `sse.rs` | `/sse` | a Server-Sent Events stream of rooms |
//! | `poll.rs` | `/poll` | a long poll, answered as one JSON array |
//! | `yjs.rs` | `/yjs/<room>` | y-websocket, one collaborative room |
//! | `pusher.rs` | `/app/<key>` | the Pusher Channels protocol |
//!
//! Layers: `profile.rs` is below the shard (the shard and the outbox read it); the endpoint
//! files are above it (they call the shard), so the shard never depends on a transport.

pub mod app;
pub mod echo;
pub mod poll;
pub mod profile;
pub mod pusher;
pub mod raw;
pub mod sse;
pub mod yjs;

use std::fmt;
use std::rc::Rc;

use proto_codec::ws::{CloseCode, DataKind};

use crate::auth::Principal;
use crate::connection::gate::Gate;
use crate::connection::shared::{CloseRequest, ConnShared};
use crate::endpoint::profile::Profile;
use crate::shard::ShardCtx;

/// A connection's personality: one per transport, chosen by the route table.
///
/// Every method but [`Endpoint::profile`] has the answer most endpoints give.
pub trait Endpoint: fmt::Debug {
    /// The facts its connection's shard needs (kept in the connection's shared state).
    fn profile(&self) -> Profile;

    /// How its connection is authenticated at the upgrade.
    fn credential(&self) -> Credential {
        Credential::Token
    }

    /// The WebSocket subprotocol it answers with, if the client offers it.
    fn subprotocol(&self) -> Option<&'static str> {
        None
    }

    /// Whether it gets the app protocol's `hello` (and so app events).
    fn says_hello(&self) -> bool {
        false
    }

    /// Checks, after authentication, that the connection may be opened: `Err` is the close that
    /// follows the upgrade (for clients that read a refusal only from a close).
    fn admit(&self, _principal: &Principal, _gate: &Gate<'_>) -> Result<(), CloseRequest> {
        Ok(())
    }

    /// Runs once the connection is registered and not refused: its first subscriptions or
    /// greeting.
    fn start(&mut self, _ctx: &Rc<ShardCtx>, _conn: &Rc<ConnShared>) {}

    /// Whether it takes data frames of this type; the close that answers them if not.
    fn takes(&self, _kind: DataKind) -> Result<(), CloseRequest> {
        Ok(())
    }

    /// Acts on one data message; `Err` is the close to answer with.
    fn on_data(
        &self,
        _ctx: &ShardCtx,
        _conn: &Rc<ConnShared>,
        _data: Data<'_>,
    ) -> Result<(), CloseRequest> {
        Ok(())
    }
}

/// How an endpoint's connection is authenticated at its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A token, or the request is refused with an HTTP status.
    Token,
    /// A token, or the connection is closed with this code right after the upgrade
    /// (y-websocket retries a refused upgrade forever and stops only on a close code).
    TokenOrClose(CloseCode),
    /// None: anonymous (Pusher authorizes per channel with signatures; test endpoints).
    Anonymous,
}

/// One data message as an endpoint gets it.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// Text or binary.
    pub kind: DataKind,
    /// Its payload (decompressed, UTF-8 checked for text).
    pub payload: &'a [u8],
    /// The server window of the permessage-deflate negotiated, if any.
    pub deflate_bits: Option<u8>,
}

/// A request the route table does not take: answered with this HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute {
    /// The status.
    pub status: u16,
    /// Why, as a metrics label.
    pub label: &'static str,
    /// Why, for the client.
    pub reason: String,
}

impl NoRoute {
    /// A refusal with this status.
    pub fn new(status: u16, label: &'static str, reason: impl Into<String>) -> NoRoute {
        NoRoute {
            status,
            label,
            reason: reason.into(),
        }
    }
}

/// A close with this code and reason, the queue kept.
pub fn close(code: CloseCode, reason: impl Into<String>) -> CloseRequest {
    CloseRequest {
        code,
        reason: reason.into(),
        discard_queue: false,
    }
}

/// `Ok` for a data frame of the one type an endpoint takes; else the close that answers it
/// (1003, with the reason).
pub fn only(kind: DataKind, taken: DataKind, reason: &str) -> Result<(), CloseRequest> {
    if kind == taken {
        Ok(())
    } else {
        Err(close(CloseCode::UNSUPPORTED_DATA, reason))
    }
}

/// The room of a `/<prefix>/<room>` path, checked; a 400 when it is not a valid room name.
pub fn path_room(rest: &str) -> Result<&str, NoRoute> {
    proto_codec::protocol::validate_room(rest)
        .map(|()| rest)
        .map_err(|_| NoRoute::new(400, "bad_request", "invalid room name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::profile::Heartbeat;

    #[test]
    fn each_endpoint_takes_its_data_frames_only() {
        let cases: [(Box<dyn Endpoint>, bool, bool); 5] = [
            (Box::new(app::App), true, true),
            (Box::new(echo::Echo), true, true),
            (
                Box::new(raw::Raw {
                    room: "r".into(),
                    publisher: false,
                }),
                true,
                false,
            ),
            (Box::new(yjs::Yjs { room: "r".into() }), false, true),
            (Box::new(pusher::Pusher::new(Ok(0))), true, false),
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
        assert_eq!(sse::Sse::default().profile().heartbeat, Heartbeat::Comment);
        assert!(sse::Sse::default().profile().stream);
        assert_eq!(poll::Poll.profile().heartbeat, Heartbeat::None);
        assert_eq!(app::App.profile().heartbeat, Heartbeat::Ping);
        assert_eq!(app::App.credential(), Credential::Token);
        assert_eq!(
            yjs::Yjs { room: "r".into() }.credential(),
            Credential::TokenOrClose(proto_codec::protocol::codes::yjs_close::AUTH_FAILED)
        );
        assert_eq!(
            pusher::Pusher::new(Ok(0)).credential(),
            Credential::Anonymous
        );
        assert!(app::App.profile().idles_out && !sse::Sse::default().profile().idles_out);
    }
}
