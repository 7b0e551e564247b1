//! The Pusher protocol side of the harness (`fanout --mode pusher`): subscribers on
//! `/app/<key>` (protocol 7), and events published through the signed HTTP API
//! (`POST /apps/<id>/events`), the path Pusher server libraries take. The same load runs against
//! any Pusher-compatible server (ringcast, Soketi, Sockudo).

use std::net::SocketAddr;

use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{connect, next_text, send};

/// An app's credentials: `id:key:secret`.
#[derive(Debug, Clone)]
pub struct App {
    /// The app id.
    pub id: String,
    /// The public key.
    pub key: String,
    /// The secret.
    pub secret: String,
}

impl std::str::FromStr for App {
    type Err = String;
    fn from_str(s: &str) -> Result<App, String> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(key), Some(secret)) if !id.is_empty() && !key.is_empty() => Ok(App {
                id: id.into(),
                key: key.into(),
                secret: secret.into(),
            }),
            _ => Err("expected id:key:secret".into()),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sign(secret: &str, message: &str) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Connects a subscriber and subscribes it to a public channel.
pub async fn subscribe(
    addr: SocketAddr,
    app: &App,
    channel: &str,
) -> anyhow::Result<fastwebsockets::WebSocket<crate::tls::Stream>> {
    let path = format!(
        "/app/{}?protocol=7&client=ringcast-bench&version=1.0",
        app.key
    );
    let mut ws = connect(addr, &path, false).await?;
    let hello = next_text(&mut ws).await?;
    if !contains(&hello, b"pusher:connection_established") {
        bail!(
            "no connection_established: {}",
            String::from_utf8_lossy(&hello)
        );
    }
    send(
        &mut ws,
        format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#),
    )
    .await?;
    loop {
        let f = next_text(&mut ws).await?;
        if contains(&f, b"pusher_internal:subscription_succeeded") {
            return Ok(ws);
        }
        if contains(&f, b"subscription_error") {
            bail!("subscribe refused: {}", String::from_utf8_lossy(&f));
        }
    }
}

/// Triggers one event (`data` is sent as a JSON string, as the server libraries do) through the
/// HTTP API; fails unless the answer is 200.
pub async fn trigger(addr: SocketAddr, app: &App, channel: &str, data: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({"name": "bench", "channel": channel, "data": data}).to_string();
    let path = format!("/apps/{}/events", app.id);
    let md5 = hex(&Md5::digest(body.as_bytes()));
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let query = format!(
        "auth_key={}&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}",
        app.key
    );
    let signature = sign(&app.secret, &format!("POST\n{path}\n{query}"));
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .context("connect")?;
    tcp.set_nodelay(true)?;
    let request = format!(
        "POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 16];
    let n = tcp.read(&mut head).await?;
    if !head[..n].starts_with(b"HTTP/1.1 200") {
        bail!("trigger refused: {}", String::from_utf8_lossy(&head[..n]));
    }
    Ok(())
}
