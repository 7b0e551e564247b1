//! Lock-free queues between shards (and from the admin thread to shards).
//!
//! Each shard has one inbox: a crossbeam `SegQueue` (lock-free MPSC in practice) and an
//! `AtomicWaker`. The queue counts the bytes its messages hold ([`ShardMsg::weight`]); past
//! `limits.shard_inbox_bytes` it is full, and work that input creates is refused at its source
//! instead of queued (a publish gets `unavailable`, an ephemeral event is dropped: see
//! `ShardCtx::publish`), so a shard that falls behind cannot grow another's memory without bound. A sender pushes and wakes; the waker is taken by the first wake, so a burst of
//! messages costs one cross-thread wake (monoio's `sync` feature turns it into one eventfd write).
//! The shard drains the whole queue per wake. Messages carry `Bytes` and `Arc`s, never references
//! into another shard's memory.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use atomic_waker::AtomicWaker;
use broker_bridge::{Epoch, RoomName};
use bytes::Bytes;
use crossbeam_queue::SegQueue;
use proto_codec::protocol::{ErrorCode, Member};

use crate::ids::{ConnId, ShardId};
use crate::outgoing::{LiveMsg, Outgoing, Source};

/// Where the answer to a publish goes.
#[derive(Debug)]
pub enum PublishOrigin {
    /// A client connection: ack (with the op's id) or error back to it.
    Conn {
        /// The connection's shard.
        shard: ShardId,
        /// The connection.
        conn: ConnId,
        /// The op's id; no ack without it (errors are always sent).
        id: Option<u64>,
    },
    /// The server API: the result goes back on a oneshot.
    Api(tokio::sync::oneshot::Sender<Result<(Epoch, u64), ErrorCode>>),
    /// Raw broadcast: no answer.
    Raw,
}

/// A message to a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// To a room's home shard: a connection subscribes.
    Subscribe(Box<SubscribeReq>),
    /// To a room's home shard: one subscriber on `origin` left.
    Unsubscribe {
        /// The room.
        room: RoomName,
        /// The subscriber's shard.
        origin: ShardId,
        /// The subscriber.
        conn: ConnId,
        /// The subscriber took shared compressed frames.
        deflate: bool,
    },
    /// To a room's home shard: publish.
    Publish {
        /// The room.
        room: RoomName,
        /// The data (valid JSON).
        data: Bytes,
        /// Who gets the answer.
        origin: PublishOrigin,
        /// Which protocol's path made it.
        source: Source,
    },
    /// From a home shard: the subscription is in force; register the subscriber and send it
    /// its answer (the `subscribed` event, then any replayed messages).
    Subscribed {
        /// The room.
        room: RoomName,
        /// The subscriber.
        conn: ConnId,
        /// The request's sequence number on the connection.
        seq: u64,
        /// Whether the subscription is in force (else `answer` holds the error).
        ok: bool,
        /// What to send, in order.
        answer: Vec<Outgoing>,
    },
    /// From a home shard: deliver a room message to this shard's subscribers.
    Deliver {
        /// The room.
        room: RoomName,
        /// The encoded `msg` frame, shared by every subscriber.
        frame: Bytes,
        /// The same frame compressed (permessage-deflate), when a subscriber negotiated it.
        deflated: Option<Bytes>,
        /// Data, position, time and slow-consumer key of the message.
        meta: DeliverMeta,
    },
    /// From a home shard: deliver a live event (ephemeral event, join, leave, gap, awareness)
    /// to this shard's subscribers of its room, except one connection (its sender or subject).
    DeliverLive {
        /// The event with its shared frame.
        live: Arc<LiveMsg>,
        /// The connection that must not get it.
        except: Option<(ShardId, ConnId)>,
    },
    /// To a room's home shard: an ephemeral event from a connection.
    Event {
        /// The room.
        room: RoomName,
        /// The event's data (valid JSON).
        data: Bytes,
        /// The sender (it does not get its own event).
        from: (ShardId, ConnId),
        /// Which protocol's path made it.
        source: Source,
    },
    /// To a room's home shard: who is present? The answer goes back as `ToConn`.
    Presence {
        /// The room.
        room: RoomName,
        /// The asking connection.
        from: (ShardId, ConnId),
        /// The op's id.
        id: Option<u64>,
    },
    /// To a room's home shard: read stored messages. The answer goes back as `ToConn`.
    History {
        /// The room.
        room: RoomName,
        /// The asking connection.
        from: (ShardId, ConnId),
        /// The op's id.
        id: Option<u64>,
        /// Return messages after this position.
        since: Option<(String, u64)>,
        /// At most this many.
        limit: usize,
    },
    /// To a collaborative room's home shard: a y-websocket client's sync step 1; the answer
    /// (what it lacks, the server's state vector, the awareness states) goes back as `ToConn`.
    CrdtSync {
        /// The room.
        room: RoomName,
        /// The asking connection.
        from: (ShardId, ConnId),
        /// The client's state vector (lib0 v1).
        state_vector: Bytes,
    },
    /// To a collaborative room's home shard: a y-websocket client's awareness message, relayed
    /// to the room's other y-websocket clients (on every node).
    CrdtAwareness {
        /// The room.
        room: RoomName,
        /// The sender.
        from: (ShardId, ConnId),
        /// The whole y-protocols message.
        update: Bytes,
    },
    /// To a collaborative room's home shard: a y-websocket client asks for every awareness state.
    CrdtAwarenessQuery {
        /// The room.
        room: RoomName,
        /// The asking connection.
        from: (ShardId, ConnId),
    },
    /// To every shard: close the Pusher connections signed in as a user of an app (the API's
    /// `terminate_connections`).
    PusherTerminate {
        /// The app's index.
        app: usize,
        /// The signed-in user id.
        user: String,
    },
    /// Close one connection (a y-websocket client whose document could not be loaded).
    CloseConn {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: u16,
        /// Why.
        reason: String,
    },
    /// Send an answer to one connection (acks, errors, presence, history).
    ToConn {
        /// The connection.
        conn: ConnId,
        /// The answer.
        out: Outgoing,
    },
    /// A server API query (from the admin thread).
    Admin(AdminQuery),
    /// The broker bridge has events for this shard (polled after every mailbox batch).
    BrokerReady,
    /// Begin graceful shutdown.
    Shutdown,
}

