//! The client: a handle the app calls, and one task that owns the connection, reconnects, and
//! resumes every room from its last position.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_codec::protocol::binary::{decode_binary_msg, encode_binary_publish, from_base64};
use proto_codec::protocol::room::MAX_ROOM_BYTES;
use proto_codec::protocol::{ClientOp, ErrorCode, Member, Position, ServerEvent};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backoff::Backoff;
use crate::transport::{self, ConnectError, Incoming, Writer};

/// Gives a token for each connection (and for `refresh` before the current one expires).
pub type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<String>> + Send>> + Send + Sync>;

/// How the client connects and recovers.
#[derive(Clone)]
pub struct ClientConfig {
    /// The gateway's `host:port`.
    pub addr: String,
    /// The WebSocket path.
    pub path: String,
    /// The JWT for each connection, asked again on every reconnect and on `token_expiring`.
    pub token: Option<TokenProvider>,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// No frame for this long means the connection is dead (default: twice the server's
    /// heartbeat interval from `hello`, plus 5 s).
    pub heartbeat_timeout: Option<Duration>,
    /// Publishes kept while disconnected; past it `publish` fails with [`ClientError::QueueFull`].
    pub offline_queue: usize,
    /// A publish not acknowledged within this fails with [`ClientError::Timeout`] (queued time
    /// included).
    pub publish_timeout: Duration,
    /// Connecting gives up after this.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for a gateway at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr: addr.into(),
            path: "/ws".into(),
            token: None,
            backoff: Backoff::default(),
            heartbeat_timeout: None,
            offline_queue: 1000,
            publish_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .field("token", &self.token.as_ref().map(|_| "<provider>"))
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// Where the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// The first connection attempt.
    Connecting,
    /// Connected; `hello` received.
    Open {
        /// This connection's client id.
        client: String,
        /// The node serving it.
        node: String,
    },
    /// Lost; the next attempt comes after `retry_in`.
    Reconnecting {
        /// Attempts since the last stable connection.
        attempt: u32,
        /// Delay before the next attempt.
        retry_in: Duration,
        /// Why the last connection ended.
        reason: String,
    },
    /// Closed by the app, or refused for good (an auth failure without a token provider).
    Closed {
        /// Why.
        reason: String,
    },
}

/// What a subscription receives.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A room message published as JSON.
    Message {
        /// The room's epoch.
        epoch: String,
        /// The message's offset.
        offset: u64,
        /// The data as published (JSON).
        data: Box<RawValue>,
    },
    /// A room message published as bytes ([`Client::publish_binary`], `docs/protocol.md` §9.9).
    /// It shares the room's offsets with JSON messages: both kinds arrive in one offset order,
    /// and a resume replays both.
    Binary {
        /// The room's epoch.
        epoch: String,
        /// The message's offset.
        offset: u64,
        /// The payload as published (possibly empty).
        data: Vec<u8>,
    },
    /// The subscription is in force (first time, or again after a reconnect). With
    /// `resumed: true` and `recovered: false`, messages were missed that the server no longer
    /// holds: refetch the room's state.
    Subscribed {
        /// The room's epoch.
        epoch: String,
        /// The room's latest offset then.
        offset: u64,
        /// Every message after the position resumed from follows.
        recovered: bool,
        /// The client resumed from a position it had.
        resumed: bool,
    },
    /// Messages `from..=to` will not arrive (dropped for this slow connection, or lost).
    Gap {
        /// The room's epoch.
        epoch: String,
        /// First offset missed.
        from: u64,
        /// Last offset missed.
        to: u64,
    },
    /// An ephemeral event from another client.
    Event {
        /// Its payload.
        data: Box<RawValue>,
    },
    /// A member joined.
    Join(Member),
    /// A member left.
    Leave(Member),
    /// The server ended the subscription (for example, a refreshed token no longer allows it).
    Unsubscribed {
        /// Why.
        reason: String,
    },
}

