//! The route table of the public listener: a request's path (and query) to what answers it,
//! decided once (sans I/O), one line per endpoint. Authentication and the upgrade's own checks
//! follow in `handshake::decide`.

use proto_codec::http::Request;

use crate::config::Config;
use crate::endpoint::app::App;
use crate::endpoint::echo::Echo;
use crate::endpoint::pusher::Pusher;
use crate::endpoint::raw::Raw;
use crate::endpoint::yjs::Yjs;
use crate::endpoint::{Endpoint, NoRoute};
use crate::namespaces::Namespaces;

/// What answers a request.
#[derive(Debug)]
pub enum Route {
    /// An HTTP endpoint of the public listener.
    Http(HttpRoute),
    /// A WebSocket endpoint.
    Upgrade(Box<dyn Endpoint>),
}

/// The HTTP endpoints of the public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRoute {
    /// The Pusher HTTP API (`/apps/…`, with Pusher apps configured).
    PusherApi,
    /// `POST /publish`.
    Publish,
    /// `GET /sse` (an event stream: `endpoint::sse`).
    Stream,
    /// `GET /poll` (a long poll: `endpoint::poll`).
    Poll,
}

/// Where a request goes.
pub fn route(
    req: &Request<'_>,
    config: &Config,
    namespaces: &Namespaces,
) -> Result<Route, NoRoute> {
    fn ws(endpoint: impl Endpoint + 'static) -> Route {
        Route::Upgrade(Box::new(endpoint))
    }
    let pusher = !config.pusher.apps.is_empty();
    let ws_config = &config.websocket;
    let path = req.path;
    let after = |prefix: &str| &path[prefix.len()..];
    Ok(match path {
        _ if pusher && path.starts_with("/apps/") => Route::Http(HttpRoute::PusherApi),
        "/publish" => Route::Http(HttpRoute::Publish),
        "/sse" => Route::Http(HttpRoute::Stream),
        "/poll" => Route::Http(HttpRoute::Poll),
        "/ws" => ws(App),
        "/echo" if ws_config.echo_endpoint => ws(Echo),
        _ if pusher && path.starts_with("/app/") => ws(Pusher::route(req, config, after("/app/"))),
        _ if path.starts_with("/yjs/") => ws(Yjs::route(after("/yjs/"), namespaces)?),
        _ if ws_config.raw_endpoint && path.starts_with("/raw/") => {
            ws(Raw::route(req, after("/raw/"))?)
        }
        _ => return Err(NoRoute::new(404, "not_found", "no such endpoint")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PusherApp;
    use proto_codec::pusher::PusherCode;

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
            Ok(Route::Upgrade(endpoint)) => format!("{endpoint:?}"),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(upgrade("/ws"), "App");
        assert_eq!(
            upgrade("/app/key?protocol=7"),
            format!("{:?}", Pusher::new(Ok(0)))
        );
        let http = |path: &str| match route_of(&get(path), &c) {
            Ok(Route::Http(http)) => Ok(http),
            Ok(other) => panic!("{path}: {other:?}"),
            Err(e) => Err(e.status),
        };
        assert_eq!(http("/sse"), Ok(HttpRoute::Stream));
        assert_eq!(http("/poll"), Ok(HttpRoute::Poll));
        assert_eq!(http("/apps/1/events"), Ok(HttpRoute::PusherApi));
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
            Ok(Route::Upgrade(endpoint)) => {
                let gate_config = Config::default();
                let ns = Namespaces::from_config(&gate_config);
                let auth = crate::auth::Authenticator::new(&gate_config.auth, true).unwrap();
                let verdict = crate::admission::Verdict::Admit;
                let gate = crate::connection::gate::Gate {
                    config: &gate_config,
                    auth: &auth,
                    namespaces: &ns,
                    draining: false,
                    admission: &verdict,
                };
                match endpoint.admit(&crate::auth::Principal::anonymous(), &gate) {
                    Err(close) => close.code.0,
                    Ok(()) => panic!("{path}: admitted"),
                }
            }
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
