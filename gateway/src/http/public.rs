//! The HTTP endpoints of the public listener that are not WebSocket upgrades (sans I/O):
//! `GET /sse` (an event stream of rooms), `POST /publish` (publishing for SSE clients, with a
//! token), and its CORS preflight. The handshake routes these requests here; the connection
//! serves what they decide.

use proto_codec::http::{write_error_response, write_response, Request};
use proto_codec::protocol::{validate_room, ErrorCode, ServerEvent};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::auth::{Action, Principal};
use crate::connection::gate::Gate;
use crate::errors::OpFailure;

/// A room of an event stream, with the position to resume it from.
pub type StreamRoom = (String, Option<(String, u64)>);

/// What a request to one of these endpoints decided, before any body.
#[derive(Debug, PartialEq)]
pub enum HttpDecision {
    /// Open an event stream: write `response` (the 200 head) and subscribe to `rooms`.
    Stream {
        /// The response head.
        response: Vec<u8>,
        /// The rooms, in request order.
        rooms: Vec<StreamRoom>,
        /// Who connected.
        principal: Principal,
    },
    /// Hold a long poll: subscribe to `rooms`, answer what arrives (or `[]` after the hold).
    Poll {
        /// The rooms, in request order.
        rooms: Vec<StreamRoom>,
        /// Who connected.
        principal: Principal,
        /// The `Origin` to echo in `Access-Control-Allow-Origin`.
        cors: Option<String>,
    },
    /// Read a body of `content_length` bytes, then publish it.
    Publish {
        /// The body's length.
        content_length: usize,
        /// Who publishes.
        principal: Principal,
        /// The `Origin` to echo in `Access-Control-Allow-Origin`.
        cors: Option<String>,
    },
    /// Read a body of `content_length` bytes, then answer a Pusher HTTP API request.
    PusherApi {
        /// The body's length (0 without one).
        content_length: usize,
        /// The request line and query, for the signature.
        request: PusherRequest,
    },
    /// Answer and close (a refusal, or a CORS preflight).
    Reply {
        /// The status.
        status: u16,
        /// Why, as a metrics label.
        label: &'static str,
        /// The whole response.
        response: Vec<u8>,
    },
}

/// A Pusher HTTP API request (`/apps/<id>/…`), before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherRequest {
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The raw query string.
    pub query: String,
}

/// `/apps/<id>/…` (the Pusher HTTP API, docs/pusher.md): the body is read, then answered on
/// the shard.
pub fn pusher_api_request(req: &Request<'_>, gate: &Gate<'_>) -> HttpDecision {
    let content_length = req
        .header_str("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if content_length > gate.config.websocket.max_message_bytes {
        return reply(413, "too_large", "body is over the size limit", &[]);
    }
    HttpDecision::PusherApi {
        content_length,
        request: PusherRequest {
            method: req.method.to_string(),
            path: req.path.to_string(),
            query: req.query.unwrap_or_default().to_string(),
        },
    }
}

fn reply(status: u16, label: &'static str, reason: &str, headers: &[(&str, &str)]) -> HttpDecision {
    let mut response = Vec::new();
    write_error_response(&mut response, status, reason, headers);
    HttpDecision::Reply {
        status,
        label,
        response,
    }
}

/// An `error` event as a JSON response with the code's HTTP status (the HTTP endpoints'
/// error form, docs/protocol.md §19).
pub fn error_json(code: ErrorCode, reason: &str, cors: Option<&str>) -> Vec<u8> {
    let event = ServerEvent::Error {
        id: None,
        code,
        reason: reason.into(),
    };
    json_response(code.http_status(), event.to_json().as_bytes(), cors)
}

/// A refusal as an `error` event (long polls and HTTP publish answer in JSON).
fn json_refusal(
    code: ErrorCode,
    label: &'static str,
    reason: &str,
    cors: Option<&str>,
) -> HttpDecision {
    HttpDecision::Reply {
        status: code.http_status(),
        label,
        response: error_json(code, reason, cors),
    }
}

/// A JSON response (with the CORS header for an allowed origin).
pub fn json_response(status: u16, body: &[u8], cors: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    // One request per connection: say so, or a client that pools connections reuses a socket
    // the gateway is closing.
    let mut headers: Vec<(&str, &str)> = vec![("Connection", "close")];
    if let Some(o) = cors {
        headers.extend([("Access-Control-Allow-Origin", o), ("Vary", "Origin")]);
    }
    write_response(&mut out, status, "application/json", &headers, body);
    out
}

