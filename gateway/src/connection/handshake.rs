//! The HTTP side of a new connection: read the request head (with a deadline), route it, and
//! answer 101 or an error with a reason.

use std::time::Duration;

use proto_codec::handshake::{select_protocol, validate_upgrade, write_upgrade_response};
use proto_codec::http::{parse_request, write_error_response};
use proto_codec::ws::deflate::{negotiate, DeflateParams, DeflatePolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gate::Gate;
use super::route::{route, HttpRoute, Route};
use super::shared::CloseRequest;
use crate::admission::{Admission, Verdict};
use crate::auth::Principal;
use crate::endpoint::sse::Sse;
use crate::endpoint::{Credential, Endpoint};
use crate::http::public::{self, HttpDecision, StreamRoom};

/// A completed upgrade.
#[derive(Debug)]
pub struct Upgraded {
    /// permessage-deflate, if negotiated.
    pub deflate: Option<DeflateParams>,
    /// Bytes the client sent after the request head (its first frames).
    pub leftover: Vec<u8>,
    /// Who connected.
    pub principal: Principal,
    /// What the connection is now.
    pub mode: Mode,
}

/// What a connection became after its request head.
#[derive(Debug)]
pub enum Mode {
    /// A connection of this endpoint (a WebSocket, or an event stream), served by the
    /// connection's loop.
    Connection {
        /// What it speaks.
        endpoint: Box<dyn Endpoint>,
        /// The close that follows the upgrade, for a request that cannot be served and whose
        /// client reads why only from a close (pusher-js; y-websocket, which retries a refused
        /// upgrade forever).
        close: Option<CloseRequest>,
    },
    /// A long poll (`GET /poll`) of these rooms.
    Poll {
        /// The rooms and their resume positions.
        rooms: Vec<StreamRoom>,
        /// The origin to echo for CORS.
        cors: Option<String>,
    },
    /// A Pusher HTTP API request with its body.
    PusherApi {
        /// The request line and query.
        request: crate::http::public::PusherRequest,
        /// The body.
        body: Vec<u8>,
    },
    /// An HTTP publish (`POST /publish`) with its body.
    Publish {
        /// The request body.
        body: Vec<u8>,
        /// The origin to echo for CORS.
        cors: Option<String>,
    },
    /// Already answered (a CORS preflight): nothing more to do.
    Answered,
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
    /// Refused with an HTTP status; the label says why (for metrics).
    #[error("refused with {0} ({1})")]
    Refused(u16, &'static str),
}

impl HandshakeFailure {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Io(_) => "io",
            HandshakeFailure::Refused(_, label) => label,
        }
    }
}

/// What the router decided for a parsed request.
#[derive(Debug)]
pub enum Decision {
    /// Upgrade: write these response bytes.
    Upgrade {
        /// What the connection speaks.
        endpoint: Box<dyn Endpoint>,
        /// The close that follows the upgrade (`Mode::Connection`).
        close: Option<CloseRequest>,
        /// The 101 response.
        response: Vec<u8>,
        /// permessage-deflate, if negotiated.
        deflate: Option<DeflateParams>,
        /// Where the request head ended.
        head_len: usize,
        /// Who connected.
        principal: Principal,
    },
    /// Refuse: write these bytes and close.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// Why, as a metrics label.
        label: &'static str,
        /// The full response.
        response: Vec<u8>,
    },
    /// An HTTP endpoint of the public listener (`/sse`, `/publish`).
    Http {
        /// What it decided.
        decision: HttpDecision,
        /// Where the request head ended.
        head_len: usize,
    },
}

