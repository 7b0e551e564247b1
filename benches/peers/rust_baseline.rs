//! The conventional Rust design as a raw-broadcast peer: tokio multi-thread runtime,
//! tokio-tungstenite, and a `tokio::sync::broadcast` channel per room, one task per connection.
//! `/raw/<room>` subscribes; `?role=pub` publishes each text frame to the room.
//! Usage: ringcast-peer-rust [ADDR]  (prints "listening public=ADDR")

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening public={}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let _ = handle(stream, rooms).await;
        });
    }
}

// tungstenite's handshake callback type fixes the closure's error type (an HTTP response).
#[allow(clippy::result_large_err)]
async fn handle(stream: TcpStream, rooms: Rooms) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut uri = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
        uri = req.uri().to_string();
        Ok(resp)
    })
    .await?;
    let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
    let room = path.strip_prefix("/raw/").unwrap_or(path).to_string();
    let tx = {
        let mut map = rooms.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        map.entry(room)
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone()
    };
    let (mut sink, mut source) = ws.split();
    if query.contains("role=pub") {
        while let Some(msg) = source.next().await {
            let msg = msg?;
            if msg.is_text() {
                let _ = tx.send(msg);
            }
        }
        return Ok(());
    }
    let mut rx = tx.subscribe();
    tokio::spawn(async move { while let Some(Ok(_)) = source.next().await {} });
    loop {
        match rx.recv().await {
            Ok(msg) => sink.send(msg).await?,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}
