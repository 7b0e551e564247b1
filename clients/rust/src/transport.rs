//! One WebSocket connection: the HTTP upgrade, then a reader task that turns frames into
//! [`Incoming`] messages (so the client's loop waits on a channel, which is cancel-safe) and a
//! write half the loop writes ops and pongs with.

use std::time::Duration;

use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocket, WebSocketError, WebSocketWrite,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What the reader saw.
#[derive(Debug)]
pub enum Incoming {
    /// A text message (an event).
    Text(Vec<u8>),
    /// A binary message (a binary room message, `docs/protocol.md` §10.4).
    Binary(Vec<u8>),
    /// A frame the protocol obliges us to answer (a pong for a ping), to be written.
    Obligated(OpCode, Vec<u8>),
    /// A frame that only proves the server is alive (a ping already answered, a pong).
    Alive,
    /// The server closed: code and reason.
    Close(u16, String),
    /// The connection failed.
    Failed(String),
}

/// The write half of a connection.
pub type Writer = WebSocketWrite<WriteHalf<TcpStream>>;

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect or I/O failed.
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered the upgrade with something else than 101.
    #[error("upgrade refused: {status}")]
    Refused {
        /// The status line and its reason.
        status: String,
        /// The HTTP status code.
        code: u16,
    },
    /// No answer in time.
    #[error("connecting timed out")]
    Timeout,
}

/// The read half of a connection (fragments collected, text checked as UTF-8).
pub type Reader = FragmentCollectorRead<tokio::io::ReadHalf<TcpStream>>;

/// Connects to `ws://addr/path` (the token, if any, in `Authorization: Bearer`), then starts the
/// reader task.
pub async fn connect(
    addr: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(Writer, mpsc::UnboundedReceiver<Incoming>), ConnectError> {
    let (read, write) = open(addr, path, token, timeout).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(read_loop(read, tx));
    Ok((write, rx))
}

/// The WebSocket layer alone: the upgrade, then the two halves (the conformance driver in
/// `examples/autobahn_client.rs` runs the Autobahn client cases on it).
pub async fn open(
    addr: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(Reader, Writer), ConnectError> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: cmluZ2Nhc3QtY2xpZW50IQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ringcast.v1\r\n{auth}\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut b).await? == 0 || head.len() > 16 * 1024 {
                return Err(ConnectError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed during the upgrade",
                )));
            }
            head.push(b[0]);
        }
        let status_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let code = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code != 101 {
            return Err(ConnectError::Refused {
                status: status_line,
                code,
            });
        }
        Ok(stream)
    };
    let stream = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)??;
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    // Pongs and the reply to the server's close are handed to the caller to write (the read
    // half cannot write): see `Incoming::Obligated`.
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let (read, write) = ws.split(tokio::io::split);
    Ok((FragmentCollectorRead::new(read), write))
}

async fn read_loop(mut read: Reader, tx: mpsc::UnboundedSender<Incoming>) {
    loop {
        let obligated = tx.clone();
        let mut send = move |f: Frame<'_>| {
            let (op, payload) = obligated_reply(&f);
            let _ = obligated.send(Incoming::Obligated(op, payload));
            async { Ok::<(), WebSocketError>(()) }
        };
        let frame = read.read_frame(&mut send).await;
        let msg = match frame {
            Ok(f) => match f.opcode {
                OpCode::Text => Incoming::Text(f.payload.to_vec()),
                OpCode::Binary => Incoming::Binary(f.payload.to_vec()),
                OpCode::Close => {
                    let p = f.payload.to_vec();
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).to_string();
                    let _ = tx.send(Incoming::Close(code, reason));
                    return;
                }
                _ => Incoming::Alive,
            },
            Err(e) => {
                let _ = tx.send(Incoming::Failed(e.to_string()));
                return;
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// The frame to send for one fastwebsockets asks us to (a pong, or the reply to a close), with
/// RFC 6455 §5.5's limit enforced: a control frame carries at most 125 bytes, so a reply that
/// would echo a longer one (the peer's frame was itself too long) becomes close 1002 instead.
pub fn obligated_reply(f: &Frame<'_>) -> (OpCode, Vec<u8>) {
    if f.payload.len() > 125 {
        let mut close = 1002u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"control frame too long");
        return (OpCode::Close, close);
    }
    (f.opcode, f.payload.to_vec())
}

/// Writes a text frame.
pub async fn send_text(w: &mut Writer, text: String) -> Result<(), WebSocketError> {
    w.write_frame(Frame::text(Payload::Owned(text.into_bytes())))
        .await
}

/// Writes a binary frame (a binary publish, `docs/protocol.md` §9.9).
pub async fn send_binary(w: &mut Writer, data: Vec<u8>) -> Result<(), WebSocketError> {
    w.write_frame(Frame::binary(Payload::Owned(data))).await
}

/// Writes a frame the protocol obliged us to send (a pong).
pub async fn send_obligated(
    w: &mut Writer,
    opcode: OpCode,
    payload: Vec<u8>,
) -> Result<(), WebSocketError> {
    w.write_frame(Frame::new(true, opcode, None, Payload::Owned(payload)))
        .await
}

/// Writes a close frame (best effort).
pub async fn close(w: &mut Writer) {
    let _ = w.write_frame(Frame::close(1000, b"bye")).await;
}