/// A server API query to a shard; the answer goes back on the oneshot.
#[derive(Debug)]
pub enum AdminQuery {
    /// To every shard: its publish→write latency histograms over the window, per namespace.
    Slo {
        /// One histogram per namespace index.
        reply: tokio::sync::oneshot::Sender<Vec<crate::slo::LatencyHist>>,
    },
    /// To a room's home shard: its presence members.
    Presence {
        /// The room.
        room: RoomName,
        /// The members, or why not (a networked broker may be unreachable).
        reply: tokio::sync::oneshot::Sender<Result<Vec<Member>, ErrorCode>>,
    },
    /// To a room's home shard: stored messages, as a `history` event's JSON.
    History {
        /// The room.
        room: RoomName,
        /// Return messages after this position.
        since: Option<(String, u64)>,
        /// At most this many.
        limit: usize,
        /// The JSON, or why not.
        reply: tokio::sync::oneshot::Sender<Result<String, ErrorCode>>,
    },
    /// To every shard: the rooms it is home to, with their subscribers on the node.
    Rooms {
        /// The rooms.
        reply: tokio::sync::oneshot::Sender<Vec<(RoomName, u64)>>,
    },
    /// To every shard: what the admin page shows of it (`GET /api/overview`).
    Overview {
        /// How many of its busiest rooms to list.
        top: usize,
        /// Its connections, rooms and latency histograms.
        reply: tokio::sync::oneshot::Sender<ShardOverview>,
    },
    /// To every shard: close the connections of a user (4003); answers how many.
    Disconnect {
        /// The token `sub`.
        user: String,
        /// How many were closed.
        reply: tokio::sync::oneshot::Sender<usize>,
    },
}

/// One shard's part of the admin page's snapshot ([`AdminQuery::Overview`]).
#[derive(Debug, Default)]
pub struct ShardOverview {
    /// Its open connections per transport, indexed by [`crate::form::Form::index`].
    pub connections: [u64; crate::form::Form::ALL.len()],
    /// Rooms it is home to (with a subscriber on the node).
    pub rooms: usize,
    /// Its busiest rooms: the highest message rate first, then the most subscribers.
    pub busiest: Vec<RoomActivity>,
    /// Its publish→write latency histograms over the window, per namespace index.
    pub slo: Vec<crate::slo::LatencyHist>,
}