/// The request's `Origin` when it may use these endpoints: `Ok(None)` without an `Origin`,
/// `Ok(Some(origin))` when allowed (echoed for CORS), `Err` when not allowed.
fn origin<'a>(req: &Request<'a>, gate: &Gate<'_>) -> Result<Option<&'a str>, ()> {
    match req.header_str("origin") {
        None => Ok(None),
        Some(o) => {
            let allowed = &gate.config.websocket.allowed_origins;
            if allowed.is_empty() || allowed.iter().any(|a| a == o) {
                Ok(Some(o))
            } else {
                Err(())
            }
        }
    }
}

/// `GET /sse?room=…&since=…` (or `GET /poll`, with `poll`): every check of
/// docs/protocol.md §18.1, all before anything is subscribed (either every room is, or the
/// request is refused). Refusals are plain text for an event stream and `error` events in JSON
/// for a long poll (§20).
pub fn stream_request(req: &Request<'_>, gate: &Gate<'_>, poll: bool) -> HttpDecision {
    if req.method != "GET" {
        return reply(
            405,
            "bad_request",
            "method must be GET",
            &[("Allow", "GET")],
        );
    }
    let Ok(cors) = origin(req, gate) else {
        return reply(403, "origin", "origin not allowed", &[]);
    };
    let refuse = |code: ErrorCode, label, reason: &str, headers: &[(&str, &str)]| {
        if poll {
            json_refusal(code, label, reason, cors)
        } else {
            reply(code.http_status(), label, reason, headers)
        }
    };
    let principal = match gate.auth.authenticate(req) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                e.error_code(),
                e.label(),
                &e.to_string(),
                &[("WWW-Authenticate", "Bearer realm=\"ringcast\"")],
            )
        }
    };
    let rooms = match stream_rooms(req, gate, &principal) {
        Ok(r) => r,
        Err(OpFailure { code, reason }) => return refuse(code, "bad_stream", &reason, &[]),
    };
    if poll {
        return HttpDecision::Poll {
            rooms,
            principal,
            cors: cors.map(str::to_string),
        };
    }
    let mut response = Vec::with_capacity(256);
    let cors_headers: Vec<(&str, &str)> = cors
        .map(|o| vec![("Access-Control-Allow-Origin", o), ("Vary", "Origin")])
        .unwrap_or_default();
    proto_codec::sse::write_stream_head(&mut response, &cors_headers);
    HttpDecision::Stream {
        response,
        rooms,
        principal,
    }
}

/// The rooms of a stream request with their resume positions, checked.
pub fn stream_rooms(
    req: &Request<'_>,
    gate: &Gate<'_>,
    principal: &Principal,
) -> Result<Vec<StreamRoom>, OpFailure> {
    let bad = |reason: String| Err(OpFailure::new(ErrorCode::BadRequest, reason));
    let mut rooms: Vec<StreamRoom> = Vec::new();
    for value in req.query_params("room") {
        let Some(room) = value else {
            return bad("a room parameter is not valid percent-encoding".into());
        };
        if let Err(e) = validate_room(&room) {
            return Err(OpFailure::new(
                ErrorCode::BadRoom,
                format!("room `{room}`: {e}"),
            ));
        }
        if rooms.iter().any(|(r, _)| *r == room) {
            return bad(format!("room `{room}` is listed twice"));
        }
        rooms.push((room.into_owned(), None));
    }
    if rooms.is_empty() {
        return bad("at least one room parameter is required".into());
    }
    if rooms.len() > gate.config.limits.max_rooms_per_connection {
        return Err(OpFailure::new(ErrorCode::LimitExceeded, "too many rooms"));
    }
    let position = |value: &str| -> Option<(String, String, u64)> {
        let (room, pos) = value.split_once('|')?;
        let (epoch, offset) = proto_codec::sse::parse_position_id(pos)?;
        Some((room.to_string(), epoch.to_string(), offset))
    };
    for value in req.query_params("since") {
        let Some((room, epoch, offset)) = value.as_deref().and_then(position) else {
            return bad("since must be <room>|<epoch>:<offset>".into());
        };
        let Some(entry) = rooms.iter_mut().find(|(r, _)| *r == room) else {
            return bad(format!(
                "since names `{room}`, which is not a room parameter"
            ));
        };
        if entry.1.is_some() {
            return bad(format!("two since values for `{room}`"));
        }
        entry.1 = Some((epoch, offset));
    }
    // `Last-Event-ID` (an EventSource reconnecting) wins for its room.
    if let Some((room, epoch, offset)) =
        proto_codec::sse::last_event_id(req.header("last-event-id")).and_then(position)
    {
        if let Some(entry) = rooms.iter_mut().find(|(r, _)| *r == room) {
            entry.1 = Some((epoch, offset));
        }
    }
    for (room, since) in &mut rooms {
        let ns = gate.namespaces.of(room)?;
        principal.authorize(Action::Subscribe, room, ns)?;
        if !ns.policy.recovery {
            *since = None;
        }
    }
    Ok(rooms)
}

