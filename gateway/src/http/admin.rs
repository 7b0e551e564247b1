//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the server API (`/api/*`, in
//! [`super::api`]) and the admin page (`/admin`, whose figures come from `GET /api/overview`,
//! in [`super::overview`]). It runs on its own thread with its own small runtime, off the
//! shards' hot path; API requests reach the shards through their mailboxes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use proto_codec::http::{parse_request, write_error_response, write_response, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::mailbox::Mailboxes;
use crate::shard::Global;

/// The admin page: one static file, its script and style inline (docs/operations.md, "Admin
/// page").
const ADMIN_PAGE: &str = include_str!("admin_page.html");

/// What the page may do: its own inline script and style, requests to this listener only, no
/// framing, no referrer.
const ADMIN_PAGE_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
];

/// The largest request body the API accepts.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Everything the admin handlers need.
#[derive(Clone)]
pub struct Admin {
    /// The configuration.
    pub config: Arc<Config>,
    /// Namespace policies (size limits, configured namespaces).
    pub namespaces: Arc<crate::namespaces::Namespaces>,
    /// Shards' mailboxes (the API publishes through them).
    pub mailboxes: Mailboxes,
    /// Readiness and shutdown flags.
    pub global: Arc<Global>,
    /// The Prometheus recorder's handle.
    pub prometheus: PrometheusHandle,
    /// The node's name.
    pub node: Arc<str>,
    /// The I/O driver the shards run.
    pub driver: &'static str,
    /// When the node started.
    pub started: std::time::Instant,
    /// The Redis bridge's health (`None` with the embedded broker).
    pub bridge: Option<Arc<broker_bridge::redis::BridgeHealth>>,
}

/// Whether the node is ready, and why (the body of `/readyz`).
pub fn readiness(admin: &Admin) -> (bool, &'static str) {
    if admin.global.shutting_down.load(Ordering::SeqCst) {
        (false, "shutting down")
    } else if let Some(problem) = admin.bridge.as_ref().and_then(|b| b.problem()) {
        (false, problem)
    } else if admin.global.ready.load(Ordering::SeqCst) {
        (true, "ready")
    } else {
        (false, "starting")
    }
}

/// Serves the admin listener forever (on the calling thread).
pub fn run(admin: Admin, listener: std::net::TcpListener) -> std::io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::from_std(listener)?;
        let upkeep = admin.prometheus.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let admin = admin.clone();
                    monoio::spawn(async move {
                        if let Ok(mut s) = monoio::io::IntoPollIo::into_poll_io(stream) {
                            let _ = serve_conn(&admin, &mut s).await;
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

async fn serve_conn<S>(admin: &Admin, stream: &mut S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Read a head (and its body) with a deadline, answer, and keep the connection.
        let request = monoio::time::timeout(
            Duration::from_secs(30),
            read_request(stream, &mut buf, &mut chunk),
        )
        .await;
        let (head_len, body_len) = match request {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Some(Err((status, reason))))) => {
                let mut out = Vec::new();
                write_error_response(&mut out, status, &reason, &[]);
                stream.write_all(&out).await?;
                return Ok(());
            }
            Ok(Ok(Some(Ok(lens)))) => lens,
        };
        let response = {
            let req = match parse_request(&buf) {
                Ok(Some(r)) => r,
                _ => return Ok(()),
            };
            let body = &buf[head_len..head_len + body_len];
            handle(admin, &req, body).await
        };
        stream.write_all(&response).await?;
        buf.drain(..head_len + body_len);
    }
}

type ReadResult = std::io::Result<Option<Result<(usize, usize), (u16, String)>>>;

/// Reads until `buf` holds a whole request; returns (head length, body length), an HTTP error
/// to answer, or `None` at end of stream.
async fn read_request<S>(stream: &mut S, buf: &mut Vec<u8>, chunk: &mut [u8]) -> ReadResult
where
    S: tokio::io::AsyncRead + Unpin,
{
    loop {
        match parse_request(buf) {
            Err(e) => return Ok(Some(Err((e.status(), e.to_string())))),
            Ok(Some(req)) => {
                if req.header("transfer-encoding").is_some() {
                    return Ok(Some(Err((411, "send a Content-Length body".into()))));
                }
                let body_len = match req
                    .header_str("content-length")
                    .map(|v| v.trim().parse::<usize>())
                {
                    None => 0,
                    Some(Ok(n)) if n <= MAX_BODY_BYTES => n,
                    Some(Ok(_)) => return Ok(Some(Err((413, "body over 1 MiB".into())))),
                    Some(Err(_)) => return Ok(Some(Err((400, "invalid Content-Length".into())))),
                };
                if buf.len() >= req.head_len + body_len {
                    return Ok(Some(Ok((req.head_len, body_len))));
                }
            }
            Ok(None) => {}
        }
        let n = stream.read(chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn handle(admin: &Admin, req: &Request<'_>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match (req.method, req.path) {
        ("GET", "/healthz") => write_response(&mut out, 200, "text/plain", &[], b"ok\n"),
        ("GET", "/readyz") => {
            let (ready, why) = readiness(admin);
            let status = if ready { 200 } else { 503 };
            write_response(
                &mut out,
                status,
                "text/plain",
                &[],
                format!("{why}\n").as_bytes(),
            )
        }
        ("GET", "/admin") => {
            if admin.config.api.key.is_empty() {
                write_error_response(&mut out, 404, "the admin page needs api.key", &[])
            } else {
                write_response(
                    &mut out,
                    200,
                    "text/html; charset=utf-8",
                    ADMIN_PAGE_HEADERS,
                    ADMIN_PAGE.as_bytes(),
                )
            }
        }
        ("GET", "/metrics") => {
            let text = admin.prometheus.render();
            write_response(
                &mut out,
                200,
                "text/plain; version=0.0.4",
                &[],
                text.as_bytes(),
            )
        }
        (_, path) if path.starts_with("/api/") => {
            return super::api::handle(admin, req, body).await
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/admin") => {
            write_error_response(&mut out, 405, "use GET", &[("Allow", "GET")])
        }
        _ => write_error_response(&mut out, 404, "no such endpoint", &[]),
    }
    out
}