/// Routes and validates one request head (sans I/O). `None`: the head is not complete yet
/// (a head past the size limit is refused, so this cannot loop forever). Checks run in the order
/// of docs/protocol.md §5.4.
pub fn decide(head: &[u8], gate: &Gate<'_>) -> Option<Decision> {
    let config = gate.config;
    let refuse = |status: u16, label: &'static str, reason: &str, headers: &[(&str, &str)]| {
        let mut response = Vec::new();
        write_error_response(&mut response, status, reason, headers);
        Some(Decision::Refuse {
            status,
            label,
            response,
        })
    };
    let head_limit = config.limits.max_request_head_bytes;
    let req = match parse_request(head) {
        Ok(Some(req)) if req.head_len <= head_limit => req,
        Ok(None) if head.len() < head_limit => return None,
        Ok(_) => return refuse(431, "head_too_large", "request head too large", &[]),
        Err(e) => {
            let label = if e.status() == 431 {
                "head_too_large"
            } else {
                "bad_request"
            };
            return refuse(e.status(), label, &e.to_string(), &[]);
        }
    };
    // Admission first: every connection counts against its address, whatever it asks for.
    match gate.admission {
        Verdict::Admit => {}
        Verdict::Busy {
            reason,
            retry_after_s,
        } => {
            let retry = retry_after_s.to_string();
            return refuse(
                503,
                gate.admission.label(),
                reason,
                &[("Retry-After", &retry)],
            );
        }
        Verdict::TooMany { reason } => {
            return refuse(429, gate.admission.label(), reason, &[("Retry-After", "1")])
        }
    }
    let endpoint = match route(&req, config, gate.namespaces) {
        Ok(Route::Upgrade(endpoint)) => endpoint,
        Ok(Route::Http(http)) => {
            let decision = match http {
                HttpRoute::PusherApi => public::pusher_api_request(&req, gate),
                HttpRoute::Publish => public::publish_request(&req, gate),
                HttpRoute::Stream => public::stream_request(&req, gate, false),
                HttpRoute::Poll => public::stream_request(&req, gate, true),
            };
            return Some(Decision::Http {
                decision,
                head_len: req.head_len,
            });
        }
        Err(no) => return refuse(no.status, no.label, &no.reason, &[]),
    };
    if gate.draining {
        return refuse(
            503,
            "draining",
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
                label: "bad_request",
                response,
            });
        }
    };
    let origins = &config.websocket.allowed_origins;
    if let Some(origin) = upgrade.origin {
        if !origins.is_empty() && !origins.iter().any(|a| a == origin) {
            return refuse(403, "origin", "origin not allowed", &[]);
        }
    }
    let mut close = None;
    let principal = match endpoint.credential() {
        Credential::Token => match gate.auth.authenticate(&req) {
            Ok(p) => p,
            Err(e) => {
                return refuse(
                    e.status(),
                    e.label(),
                    &e.to_string(),
                    &[("WWW-Authenticate", "Bearer realm=\"ringcast\"")],
                )
            }
        },
        Credential::TokenOrClose(code) => match gate.auth.authenticate(&req) {
            Ok(p) => p,
            Err(e) => {
                close = Some(crate::endpoint::close(code, e.to_string()));
                Principal::anonymous()
            }
        },
        // Test and benchmark endpoints, off by default (docs/security.md); Pusher connections
        // authorize per channel (signatures), not with a token.
        Credential::Anonymous => Principal::anonymous(),
    };
    if close.is_none() {
        close = endpoint.admit(&principal, gate).err();
    }
    let negotiated = if config.websocket.compression {
        negotiate(
            upgrade.extensions.iter().copied(),
            &DeflatePolicy::default(),
        )
    } else {
        None
    };
    let protocol = endpoint
        .subprotocol()
        .and_then(|p| select_protocol(&upgrade.protocols, &[p]));
    let mut response = Vec::with_capacity(256);
    write_upgrade_response(
        &mut response,
        upgrade.key,
        protocol,
        negotiated.as_ref().map(|n| n.response.as_str()),
    );
    Some(Decision::Upgrade {
        endpoint,
        close,
        response,
        deflate: negotiated.map(|n| n.params),
        head_len: req.head_len,
        principal,
    })
}

/// Reads the request head and answers it. On success the stream speaks WebSocket.
/// `users` holds the per-user connection counts: an event stream or a long poll past
/// `max_connections_per_user` is answered 429 before its stream starts (issue 19, finding 11).
pub async fn perform<S>(
    stream: &mut S,
    gate: Gate<'_>,
    users: &Admission,
) -> Result<Upgraded, HandshakeFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let timeout = Duration::from_millis(gate.config.websocket.handshake_timeout_ms);
    match monoio::time::timeout(timeout, read_and_answer(stream, &gate, users)).await {
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
    gate: &Gate<'_>,
    users: &Admission,
) -> Result<Upgraded, HandshakeFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_limit = gate.config.limits.max_request_head_bytes;
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeFailure::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        let first_read = head.is_empty();
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        // Parsed once the head is complete (or too long), and on the first read so that
        // garbage is refused at once: never again on every read of a slow head.
        let complete = head_may_end(&head[scan_from..]);
        if !(complete || first_read || head.len() >= head_limit) {
            continue;
        }
        match decide(&head, gate) {
            None => continue,
            Some(Decision::Refuse {
                status,
                label,
                response,
            }) => {
                stream.write_all(&response).await?;
                stream.flush().await?;
                let _ = stream.shutdown().await;
                return Err(HandshakeFailure::Refused(status, label));
            }
            Some(Decision::Upgrade {
                endpoint,
                close,
                response,
                deflate,
                head_len,
                principal,
            }) => {
                stream.write_all(&response).await?;
                stream.flush().await?;
                return Ok(Upgraded {
                    deflate,
                    leftover: head.split_off(head_len),
                    principal,
                    mode: Mode::Connection { endpoint, close },
                });
            }
            Some(Decision::Http { decision, head_len }) => {
                return answer_http(stream, head, head_len, decision, users).await;
            }
        }
    }
}

