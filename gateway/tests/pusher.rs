//! Pusher Channels compatibility (docs/pusher.md) against libraries no one here wrote: npm
//! `pusher-js` (in Node and in headless Chromium) and the npm `pusher` server library, run by
//! `gateway/tests/clients/pusher-*.mjs`, plus the protocol's refusals and signed webhooks.
//!
//! The Node scripts need `npm ci` in gateway/tests/clients (scripts/test-all.sh runs it); a
//! missing `node` or package fails the test, it never skips.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{http, raw_upgrade, Server};
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, Role, WebSocket};
use serde_json::{json, Value};

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

fn config(webhook: Option<&str>) -> String {
    let hooks = webhook.map_or(String::new(), |u| format!("webhooks = [\"{u}\"]\n"));
    format!(
        r#"
[[pusher.apps]]
id = "1"
key = "{KEY}"
secret = "{SECRET}"
enable_client_messages = true
{hooks}
[[pusher.apps]]
id = "2"
key = "quiet-key"
secret = "quiet-secret"
max_connections = 1
"#
    )
}

/// Runs a Pusher client script against app 1 of `server`.
fn run_app_script(script: &str, server: &Server, extra: &[&str]) -> (Value, bool) {
    let port = server.public.port().to_string();
    let mut args = vec![
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--app-id",
        "1",
        "--key",
        KEY,
        "--secret",
        SECRET,
    ];
    args.extend_from_slice(extra);
    common::node_script(script, &args, 150)
}

/// What the webhook receiver got: (X-Pusher-Key, X-Pusher-Signature, body) per POST.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// A webhook receiver: collects every POST.
fn webhook_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut key, mut signature, mut length) = (String::new(), String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                let value = line
                    .split_once(':')
                    .map_or("", |(_, v)| v.trim())
                    .to_string();
                if lower.starts_with("x-pusher-key:") {
                    key = value;
                } else if lower.starts_with("x-pusher-signature:") {
                    signature = value;
                } else if lower.starts_with("content-length:") {
                    length = value.parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            sink.lock().expect("lock").push((
                key,
                signature,
                String::from_utf8_lossy(&body).into(),
            ));
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, got)
}

