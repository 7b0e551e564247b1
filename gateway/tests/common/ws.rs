//! WebSocket clients of the app protocol (fastwebsockets), and raw upgrade requests.

use std::net::SocketAddr;
use std::time::Duration;

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, Role, WebSocket};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket client of the app protocol.
pub struct Client {
    ws: FragmentCollector<TcpStream>,
    /// The `hello` event.
    pub hello: Value,
}

/// What a read returned.
#[derive(Debug)]
pub enum Received {
    /// A JSON event.
    Event(Value),
    /// A close frame: code and reason.
    Close(u16, String),
}

impl Client {
    /// Sends one op.
    pub async fn send(&mut self, op: Value) {
        let text = op.to_string();
        self.ws
            .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
            .await
            .expect("send op");
    }

    /// Sends a raw frame.
    pub async fn send_frame(&mut self, frame: Frame<'_>) {
        self.ws.write_frame(frame).await.expect("send frame");
    }

    /// Publishes binary data (a binary message, docs/protocol.md §9.9).
    pub async fn publish_binary(&mut self, id: Option<u64>, room: &str, data: &[u8]) {
        let wire = proto_codec::protocol::encode_binary_publish(id, room, data).expect("room");
        self.send_frame(Frame::binary(Payload::Owned(wire))).await;
    }

    /// The next event or close (pings are answered and skipped), within 10 s.
    pub async fn next(&mut self) -> Received {
        let read = async {
            loop {
                let frame = self.ws.read_frame().await.expect("read frame");
                match frame.opcode {
                    OpCode::Text => {
                        let v: Value =
                            serde_json::from_slice(&frame.payload).expect("event is JSON");
                        return Received::Event(v);
                    }
                    // A binary room message, in its JSON form (`bin` = base64 payload).
                    OpCode::Binary => {
                        let json = proto_codec::protocol::binary::binary_msg_json(&frame.payload)
                            .expect("a binary message is a binary msg");
                        let mut v: Value = serde_json::from_slice(&json).expect("JSON form");
                        v["binary_frame"] = Value::Bool(true);
                        return Received::Event(v);
                    }
                    OpCode::Close => {
                        let p = frame.payload.to_vec();
                        let code = if p.len() >= 2 {
                            u16::from_be_bytes([p[0], p[1]])
                        } else {
                            1005
                        };
                        let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).to_string();
                        return Received::Close(code, reason);
                    }
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("an event within 10 s")
    }

    /// The next event (panics on close).
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Event(v) => v,
            Received::Close(c, r) => panic!("closed {c} {r}"),
        }
    }

    /// The next close frame, skipping events.
    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            if let Received::Close(c, r) = self.next().await {
                return (c, r);
            }
        }
    }

    /// Every event that arrives until `wait` passes with nothing new (or the connection ends).
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(wait, self.ws.read_frame()).await {
                Ok(Ok(frame)) if frame.opcode == OpCode::Text => {
                    if let Ok(v) = serde_json::from_slice(&frame.payload) {
                        out.push(v);
                    }
                }
                Ok(Ok(frame)) if frame.opcode == OpCode::Close => return out,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return out,
            }
        }
    }

    /// The next event within `wait` without panicking: `Ok(Some(event))`, `Ok(None)` when
    /// nothing came, `Err(())` when the connection ended (a close, a reset, a kill -9).
    pub async fn try_next(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        loop {
            match tokio::time::timeout(wait, self.ws.read_frame()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => return Err(()),
                Ok(Ok(frame)) => match frame.opcode {
                    OpCode::Text => {
                        return serde_json::from_slice(&frame.payload)
                            .map(Some)
                            .map_err(|_| ());
                    }
                    OpCode::Close => return Err(()),
                    _ => continue,
                },
            }
        }
    }

    /// Like [`Client::try_next`], but an ended connection tells its close code (`None`: no
    /// close frame, the connection just ended).
    #[allow(dead_code)]
    pub async fn try_next_or_close(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Value>, Option<u16>> {
        loop {
            match tokio::time::timeout(wait, self.ws.read_frame()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => return Err(None),
                Ok(Ok(frame)) => match frame.opcode {
                    OpCode::Text => {
                        return serde_json::from_slice(&frame.payload)
                            .map(Some)
                            .map_err(|_| None);
                    }
                    OpCode::Close => {
                        let p = &frame.payload;
                        return Err((p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])));
                    }
                    _ => continue,
                },
            }
        }
    }

    /// Whether nothing arrives within `wait`.
    pub async fn is_quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.ws.read_frame())
            .await
            .is_err()
    }

    /// Subscribes and returns the `subscribed` event.
    pub async fn subscribe(&mut self, id: u64, room: &str, since: Option<(&str, u64)>) -> Value {
        let mut op = serde_json::json!({"op": "subscribe", "id": id, "room": room});
        if let Some((epoch, offset)) = since {
            op["since"] = serde_json::json!({"epoch": epoch, "offset": offset});
        }
        self.send(op).await;
        let ev = self.recv().await;
        assert_eq!(ev["ev"], "subscribed", "{ev}");
        ev
    }

    /// Publishes with an id and returns the `published` ack.
    pub async fn publish(&mut self, id: u64, room: &str, data: Value) -> Value {
        self.send(serde_json::json!({"op": "publish", "id": id, "room": room, "data": data}))
            .await;
        loop {
            let ev = self.recv().await;
            if ev["ev"] == "published" && ev["id"] == id {
                return ev;
            }
            assert_ne!(ev["ev"], "error", "{ev}");
        }
    }
}