impl RoomEvent {
    /// The offset of a room message ([`RoomEvent::Message`] or [`RoomEvent::Binary`]); `None`
    /// for the other events.
    pub fn message_offset(&self) -> Option<u64> {
        match self {
            RoomEvent::Message { offset, .. } | RoomEvent::Binary { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// A page of a room's stored messages, as [`Client::history_messages`] returns it.
#[derive(Debug, Clone)]
pub struct History {
    /// The room's current epoch (every message is in it).
    pub epoch: String,
    /// The room's latest offset.
    pub offset: u64,
    /// `true` when `since` was given and everything after it is in `messages` (or follows in
    /// the next page, when `limit` cut it).
    pub recovered: bool,
    /// The messages, oldest first: [`RoomEvent::Message`] for JSON, [`RoomEvent::Binary`] for
    /// bytes, as a subscription delivers them (one handler serves both).
    pub messages: Vec<RoomEvent>,
}

/// A publish's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The room's epoch.
    pub epoch: String,
    /// The message's offset.
    pub offset: u64,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The offline queue is full.
    #[error("the offline queue is full")]
    QueueFull,
    /// The connection ended with the request sent but unanswered: it may or may not have taken
    /// effect (retrying a publish may store it twice).
    #[error("the connection was lost before the answer")]
    ConnectionLost,
    /// Already subscribed to this room on this client.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The server refused: its error code and reason.
    #[error("{code}: {reason}")]
    Server {
        /// The error code (`forbidden`, `unavailable`, ...).
        code: String,
        /// Why.
        reason: String,
    },
    /// The server's answer did not decode (for example a history item whose `bin` is not
    /// base64).
    #[error("bad answer from the server: {0}")]
    BadAnswer(String),
}

enum Cmd {
    Subscribe {
        room: String,
        presence: bool,
        events: mpsc::UnboundedSender<RoomEvent>,
        done: oneshot::Sender<Result<(), ClientError>>,
    },
    Unsubscribe {
        room: String,
    },
    Publish(QueuedPublish),
    Request {
        op: Request,
        done: oneshot::Sender<Result<Vec<u8>, ClientError>>,
    },
    Close,
}

enum Request {
    Presence {
        room: String,
    },
    History {
        room: String,
        since: Option<Position>,
        limit: Option<u32>,
    },
}

/// What a publish carries.
enum PublishData {
    /// JSON, sent as a `publish` op.
    Json(Box<RawValue>),
    /// Bytes, sent as a binary publish (`docs/protocol.md` §9.9).
    Binary(Vec<u8>),
}

struct QueuedPublish {
    room: String,
    data: PublishData,
    deadline: Instant,
    done: oneshot::Sender<Result<Published, ClientError>>,
}

/// A handle on the client; cheap to clone. The connection task ends when every handle (and
/// every subscription) is dropped, or on [`Client::close`].
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    state: watch::Receiver<ConnState>,
}

/// A room subscription: its events in order; dropping it unsubscribes.
pub struct Subscription {
    room: String,
    events: mpsc::UnboundedReceiver<RoomEvent>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl Subscription {
    /// The room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The next event; `None` once the client is closed or the server ended the subscription.
    pub async fn next(&mut self) -> Option<RoomEvent> {
        self.events.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Unsubscribe {
            room: self.room.clone(),
        });
    }
}

impl Client {
    /// Starts the client on the current tokio runtime; it connects in the background (watch
    /// [`Client::state`]).
    pub fn connect(config: ClientConfig) -> Client {
        let (cmds, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ConnState::Connecting);
        tokio::spawn(Driver::new(config, rx, state_tx).run());
        Client { cmds, state }
    }

    /// The connection state, to watch.
    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.state.clone()
    }

    /// Waits until the client is connected (or `timeout` passes).
    pub async fn wait_open(&self, timeout: Duration) -> bool {
        let mut s = self.state.clone();
        tokio::time::timeout(timeout, async {
            loop {
                if matches!(*s.borrow_and_update(), ConnState::Open { .. }) {
                    return;
                }
                if s.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Subscribes to a room (with `presence`, as a member); resolves when the server confirms.
    /// After every reconnect the client resubscribes from the last offset it delivered.
    pub async fn subscribe(&self, room: &str, presence: bool) -> Result<Subscription, ClientError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (done, answer) = oneshot::channel();
        self.cmds
            .send(Cmd::Subscribe {
                room: room.to_string(),
                presence,
                events: events_tx,
                done,
            })
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)??;
        Ok(Subscription {
            room: room.to_string(),
            events,
            cmds: self.cmds.clone(),
        })
    }

    /// Publishes JSON `data` to a room; resolves with its position once the server acknowledged
    /// it. While disconnected the publish waits in the offline queue (bounded, with the
    /// publish timeout).
    pub async fn publish(
        &self,
        room: &str,
        data: &serde_json::Value,
    ) -> Result<Published, ClientError> {
        let data = serde_json::value::to_raw_value(data).map_err(|e| ClientError::Server {
            code: "bad_request".into(),
            reason: e.to_string(),
        })?;
        self.publish_data(room, PublishData::Json(data)).await
    }

    /// Publishes bytes to a room as a binary message (`docs/protocol.md` §9.9: no JSON, no
    /// base64 on the WebSocket). Acked, queued while disconnected and timed out exactly like
    /// [`Client::publish`]; the message takes the room's next offset, as a JSON one would.
    /// Subscribers get it as [`RoomEvent::Binary`].
    pub async fn publish_binary(&self, room: &str, data: &[u8]) -> Result<Published, ClientError> {
        // The envelope has one byte for the room's length; the server allows 200.
        if room.len() > MAX_ROOM_BYTES {
            return Err(ClientError::Server {
                code: "bad_room".into(),
                reason: format!("room name longer than {MAX_ROOM_BYTES} bytes"),
            });
        }
        self.publish_data(room, PublishData::Binary(data.to_vec()))
            .await
    }

    async fn publish_data(&self, room: &str, data: PublishData) -> Result<Published, ClientError> {
        let (done, answer) = oneshot::channel();
        self.cmds
            .send(Cmd::Publish(QueuedPublish {
                room: room.to_string(),
                data,
                deadline: Instant::now(),
                done,
            }))
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Who is in a room (the `presence` event as JSON).
    pub async fn presence(&self, room: &str) -> Result<serde_json::Value, ClientError> {
        let raw = self
            .request(Request::Presence {
                room: room.to_string(),
            })
            .await?;
        Ok(serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null))
    }

    /// A room's stored messages (the `history` event as JSON). Binary messages are items with
    /// `bin` (standard base64) instead of `data`; [`Client::history_messages`] decodes them.
    pub async fn history(
        &self,
        room: &str,
        since: Option<(String, u64)>,
        limit: Option<u32>,
    ) -> Result<serde_json::Value, ClientError> {
        let raw = self.history_raw(room, since, limit).await?;
        Ok(serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null))
    }

    /// A room's stored messages, decoded: JSON messages as [`RoomEvent::Message`] (their data
    /// byte for byte as published), binary ones as [`RoomEvent::Binary`].
    pub async fn history_messages(
        &self,
        room: &str,
        since: Option<(String, u64)>,
        limit: Option<u32>,
    ) -> Result<History, ClientError> {
        let raw = self.history_raw(room, since, limit).await?;
        decode_history(&raw)
    }

    async fn history_raw(
        &self,
        room: &str,
        since: Option<(String, u64)>,
        limit: Option<u32>,
    ) -> Result<Vec<u8>, ClientError> {
        self.request(Request::History {
            room: room.to_string(),
            since: since.map(|(epoch, offset)| Position { epoch, offset }),
            limit,
        })
        .await
    }

    /// Sends a request; resolves with the answer's JSON text.
    async fn request(&self, op: Request) -> Result<Vec<u8>, ClientError> {
        let (done, answer) = oneshot::channel();
        self.cmds
            .send(Cmd::Request { op, done })
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Closes the connection for good.
    pub fn close(&self) {
        let _ = self.cmds.send(Cmd::Close);
    }
}

/// Decodes a `history` answer.
fn decode_history(raw: &[u8]) -> Result<History, ClientError> {
    let bad = |why: String| ClientError::BadAnswer(why);
    let Ok(ServerEvent::History {
        epoch,
        offset,
        recovered,
        messages,
        ..
    }) = ServerEvent::decode(raw)
    else {
        return Err(bad("not a history event".into()));
    };
    let messages = messages
        .into_iter()
        .map(|item| match (item.bin, item.data) {
            (Some(bin), _) => from_base64(&bin)
                .map(|data| RoomEvent::Binary {
                    epoch: epoch.to_string(),
                    offset: item.offset,
                    data,
                })
                .ok_or_else(|| bad(format!("`bin` of offset {} is not base64", item.offset))),
            (None, Some(data)) => Ok(RoomEvent::Message {
                epoch: epoch.to_string(),
                offset: item.offset,
                data: data.to_owned(),
            }),
            (None, None) => Err(bad(format!(
                "history item {} has neither `data` nor `bin`",
                item.offset
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(History {
        epoch: epoch.into_owned(),
        offset,
        recovered,
        messages,
    })
}

struct RoomSub {
    presence: bool,
    events: mpsc::UnboundedSender<RoomEvent>,
    /// The last position delivered.
    position: Option<(String, u64)>,
    /// The app's `subscribe` call, until the first `subscribed`.
    first: Option<oneshot::Sender<Result<(), ClientError>>>,
}

/// A room to subscribe again: its name, presence, and last position.
type Resume = (String, bool, Option<(String, u64)>);

enum Inflight {
    Subscribe(String),
    Publish(QueuedPublish),
    Request(oneshot::Sender<Result<Vec<u8>, ClientError>>),
}

/// How a connection ended.
struct Ended {
    reason: String,
    /// The server's reconnect hint (close 1001).
    hint: Option<Duration>,
    /// Do not reconnect (closed by the app, or an auth refusal a new token cannot fix).
    permanent: bool,
    /// It had been up long enough to reset the backoff.
    stable: bool,
}

struct Driver {
    config: ClientConfig,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    state: watch::Sender<ConnState>,
    rooms: HashMap<String, RoomSub>,
    queue: VecDeque<QueuedPublish>,
    inflight: HashMap<u64, Inflight>,
    /// Rooms whose resubscription the server refused for now (`unavailable`: its broker not
    /// ready yet, say), and when to ask again.
    resubscribe_at: Vec<(Instant, String)>,
    next_id: u64,
    closed: bool,
}

/// How long a room whose resubscription was refused as `unavailable` waits to ask again.
const RESUBSCRIBE_RETRY: Duration = Duration::from_millis(250);

impl Driver {
    fn new(
        config: ClientConfig,
        cmds: mpsc::UnboundedReceiver<Cmd>,
        state: watch::Sender<ConnState>,
    ) -> Driver {
        Driver {
            config,
            cmds,
            state,
            rooms: HashMap::new(),
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            resubscribe_at: Vec::new(),
            next_id: 1,
            closed: false,
        }
    }

    async fn run(mut self) {
        let mut attempt = 0u32;
        while !self.closed {
            let token = match &self.config.token {
                Some(p) => p().await,
                None => None,
            };
            let connected = transport::connect(
                &self.config.addr,
                &self.config.path,
                token.as_deref(),
                self.config.connect_timeout,
            )
            .await;
            let ended = match connected {
                Ok((writer, incoming)) => self.serve(writer, incoming).await,
                Err(ConnectError::Refused { status, code }) => Ended {
                    permanent: matches!(code, 401 | 403) && self.config.token.is_none(),
                    reason: status,
                    hint: None,
                    stable: false,
                },
                Err(e) => Ended {
                    reason: e.to_string(),
                    hint: None,
                    permanent: false,
                    stable: false,
                },
            };
            self.connection_lost();
            if ended.permanent || self.closed {
                self.shut_down(&ended.reason);
                return;
            }
            if ended.stable {
                attempt = 0;
            }
            let delay = ended
                .hint
                .unwrap_or_else(|| self.config.backoff.delay(attempt));
            attempt = attempt.saturating_add(1);
            let _ = self.state.send(ConnState::Reconnecting {
                attempt,
                retry_in: delay,
                reason: ended.reason,
            });
            self.wait_offline(delay).await;
        }
        self.shut_down("closed");
    }

    /// Waits out a reconnect delay while taking the app's calls (publishes are queued).
    async fn wait_offline(&mut self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.offline(cmd),
                    None => { self.closed = true; return; }
                },
            }
            self.expire_queue();
            if self.closed {
                return;
            }
        }
    }

    fn offline(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Subscribe {
                room,
                presence,
                events,
                done,
            } => {
                self.add_room(room, presence, events, done);
            }
            Cmd::Unsubscribe { room } => {
                self.rooms.remove(&room);
            }
            Cmd::Publish(p) => self.enqueue(p),
            Cmd::Request { done, .. } => {
                let _ = done.send(Err(ClientError::ConnectionLost));
            }
            Cmd::Close => self.closed = true,
        }
    }

    fn add_room(
        &mut self,
        room: String,
        presence: bool,
        events: mpsc::UnboundedSender<RoomEvent>,
        done: oneshot::Sender<Result<(), ClientError>>,
    ) -> bool {
        if self.rooms.contains_key(&room) {
            let _ = done.send(Err(ClientError::AlreadySubscribed));
            return false;
        }
        self.rooms.insert(
            room,
            RoomSub {
                presence,
                events,
                position: None,
                first: Some(done),
            },
        );
        true
    }

    fn enqueue(&mut self, mut p: QueuedPublish) {
        if self.queue.len() >= self.config.offline_queue {
            let _ = p.done.send(Err(ClientError::QueueFull));
            return;
        }
        p.deadline = Instant::now() + self.config.publish_timeout;
        self.queue.push_back(p);
    }

    fn expire_queue(&mut self) {
        let now = Instant::now();
        while self.queue.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = self.queue.pop_front() {
                let _ = p.done.send(Err(ClientError::Timeout));
            }
        }
    }

    /// Requests sent on a connection that ended get no answer: they fail (a publish may or may
    /// not have been stored).
    fn connection_lost(&mut self) {
        // Every room is asked for again on the next connection.
        self.resubscribe_at.clear();
        for (_, f) in self.inflight.drain() {
            match f {
                Inflight::Publish(p) => {
                    let _ = p.done.send(Err(ClientError::ConnectionLost));
                }
                Inflight::Request(done) => {
                    let _ = done.send(Err(ClientError::ConnectionLost));
                }
                // Resubscribed on the next connection.
                Inflight::Subscribe(_) => {}
            }
        }
    }

    fn shut_down(&mut self, reason: &str) {
        for p in self.queue.drain(..) {
            let _ = p.done.send(Err(ClientError::Closed));
        }
        for (_, r) in self.rooms.drain() {
            if let Some(done) = r.first {
                let _ = done.send(Err(ClientError::Closed));
            }
        }
        let _ = self.state.send(ConnState::Closed {
            reason: reason.to_string(),
        });
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn serve(
        &mut self,
        mut w: Writer,
        mut incoming: mpsc::UnboundedReceiver<Incoming>,
    ) -> Ended {
        let opened = Instant::now();
        let reset_after = self.config.backoff.reset_after;
        let lost = |reason: String, hint: Option<Duration>, permanent: bool| Ended {
            stable: opened.elapsed() >= reset_after,
            reason,
            hint,
            permanent,
        };
        // `hello` first.
        let hello = tokio::time::timeout(self.config.connect_timeout, incoming.recv()).await;
        let heartbeat_ms = match hello {
            Ok(Some(Incoming::Text(t))) => match ServerEvent::decode(&t) {
                Ok(ServerEvent::Hello {
                    client,
                    node,
                    heartbeat_ms,
                }) => {
                    let _ = self.state.send(ConnState::Open {
                        client: client.into_owned(),
                        node: node.into_owned(),
                    });
                    heartbeat_ms
                }
                _ => return lost("no hello".into(), None, false),
            },
            Ok(Some(Incoming::Close(code, reason))) => {
                return self.closed_by_server(code, reason, opened)
            }
            _ => return lost("no hello".into(), None, false),
        };
        let silence = self.config.heartbeat_timeout.unwrap_or(
            Duration::from_millis(heartbeat_ms.saturating_mul(2)) + Duration::from_secs(5),
        );
        // Resubscribe every room from its position, then send what waited offline.
        let rooms: Vec<Resume> = self
            .rooms
            .iter()
            .map(|(r, s)| (r.clone(), s.presence, s.position.clone()))
            .collect();
        for (room, presence, position) in rooms {
            if let Err(e) = self.send_subscribe(&mut w, room, presence, position).await {
                return lost(e, None, false);
            }
        }
        while let Some(p) = self.queue.pop_front() {
            if let Err(e) = self.send_publish(&mut w, p).await {
                return lost(e, None, false);
            }
        }
        let mut deadline = tokio::time::Instant::now() + silence;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                msg = incoming.recv() => {
                    deadline = tokio::time::Instant::now() + silence;
                    match msg {
                        Some(Incoming::Text(t)) => self.on_event(&mut w, &t).await,
                        Some(Incoming::Binary(b)) => self.on_binary(&b),
                        Some(Incoming::Obligated(op, payload)) => {
                            if transport::send_obligated(&mut w, op, payload).await.is_err() {
                                return lost("write failed".into(), None, false);
                            }
                        }
                        Some(Incoming::Alive) => {}
                        Some(Incoming::Close(code, reason)) => {
                            return self.closed_by_server(code, reason, opened);
                        }
                        Some(Incoming::Failed(e)) => return lost(e, None, false),
                        None => return lost("reader ended".into(), None, false),
                    }
                }
                cmd = self.cmds.recv() => {
                    let Some(cmd) = cmd else {
                        transport::close(&mut w).await;
                        self.closed = true;
                        return lost("closed".into(), None, true);
                    };
                    if let Err(e) = self.online(&mut w, cmd).await {
                        return lost(e, None, false);
                    }
                    if self.closed {
                        transport::close(&mut w).await;
                        return lost("closed".into(), None, true);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return lost("heartbeat timeout: nothing from the server".into(), None, false);
                }
                _ = tick.tick() => {
                    self.expire_inflight();
                    if let Err(e) = self.retry_resubscribes(&mut w).await {
                        return lost(e, None, false);
                    }
                }
            }
        }
    }

    fn closed_by_server(&self, code: u16, reason: String, opened: Instant) -> Ended {
        // 1001 (going away) may carry {"reconnect_after_ms": N}.
        let hint = serde_json::from_str::<serde_json::Value>(&reason)
            .ok()
            .and_then(|v| v["reconnect_after_ms"].as_u64())
            .map(Duration::from_millis);
        // 4001 invalid token / 4003 forbidden: retrying helps only with a new token.
        let permanent = matches!(code, 4001 | 4003) && self.config.token.is_none();
        Ended {
            reason: format!("closed by the server: {code} {reason}"),
            hint,
            permanent,
            stable: opened.elapsed() >= self.config.backoff.reset_after,
        }
    }

    fn expire_inflight(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| matches!(f, Inflight::Publish(p) if p.deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(Inflight::Publish(p)) = self.inflight.remove(&id) {
                let _ = p.done.send(Err(ClientError::Timeout));
            }
        }
    }

    async fn online(&mut self, w: &mut Writer, cmd: Cmd) -> Result<(), String> {
        match cmd {
            Cmd::Subscribe {
                room,
                presence,
                events,
                done,
            } => {
                if self.add_room(room.clone(), presence, events, done) {
                    self.send_subscribe(w, room, presence, None).await?;
                }
            }
            Cmd::Unsubscribe { room } => {
                if self.rooms.remove(&room).is_some() {
                    let op = ClientOp::Unsubscribe {
                        id: None,
                        room: room.as_str().into(),
                    };
                    self.send(w, op.to_json()).await?;
                }
            }
            Cmd::Publish(mut p) => {
                p.deadline = Instant::now() + self.config.publish_timeout;
                self.send_publish(w, p).await?;
            }
            Cmd::Request { op, done } => {
                let id = self.id();
                let json = match &op {
                    Request::Presence { room } => ClientOp::Presence {
                        id: Some(id),
                        room: room.as_str().into(),
                    }
                    .to_json(),
                    Request::History { room, since, limit } => ClientOp::History {
                        id: Some(id),
                        room: room.as_str().into(),
                        since: since.clone(),
                        limit: *limit,
                    }
                    .to_json(),
                };
                self.inflight.insert(id, Inflight::Request(done));
                self.send(w, json).await?;
            }
            Cmd::Close => self.closed = true,
        }
        Ok(())
    }

    /// Asks again for the rooms whose resubscription was refused for now and whose wait is over.
    async fn retry_resubscribes(&mut self, w: &mut Writer) -> Result<(), String> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.resubscribe_at)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.resubscribe_at = later;
        for (_, room) in due {
            let Some(sub) = self.rooms.get(&room) else {
                continue; // unsubscribed meanwhile
            };
            let (presence, position) = (sub.presence, sub.position.clone());
            self.send_subscribe(w, room, presence, position).await?;
        }
        Ok(())
    }

    async fn send(&mut self, w: &mut Writer, json: String) -> Result<(), String> {
        transport::send_text(w, json)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    async fn send_subscribe(
        &mut self,
        w: &mut Writer,
        room: String,
        presence: bool,
        position: Option<(String, u64)>,
    ) -> Result<(), String> {
        let id = self.id();
        let mut op = serde_json::json!({"op": "subscribe", "id": id, "room": room});
        if let Some((epoch, offset)) = position {
            op["since"] = serde_json::json!({"epoch": epoch, "offset": offset});
        }
        if presence {
            op["presence"] = serde_json::Value::Bool(true);
        }
        self.inflight.insert(id, Inflight::Subscribe(room));
        self.send(w, op.to_string()).await
    }

    async fn send_publish(&mut self, w: &mut Writer, p: QueuedPublish) -> Result<(), String> {
        if p.deadline <= Instant::now() {
            let _ = p.done.send(Err(ClientError::Timeout));
            return Ok(());
        }
        let id = self.id();
        match &p.data {
            PublishData::Json(data) => {
                let json = ClientOp::Publish {
                    id: Some(id),
                    room: p.room.as_str().into(),
                    data,
                }
                .to_json();
                self.inflight.insert(id, Inflight::Publish(p));
                self.send(w, json).await
            }
            PublishData::Binary(data) => {
                // `publish_binary` checked the room's length, the one way encoding fails.
                let Some(wire) = encode_binary_publish(Some(id), &p.room, data) else {
                    let _ = p.done.send(Err(ClientError::Server {
                        code: "bad_room".into(),
                        reason: "room name too long".into(),
                    }));
                    return Ok(());
                };
                self.inflight.insert(id, Inflight::Publish(p));
                transport::send_binary(w, wire)
                    .await
                    .map_err(|e| format!("write failed: {e}"))
            }
        }
    }

    /// A binary room message (`docs/protocol.md` §10.4).
    fn on_binary(&mut self, payload: &[u8]) {
        match decode_binary_msg(payload) {
            Ok(m) => self.deliver(m.room, m.epoch, m.offset, |epoch| RoomEvent::Binary {
                epoch,
                offset: m.offset,
                data: m.data.to_vec(),
            }),
            Err(e) => tracing::debug!(%e, "ignoring a binary message that does not decode"),
        }
    }

    /// Hands a room message to its subscription, unless that offset was delivered already, and
    /// moves the room's position to it. JSON and binary messages share this bookkeeping.
    fn deliver(
        &mut self,
        room: &str,
        epoch: &str,
        offset: u64,
        event: impl FnOnce(String) -> RoomEvent,
    ) {
        let Some(sub) = self.rooms.get_mut(room) else {
            return;
        };
        // Never deliver an offset twice (a replay overlapping live traffic).
        if let Some((e, o)) = &sub.position {
            if e == epoch && offset <= *o {
                return;
            }
        }
        sub.position = Some((epoch.to_string(), offset));
        let _ = sub.events.send(event(epoch.to_string()));
    }

    async fn on_event(&mut self, w: &mut Writer, text: &[u8]) {
        let Ok(ev) = ServerEvent::decode(text) else {
            tracing::debug!("ignoring an event that does not decode");
            return;
        };
        match ev {
            ServerEvent::Msg {
                room,
                epoch,
                offset,
                data,
            } => self.deliver(&room, &epoch, offset, |epoch| RoomEvent::Message {
                epoch,
                offset,
                data: data.to_owned(),
            }),
            // The JSON form of a binary message (the server sends WebSocket subscribers a binary
            // frame, but the form is valid on any transport).
            ServerEvent::MsgBinary {
                room,
                epoch,
                offset,
                data,
            } => self.deliver(&room, &epoch, offset, |epoch| RoomEvent::Binary {
                epoch,
                offset,
                data,
            }),
            ServerEvent::Subscribed {
                id,
                room,
                epoch,
                offset,
                recovered,
            } => {
                if let Some(id) = id {
                    self.inflight.remove(&id);
                }
                let Some(sub) = self.rooms.get_mut(room.as_ref()) else {
                    return;
                };
                let resumed = sub.position.is_some();
                let same_epoch = sub.position.as_ref().is_some_and(|(e, _)| *e == epoch);
                if !recovered || !same_epoch {
                    // Nothing to replay from here: the room's current position is ours.
                    sub.position = Some((epoch.to_string(), offset));
                }
                if let Some(done) = sub.first.take() {
                    let _ = done.send(Ok(()));
                }
                let _ = sub.events.send(RoomEvent::Subscribed {
                    epoch: epoch.into_owned(),
                    offset,
                    recovered,
                    resumed,
                });
            }
            ServerEvent::Published {
                id, epoch, offset, ..
            } => {
                if let Some(Inflight::Publish(p)) = id.and_then(|id| self.inflight.remove(&id)) {
                    let _ = p.done.send(Ok(Published {
                        epoch: epoch.into_owned(),
                        offset,
                    }));
                }
            }
            ServerEvent::Error { id, code, reason } => {
                let err = ClientError::Server {
                    code: code.as_str().to_string(),
                    reason: reason.to_string(),
                };
                match id.and_then(|id| self.inflight.remove(&id)) {
                    Some(Inflight::Publish(p)) => {
                        let _ = p.done.send(Err(err));
                    }
                    Some(Inflight::Request(done)) => {
                        let _ = done.send(Err(err));
                    }
                    // A resubscription (after a reconnect) the server refused for now, such as a
                    // node whose broker is not ready yet: the room is kept and asked for again
                    // (docs/protocol.md §23: `unavailable`, `internal` and `rate_limited` are
                    // retried), never dropped (its messages would be lost to the app).
                    Some(Inflight::Subscribe(room))
                        if matches!(
                            code,
                            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited
                        ) && self.rooms.get(&room).is_some_and(|s| s.first.is_none()) =>
                    {
                        self.resubscribe_at
                            .push((Instant::now() + RESUBSCRIBE_RETRY, room));
                    }
                    Some(Inflight::Subscribe(room)) => {
                        if let Some(mut sub) = self.rooms.remove(&room) {
                            match sub.first.take() {
                                Some(done) => {
                                    let _ = done.send(Err(err));
                                }
                                None => {
                                    let _ = sub.events.send(RoomEvent::Unsubscribed {
                                        reason: err.to_string(),
                                    });
                                }
                            }
                        }
                    }
                    None => tracing::debug!(%err, "server error without a request"),
                }
            }
            ServerEvent::Gap {
                room,
                epoch,
                from,
                to,
            } => {
                if let Some(sub) = self.rooms.get_mut(room.as_ref()) {
                    // Offsets up to `to` will not come: move past them.
                    if sub
                        .position
                        .as_ref()
                        .is_some_and(|(e, o)| *e == epoch && *o < to)
                    {
                        sub.position = Some((epoch.to_string(), to));
                    }
                    let _ = sub.events.send(RoomEvent::Gap {
                        epoch: epoch.into_owned(),
                        from,
                        to,
                    });
                }
            }
            ServerEvent::Event { room, data } => {
                if let Some(sub) = self.rooms.get(room.as_ref()) {
                    let _ = sub.events.send(RoomEvent::Event {
                        data: data.to_owned(),
                    });
                }
            }
            ServerEvent::Join { room, member } => {
                if let Some(sub) = self.rooms.get(room.as_ref()) {
                    let _ = sub.events.send(RoomEvent::Join(member));
                }
            }
            ServerEvent::Leave { room, member } => {
                if let Some(sub) = self.rooms.get(room.as_ref()) {
                    let _ = sub.events.send(RoomEvent::Leave(member));
                }
            }
            // Without an id: the server's decision (an answer to our own unsubscribe has one).
            ServerEvent::Unsubscribed {
                id: None,
                room,
                reason,
            } => {
                if let Some(sub) = self.rooms.remove(room.as_ref()) {
                    let _ = sub.events.send(RoomEvent::Unsubscribed {
                        reason: reason.map_or_else(String::new, |r| r.into_owned()),
                    });
                }
            }
            ServerEvent::TokenExpiring { .. } => {
                if let Some(provider) = self.config.token.clone() {
                    if let Some(token) = provider().await {
                        let id = self.id();
                        let op = ClientOp::Refresh {
                            id: Some(id),
                            token: token.as_str().into(),
                        };
                        let _ = self.send(w, op.to_json()).await;
                    }
                }
            }
            ServerEvent::Presence { id, .. } | ServerEvent::History { id, .. } => {
                if let Some(Inflight::Request(done)) = id.and_then(|id| self.inflight.remove(&id)) {
                    let _ = done.send(Ok(text.to_vec()));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_items_decode_to_json_and_binary_messages() {
        let raw = br#"{"ev":"history","id":3,"room":"game.1","epoch":"e1","offset":4,"recovered":true,"messages":[{"offset":2,"data":{"a": 1}},{"offset":3,"bin":"AP8A"},{"offset":4,"bin":""}]}"#;
        let h = decode_history(raw).expect("decodes");
        assert_eq!((h.epoch.as_str(), h.offset, h.recovered), ("e1", 4, true));
        assert_eq!(h.messages.len(), 3);
        match &h.messages[0] {
            // The data stays byte for byte as published (the space included).
            RoomEvent::Message {
                epoch,
                offset,
                data,
            } => {
                assert_eq!(
                    (epoch.as_str(), *offset, data.get()),
                    ("e1", 2, r#"{"a": 1}"#)
                )
            }
            other => panic!("{other:?}"),
        }
        match &h.messages[1] {
            RoomEvent::Binary {
                epoch,
                offset,
                data,
            } => {
                assert_eq!(
                    (epoch.as_str(), *offset, &data[..]),
                    ("e1", 3, &[0, 0xff, 0][..])
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&h.messages[2], RoomEvent::Binary { offset: 4, data, .. } if data.is_empty())
        );
        assert_eq!(
            h.messages
                .iter()
                .map(RoomEvent::message_offset)
                .collect::<Vec<_>>(),
            [Some(2), Some(3), Some(4)]
        );
    }

    #[test]
    fn bad_history_answers_are_errors() {
        for raw in [
            &br#"{"ev":"history","room":"r","epoch":"e","offset":1,"recovered":false,"messages":[{"offset":1,"bin":"***"}]}"#[..],
            br#"{"ev":"history","room":"r","epoch":"e","offset":1,"recovered":false,"messages":[{"offset":1}]}"#,
            br#"{"ev":"pong","id":1}"#,
            b"not json",
        ] {
            assert!(
                matches!(decode_history(raw), Err(ClientError::BadAnswer(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