/// Whether bytes hold an empty line (`\n\n` or `\n\r\n`: httparse takes bare line feeds too),
/// so that a request head may be complete.
fn head_may_end(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w[0] == b'\n' && (w[1] == b'\n' || bytes[i + 1..].starts_with(b"\r\n")))
}

/// Reads a request body of `content_length` bytes: what came with the head, then the rest.
async fn read_body<S>(
    stream: &mut S,
    head: &mut Vec<u8>,
    head_len: usize,
    content_length: usize,
) -> Result<Vec<u8>, HandshakeFailure>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut body = head.split_off(head_len);
    let mut chunk = [0u8; 2048];
    while body.len() < content_length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeFailure::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    Ok(body)
}

/// Carries out an HTTP endpoint's decision: writes a reply, or the stream head, or reads a
/// publish body.
async fn answer_http<S>(
    stream: &mut S,
    mut head: Vec<u8>,
    head_len: usize,
    decision: HttpDecision,
    users: &Admission,
) -> Result<Upgraded, HandshakeFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // A stream of a user at the per-user limit is refused before it starts (the WebSocket
    // path closes after its upgrade, as browsers then see the code; an event stream or a
    // long poll gets the status).
    let at_limit = |p: &Principal| p.user.as_deref().is_some_and(|u| users.user_at_limit(u));
    let over_user_limit = match &decision {
        HttpDecision::Stream { principal, .. } if at_limit(principal) => Some(None),
        HttpDecision::Poll {
            principal, cors, ..
        } if at_limit(principal) => Some(Some(cors.clone())),
        _ => None,
    };
    if let Some(poll_cors) = over_user_limit {
        const REASON: &str = "too many connections for this user";
        crate::metrics::limit_hit("connections_per_user");
        let response = match poll_cors {
            Some(cors) => crate::http::public::error_json(
                proto_codec::protocol::ErrorCode::LimitExceeded,
                REASON,
                cors.as_deref(),
            ),
            None => {
                let mut r = Vec::new();
                write_error_response(&mut r, 429, REASON, &[]);
                r
            }
        };
        stream.write_all(&response).await?;
        stream.flush().await?;
        let _ = stream.shutdown().await;
        return Err(HandshakeFailure::Refused(429, "connections_per_user"));
    }
    let upgraded = |principal, mode| Upgraded {
        deflate: None,
        leftover: Vec::new(),
        principal,
        mode,
    };
    match decision {
        HttpDecision::Reply {
            status,
            label,
            response,
        } => {
            stream.write_all(&response).await?;
            stream.flush().await?;
            let _ = stream.shutdown().await;
            if status < 400 {
                return Ok(upgraded(Principal::anonymous(), Mode::Answered));
            }
            Err(HandshakeFailure::Refused(status, label))
        }
        HttpDecision::Stream {
            response,
            rooms,
            principal,
        } => {
            stream.write_all(&response).await?;
            stream.flush().await?;
            let endpoint: Box<dyn Endpoint> = Box::new(Sse { rooms });
            Ok(upgraded(
                principal,
                Mode::Connection {
                    endpoint,
                    close: None,
                },
            ))
        }
        HttpDecision::Poll {
            rooms,
            principal,
            cors,
        } => Ok(upgraded(principal, Mode::Poll { rooms, cors })),
        HttpDecision::PusherApi {
            content_length,
            request,
        } => {
            let body = read_body(stream, &mut head, head_len, content_length).await?;
            Ok(upgraded(
                Principal::anonymous(),
                Mode::PusherApi { request, body },
            ))
        }
        HttpDecision::Publish {
            content_length,
            principal,
            cors,
        } => {
            let body = read_body(stream, &mut head, head_len, content_length).await?;
            Ok(upgraded(principal, Mode::Publish { body, cors }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use crate::config::Access;
    use crate::config::Config;
    use crate::namespaces::Namespaces;

    const REQ: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ringcast.v1\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    #[test]
    fn a_head_is_parsed_only_once_it_may_be_complete() {
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_may_end(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(head_may_end(b"\n\r\n"));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!head_may_end(b"\r\n\r"));
    }

    fn status(d: Decision) -> u16 {
        match d {
            Decision::Upgrade { .. } => 101,
            Decision::Refuse { status, .. } => status,
            Decision::Http {
                decision: HttpDecision::Reply { status, .. },
                ..
            } => status,
            Decision::Http { .. } => 200,
        }
    }

    /// Decides with an anonymous-friendly configuration unless the config says otherwise.
    fn run(head: &[u8], c: &Config, draining: bool, admission: &Verdict) -> Option<Decision> {
        let ns = Namespaces::from_config(c);
        let auth = Authenticator::new(&c.auth, ns.anonymous_allowed()).unwrap();
        decide(
            head,
            &Gate {
                config: c,
                auth: &auth,
                namespaces: &ns,
                draining,
                admission,
            },
        )
    }

    fn open_config() -> Config {
        let mut c = Config::default();
        c.rooms.anonymous = Access::Publish;
        c
    }

    #[test]
    fn upgrade_with_subprotocol_and_deflate() {
        let c = open_config();
        let Some(Decision::Upgrade {
            endpoint,
            response,
            deflate,
            head_len,
            principal,
            ..
        }) = run(REQ.as_bytes(), &c, false, &Verdict::Admit)
        else {
            panic!("not an upgrade")
        };
        assert_eq!(format!("{endpoint:?}"), "App");
        assert_eq!(head_len, REQ.len());
        assert!(deflate.is_some());
        assert!(principal.is_anonymous());
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
        let mut c = open_config();
        let admit = &Verdict::Admit;
        assert_eq!(
            run(REQ.replace("/ws", "/nope").as_bytes(), &c, false, admit).map(status),
            Some(404)
        );
        assert_eq!(
            run(REQ.replace("/ws", "/echo").as_bytes(), &c, false, admit).map(status),
            Some(404)
        );
        c.websocket.echo_endpoint = true;
        assert_eq!(
            run(REQ.replace("/ws", "/echo").as_bytes(), &c, false, admit).map(status),
            Some(101)
        );
        assert_eq!(run(REQ.as_bytes(), &c, true, admit).map(status), Some(503));
        c.websocket.allowed_origins = vec!["https://app.example".into()];
        let with_origin = REQ.replace("Host: x\r\n", "Host: x\r\nOrigin: https://app.example\r\n");
        let bad_origin = REQ.replace("Host: x\r\n", "Host: x\r\nOrigin: https://evil.example\r\n");
        assert_eq!(
            run(bad_origin.as_bytes(), &c, false, admit).map(status),
            Some(403)
        );
        // Non-browser clients send no Origin (docs/protocol.md §4.4).
        assert_eq!(run(REQ.as_bytes(), &c, false, admit).map(status), Some(101));
        assert_eq!(
            run(with_origin.as_bytes(), &c, false, admit).map(status),
            Some(101)
        );
        assert!(run(&REQ.as_bytes()[..20], &c, false, admit).is_none());
        assert_eq!(
            run(b"GET / HTTP/9.9\r\n\r\n", &c, false, admit).map(status),
            Some(400)
        );
    }

    #[test]
    fn admission_and_auth_answers() {
        let c = open_config();
        let busy = Verdict::Busy {
            reason: "busy",
            retry_after_s: 7,
        };
        let Some(Decision::Refuse {
            status: code,
            response,
            ..
        }) = run(REQ.as_bytes(), &c, false, &busy)
        else {
            panic!()
        };
        assert_eq!(code, 503);
        assert!(String::from_utf8_lossy(&response).contains("Retry-After: 7\r\n"));
        let ip = Verdict::TooMany { reason: "ip" };
        assert_eq!(run(REQ.as_bytes(), &c, false, &ip).map(status), Some(429));
        // No anonymous namespace and no token: 401 with a reason.
        let closed = Config::default();
        let Some(Decision::Refuse {
            status: code,
            response,
            ..
        }) = run(REQ.as_bytes(), &closed, false, &Verdict::Admit)
        else {
            panic!()
        };
        assert_eq!(code, 401);
        let text = String::from_utf8_lossy(&response);
        assert!(text.contains("token is required"), "{text}");
        assert!(text.contains("WWW-Authenticate: Bearer"), "{text}");
        // A head over the configured cap is refused before it is complete.
        let mut small = open_config();
        small.limits.max_request_head_bytes = 1024;
        let big = format!("GET /ws HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(1100));
        assert_eq!(
            run(big.as_bytes(), &small, false, &Verdict::Admit).map(status),
            Some(431)
        );
    }
}
