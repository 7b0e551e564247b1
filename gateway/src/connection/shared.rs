//! The part of a connection the rest of its shard can reach: its outbound queue, its room
//! subscriptions, timers, and requests to close. Owned by the shard's registry and by the
//! connection's task (`Rc`, single thread).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use broker_bridge::RoomName;
use bytes::Bytes;
use proto_codec::protocol::ServerEvent;
use proto_codec::ws::CloseCode;

use super::outbox::{Outbox, PolicyActions, Push};
use crate::auth::Principal;
use crate::connection::outbox::RoomMsg;
use crate::endpoint::profile::Profile;
use crate::form::Form;
use crate::ids::ConnId;
use crate::outgoing::{render_event, Outgoing, Rendered};
use crate::ratelimit::ConnLimiter;

/// A subscription as the connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    /// Sent to the home shard; `seq` matches the answer to this request.
    Pending {
        /// The request's sequence number on this connection.
        seq: u64,
    },
    /// In force: the connection is in the shard's subscriber list for the room.
    Active,
}

/// A request to close the connection, made by the shard (not the peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code.
    pub code: CloseCode,
    /// The reason (cut to 123 bytes on the wire).
    pub reason: String,
    /// Drop queued frames first (slow consumer: the client resumes from history instead).
    pub discard_queue: bool,
}

/// Shared state of one connection.
#[derive(Debug)]
pub struct ConnShared {
    /// The connection's id on its shard.
    pub id: ConnId,
    /// What the shard knows of its endpoint (decided at its request): its wire form,
    /// heartbeat and close semantics.
    pub profile: Profile,
    /// Whether shared compressed room frames may be sent to it (permessage-deflate negotiated
    /// with a 15-bit server window).
    pub takes_shared_deflate: bool,
    outbox: RefCell<Outbox>,
    waker: RefCell<Option<Waker>>,
    /// Rooms and their subscription state.
    pub rooms: RefCell<HashMap<RoomName, SubState>>,
    /// Next subscribe sequence number.
    pub next_sub_seq: Cell<u64>,
    /// Last time any frame arrived.
    pub last_rx: Cell<Instant>,
    /// When the unanswered ping was sent.
    pub ping_sent: Cell<Option<Instant>>,
    /// Last time the client sent an op (idle timeout).
    pub last_op: Cell<Instant>,
    /// Boxed: most connections never have one, and an idle one should not carry its size.
    close_request: RefCell<Option<Box<CloseRequest>>>,
    /// The connection is closing (close sent or received); the shard sweeps it after a deadline.
    pub closing_since: Cell<Option<Instant>>,
    /// The connection must end now (closing deadline passed).
    pub force_end: Cell<bool>,
    /// When a graceful-shutdown close is due.
    pub shutdown_close_at: Cell<Option<Instant>>,
    /// Who is connected and what they may do (replaced by `refresh`).
    pub principal: RefCell<Rc<Principal>>,
    /// `token_expiring` was sent for the token in force.
    pub expiry_warned: Cell<bool>,
    /// Op and publish rate limits of this connection.
    pub limiter: RefCell<ConnLimiter>,
    /// Used up its turn: listed for the shard's next round and idle until then.
    pub deferred: Cell<bool>,
    /// A Pusher protocol connection's state (`endpoint::pusher` only).
    pub pusher: RefCell<Option<Box<crate::pusher::PusherConn>>>,
    /// The socket the shard's write pass may write to (-1: none; `super::write`).
    direct_fd: Cell<RawFd>,
}

/// What a delivery did to a connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not queued (dropped by policy, or the connection is closing).
    Refused,
    /// Queued behind frames already waiting (a writer is on them).
    Queued,
    /// Queued into an empty queue, and nobody was woken: the deliverer hands the connection
    /// to the shard's write list ([`super::write::WriteList::started`]).
    Started,
}

impl ConnShared {
    /// A new connection's shared state.
    pub fn new(
        id: ConnId,
        profile: Profile,
        takes_shared_deflate: bool,
        high_water: usize,
        now: Instant,
        principal: Rc<Principal>,
    ) -> ConnShared {
        ConnShared {
            id,
            profile,
            takes_shared_deflate,
            outbox: RefCell::new(Outbox::new(high_water, profile.form)),
            waker: RefCell::new(None),
            rooms: RefCell::new(HashMap::new()),
            next_sub_seq: Cell::new(1),
            last_rx: Cell::new(now),
            ping_sent: Cell::new(None),
            last_op: Cell::new(now),
            close_request: RefCell::new(None),
            closing_since: Cell::new(None),
            force_end: Cell::new(false),
            shutdown_close_at: Cell::new(None),
            principal: RefCell::new(principal),
            expiry_warned: Cell::new(false),
            limiter: RefCell::new(ConnLimiter::default()),
            deferred: Cell::new(false),
            pusher: RefCell::new(None),
            direct_fd: Cell::new(-1),
        }
    }

    /// Sets (or, with `None`, clears) the socket the shard's write pass may write to.
    pub fn set_direct_fd(&self, fd: Option<RawFd>) {
        self.direct_fd.set(fd.unwrap_or(-1));
    }

    /// The socket the shard's write pass may write to, while the connection's task owns it.
    pub fn direct_fd(&self) -> Option<RawFd> {
        let fd = self.direct_fd.get();
        (fd >= 0).then_some(fd)
    }

    /// Queues an app-protocol event (an op answer) in this connection's form, held to the
    /// high-water mark ([`ConnShared::push_wire`]). Returns whether it was queued.
    pub fn send(&self, ev: &ServerEvent<'_>) -> bool {
        self.take(render_event(self, ev), false)
    }

