//! The route table of the public listener: a request's path (and query) to what answers it,
//! decided once (sans I/O). Authentication and the upgrade's own checks follow in
//! `handshake::decide`.

use proto_codec::http::Request;
use proto_codec::pusher::PusherCode;

use super::shared::CloseRequest;
use crate::config::{Config, RoomKind};
use crate::endpoint::Endpoint;
use crate::errors::OpFailure;
use crate::namespaces::Namespaces;

/// What answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An HTTP endpoint of the public listener.
    Http(HttpRoute),
    /// A WebSocket endpoint, and what happens right after the upgrade.
    Upgrade {
        /// What the connection speaks.
        endpoint: Endpoint,
        /// Its first step.
        after: AfterUpgrade,
    },
}

/// The HTTP endpoints of the public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRoute {
    /// The Pusher HTTP API (`/apps/…`, with Pusher apps configured).
    PusherApi,
    /// `POST /publish`.
    Publish,
    /// `GET /sse`.
    Stream,
    /// `GET /poll`.
    Poll,
}

/// What happens to a WebSocket connection right after its upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpgrade {
    /// Nothing more than the endpoint's own start (`hello`, its room's subscription).
    Start,
    /// A Pusher connection of this app (its index in `[pusher] apps`) is established.
    PusherEstablished {
        /// The app.
        app: usize,
    },
    /// It is closed with this code: its request cannot be served, and its client reads why
    /// only from a close (pusher-js; y-websocket, which retries a refused upgrade forever).
    Close(CloseRequest),
}

/// A request no route takes: answered with this HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute {
    /// The status.
    pub status: u16,
    /// Why, as a metrics label.
    pub label: &'static str,
    /// Why, for the client.
    pub reason: String,
}

fn no_route(status: u16, label: &'static str, reason: impl Into<String>) -> NoRoute {
    NoRoute {
        status,
        label,
        reason: reason.into(),
    }
}

/// Where a request goes.
pub fn route(
    req: &Request<'_>,
    config: &Config,
    namespaces: &Namespaces,
) -> Result<Route, NoRoute> {
    let pusher = !config.pusher.apps.is_empty();
    let path = req.path;
    if pusher && path.starts_with("/apps/") {
        return Ok(Route::Http(HttpRoute::PusherApi));
    }
    let start = |endpoint| Route::Upgrade {
        endpoint,
        after: AfterUpgrade::Start,
    };
    Ok(match path {
        "/publish" => Route::Http(HttpRoute::Publish),
        "/sse" => Route::Http(HttpRoute::Stream),
        "/poll" => Route::Http(HttpRoute::Poll),
        "/ws" => start(Endpoint::App),
        "/echo" if config.websocket.echo_endpoint => start(Endpoint::Echo),
        _ if pusher && path.starts_with("/app/") => {
            pusher_route(req, config, &path["/app/".len()..])
        }
        _ if path.starts_with("/yjs/") => {
            let room = &path["/yjs/".len()..];
            if proto_codec::protocol::validate_room(room).is_err() {
                return Err(no_route(400, "bad_request", "invalid room name"));
            }
            match namespaces.of(room) {
                Ok(ns) if ns.policy.kind == RoomKind::Crdt => {}
                Ok(_) => {
                    return Err(no_route(
                        404,
                        "not_found",
                        "not a collaborative room (its namespace is not kind = \"crdt\")",
                    ))
                }
                Err(OpFailure { reason, .. }) => return Err(no_route(404, "not_found", reason)),
            }
            start(Endpoint::Yjs { room: room.into() })
        }
        _ if config.websocket.raw_endpoint && path.starts_with("/raw/") => {
            let room = &path["/raw/".len()..];
            if proto_codec::protocol::validate_room(room).is_err() {
                return Err(no_route(400, "bad_request", "invalid room name"));
            }
            start(Endpoint::Raw {
                room: crate::shard::raw_room(room).into(),
                publisher: req.query_param("role").as_deref() == Some("pub"),
            })
        }
        _ => return Err(no_route(404, "not_found", "no such endpoint")),
    })
}

