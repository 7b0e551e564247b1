//! A minimal app-protocol WebSocket client for load (fastwebsockets over tokio).

use std::net::SocketAddr;

use anyhow::{bail, Context};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::{wrap, Stream};

/// Opens a WebSocket to `addr` at `path` (and reads past the `hello` event when asked).
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    expect_hello: bool,
) -> anyhow::Result<WebSocket<Stream>> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let mut stream = wrap(tcp).await.context("TLS handshake")?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut b).await? == 0 {
            bail!("closed during the handshake");
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&head));
    }
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    if expect_hello {
        let hello = ws.read_frame().await?;
        if hello.opcode != OpCode::Text {
            bail!("expected hello");
        }
    }
    Ok(ws)
}

/// Sends one JSON op.
pub async fn send(ws: &mut WebSocket<Stream>, op: String) -> anyhow::Result<()> {
    ws.write_frame(Frame::text(Payload::Owned(op.into_bytes())))
        .await?;
    Ok(())
}

/// Reads the next text frame's payload.
pub async fn next_text<S>(ws: &mut WebSocket<S>) -> anyhow::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let f = ws.read_frame().await?;
        match f.opcode {
            OpCode::Text => return Ok(f.payload.to_vec()),
            OpCode::Close => bail!("closed by the server"),
            _ => continue,
        }
    }
}

/// Finds `"key":<unsigned integer>` in a JSON text without parsing the whole document.
pub fn find_u64(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut v: u64 = 0;
    let mut any = false;
    for d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::find_u64;

    #[test]
    fn finds_numbers() {
        let j = br#"{"ev":"msg","room":"r","epoch":"e","offset":42,"data":{"t":123456789,"s":7}}"#;
        assert_eq!(find_u64(j, b"\"offset\":"), Some(42));
        assert_eq!(find_u64(j, b"\"t\":"), Some(123456789));
        assert_eq!(find_u64(j, b"\"nope\":"), None);
    }
}
