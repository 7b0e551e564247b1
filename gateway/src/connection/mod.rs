//! One client connection: the glue between a socket and the sans-I/O codec.
//!
//! After the upgrade, one task drives the connection with a hand-written poll loop:
//! write queued frames (many per `writev`), then read into the **shard's** buffer and decode in
//! place. Reads and writes are readiness-based (monoio `poll-io`), so an idle connection holds no
//! receive buffer: only a partial frame's remainder (at most 139 bytes) stays with it, or, for a
//! connection whose turn ended on its fan-out budget, the input it has yet to decode.
//!
//! The connection is a state machine ([`state::ConnState`]): `Open` → `Closing` (we sent a close
//! frame and wait for the peer's) or `CloseReceived` (the peer closed; we answer and end) → done.

pub mod gate;
pub mod handshake;
pub mod http;
pub mod ops;
pub mod outbox;
pub mod route;
pub mod shared;
pub mod state;
pub mod write;
pub mod write_list;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::TcpStream;
use proto_codec::protocol::ServerEvent;
use proto_codec::ws::{encode_close, encode_frame, Decoder, DecoderConfig, Message, OpCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use self::shared::{CloseRequest, ConnShared};
use self::state::ConnState;
use self::write::{Flushed, WRITE_BUDGET};
use crate::admission::AdmitTicket;
use crate::endpoint::{Data, Endpoint};
use crate::listener::Transport;
use crate::shard::ShardCtx;

/// Input bytes one connection may process per turn before yielding to the others.
const READ_BUDGET: usize = 64 * 1024;
/// Input bytes one read takes: the unit after which a turn's budgets are checked, small enough
/// that one read of publishes into a big room is a bounded amount of fan-out.
const READ_CHUNK: usize = 8 * 1024;
/// Deliveries (frames queued to subscribers of this shard) one connection's input may cause
/// per turn: a client publishing into a big room as fast as it can gets this much fan-out per
/// turn (and one turn per round), then the others (a calm room's publisher and subscribers) go
/// first (fair egress). Input decoded past it waits, undecoded, for the connection's next turn.
const FANOUT_BUDGET: usize = 4096;

/// Per-connection I/O state owned by the connection's task.
struct ConnIo {
    /// What the connection speaks.
    endpoint: Box<dyn Endpoint>,
    decoder: Decoder,
    /// Unconsumed bytes: a partial header or control frame, or (when `input_waits`) input the
    /// last turn's fan-out budget left undecoded.
    remainder: Vec<u8>,
    /// `remainder` starts with whole frames to decode before reading more.
    input_waits: bool,
    /// The shard's fan-out counter when this turn began.
    turn_fanout: usize,
    state: ConnState,
    /// Window bits for echo compression (None: no permessage-deflate).
    deflate_bits: Option<u8>,
}

/// A connection's request, done: what it speaks and what came with it.
struct Opened {
    endpoint: Box<dyn Endpoint>,
    close: Option<CloseRequest>,
    deflate: Option<proto_codec::ws::deflate::DeflateParams>,
    leftover: Vec<u8>,
    principal: crate::auth::Principal,
}

/// Sets up one accepted TCP connection and spawns the task that serves it until it ends;
/// returns the size of that task's future (the `connection_task_bytes` gauge).
///
/// The set-up runs here, before the spawn, so the long-lived task is the plain connection's
/// future alone: an `async fn` that did it first would keep its own copies of the stream and
/// the ticket beside the ones moved into that future, for the connection's whole life.
pub fn spawn(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
) -> usize {
    // Counted from accept on, so a client that dawdles over its handshake counts against its
    // address; the verdict is answered once the request head is read.
    let ticket = ctx.admission.admit(peer.ip(), ctx.now.get());
    let _ = stream.set_nodelay(true);
    let stream = match stream.into_poll_io() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "poll-io conversion failed");
            return 0;
        }
    };
    match transport {
        Transport::Plain => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let task = serve_stream(ctx, stream, ticket, Some(fd));
            let bytes = std::mem::size_of_val(&task);
            monoio::spawn(task);
            bytes
        }
        Transport::Tls if ctx.tls.is_some() => {
            let task = serve_tls(ctx, stream, ticket);
            let bytes = std::mem::size_of_val(&task);
            monoio::spawn(task);
            bytes
        }
        Transport::Tls => 0,
    }
}

