//! The HTTP side of a new connection: read the request head (with a deadline), route it, and
//! answer 101 or an error with a reason.

use std::time::Duration;

use proto_codec::handshake::{select_protocol, validate_upgrade, write_upgrade_response};
use proto_codec::http::{parse_request, write_error_response};
use proto_codec::ws::deflate::{negotiate, DeflateParams, DeflatePolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::shared::ConnKind;
use crate::config::Config;

/// The subprotocol of this version of the app protocol.
pub const SUBPROTOCOL: &str = "ringcast.v1";

/// A completed upgrade.
#[derive(Debug)]
pub struct Upgraded {
    /// App protocol or echo.
    pub kind: ConnKind,
    /// permessage-deflate, if negotiated.
    pub deflate: Option<DeflateParams>,
    /// Bytes the client sent after the request head (its first frames).
    pub leftover: Vec<u8>,
    /// For raw broadcast: the room, and whether this connection only publishes.
    pub raw: Option<(String, bool)>,
}

/// Why a connection did not upgrade (already answered, when it could be).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    /// The client did not send a complete head in time.
    #[error("handshake timed out")]
    Timeout,
    /// The client closed or the socket failed.
    #[error("i/o error during handshake: {0}")]
    Io(#[from] std::io::Error),
    /// Refused with an HTTP status.
    #[error("refused with {0}")]
    Refused(u16),
}

impl HandshakeFailure {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Io(_) => "io",
            HandshakeFailure::Refused(s) if *s == 404 => "not_found",
            HandshakeFailure::Refused(s) if *s == 403 => "forbidden",
            HandshakeFailure::Refused(s) if *s == 503 => "unavailable",
            HandshakeFailure::Refused(_) => "bad_request",
        }
    }
}

/// What the router decided for a parsed request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Upgrade: write these response bytes.
    Upgrade {
        /// App protocol or echo.
        kind: ConnKind,
        /// The 101 response.
        response: Vec<u8>,
        /// permessage-deflate, if negotiated.
        deflate: Option<DeflateParams>,
        /// Where the request head ended.
        head_len: usize,
        /// For raw broadcast: the room, and whether this connection only publishes.
        raw: Option<(String, bool)>,
    },
    /// Refuse: write these bytes and close.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The full response.
        response: Vec<u8>,
    },
}

/// Routes and validates one request head (sans I/O). `None`: the head is not complete yet
/// (`parse_request` refuses a head that passes the size limit, so this cannot loop forever).
pub fn decide(head: &[u8], config: &Config, draining: bool) -> Option<Decision> {
    let req = match parse_request(head) {
        Ok(Some(req)) => req,
        Ok(None) => return None,
        Err(e) => {
            let mut response = Vec::new();
            write_error_response(&mut response, e.status(), &e.to_string(), &[]);
            return Some(Decision::Refuse {
                status: e.status(),
                response,
            });
        }
    };
    let refuse = |status: u16, reason: &str, headers: &[(&str, &str)]| {
        let mut response = Vec::new();
        write_error_response(&mut response, status, reason, headers);
        Some(Decision::Refuse { status, response })
    };
    let mut raw = None;
    let kind = match req.path {
        "/ws" => ConnKind::App,
        "/echo" if config.websocket.echo_endpoint => ConnKind::Echo,
        path if config.websocket.raw_endpoint && path.starts_with("/raw/") => {
            let room = &path["/raw/".len()..];
            if proto_codec::protocol::validate_room(room).is_err() {
                return refuse(400, "invalid room name", &[]);
            }
            let publisher = req.query_param("role").as_deref() == Some("pub");
            raw = Some((room.to_string(), publisher));
            ConnKind::Raw
        }
        _ => return refuse(404, "no such endpoint", &[]),
    };
    if draining {
        return refuse(
            503,
            "server is shutting down; reconnect to another node",
            &[("Retry-After", "1")],
        );
    }
    let upgrade = match validate_upgrade(&req) {
        Ok(u) => u,
        Err(e) => {
            let mut response = Vec::new();
            e.write_response(&mut response);
            return Some(Decision::Refuse {
                status: e.status(),
                response,
            });
        }
    };
    let origins = &config.websocket.allowed_origins;
    if !origins.is_empty()
        && !upgrade
            .origin
            .is_some_and(|o| origins.iter().any(|a| a == o))
    {
        return refuse(403, "origin not allowed", &[]);
    }
    let negotiated = if config.websocket.compression {
        negotiate(
            upgrade.extensions.iter().copied(),
            &DeflatePolicy::default(),
        )
    } else {
        None
    };
    let protocol = match kind {
        ConnKind::App => select_protocol(&upgrade.protocols, &[SUBPROTOCOL]),
        ConnKind::Echo | ConnKind::Raw => None,
    };
    let mut response = Vec::with_capacity(256);
    write_upgrade_response(
        &mut response,
        upgrade.key,
        protocol,
        negotiated.as_ref().map(|n| n.response.as_str()),
    );
    Some(Decision::Upgrade {
        kind,
        response,
        deflate: negotiated.map(|n| n.params),
        head_len: req.head_len,
        raw,
    })
}