    /// Queues an app-protocol event in this connection's form, ignoring the mark (`hello`,
    /// `token_expiring`).
    pub fn send_control(&self, ev: &ServerEvent<'_>) {
        self.take(render_event(self, ev), true);
    }

    /// Queues an answer from another shard in this connection's form, held to the mark unless
    /// `control` (a subscription's answer). Returns whether it was queued.
    pub fn send_outgoing(&self, out: &Outgoing, control: bool) -> bool {
        self.take(out.render(self), control)
    }

    fn take(&self, rendered: Rendered, control: bool) -> bool {
        match rendered {
            Rendered::Send(bytes) if control => {
                self.push_bytes(bytes);
                true
            }
            Rendered::Send(bytes) => self.push_wire(bytes),
            // Nothing to send is not a refusal.
            Rendered::Skip => true,
            Rendered::Close(close) => {
                self.request_close(close);
                false
            }
        }
    }

    /// Queues bytes already in this connection's wire form (a Pusher frame from the Pusher
    /// paths, an op answer). Past the high-water mark the connection is closed as a slow
    /// consumer (4008) and the frame is dropped: the client resumes from history. Returns
    /// whether the frame was queued.
    pub fn push_wire(&self, frame: Bytes) -> bool {
        if self.closing_since.get().is_some() {
            // A close frame is queued or sent: nothing may follow it (RFC 6455 §5.5.1).
            return false;
        }
        let push = self.outbox.borrow_mut().push(frame);
        self.after_push(push)
    }

    /// Queues a room message, already in this connection's wire form (the delivering shard
    /// encodes each form once per message: plain, compressed, SSE), under its namespace's
    /// slow-consumer policy.
    pub fn push_room(&self, frame: Bytes, msg: &Rc<RoomMsg>) -> Delivery {
        if self.closing_since.get().is_some() {
            return Delivery::Refused;
        }
        let (push, actions) = {
            let mut outbox = self.outbox.borrow_mut();
            let push = outbox.push_room(frame, msg.clone());
            (push, outbox.take_actions())
        };
        if actions != PolicyActions::default() {
            crate::metrics::slow_consumer_actions(actions);
        }
        self.delivered(push)
    }

    /// Queues a live frame (ephemeral event, join, leave), already in this connection's wire
    /// form, dropped rather than queued past the high-water mark.
    pub fn push_live(&self, frame: Bytes) -> Delivery {
        if self.closing_since.get().is_some() {
            return Delivery::Refused;
        }
        let push = self.outbox.borrow_mut().push_live(frame);
        if push == Push::Dropped {
            crate::metrics::slow_consumer_actions(PolicyActions {
                live_dropped: 1,
                ..PolicyActions::default()
            });
        }
        self.delivered(push)
    }

    /// A delivery's outcome; an overflow asks for the close. A started queue is not woken
    /// here: the deliverer lists it for the write pass.
    fn delivered(&self, push: Push) -> Delivery {
        match push {
            Push::QueuedFirst => Delivery::Started,
            Push::Queued => Delivery::Queued,
            Push::Dropped => Delivery::Refused,
            Push::Overflow => {
                self.after_push(push);
                Delivery::Refused
            }
        }
    }

    fn after_push(&self, push: Push) -> bool {
        match push {
            Push::QueuedFirst => {
                self.wake();
                true
            }
            Push::Queued => true,
            Push::Dropped => false,
            Push::Overflow => {
                self.request_close(CloseRequest {
                    code: proto_codec::protocol::codes::close::SLOW_CONSUMER,
                    reason: "slow consumer".into(),
                    discard_queue: true,
                });
                false
            }
        }
    }

    /// Queues a WebSocket control frame (ping, close) or an echoed frame, ignoring the mark;
    /// an event stream or a long poll has none (it is not a WebSocket). Nothing is queued
    /// after a close frame.
    pub fn push_ws_control(&self, frame: Bytes) {
        if matches!(self.profile.form, Form::Sse | Form::Json) {
            return;
        }
        self.push_bytes(frame);
    }

    /// Queues the answer to a client's ping, replacing one not yet written.
    pub fn push_pong(&self, frame: Bytes) {
        if self.closing_since.get().is_some() {
            return;
        }
        if self.outbox.borrow_mut().push_pong(frame) == Push::QueuedFirst {
            self.wake();
        }
    }

    /// Queues bytes exactly as they are, ignoring the mark (SSE heartbeats and `retry:`).
    pub fn push_bytes(&self, frame: Bytes) {
        if self.closing_since.get().is_some() {
            return;
        }
        if self.outbox.borrow_mut().push_control(frame) == Push::QueuedFirst {
            self.wake();
        }
    }

    /// The outbound queue, for the connection's writer.
    pub fn outbox(&self) -> &RefCell<Outbox> {
        &self.outbox
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.borrow().queued_bytes()
    }

    /// Asks the connection to close; the first request wins.
    pub fn request_close(&self, req: CloseRequest) {
        let mut slot = self.close_request.borrow_mut();
        if slot.is_none() && self.closing_since.get().is_none() {
            *slot = Some(Box::new(req));
            drop(slot);
            self.wake();
        }
    }

    /// Whether a close was asked for and not yet taken.
    pub fn close_requested(&self) -> bool {
        self.close_request.borrow().is_some()
    }

    /// Takes a pending close request.
    pub fn take_close_request(&self) -> Option<CloseRequest> {
        self.close_request.borrow_mut().take().map(|b| *b)
    }

    /// Remembers the task's waker (only when it changed).
    pub fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Wakes the connection's task.
    pub fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}
