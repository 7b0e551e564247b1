//! `/ws`: the ringcast app protocol over WebSocket (docs/protocol.md): JSON ops in text
//! frames, binary publishes in binary frames, app events out.

use std::rc::Rc;

use proto_codec::ws::DataKind;

use super::{Data, Endpoint};
use crate::connection::ops;
use crate::connection::shared::{CloseRequest, ConnShared};
use crate::endpoint::profile::Profile;
use crate::form::Form;
use crate::shard::ShardCtx;

/// The WebSocket subprotocol of the ringcast app protocol.
pub const SUBPROTOCOL: &str = "ringcast.v1";

/// An app-protocol client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App;

impl Endpoint for App {
    fn profile(&self) -> Profile {
        Profile {
            idles_out: true,
            ..Profile::websocket(Form::Ws)
        }
    }

    fn subprotocol(&self) -> Option<&'static str> {
        Some(SUBPROTOCOL)
    }

    fn says_hello(&self) -> bool {
        true
    }

    fn on_data(
        &self,
        ctx: &ShardCtx,
        conn: &Rc<ConnShared>,
        data: Data<'_>,
    ) -> Result<(), CloseRequest> {
        match data.kind {
            DataKind::Text => ops::handle(ctx, conn, data.payload),
            DataKind::Binary => ops::handle_binary(ctx, conn, data.payload),
        }
        Ok(())
    }
}