/// Connects to `/ws` and reads `hello`.
pub async fn connect(addr: SocketAddr) -> Client {
    let (stream, head) = raw_upgrade(addr, "/ws", "Sec-WebSocket-Protocol: ringcast.v1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    client_on(stream).await
}

/// Reads a raw HTTP response head (byte by byte, so nothing after it is consumed).
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut b).await.expect("read head");
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

/// Sends an upgrade request to `path` with extra header lines on a connected stream; returns the
/// response head.
async fn upgrade_on(stream: &mut TcpStream, addr: SocketAddr, path: &str, extra: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .expect("send upgrade");
    read_head(stream).await
}

/// Sends a raw upgrade request to `path` with extra header lines; returns the stream and head.
pub async fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = upgrade_on(&mut stream, addr, path, extra).await;
    (stream, head)
}

/// Like [`raw_upgrade`], from a chosen loopback source address (so per-IP limits of one test
/// case do not touch another's).
pub async fn raw_upgrade_from(
    addr: SocketAddr,
    from: std::net::Ipv4Addr,
    path: &str,
    extra: &str,
) -> (TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind source address");
    let mut stream = socket.connect(addr).await.expect("connect");
    let head = upgrade_on(&mut stream, addr, path, extra).await;
    (stream, head)
}

/// Connects to `/ws` without panicking on any failure (a node going away mid-handshake, a load
/// balancer answering 502/503): the client after its `hello`, or `None`.
pub async fn connect_lenient(addr: SocketAddr) -> Option<Client> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ringcast.v1\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut b).await.ok()? == 0 {
                return None;
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return None;
        }
        let mut ws = WebSocket::after_handshake(stream, Role::Client);
        ws.set_auto_close(false);
        ws.set_auto_pong(true);
        let mut client = Client {
            ws: FragmentCollector::new(ws),
            hello: Value::Null,
        };
        let hello = client.try_next(Duration::from_secs(5)).await.ok()??;
        (hello["ev"] == "hello").then(|| {
            client.hello = hello;
            client
        })
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
}

/// The app client on an upgraded stream, after its `hello`.
async fn client_on(stream: TcpStream) -> Client {
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    ws.set_auto_close(false);
    ws.set_auto_pong(true);
    let mut client = Client {
        ws: FragmentCollector::new(ws),
        hello: Value::Null,
    };
    let hello = client.recv().await;
    assert_eq!(hello["ev"], "hello", "{hello}");
    client.hello = hello;
    client
}

/// Connects to `path` from `from` with extra header lines; the app client after `hello`, or the
/// refusal's head and body.
pub async fn try_connect(
    addr: SocketAddr,
    from: std::net::Ipv4Addr,
    path: &str,
    extra: &str,
) -> Result<Client, String> {
    let (mut stream, head) = raw_upgrade_from(addr, from, path, extra).await;
    if !head.starts_with("HTTP/1.1 101") {
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut body)).await;
        return Err(format!("{head}{}", String::from_utf8_lossy(&body)));
    }
    Ok(client_on(stream).await)
}

/// Connects a client whose socket receive buffer is tiny (`rcvbuf` bytes), so that when it does
/// not read, the server's queue for it fills quickly: a deliberately slow consumer.
pub async fn connect_slow(addr: SocketAddr, rcvbuf: u32, extra: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let head = upgrade_on(&mut stream, addr, "/ws", extra).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client_on(stream).await
}