fn hmac_hex(secret: &str, message: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(message.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn pusher_js_and_the_pusher_server_library_work_unchanged() {
    let (hook_url, hooks) = webhook_receiver();
    let server = Server::start_strict(2, &config(Some(&hook_url)));
    let (result, ok) = run_app_script(
        "pusher-check.mjs",
        &server,
        &["--bad-secret", "not-the-secret"],
    );
    let failed: Vec<&Value> = result["checks"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["ok"] != true).collect())
        .unwrap_or_default();
    for c in result["checks"].as_array().into_iter().flatten() {
        eprintln!(
            "{} {}: {}",
            if c["ok"] == true { "ok  " } else { "FAIL" },
            c["name"],
            c["detail"]
        );
    }
    assert!(
        ok && failed.is_empty() && result["ok"] == true,
        "failed checks: {failed:?}"
    );
    // Webhooks: occupancy and members, each batch signed with the app's secret.
    std::thread::sleep(Duration::from_millis(800));
    let got = hooks.lock().expect("lock").clone();
    let mut names = std::collections::BTreeSet::new();
    for (key, signature, body) in &got {
        assert_eq!(key, KEY);
        assert_eq!(signature, &hmac_hex(SECRET, body), "signature of {body}");
        let v: Value = serde_json::from_str(body).expect("webhook JSON");
        assert!(v["time_ms"].as_u64().is_some(), "{body}");
        for e in v["events"].as_array().into_iter().flatten() {
            names.insert(e["name"].as_str().unwrap_or_default().to_string());
            if e["name"].as_str().is_some_and(|n| n.starts_with("member_")) {
                assert!(e["user_id"].is_string(), "{e}");
            }
        }
    }
    for want in [
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
    ] {
        assert!(names.contains(want), "no {want} webhook in {names:?}");
    }
}

#[test]
fn pusher_js_in_headless_chromium() {
    let server = Server::start_strict(1, &config(None));
    let (result, ok) = run_app_script("pusher-browser.mjs", &server, &[]);
    assert!(ok && result["ok"] == true, "{result}");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

struct Raw {
    ws: FragmentCollector<tokio::net::TcpStream>,
}

impl Raw {
    async fn connect(server: &Server, path: &str) -> Raw {
        let (stream, head) = raw_upgrade(server.public, path, "").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut ws = WebSocket::after_handshake(stream, Role::Client);
        ws.set_auto_close(false);
        Raw {
            ws: FragmentCollector::new(ws),
        }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .write_frame(Frame::text(Payload::Owned(v.to_string().into_bytes())))
            .await
            .expect("send");
    }

    /// The next text frame as JSON, or the close code as `{"close": code}`.
    async fn next(&mut self) -> Value {
        let read = async {
            loop {
                let f = self.ws.read_frame().await.expect("read");
                match f.opcode {
                    OpCode::Text => return serde_json::from_slice(&f.payload).expect("JSON"),
                    OpCode::Close => {
                        let p = f.payload.to_vec();
                        let code = if p.len() >= 2 {
                            u16::from_be_bytes([p[0], p[1]])
                        } else {
                            1005
                        };
                        return json!({ "close": code });
                    }
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a frame within 10 s")
    }
}

#[test]
fn refusals_use_the_protocols_codes() {
    let server = Server::start_strict(1, &config(None));
    rt().block_on(async {
        // Unknown app key, and protocol versions: closes with Pusher's codes after the upgrade.
        for (path, code) in [
            ("/app/nope?protocol=7", 4001),
            ("/app/app-key", 4008),
            ("/app/app-key?protocol=x", 4006),
            ("/app/app-key?protocol=3", 4007),
        ] {
            let mut c = Raw::connect(&server, path).await;
            assert_eq!(c.next().await, json!({ "close": code }), "{path}");
        }
        // An app at its max_connections: pusher:error 4004, then close 4004.
        let mut first = Raw::connect(&server, "/app/quiet-key?protocol=7").await;
        assert_eq!(first.next().await["event"], "pusher:connection_established");
        let mut second = Raw::connect(&server, "/app/quiet-key?protocol=7").await;
        let e = second.next().await;
        assert_eq!((e["event"].as_str(), e["data"]["code"].as_u64()), (Some("pusher:error"), Some(4004)), "{e}");
        assert_eq!(second.next().await, json!({ "close": 4004 }));
        drop(first);
        let mut c = Raw::connect(&server, "/app/app-key?protocol=7&client=raw").await;
        let hello = c.next().await;
        assert_eq!(hello["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(hello["data"].as_str().unwrap_or("")).expect("data");
        let socket_id = data["socket_id"].as_str().unwrap_or_default().to_string();
        // A private channel with a signature for another socket: subscription_error 401.
        let wrong = hmac_hex(SECRET, "1.1:private-x");
        c.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": format!("{KEY}:{wrong}")}}))
            .await;
        let e = c.next().await;
        assert_eq!((e["event"].as_str(), e["data"]["status"].as_u64()), (Some("pusher:subscription_error"), Some(401)), "{e}");
        // Client events: only on private and presence channels one is subscribed to.
        c.send(json!({"event": "pusher:subscribe", "data": {"channel": "public-1"}})).await;
        assert_eq!(c.next().await["event"], "pusher_internal:subscription_succeeded");
        c.send(json!({"event": "client-x", "channel": "public-1", "data": {}})).await;
        let e = c.next().await;
        assert_eq!((e["event"].as_str(), e["data"]["code"].as_u64()), (Some("pusher:error"), Some(4301)), "{e}");
        // The correct signature works; ping is answered.
        let good = hmac_hex(SECRET, &format!("{socket_id}:private-x"));
        c.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": format!("{KEY}:{good}")}}))
            .await;
        assert_eq!(c.next().await["event"], "pusher_internal:subscription_succeeded");
        c.send(json!({"event": "pusher:ping", "data": {}})).await;
        assert_eq!(c.next().await["event"], "pusher:pong");
        // Not JSON: a pusher:error, the connection stays.
        c.ws.write_frame(Frame::text(Payload::Owned(b"{nope".to_vec()))).await.expect("send");
        assert_eq!(c.next().await["event"], "pusher:error");
        // A presence channel without channel_data is refused.
        let sig = hmac_hex(SECRET, &format!("{socket_id}:presence-p"));
        c.send(json!({"event": "pusher:subscribe", "data": {"channel": "presence-p", "auth": format!("{KEY}:{sig}")}}))
            .await;
        assert_eq!(c.next().await["event"], "pusher:subscription_error");
    });
    // The HTTP API: unsigned, wrong key, unknown app.
    let (status, body) = http(
        server.public,
        "POST",
        "/apps/1/events",
        &[],
        r#"{"name":"e","channel":"c","data":"x"}"#,
    );
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(
        server.public,
        "GET",
        "/apps/9/channels?auth_key=app-key",
        &[],
        "",
    );
    assert_eq!(status, 404);
}

/// A Pusher HTTP API request path signed with app 1's secret (as the server libraries sign).
fn signed(method: &str, path: &str, body: &str) -> String {
    use md5::{Digest, Md5};
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut query = format!("auth_key={KEY}&auth_timestamp={ts}&auth_version=1.0");
    if !body.is_empty() {
        let md5: String = Md5::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        query.push_str(&format!("&body_md5={md5}"));
    }
    let signature = hmac_hex(SECRET, &format!("{method}\n{path}\n{query}"));
    format!("{path}?{query}&auth_signature={signature}")
}

#[test]
fn finding_06_a_signed_api_call_naming_no_user_is_not_found_and_the_node_keeps_serving() {
    let server = Server::start_strict(1, &config(None));
    for (method, path) in [
        ("POST", "/apps/1/users/terminate_connections"),
        ("POST", "/apps/1/users//terminate_connections"),
        ("GET", "/apps/1/channels/"),
        ("GET", "/apps/1/channels//users"),
    ] {
        let body = if method == "POST" { "{}" } else { "" };
        let (status, answer) = http(
            server.public,
            method,
            &signed(method, path, body),
            &[],
            body,
        );
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    let path = "/apps/1/users/u1/terminate_connections";
    let (status, answer) = http(
        server.public,
        "POST",
        &signed("POST", path, "{}"),
        &[],
        "{}",
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = http(
        server.public,
        "GET",
        &signed("GET", "/apps/1/channels", ""),
        &[],
        "",
    );
    assert_eq!(status, 200, "the node serves on: {answer}");
}

#[test]
fn finding_02_native_clients_cannot_reach_pusher_rooms_unless_the_operator_opens_them() {
    // Anonymous clients may publish everywhere in the default namespace: the implicit `pusher`
    // namespace no longer inherits that, and native access to it is off.
    let server = Server::start(1, &config(None));
    rt().block_on(async {
        let mut native = common::connect(server.public).await;
        for (id, room) in [
            "pusher.1/private-x",
            "pusher.1/presence-p",
            "pusher.1/private-encrypted-x",
            "pusher.1/+user/u1",
            "pusher.1/public-1",
        ]
        .into_iter()
        .enumerate()
        {
            native
                .send(json!({"op": "subscribe", "id": id, "room": room}))
                .await;
            let e = native.recv().await;
            assert_eq!(
                (e["ev"].as_str(), e["code"].as_str()),
                (Some("error"), Some("forbidden")),
                "{room}: {e}"
            );
        }
        native
            .send(json!({"op": "publish", "id": 9, "room": "pusher.1/public-1", "data": {"a": 1}}))
            .await;
        assert_eq!(native.recv().await["code"], "forbidden");
    });
    for room in ["pusher.1/presence-p", "pusher.1/%2Buser/u1"] {
        let (status, body) = http(server.public, "GET", &format!("/sse?room={room}"), &[], "");
        assert_eq!(status, 403, "{room}: {body}");
    }
    let (status, body) = http(
        server.public,
        "GET",
        "/poll?room=pusher.1/private-x",
        &[],
        "",
    );
    assert_eq!(status, 403, "{body}");
}

#[test]
fn finding_03_a_native_message_in_a_pusher_room_is_never_delivered_as_a_pusher_event() {
    let server = Server::start_strict(
        1,
        &format!(
            "{}\n[pusher]\nnative_access = true\n[namespaces.pusher]\nanonymous = \"publish\"\nevents = true\n",
            config(None)
        ),
    );
    rt().block_on(async {
        let mut pusher = Raw::connect(&server, "/app/app-key?protocol=7").await;
        assert_eq!(
            pusher.next().await["event"],
            "pusher:connection_established"
        );
        pusher
            .send(json!({"event": "pusher:subscribe", "data": {"channel": "public-1"}}))
            .await;
        assert_eq!(
            pusher.next().await["event"],
            "pusher_internal:subscription_succeeded"
        );
        let forged = json!({
            "event": "pusher_internal:member_added",
            "channel": "presence-admins",
            "data": "{\"user_id\":\"mallory\"}",
            "user_id": "admin"
        });
        let mut native = common::connect(server.public).await;
        native.subscribe(1, "pusher.1/public-1", None).await;
        native.publish(2, "pusher.1/public-1", forged.clone()).await;
        native
            .send(json!({"op": "event", "room": "pusher.1/public-1", "data": forged}))
            .await;
        for _ in 0..2 {
            let got = pusher.next().await;
            assert_eq!(
                (
                    got["event"].as_str(),
                    got["channel"].as_str(),
                    got.get("user_id")
                ),
                (Some("ringcast:message"), Some("public-1"), None),
                "{got}"
            );
            let inner: Value =
                serde_json::from_str(got["data"].as_str().unwrap_or("")).expect("data");
            assert_eq!(inner, forged);
        }
    });
}

/// The socket id a new Pusher connection of app 1 is given.
async fn socket_id_of(server: &Server) -> String {
    let mut c = Raw::connect(server, "/app/app-key?protocol=7").await;
    let hello = c.next().await;
    let data: Value = serde_json::from_str(hello["data"].as_str().unwrap_or("")).expect("data");
    data["socket_id"].as_str().unwrap_or_default().to_string()
}

#[test]
fn lower_socket_ids_are_unpredictable_and_never_repeat_after_a_restart() {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let start = || Server::launch(1, &config(None), &[("RINGCAST_LISTEN", listen.as_str())]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut server = start();
        rt().block_on(async {
            for _ in 0..3 {
                ids.push(socket_id_of(&server).await);
            }
        });
        server.sigterm();
        let _ = server.wait_exit(Duration::from_secs(10));
    }
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a socket id repeated: {ids:?}");
    // A signature for one id says nothing about the next: their random parts differ.
    let random: std::collections::HashSet<&str> =
        ids.iter().filter_map(|id| id.split('.').next()).collect();
    assert_eq!(random.len(), ids.len(), "{ids:?}");
    assert!(ids.iter().all(|id| {
        id.split_once('.')
            .is_some_and(|(a, b)| a.bytes().all(|c| c.is_ascii_digit()) && b.parse::<u64>().is_ok())
    }));
}

#[test]
fn lower_the_webhook_queue_is_bounded_and_counts_what_it_drops() {
    // A receiver that accepts nothing: every attempt waits for its timeout, so events pile up.
    let stuck = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", stuck.local_addr().expect("addr"));
    let server = Server::start_strict(1, &config(Some(&url)));
    rt().block_on(async {
        let mut c = Raw::connect(&server, "/app/app-key?protocol=7").await;
        assert_eq!(c.next().await["event"], "pusher:connection_established");
        // 14,000 occupied/vacated events against a queue of 10,000.
        for i in 0..7_000 {
            let channel = format!("public-{i}");
            c.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
                .await;
            c.send(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}))
                .await;
            if i % 500 == 0 {
                // Read what came so far: the client is not a slow consumer.
                while let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(5), c.ws.read_frame()).await
                {
                }
            }
        }
        // Every subscription was taken (so every event was made) before the client leaves.
        let last = async {
            loop {
                let v = c.next().await;
                if v["channel"] == "public-6999" {
                    return v;
                }
            }
        };
        let v = tokio::time::timeout(Duration::from_secs(60), last)
            .await
            .expect("the last subscription within 60 s");
        assert_eq!(v["event"], "pusher_internal:subscription_succeeded");
    });
    let mut dropped = false;
    for _ in 0..100 {
        let (_, metrics) = http(server.admin, "GET", "/metrics", &[], "");
        dropped = metrics
            .lines()
            .any(|l| l.starts_with("ringcast_pusher_webhooks_total") && l.contains("queue_full"));
        if dropped {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = http(server.admin, "GET", "/metrics", &[], "");
    let relevant: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("webhook") || l.contains("limit") || l.contains("rooms"))
        .collect();
    assert!(
        dropped,
        "no drop counted past the queue's bound: {relevant:#?}"
    );
    drop(stuck);
}