/// `POST /publish` (and its `OPTIONS` preflight): the checks that need no body.
pub fn publish_request(req: &Request<'_>, gate: &Gate<'_>) -> HttpDecision {
    let Ok(cors) = origin(req, gate) else {
        return reply(403, "origin", "origin not allowed", &[]);
    };
    if req.method == "OPTIONS" {
        let mut response = Vec::new();
        let mut headers = vec![
            ("Access-Control-Allow-Methods", "POST, OPTIONS"),
            (
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type",
            ),
            ("Access-Control-Max-Age", "600"),
            ("Connection", "close"),
        ];
        if let Some(o) = cors {
            headers.push(("Access-Control-Allow-Origin", o));
            headers.push(("Vary", "Origin"));
        }
        write_response(&mut response, 204, "text/plain", &headers, b"");
        return HttpDecision::Reply {
            status: 204,
            label: "preflight",
            response,
        };
    }
    if req.method != "POST" {
        return reply(
            405,
            "bad_request",
            "method must be POST",
            &[("Allow", "POST, OPTIONS")],
        );
    }
    let json_reply = |code: ErrorCode, label, reason: &str| json_refusal(code, label, reason, cors);
    let principal = match gate.auth.authenticate(req) {
        Ok(p) => p,
        Err(e) => return json_refusal(e.error_code(), e.label(), &e.to_string(), cors),
    };
    let Some(content_length) = req
        .header_str("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
    else {
        return json_reply(
            ErrorCode::BadRequest,
            "bad_request",
            "Content-Length is required",
        );
    };
    if content_length > gate.config.websocket.max_message_bytes {
        return json_reply(
            ErrorCode::TooLarge,
            "too_large",
            "body is over the size limit",
        );
    }
    HttpDecision::Publish {
        content_length,
        principal,
        cors: cors.map(str::to_string),
    }
}

/// The body of `POST /publish`: the `publish` op, `"op"` optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    #[serde(default)]
    op: Option<&'a str>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow)]
    room: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A checked HTTP publish: the room, its `data`, and the op's `id`.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpPublish {
    /// The room.
    pub room: String,
    /// The data (valid JSON, not `null`).
    pub data: Vec<u8>,
    /// The op's id, echoed.
    pub id: Option<u64>,
}

/// Checks a publish body against the room's namespace and the principal's permissions.
pub fn publish_body(
    body: &[u8],
    principal: &Principal,
    namespaces: &crate::namespaces::Namespaces,
) -> Result<HttpPublish, OpFailure> {
    let parsed: PublishBody<'_> = serde_json::from_slice(body)
        .map_err(|e| OpFailure::new(ErrorCode::BadRequest, e.to_string()))?;
    if parsed.op.is_some_and(|op| op != "publish") {
        return Err(OpFailure::new(ErrorCode::BadRequest, "op must be publish"));
    }
    if parsed.data.get() == "null" {
        return Err(OpFailure::new(
            ErrorCode::BadRequest,
            "data must not be null",
        ));
    }
    validate_room(&parsed.room).map_err(|e| OpFailure::new(ErrorCode::BadRoom, e.to_string()))?;
    let ns = namespaces.of(&parsed.room)?;
    principal.authorize(Action::Publish, &parsed.room, ns)?;
    let data = parsed.data.get().as_bytes();
    if data.len() > ns.policy.max_data_bytes {
        return Err(OpFailure::new(
            ErrorCode::TooLarge,
            "data is over the size limit",
        ));
    }
    Ok(HttpPublish {
        room: parsed.room.into_owned(),
        data: data.to_vec(),
        id: parsed.id,
    })
}
