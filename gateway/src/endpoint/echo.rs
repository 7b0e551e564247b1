//! `/echo`: every data message sent back as it came (conformance testing with the Autobahn
//! suite; off by default, `websocket.echo_endpoint`).

use std::rc::Rc;

use proto_codec::ws::encode_message;

use super::{Credential, Data, Endpoint};
use crate::connection::shared::{CloseRequest, ConnShared};
use crate::endpoint::profile::Profile;
use crate::form::Form;
use crate::shard::ShardCtx;

/// An echo client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo;

impl Endpoint for Echo {
    fn profile(&self) -> Profile {
        Profile::websocket(Form::Ws)
    }

    fn credential(&self) -> Credential {
        Credential::Anonymous
    }

    fn on_data(
        &self,
        ctx: &ShardCtx,
        conn: &Rc<ConnShared>,
        data: Data<'_>,
    ) -> Result<(), CloseRequest> {
        let frame = match data.deflate_bits {
            Some(bits) => {
                ctx.with_deflater(bits, |d| encode_message(data.kind, data.payload, Some(d)))
            }
            None => encode_message(data.kind, data.payload, None),
        };
        conn.push_ws_control(frame);
        Ok(())
    }
}