/// Serves a TLS connection: the TLS handshake, then the connection over the TLS stream.
async fn serve_tls(ctx: Rc<ShardCtx>, stream: TcpStreamPoll, ticket: AdmitTicket) {
    let Some(tls) = &ctx.tls else {
        return;
    };
    // Boxed: a TLS session is large, and plain connections should not carry its size.
    let accept = Box::pin(monoio::time::timeout(
        std::time::Duration::from_millis(ctx.config.websocket.handshake_timeout_ms),
        tls.acceptor.accept(stream),
    ));
    let stream = match accept.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            crate::metrics::handshake_failure("tls");
            return;
        }
        Err(_) => {
            crate::metrics::handshake_failure("tls_timeout");
            return;
        }
    };
    // Its bytes go through the TLS session: never written by the shard's write pass.
    let task = Box::pin(serve_stream(ctx.clone(), stream, ticket, None));
    task.await
}

/// Serves a connection over any stream (plain or TLS) from its first byte. `direct` is the
/// socket of a plain TCP stream, which the shard's write pass may write to while this task
/// owns the stream ([`write`]).
async fn serve_stream<S>(
    ctx: Rc<ShardCtx>,
    mut stream: S,
    ticket: AdmitTicket,
    direct: Option<std::os::fd::RawFd>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Boxed: the handshake's buffers live in their own allocation, freed once it is done, so the
    // connection's long-lived task stays small. The box is built in its own statement: a
    // temporary in the same statement as an `.await` would keep its full size in the task.
    let handshake = Box::pin(handshake::perform(
        &mut stream,
        gate::Gate {
            config: &ctx.config,
            auth: &ctx.auth,
            namespaces: &ctx.namespaces,
            draining: ctx.is_shutting_down(),
            admission: &ticket.verdict,
        },
        &ctx.admission,
    ));
    // Everything between the handshake and the drive loop lives in this block (and in the
    // synchronous `start`), so none of it stays in the connection's long-lived task.
    let (conn, mut io) = {
        let upgraded = match handshake.await {
            Ok(u) => u,
            Err(e) => {
                crate::metrics::handshake_failure(e.label());
                return;
            }
        };
        let handshake::Mode::Connection { endpoint, close } = upgraded.mode else {
            // Plain HTTP: answered in its own allocation.
            let answer = Box::pin(answer_http(
                &ctx,
                &mut stream,
                upgraded.principal,
                upgraded.mode,
            ));
            answer.await;
            return;
        };
        let opened = Opened {
            endpoint,
            close,
            deflate: upgraded.deflate,
            leftover: upgraded.leftover,
            principal: upgraded.principal,
        };
        start(&ctx, opened)
    };
    conn.set_direct_fd(direct);
    let result = poll_fn(|cx| drive(&ctx, &conn, &mut stream, &mut io, cx)).await;
    // Before the stream (and its fd) is dropped: the write pass never writes to it again.
    conn.set_direct_fd(None);
    if let Err(e) = result {
        tracing::trace!(conn = conn.id, error = %e, "connection ended with an error");
    }
    ctx.unregister_conn(&conn);
    drop(ticket);
}

