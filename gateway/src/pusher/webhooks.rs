//! Pusher webhooks: `channel_occupied`, `channel_vacated`, `member_added` and `member_removed`,
//! POSTed as `{"time_ms": …, "events": [...]}` with `X-Pusher-Key` and `X-Pusher-Signature`
//! (HMAC-SHA256 of the body with the app's secret), retried with exponential backoff.
//!
//! Shards never wait on a webhook: they send the event on a bounded channel (std's
//! `sync_channel`, [`QUEUE_EVENTS`] events; a full queue drops the event and counts it in
//! `ringcast_pusher_webhooks_total{result="queue_full"}`) and a thread of its own
//! (`ringcast-webhooks`) batches and sends them, so a slow or dead receiver costs the shards
//! nothing and cannot grow the node's memory. Events are per node: with several nodes, each reports its own occupancy
//! (docs/pusher.md).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{CredentialUrl, PusherApp};

/// Attempts per batch before it is dropped (and counted).
const ATTEMPTS: u32 = 6;
/// The first retry's delay; each next one doubles, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Events wait this long to be sent together.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Events waiting for the sender thread (each about 100 bytes) before new ones are dropped.
pub const QUEUE_EVENTS: usize = 10_000;
/// Connect, write and read timeout of one attempt.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// One webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The app's index in `pusher.apps`.
    pub app: usize,
    /// `channel_occupied`, `channel_vacated`, `member_added` or `member_removed`.
    pub name: &'static str,
    /// The channel.
    pub channel: String,
    /// The member (member events).
    pub user_id: Option<String>,
}

/// Where shards send webhook events (`Sender` is `Sync`: every shard sends through it).
#[derive(Debug)]
pub struct Webhooks {
    tx: SyncSender<WebhookEvent>,
}

impl Webhooks {
    /// Queues an event (never blocks: a full queue drops it, counted).
    pub fn push(&self, event: WebhookEvent) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(event) {
            metrics::counter!("ringcast_pusher_webhooks_total", "result" => "queue_full")
                .increment(1);
        }
    }
}

/// Starts the sender thread when some app has webhooks; returns the queue.
pub fn start(apps: &[PusherApp]) -> std::io::Result<Option<Arc<Webhooks>>> {
    if apps.iter().all(|a| a.webhooks.is_empty()) {
        return Ok(None);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_EVENTS);
    let apps = apps.to_vec();
    std::thread::Builder::new()
        .name("ringcast-webhooks".into())
        .spawn(move || run(&rx, &apps))?;
    Ok(Some(Arc::new(Webhooks { tx })))
}

fn run(rx: &Receiver<WebhookEvent>, apps: &[PusherApp]) {
    while let Ok(first) = rx.recv() {
        // Gather what arrives within the window, then send one batch per app.
        let deadline = Instant::now() + BATCH_WINDOW;
        let mut events = vec![first];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(e) => events.push(e),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        for (index, app) in apps.iter().enumerate() {
            let batch: Vec<&WebhookEvent> = events.iter().filter(|e| e.app == index).collect();
            if batch.is_empty() || app.webhooks.is_empty() {
                continue;
            }
            let body = body(&batch);
            for url in &app.webhooks {
                deliver(url, app, &body);
            }
        }
    }
}

/// The JSON body of a batch.
pub fn body(events: &[&WebhookEvent]) -> String {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|e| match &e.user_id {
            Some(u) => json!({"name": e.name, "channel": e.channel, "user_id": u}),
            None => json!({"name": e.name, "channel": e.channel}),
        })
        .collect();
    json!({"time_ms": time_ms, "events": events}).to_string()
}

/// Sends one batch to one URL, retrying with backoff. Logs name the URL without its
/// credentials (`CredentialUrl`'s `Display`).
fn deliver(url: &CredentialUrl, app: &PusherApp, body: &str) {
    let signature = super::auth::sign(app.secret.expose(), body);
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match post(url.expose(), &app.key, &signature, body) {
            Ok(status) if (200..300).contains(&status) => {
                metrics::counter!("ringcast_pusher_webhooks_total", "result" => "sent")
                    .increment(1);
                return;
            }
            Ok(status) => tracing::debug!(%url, status, attempt, "webhook refused"),
            Err(e) => tracing::debug!(%url, error = %e, attempt, "webhook failed"),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    tracing::warn!(%url, "webhook dropped after {ATTEMPTS} attempts");
    metrics::counter!("ringcast_pusher_webhooks_total", "result" => "dropped").increment(1);
}

/// One HTTP/1.1 POST; returns the status.
fn post(url: &str, key: &str, signature: &str, body: &str) -> std::io::Result<u16> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// webhooks"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("webhook host did not resolve"))?;
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nX-Pusher-Key: {key}\r\nX-Pusher-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let line = std::str::from_utf8(&head[..n]).unwrap_or("");
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status in the answer"))
}