/// A room's activity as its home shard counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomActivity {
    /// The room.
    pub room: RoomName,
    /// Its subscribers on the node.
    pub subscribers: u64,
    /// Messages fanned out since its first subscriber on the node arrived.
    pub messages: u64,
    /// Messages per second over the last rate interval (`rooms::home::RATE_INTERVAL` or more).
    pub rate_per_s: f64,
}

/// A subscribe request, as the room's home shard gets it.
#[derive(Debug)]
pub struct SubscribeReq {
    /// The room.
    pub room: RoomName,
    /// The subscriber's shard.
    pub origin: ShardId,
    /// The subscriber.
    pub conn: ConnId,
    /// The op's id.
    pub id: Option<u64>,
    /// The request's sequence number on the connection.
    pub seq: u64,
    /// Resume position.
    pub since: Option<(String, u64)>,
    /// The subscriber takes shared compressed frames.
    pub deflate: bool,
    /// The subscriber as a presence member (namespaces with presence).
    pub member: Option<Member>,
    /// Whether the namespace sends join/leave events.
    pub join_leave: bool,
}

/// What a receiving shard needs to queue a room message under its namespace's policy.
#[derive(Debug, Clone)]
pub struct DeliverMeta {
    /// The stored data (the forms other than the shared frame are built from it).
    pub data: Bytes,
    /// The room's epoch.
    pub epoch: Epoch,
    /// The message's offset.
    pub offset: u64,
    /// When it was published.
    pub published_at: Instant,
    /// Its conflation key, when its namespace conflates.
    pub key: Option<u64>,
    /// Its namespace's index.
    pub namespace: usize,
}

/// One shard's inbox.
#[derive(Debug, Default)]
pub struct Inbox {
    queue: SegQueue<ShardMsg>,
    waker: AtomicWaker,
    depth: AtomicU64,
    /// The weight of the queued messages.
    bytes: AtomicUsize,
}

/// Every shard's inbox, shared by all threads.
#[derive(Debug, Clone)]
pub struct Mailboxes {
    inboxes: Arc<[Inbox]>,
    /// Past this weight an inbox is full ([`Mailboxes::is_full`]).
    bound_bytes: usize,
}

impl ShardMsg {
    /// The bytes a queued message holds, counted against its inbox's bound: its payloads plus
    /// a fixed share for the message itself. (A frame shared by several inboxes counts in each.)
    pub fn weight(&self) -> usize {
        const BASE: usize = 128;
        BASE + match self {
            ShardMsg::Publish { data, .. } => data.len(),
            ShardMsg::Subscribed { answer, .. } => answer.iter().map(Outgoing::weight).sum(),
            // The data is shared with the frames of every shard's copy; counted in each.
            ShardMsg::Deliver {
                frame,
                deflated,
                meta,
                ..
            } => frame.len() + deflated.as_ref().map_or(0, Bytes::len) + meta.data.len(),
            ShardMsg::DeliverLive { live, .. } => live.weight(),
            ShardMsg::Event { data, .. } => data.len(),
            ShardMsg::ToConn { out, .. } => out.weight(),
            ShardMsg::CrdtSync { state_vector, .. } => state_vector.len(),
            ShardMsg::CrdtAwareness { update, .. } => update.len(),
            _ => 0,
        }
    }
}

impl Mailboxes {
    /// Inboxes for `shards` shards, each full past `bound_bytes` (`limits.shard_inbox_bytes`).
    pub fn new(shards: usize, bound_bytes: usize) -> Mailboxes {
        Mailboxes {
            inboxes: (0..shards).map(|_| Inbox::default()).collect(),
            bound_bytes,
        }
    }

    /// Whether a shard's inbox holds more than its bound: work created by input is refused
    /// rather than sent there.
    pub fn is_full(&self, shard: ShardId) -> bool {
        self.inboxes
            .get(shard)
            .is_some_and(|i| i.bytes.load(Ordering::Relaxed) > self.bound_bytes)
    }