/// A plain HTTP request of the public listener that needs the shard: `POST /publish`,
/// `GET /poll` and the Pusher HTTP API.
async fn answer_http<S>(
    ctx: &Rc<ShardCtx>,
    stream: &mut S,
    principal: crate::auth::Principal,
    mode: handshake::Mode,
) where
    S: AsyncWrite + Unpin,
{
    let response = match mode {
        handshake::Mode::Publish { body, cors } => {
            http::publish(ctx, &principal, &body, cors).await
        }
        handshake::Mode::Poll { rooms, cors } => {
            crate::endpoint::poll::long_poll(ctx, principal, rooms, cors).await
        }
        handshake::Mode::PusherApi { request, body } => {
            crate::pusher::api::answer(ctx, &request, &body).await
        }
        handshake::Mode::Connection { .. } | handshake::Mode::Answered => return,
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

/// Registers an upgraded WebSocket or event stream: `hello`, the endpoint's start (its first
/// subscriptions), and the bytes that came with the request.
fn start(ctx: &Rc<ShardCtx>, opened: Opened) -> (Rc<ConnShared>, ConnIo) {
    let Opened {
        mut endpoint,
        close,
        deflate,
        leftover,
        principal,
    } = opened;
    let ws = &ctx.config.websocket;
    let mut decoder_config = DecoderConfig::server(ws.max_message_bytes);
    if let Some(p) = deflate {
        decoder_config = decoder_config.with_deflate(p.client_no_context_takeover);
    }
    let profile = endpoint.profile();
    let takes_shared_deflate =
        profile.takes_shared_frames() && deflate.is_some_and(|p| p.server_max_window_bits == 15);
    let conn = ctx.register_conn(profile, takes_shared_deflate, principal);
    // Refused at registration (the per-user limit, reached by a connection that raced this
    // one): closed without joining a room.
    let refused = conn.close_requested();
    if endpoint.says_hello() {
        conn.send_control(&ServerEvent::Hello {
            client: ctx.client_id(conn.id).into(),
            node: ctx.node.as_ref().into(),
            heartbeat_ms: ws.heartbeat_interval_ms,
        });
    }
    match close {
        Some(close) => conn.request_close(close),
        None if refused => {}
        None => endpoint.start(ctx, &conn),
    }
    let mut io = ConnIo {
        endpoint,
        decoder: Decoder::new(decoder_config),
        remainder: leftover,
        input_waits: false,
        turn_fanout: ctx.fanout_work.get(),
        state: ConnState::Open,
        deflate_bits: deflate.map(|p| p.server_max_window_bits),
    };
    // Bytes that came with the upgrade request are decoded before the first read.
    io.input_waits = !io.remainder.is_empty();
    (conn, io)
}

/// One pass of the connection's loop; returns `Ready` when the connection is over.
fn drive<S>(
    ctx: &ShardCtx,
    conn: &Rc<ConnShared>,
    stream: &mut S,
    io: &mut ConnIo,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.set_waker(cx.waker());
    if conn.force_end.get() {
        return Poll::Ready(Ok(()));
    }
    if conn.deferred.get() {
        // Listed for the shard's next round, which wakes it.
        return Poll::Pending;
    }
    let mut read_budget = READ_BUDGET;
    io.turn_fanout = ctx.fanout_work.get();
    let mut write_budget = WRITE_BUDGET;
    loop {
        if conn.force_end.get() {
            return Poll::Ready(Ok(()));
        }
        if let Some(req) = conn.take_close_request() {
            begin_close(ctx, conn, io, req);
        }
        let write_blocked = match flush(ctx, conn, stream, cx, &mut write_budget) {
            Poll::Ready(Ok(true)) => false,
            Poll::Ready(Ok(false)) => {
                // Turn over: let the other connections of the shard run, then go on.
                ctx.defer(conn);
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => true,
        };
        if io.state.shuts_down_after_flush() {
            if write_blocked {
                return Poll::Pending;
            }
            // Our close frame is out: send FIN and wait for the peer's (RFC 6455 §7.1.1: the
            // server closes the TCP connection first).
            let _ = Pin::new(&mut *stream).poll_shutdown(cx);
            io.state = ConnState::Lingering;
        }
        // An event stream only writes: whatever the client sends is discarded.
        let read = if io.state == ConnState::Lingering || conn.profile.stream {
            discard_once(ctx, stream, cx)
        } else if io.input_waits {
            Poll::Ready(Ok(decode_waiting(ctx, conn, io)))
        } else {
            read_once(ctx, conn, stream, io, cx)
        };
        match read {
            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(n)) => {
                read_budget = read_budget.saturating_sub(n);
                if read_budget == 0 || fanout_spent(ctx, io) {
                    ctx.defer(conn);
                    return Poll::Pending;
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                let has_output = !conn.outbox().borrow().is_empty();
                if (has_output && !write_blocked) || io.state.shuts_down_after_flush() {
                    continue;
                }
                return Poll::Pending;
            }
        }
    }
}

/// Reads and drops input (after our side shut down). `Ok(0)` is the peer's FIN.
fn discard_once<S>(ctx: &ShardCtx, stream: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<usize>>
where
    S: AsyncRead + Unpin,
{
    let mut buf = ctx.read_buf.borrow_mut();
    let mut read_buf = ReadBuf::new(&mut buf[..]);
    match Pin::new(&mut *stream).poll_read(cx, &mut read_buf) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(read_buf.filled().len())),
        other => other.map(|r| r.map(|_| 0)),
    }
}

/// Writes queued frames until the queue is empty or the socket is full.
/// `Ready(Ok(true))`: the queue is empty; `Ready(Ok(false))`: this turn's write budget is
/// spent with frames left.
fn flush<S>(
    ctx: &ShardCtx,
    conn: &ConnShared,
    stream: &mut S,
    cx: &mut Context<'_>,
    budget: &mut usize,
) -> Poll<io::Result<bool>>
where
    S: AsyncWrite + Unpin,
{
    let mut stats = write::WriteStats::default();
    let written = write::write_queue(ctx, conn, budget, &mut stats, |slices| {
        Pin::new(&mut *stream).poll_write_vectored(cx, slices)
    });
    stats.publish(ctx);
    match written {
        // A no-op on plain TCP; TLS writes out the records it still holds.
        Poll::Ready(Ok(Flushed::Empty)) => Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| true),
        Poll::Ready(Ok(Flushed::BudgetSpent)) => Poll::Ready(Ok(false)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Reads once into the shard buffer and processes what arrived. `Ok(0)` is end of stream.
fn read_once<S>(
    ctx: &ShardCtx,
    conn: &Rc<ConnShared>,
    stream: &mut S,
    io: &mut ConnIo,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>>
where
    S: AsyncRead + Unpin,
{
    let mut buf = ctx.read_buf.borrow_mut();
    let kept = io.remainder.len();
    buf[..kept].copy_from_slice(&io.remainder);
    let end = (kept + READ_CHUNK).min(buf.len());
    let mut read_buf = ReadBuf::new(&mut buf[kept..end]);
    match Pin::new(&mut *stream).poll_read(cx, &mut read_buf) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Ready(Ok(())) => {
            let n = read_buf.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            ctx.metrics.bytes_in.increment(n as u64);
            conn.last_rx.set(ctx.now.get());
            conn.ping_sent.set(None);
            io.remainder.clear();
            if let Err(e) = process(ctx, conn, io, &mut buf[..kept + n]) {
                fail(ctx, conn, io, e);
            }
            Poll::Ready(Ok(n))
        }
    }
}

/// Whether the input of this turn caused [`FANOUT_BUDGET`] deliveries.
fn fanout_spent(ctx: &ShardCtx, io: &ConnIo) -> bool {
    ctx.fanout_work.get().wrapping_sub(io.turn_fanout) >= FANOUT_BUDGET
}

/// Decodes input a previous turn left waiting; returns its length (never 0: 0 is end of
/// stream).
fn decode_waiting(ctx: &ShardCtx, conn: &Rc<ConnShared>, io: &mut ConnIo) -> usize {
    let mut pending = std::mem::take(&mut io.remainder);
    if let Err(e) = process(ctx, conn, io, &mut pending) {
        fail(ctx, conn, io, e);
    }
    pending.len().max(1)
}

/// Decodes every complete message in `input` and acts on it until this turn's fan-out budget
/// is spent; keeps the unconsumed tail.
fn process(
    ctx: &ShardCtx,
    conn: &Rc<ConnShared>,
    io: &mut ConnIo,
    input: &mut [u8],
) -> Result<(), proto_codec::ws::ProtocolError> {
    let mut pos = 0;
    io.input_waits = false;
    while io.state.decodes() && pos < input.len() {
        if pos > 0 && fanout_spent(ctx, io) {
            // The rest waits for this connection's next turn (decoded then, before any read).
            io.input_waits = true;
            break;
        }
        let decoded = io.decoder.decode(&mut input[pos..])?;
        pos += decoded.consumed;
        let Some(message) = decoded.message else {
            break;
        };
        ctx.metrics.frames_in.increment(1);
        on_message(ctx, conn, io, message);
    }
    if io.state.decodes() {
        io.remainder.extend_from_slice(&input[pos..]);
    }
    Ok(())
}

fn on_message(ctx: &ShardCtx, conn: &Rc<ConnShared>, io: &mut ConnIo, message: Message<'_>) {
    if io.state == ConnState::Closing && !matches!(message, Message::Close(_)) {
        // After our close, only the peer's close matters.
        return;
    }
    match message {
        Message::Data(kind, payload) => {
            let data = Data {
                kind,
                payload: &payload,
                deflate_bits: io.deflate_bits,
            };
            let done = io.endpoint.takes(kind).and_then(|()| {
                // A data message is what keeps a connection from idling out
                // (`Profile::idles_out`).
                conn.last_op.set(ctx.now.get());
                io.endpoint.on_data(ctx, conn, data)
            });
            if let Err(close) = done {
                begin_close(ctx, conn, io, close);
            }
        }
        Message::Ping(payload) => conn.push_pong(encode_frame(OpCode::Pong, false, payload)),
        Message::Pong(_) => {}
        Message::Close(close) => {
            match io.state {
                ConnState::Open => {
                    // Echo the code (RFC 6455 §5.5.1; an empty close gets an empty close), then
                    // end once it is written.
                    conn.push_ws_control(match close {
                        Some((code, _)) => encode_close(code, ""),
                        None => encode_frame(OpCode::Close, false, b""),
                    });
                    io.state = ConnState::CloseReceived;
                }
                ConnState::Closing => io.state = ConnState::CloseReceived,
                ConnState::CloseReceived | ConnState::Failed | ConnState::Lingering => {}
            }
            conn.closing_since.set(Some(ctx.now.get()));
        }
    }
}

/// Starts a close we initiate: queue the close frame and stop acting on input.
fn begin_close(ctx: &ShardCtx, conn: &ConnShared, io: &mut ConnIo, req: CloseRequest) {
    if io.state != ConnState::Open {
        return;
    }
    if req.code == proto_codec::protocol::codes::close::SLOW_CONSUMER {
        ctx.metrics.slow_consumer_closes.increment(1);
    }
    if req.discard_queue {
        conn.outbox().borrow_mut().discard_unstarted();
    }
    if conn.profile.stream {
        // An event stream has no close frame: it ends once its queue is written.
        io.state = ConnState::CloseReceived;
        conn.closing_since.set(Some(ctx.now.get()));
        return;
    }
    conn.push_ws_control(encode_close(req.code, &req.reason));
    io.state = ConnState::Closing;
    conn.closing_since.set(Some(ctx.now.get()));
}

/// A protocol error: fail the connection (RFC 6455 §7.1.7): send a close with the error's code,
/// stop decoding, and end once it is written.
fn fail(ctx: &ShardCtx, conn: &ConnShared, io: &mut ConnIo, e: proto_codec::ws::ProtocolError) {
    ctx.metrics.protocol_errors.increment(1);
    io.remainder.clear();
    io.input_waits = false;
    if matches!(io.state, ConnState::Open | ConnState::Closing) {
        if io.state == ConnState::Open {
            conn.push_ws_control(encode_close(e.close_code(), &e.to_string()));
        }
        io.state = ConnState::Failed;
        conn.closing_since.set(Some(ctx.now.get()));
    }
}