/// A Pusher protocol connection: an unknown app or version is a close with Pusher's code after
/// the upgrade, which is where pusher-js reads it.
fn pusher_route(req: &Request<'_>, config: &Config, key: &str) -> Route {
    let version = req.query_param("protocol");
    let close = |code: PusherCode, reason: String| {
        AfterUpgrade::Close(CloseRequest {
            code: code.close_code(),
            reason,
            discard_queue: false,
        })
    };
    let after = match (
        crate::pusher::app_by_key(config, key),
        version.as_deref().map(str::parse::<u8>),
    ) {
        (None, _) => close(
            PusherCode::APP_NOT_FOUND,
            format!("App key {key} not in this cluster"),
        ),
        (_, None) => close(
            PusherCode::NO_PROTOCOL_VERSION,
            "No protocol version supplied".to_string(),
        ),
        (_, Some(Err(_))) => close(
            PusherCode::INVALID_VERSION_FORMAT,
            "Invalid version string format".to_string(),
        ),
        (_, Some(Ok(v))) if !(5..=7).contains(&v) => close(
            PusherCode::UNSUPPORTED_PROTOCOL_VERSION,
            format!("Unsupported protocol version {v}"),
        ),
        (Some((app, _)), Some(Ok(_))) => AfterUpgrade::PusherEstablished { app },
    };
    Route::Upgrade {
        endpoint: Endpoint::Pusher,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PusherApp;

    fn config() -> Config {
        let mut c = Config::default();
        c.pusher.apps.push(PusherApp {
            id: "1".into(),
            key: "key".into(),
            secret: "s".into(),
            enable_client_messages: false,
            max_connections: 0,
            max_client_events_per_second: 0,
            webhooks: Vec::new(),
        });
        c
    }

    fn route_of(head: &str, c: &Config) -> Result<Route, NoRoute> {
        let req = proto_codec::http::parse_request(head.as_bytes())
            .expect("parses")
            .expect("complete");
        route(&req, c, &Namespaces::from_config(c))
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    #[test]
    fn each_path_has_one_route() {
        let c = config();
        let upgrade = |path: &str| match route_of(&get(path), &c) {
            Ok(Route::Upgrade { endpoint, after }) => (endpoint, after),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(upgrade("/ws"), (Endpoint::App, AfterUpgrade::Start));
        assert_eq!(
            upgrade("/app/key?protocol=7"),
            (Endpoint::Pusher, AfterUpgrade::PusherEstablished { app: 0 })
        );
        let http = |path: &str| route_of(&get(path), &c).map_err(|e| e.status);
        assert_eq!(http("/sse"), Ok(Route::Http(HttpRoute::Stream)));
        assert_eq!(http("/poll"), Ok(Route::Http(HttpRoute::Poll)));
        assert_eq!(
            http("/apps/1/events"),
            Ok(Route::Http(HttpRoute::PusherApi))
        );
        // Off by default, and unknown paths: 404.
        assert_eq!(http("/echo"), Err(404));
        assert_eq!(http("/raw/r"), Err(404));
        assert_eq!(http("/nothing"), Err(404));
        // Not a collaborative namespace.
        assert_eq!(http("/yjs/r"), Err(404));
    }

    #[test]
    fn a_pusher_request_that_cannot_be_served_is_closed_with_pusher_s_code() {
        let c = config();
        let close = |path: &str| match route_of(&get(path), &c) {
            Ok(Route::Upgrade {
                endpoint: Endpoint::Pusher,
                after: AfterUpgrade::Close(close),
            }) => close.code.0,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(close("/app/nokey?protocol=7"), PusherCode::APP_NOT_FOUND.0);
        assert_eq!(close("/app/key"), PusherCode::NO_PROTOCOL_VERSION.0);
        assert_eq!(
            close("/app/key?protocol=x"),
            PusherCode::INVALID_VERSION_FORMAT.0
        );
        assert_eq!(
            close("/app/key?protocol=4"),
            PusherCode::UNSUPPORTED_PROTOCOL_VERSION.0
        );
    }
}
