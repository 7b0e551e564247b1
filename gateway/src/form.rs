//! The wire forms a connection may take (`Endpoint::form`), and what every form can say
//! without knowing more about its connection: a gap notice, an SSE event. A base module: it
//! imports nothing of the gateway, so the outbox and the outgoing values share it.

use bytes::Bytes;
use proto_codec::protocol::ServerEvent;
use proto_codec::sse::SseEvent;

/// The wire form an endpoint takes (`Endpoint::form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// WebSocket frames of the app protocol (also echo and raw broadcast).
    Ws,
    /// Server-Sent Events.
    Sse,
    /// JSON values, one per event (a long poll's answer is their array).
    Json,
    /// y-protocols messages in binary frames: room updates and awareness only.
    Yjs,
    /// Pusher protocol frames.
    Pusher,
}

impl Form {
    /// Every form, in the order of [`Form::index`].
    pub const ALL: [Form; 5] = [Form::Ws, Form::Sse, Form::Json, Form::Yjs, Form::Pusher];

    /// Its position in [`Form::ALL`] (for per-form counts).
    pub fn index(self) -> usize {
        match self {
            Form::Ws => 0,
            Form::Sse => 1,
            Form::Json => 2,
            Form::Yjs => 3,
            Form::Pusher => 4,
        }
    }

    /// The transport it names on the admin page and in `GET /api/overview`: `websocket` (the
    /// app protocol on `/ws`, also `/echo` and `/raw`), `sse`, `long_poll`, `yjs`, `pusher`.
    pub fn transport(self) -> &'static str {
        match self {
            Form::Ws => "websocket",
            Form::Sse => "sse",
            Form::Json => "long_poll",
            Form::Yjs => "yjs",
            Form::Pusher => "pusher",
        }
    }

    /// Whether a connection of this form is told of messages dropped from its queue
    /// ([`gap_notice`]).
    pub fn has_gap_notice(self) -> bool {
        matches!(self, Form::Ws | Form::Sse | Form::Json)
    }
}

/// An SSE event of `json`, named `name`.
pub fn sse(name: &str, id: Option<&str>, json: &[u8]) -> Bytes {
    Bytes::from(
        SseEvent {
            id,
            event: Some(name),
            data: json,
            retry_ms: None,
        }
        .encode(),
    )
}

/// The notice that offsets `from..=to` of a room were dropped from one connection's queue, in
/// its form (`None`: the form has no such notice; a Pusher client is not told).
pub fn gap_notice(form: Form, room: &str, epoch: &str, from: u64, to: u64) -> Option<Bytes> {
    let ev = ServerEvent::Gap {
        room: room.into(),
        epoch: epoch.into(),
        from,
        to,
    };
    match form {
        Form::Ws => Some(ev.to_frame()),
        Form::Sse => Some(sse("gap", None, ev.to_json().as_bytes())),
        Form::Json => Some(Bytes::from(ev.to_json())),
        // A y-websocket queue never drops (`Outbox`: a document client that cannot keep up is
        // closed and syncs again); Pusher has no such notice.
        Form::Yjs | Form::Pusher => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_has_its_own_index() {
        for (i, form) in Form::ALL.iter().enumerate() {
            assert_eq!(form.index(), i, "{}", form.transport());
        }
    }
}
