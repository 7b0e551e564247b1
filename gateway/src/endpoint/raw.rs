//! `/raw/<room>`: raw broadcast for benchmarks (off by default, `websocket.raw_endpoint`):
//! text frames published into an internal room as they are, and its messages delivered as they
//! were sent, with no app protocol around them.

use std::rc::Rc;

use broker_bridge::RoomName;
use proto_codec::http::Request;
use proto_codec::ws::DataKind;

use super::{only, path_room, Credential, Data, Endpoint, NoRoute};
use crate::connection::shared::{CloseRequest, ConnShared};
use crate::endpoint::profile::{Answer, Profile};
use crate::form::Form;
use crate::mailbox::PublishOrigin;
use crate::outgoing::Source;
use crate::shard::ShardCtx;

/// A raw-broadcast client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// The internal room (`crate::shard::raw_room`).
    pub room: RoomName,
    /// Only publishes (`?role=pub`): not subscribed.
    pub publisher: bool,
}

impl Raw {
    /// The endpoint of a `/raw/<room>` request (`rest` is the path after `/raw/`).
    pub fn route(req: &Request<'_>, rest: &str) -> Result<Raw, NoRoute> {
        Ok(Raw {
            room: crate::shard::raw_room(path_room(rest)?).into(),
            publisher: req.query_param("role").as_deref() == Some("pub"),
        })
    }
}

impl Endpoint for Raw {
    fn profile(&self) -> Profile {
        Profile {
            answer: Answer::Nothing,
            ..Profile::websocket(Form::Ws)
        }
    }

    fn credential(&self) -> Credential {
        Credential::Anonymous
    }

    fn start(&mut self, ctx: &Rc<ShardCtx>, conn: &Rc<ConnShared>) {
        if !self.publisher {
            ctx.subscribe(conn, None, &self.room, None, None);
        }
    }

    fn takes(&self, kind: DataKind) -> Result<(), CloseRequest> {
        only(kind, DataKind::Text, "raw mode carries text frames")
    }

    fn on_data(
        &self,
        ctx: &ShardCtx,
        _conn: &Rc<ConnShared>,
        data: Data<'_>,
    ) -> Result<(), CloseRequest> {
        ctx.publish(
            &self.room,
            bytes::Bytes::copy_from_slice(data.payload),
            PublishOrigin::Raw,
            Source::Raw,
        );
        Ok(())
    }
}
