//! `/app/<key>`: a Pusher Channels client (docs/pusher.md), with Pusher apps configured. It
//! authorizes per channel with signatures, not with a token; an unknown app or protocol
//! version is a close with Pusher's code after the upgrade, which is where pusher-js reads it.
//! The protocol itself is in `crate::pusher::conn`.

use std::rc::Rc;

use proto_codec::http::Request;
use proto_codec::pusher::PusherCode;
use proto_codec::ws::DataKind;

use super::{close, only, Credential, Data, Endpoint};
use crate::auth::Principal;
use crate::config::Config;
use crate::connection::gate::Gate;
use crate::connection::shared::{CloseRequest, ConnShared};
use crate::endpoint::profile::Profile;
use crate::form::Form;
use crate::shard::ShardCtx;

/// A Pusher protocol client of one app (its index in `[pusher] apps`), or the close that
/// answers a request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pusher {
    app: Result<usize, CloseRequest>,
}

impl Pusher {
    /// A client of this app, or one to close.
    pub fn new(app: Result<usize, CloseRequest>) -> Pusher {
        Pusher { app }
    }

    /// The endpoint of an `/app/<key>?protocol=<v>` request (`key` is the path after `/app/`).
    pub fn route(req: &Request<'_>, config: &Config, key: &str) -> Pusher {
        let version = req.query_param("protocol");
        let refuse = |code: PusherCode, reason: String| Err(close(code.close_code(), reason));
        let app = match (
            crate::pusher::app_by_key(config, key),
            version.as_deref().map(str::parse::<u8>),
        ) {
            (None, _) => refuse(
                PusherCode::APP_NOT_FOUND,
                format!("App key {key} not in this cluster"),
            ),
            (_, None) => refuse(
                PusherCode::NO_PROTOCOL_VERSION,
                "No protocol version supplied".to_string(),
            ),
            (_, Some(Err(_))) => refuse(
                PusherCode::INVALID_VERSION_FORMAT,
                "Invalid version string format".to_string(),
            ),
            (_, Some(Ok(v))) if !(5..=7).contains(&v) => refuse(
                PusherCode::UNSUPPORTED_PROTOCOL_VERSION,
                format!("Unsupported protocol version {v}"),
            ),
            (Some((app, _)), Some(Ok(_))) => Ok(app),
        };
        Pusher { app }
    }
}

impl Endpoint for Pusher {
    fn profile(&self) -> Profile {
        Profile::websocket(Form::Pusher)
    }

    fn credential(&self) -> Credential {
        Credential::Anonymous
    }

    fn admit(&self, _principal: &Principal, _gate: &Gate<'_>) -> Result<(), CloseRequest> {
        self.app.clone().map(|_| ())
    }

    /// `pusher:connection_established`, with the connection's Pusher state set.
    fn start(&mut self, ctx: &Rc<ShardCtx>, conn: &Rc<ConnShared>) {
        if let Ok(app) = self.app {
            conn.push_bytes(crate::pusher::conn::established(ctx, conn, app));
        }
    }

    fn takes(&self, kind: DataKind) -> Result<(), CloseRequest> {
        only(
            kind,
            DataKind::Text,
            "the Pusher protocol speaks text messages",
        )
    }

    fn on_data(
        &self,
        ctx: &ShardCtx,
        conn: &Rc<ConnShared>,
        data: Data<'_>,
    ) -> Result<(), CloseRequest> {
        crate::pusher::conn::handle(ctx, conn, data.payload);
        Ok(())
    }
}
