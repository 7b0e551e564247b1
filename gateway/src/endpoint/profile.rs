//! What the rest of the gateway knows of a connection's endpoint: plain facts, given by the
//! endpoint ([`crate::endpoint::Endpoint::profile`]) when the connection is registered and kept
//! in its shared state. The shard, its sweeps and the outbox read these; they never see the
//! endpoint itself, so they do not depend on any transport.

use crate::connection::shared::{CloseRequest, ConnShared};
use crate::form::Form;
use crate::outgoing::Outgoing;

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

/// How a connection takes a subscription's answer (the `subscribed` event and the replay, or
/// the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Queued in the connection's form.
    Queue,
    /// Not at all (raw broadcast: a benchmark's subscriber takes room messages only).
    Nothing,
    /// Queued when it is in force; a refusal closes the connection to retry (y-websocket, which
    /// has no error message).
    CloseIfRefused,
}

/// The facts of one endpoint that its connection's shard needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The wire form of what the gateway sends it.
    pub form: Form,
    /// Its heartbeat.
    pub heartbeat: Heartbeat,
    /// Whether `limits.idle_timeout_ms` applies (a client that sends no op is closed).
    pub idles_out: bool,
    /// Whether it is an event stream: no close frame (it ends once its queue is written), the
    /// reconnect hint of a shutdown as a `retry:` line, and its input is not read (a client
    /// sends nothing after its request).
    pub stream: bool,
    /// How it takes a subscription's answer.
    pub answer: Answer,
}

impl Profile {
    /// A WebSocket endpoint's profile in this form: pings, no idle timeout, answers queued.
    pub const fn websocket(form: Form) -> Profile {
        Profile {
            form,
            heartbeat: Heartbeat::Ping,
            idles_out: false,
            stream: false,
            answer: Answer::Queue,
        }
    }

    /// Whether it takes room messages in the shared WebSocket form (and so may take the shared
    /// compressed frames): not a y-websocket or Pusher client, which take their own forms.
    pub fn takes_shared_frames(&self) -> bool {
        self.form == Form::Ws
    }

    /// Takes a subscription's answer ([`Answer`]).
    pub fn subscribed(&self, conn: &ConnShared, ok: bool, answer: &[Outgoing]) {
        match self.answer {
            Answer::Nothing => {}
            Answer::CloseIfRefused if !ok => conn.request_close(CloseRequest {
                code: proto_codec::ws::CloseCode::TRY_AGAIN_LATER,
                reason: "room unavailable; retry".into(),
                discard_queue: false,
            }),
            // The `subscribed` event and the replay are bounded by the history size: they are
            // not held to the live high-water mark, so a client can always catch up once.
            Answer::Queue | Answer::CloseIfRefused => {
                for out in answer {
                    conn.send_outgoing(out, true);
                }
            }
        }
    }
}