/// Reads the request head and answers it. On success the stream speaks WebSocket.
pub async fn perform<S>(
    stream: &mut S,
    config: &Config,
    draining: bool,
) -> Result<Upgraded, HandshakeFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let timeout = Duration::from_millis(config.websocket.handshake_timeout_ms);
    match monoio::time::timeout(timeout, read_and_answer(stream, config, draining)).await {
        Ok(r) => r,
        Err(_) => {
            let mut response = Vec::new();
            write_error_response(&mut response, 408, "request head not received in time", &[]);
            let _ = monoio::time::timeout(Duration::from_millis(100), stream.write_all(&response))
                .await;
            Err(HandshakeFailure::Timeout)
        }
    }
}

async fn read_and_answer<S>(
    stream: &mut S,
    config: &Config,
    draining: bool,
) -> Result<Upgraded, HandshakeFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeFailure::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        match decide(&head, config, draining) {
            None => continue,
            Some(Decision::Refuse { status, response }) => {
                stream.write_all(&response).await?;
                let _ = stream.shutdown().await;
                return Err(HandshakeFailure::Refused(status));
            }
            Some(Decision::Upgrade {
                kind,
                response,
                deflate,
                head_len,
                raw,
            }) => {
                stream.write_all(&response).await?;
                return Ok(Upgraded {
                    kind,
                    deflate,
                    leftover: head.split_off(head_len),
                    raw,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ringcast.v1\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    fn status(d: Decision) -> u16 {
        match d {
            Decision::Upgrade { .. } => 101,
            Decision::Refuse { status, .. } => status,
        }
    }

    #[test]
    fn upgrade_with_subprotocol_and_deflate() {
        let c = Config::default();
        let Some(Decision::Upgrade {
            kind,
            response,
            deflate,
            head_len,
            ..
        }) = decide(REQ.as_bytes(), &c, false)
        else {
            panic!("not an upgrade")
        };
        assert_eq!(kind, ConnKind::App);
        assert_eq!(head_len, REQ.len());
        assert!(deflate.is_some());
        let text = String::from_utf8(response).unwrap();
        assert!(
            text.contains("Sec-WebSocket-Protocol: ringcast.v1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("permessage-deflate; server_no_context_takeover"),
            "{text}"
        );
    }

    #[test]
    fn routing_and_refusals() {
        let mut c = Config::default();
        assert_eq!(
            decide(REQ.replace("/ws", "/nope").as_bytes(), &c, false).map(status),
            Some(404)
        );
        assert_eq!(
            decide(REQ.replace("/ws", "/echo").as_bytes(), &c, false).map(status),
            Some(404)
        );
        c.websocket.echo_endpoint = true;
        assert_eq!(
            decide(REQ.replace("/ws", "/echo").as_bytes(), &c, false).map(status),
            Some(101)
        );
        assert_eq!(decide(REQ.as_bytes(), &c, true).map(status), Some(503));
        c.websocket.allowed_origins = vec!["https://app.example".into()];
        assert_eq!(decide(REQ.as_bytes(), &c, false).map(status), Some(403));
        let with_origin = REQ.replace("Host: x\r\n", "Host: x\r\nOrigin: https://app.example\r\n");
        assert_eq!(
            decide(with_origin.as_bytes(), &c, false).map(status),
            Some(101)
        );
        assert_eq!(decide(&REQ.as_bytes()[..20], &c, false), None);
        assert_eq!(
            decide(b"GET / HTTP/9.9\r\n\r\n", &c, false).map(status),
            Some(400)
        );
    }
}