    /// The number of shards.
    pub fn len(&self) -> usize {
        self.inboxes.len()
    }

    /// Whether there are no shards.
    pub fn is_empty(&self) -> bool {
        self.inboxes.is_empty()
    }

    /// Sends a message to a shard and wakes it.
    pub fn send(&self, to: ShardId, msg: ShardMsg) {
        if let Some(inbox) = self.inboxes.get(to) {
            inbox.bytes.fetch_add(msg.weight(), Ordering::Relaxed);
            inbox.queue.push(msg);
            inbox.depth.fetch_add(1, Ordering::Relaxed);
            inbox.waker.wake();
        }
    }

    /// Sends to every shard.
    pub fn broadcast(&self, mut make: impl FnMut() -> ShardMsg) {
        for shard in 0..self.inboxes.len() {
            self.send(shard, make());
        }
    }

    /// Messages queued for a shard (for metrics).
    pub fn depth(&self, shard: ShardId) -> u64 {
        self.inboxes
            .get(shard)
            .map_or(0, |i| i.depth.load(Ordering::Relaxed))
    }

    /// Waits until the shard's inbox has messages, then moves them all into `out`.
    pub async fn recv_batch(&self, shard: ShardId, out: &mut Vec<ShardMsg>) {
        let Some(inbox) = self.inboxes.get(shard) else {
            return std::future::pending().await;
        };
        poll_fn(|cx| {
            if drain(inbox, out) {
                return Poll::Ready(());
            }
            inbox.waker.register(cx.waker());
            // A message pushed between the drain and the register would have found no waker.
            if drain(inbox, out) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

fn drain(inbox: &Inbox, out: &mut Vec<ShardMsg>) -> bool {
    let before = out.len();
    let mut weight = 0;
    while let Some(m) = inbox.queue.pop() {
        weight += m.weight();
        out.push(m);
    }
    let n = out.len() - before;
    if n > 0 {
        inbox.depth.fetch_sub(n as u64, Ordering::Relaxed);
        inbox.bytes.fetch_sub(weight, Ordering::Relaxed);
    }
    n > 0
}

/// The home shard of a room: a stable hash of its name modulo the shard count.
pub fn home_shard(room: &str, shards: usize) -> ShardId {
    // FNV-1a: stable across processes and versions (std's hasher is randomly seeded).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_spread() {
        assert_eq!(home_shard("prices.BTC", 4), home_shard("prices.BTC", 4));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[home_shard(&format!("room.{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_eq!(home_shard("x", 1), 0);
    }

    #[test]
    fn an_inbox_counts_the_bytes_it_holds_and_is_full_past_its_bound() {
        let boxes = Mailboxes::new(2, 10_000);
        let publish = |n: usize| ShardMsg::Publish {
            room: "r".into(),
            data: Bytes::from(vec![b'x'; n]),
            origin: PublishOrigin::Raw,
            source: Source::Raw,
        };
        boxes.send(1, publish(6_000));
        assert!(!boxes.is_full(1));
        boxes.send(1, publish(6_000));
        assert!(boxes.is_full(1) && !boxes.is_full(0));
        let mut out = Vec::new();
        assert!(drain(&boxes.inboxes[1], &mut out));
        assert_eq!(out.len(), 2);
        assert!(!boxes.is_full(1));
        assert_eq!(boxes.inboxes[1].bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn cross_thread_send_wakes_a_monoio_shard() {
        let boxes = Mailboxes::new(1, 1 << 20);
        let sender = boxes.clone();
        let handle = std::thread::spawn(move || {
            for i in 0..1000u64 {
                sender.send(
                    0,
                    ShardMsg::ToConn {
                        conn: i,
                        out: crate::outgoing::Outgoing::Yjs(Bytes::new()),
                    },
                );
            }
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let got = rt.block_on(async move {
            let mut all = Vec::new();
            while all.len() < 1000 {
                boxes.recv_batch(0, &mut all).await;
            }
            all
        });
        handle.join().unwrap();
        let ids: Vec<u64> = got
            .iter()
            .map(|m| match m {
                ShardMsg::ToConn { conn, .. } => *conn,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(ids, (0..1000).collect::<Vec<_>>(), "FIFO from one sender");
    }
}
