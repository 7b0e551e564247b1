//! Server-Sent Events and HTTP publish on the public listener, driven by curl (a client no one
//! here wrote): the stream format, resume through `Last-Event-ID`, heartbeats, refusals, and
//! `POST /publish` with a token, CORS and errors as `error` events.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Server;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "sse-test-secret-0123456789-0123456789";

fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600,
        "ringcast": {"subscribe": ["priv.*"], "publish": ["priv.*"]}});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn server() -> Server {
    Server::start_strict(
        2,
        &format!(
            r#"
strict_namespaces = true
[websocket]
heartbeat_interval_ms = 500
long_poll_hold_ms = 1500
allowed_origins = ["https://app.example"]
[rooms]
anonymous = "publish"
[namespaces.feed]
anonymous = "publish"
[namespaces.priv]
[[auth.keys]]
alg = "HS256"
secret = "{SECRET}"
"#
        ),
    )
}

/// Runs curl with a time limit; returns (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl (apt package curl)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Starts `curl -N` on an event stream in the background for `secs` seconds.
fn stream(url: String, headers: &[String], secs: u32) -> std::thread::JoinHandle<String> {
    let mut args = vec![
        "-s".to_string(),
        "-N".into(),
        "--max-time".into(),
        secs.to_string(),
    ];
    for h in headers {
        args.push("-H".into());
        args.push(h.clone());
    }
    args.push(url);
    std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    })
}

/// Parses an event stream into (event, id, data JSON) triples; comments are counted apart.
fn parse(text: &str) -> (Vec<(String, Option<String>, Value)>, usize) {
    let mut events = Vec::new();
    let mut comments = 0;
    for block in text.split("\n\n") {
        let (mut event, mut id, mut data) = (String::new(), None, Vec::new());
        for line in block.lines() {
            if line.starts_with(':') {
                comments += 1;
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v.to_string());
            }
        }
        if !event.is_empty() {
            let json = serde_json::from_str(&data.join("\n")).expect("data is JSON");
            events.push((event, id, json));
        }
    }
    (events, comments)
}

fn publish(server: &Server, body: &str, headers: &[&str]) -> (i32, String) {
    let url = format!("http://{}/publish", server.public);
    let mut args = vec!["-i", "-X", "POST", "-H", "Content-Type: application/json"];
    for h in headers {
        args.push("-H");
        args.push(h);
    }
    args.extend(["--data-binary", body, &url]);
    curl(&args)
}

#[test]
fn sse_stream_with_curl_resume_heartbeats_and_http_publish() {
    let server = server();
    let base = format!("http://{}", server.public);
    let live = stream(format!("{base}/sse?room=feed.a&room=feed.b"), &[], 3);
    std::thread::sleep(Duration::from_millis(700));
    // Publish through HTTP (multi-line data included) while the stream is open.
    let (_, r1) = publish(&server, r#"{"room":"feed.a","data":{"n":1},"id":9}"#, &[]);
    assert!(r1.starts_with("HTTP/1.1 200"), "{r1}");
    // The gateway closes after one request and says so (pooling clients must not reuse it).
    assert!(r1.contains("Connection: close\r\n"), "{r1}");
    assert!(
        r1.contains(r#""ev":"published""#) && r1.contains(r#""id":9"#),
        "{r1}"
    );
    let (_, r2) = publish(&server, "{\"room\":\"feed.a\",\"data\":{\"n\":\n2}}", &[]);
    assert!(r2.starts_with("HTTP/1.1 200"), "{r2}");
    publish(
        &server,
        r#"{"op":"publish","room":"feed.b","data":"b1"}"#,
        &[],
    );
    let text = live.join().expect("curl thread");
    let (events, comments) = parse(&text);
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names[0], "hello", "{text}");
    assert_eq!(
        names.iter().filter(|n| **n == "subscribed").count(),
        2,
        "{text}"
    );
    let msgs: Vec<_> = events.iter().filter(|e| e.0 == "msg").collect();
    assert_eq!(msgs.len(), 3, "{text}");
    let (_, id, data) = msgs[0];
    let epoch = data["epoch"].as_str().expect("epoch").to_string();
    assert_eq!(id.as_deref(), Some(format!("feed.a|{epoch}:1").as_str()));
    assert_eq!(data["data"], json!({"n": 1}));
    // A message whose data has a line break spans two data lines and joins back to the JSON.
    assert_eq!(msgs[1].2["data"], json!({"n": 2}));
    assert!(comments >= 2, "heartbeats every 500 ms: {text}");

    // EventSource's reconnect: Last-Event-ID resumes the room after that message.
    let resumed = stream(
        format!("{base}/sse?room=feed.a"),
        &[format!("Last-Event-ID: feed.a|{epoch}:1")],
        1,
    )
    .join()
    .expect("curl");
    let (events, _) = parse(&resumed);
    let sub = events
        .iter()
        .find(|e| e.0 == "subscribed")
        .expect("subscribed");
    assert_eq!(sub.2["recovered"], true, "{resumed}");
    let replay: Vec<u64> = events
        .iter()
        .filter(|e| e.0 == "msg")
        .filter_map(|e| e.2["offset"].as_u64())
        .collect();
    assert_eq!(replay, [2]);
    // A replayed message carries its position too, so EventSource's next resume starts after it.
    let replayed_id = events
        .iter()
        .find(|e| e.0 == "msg")
        .and_then(|e| e.1.clone());
    assert_eq!(replayed_id, Some(format!("feed.a|{epoch}:2")), "{resumed}");
}

#[test]
fn sse_and_publish_refusals() {
    let server = server();
    let base = format!("http://{}", server.public);
    let status = |args: &[&str]| -> u16 {
        let (_, out) = curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], args].concat());
        out.trim().parse().unwrap_or(0)
    };
    let t = token("ann");
    let bearer = format!("Authorization: Bearer {t}");
    let url = |q: &str| format!("{base}/sse?{q}");
    assert_eq!(status(&[&format!("{base}/sse")]), 400, "no room");
    assert_eq!(status(&[&url("room=a%20b")]), 400, "bad room");
    assert_eq!(
        status(&[&url("room=feed.a&since=feed.a%7Cnope")]),
        400,
        "bad since"
    );
    assert_eq!(
        status(&[&url("room=feed.a&since=feed.b%7Ce%3A1")]),
        400,
        "since for another room"
    );
    assert_eq!(
        status(&[&url("room=nowhere.x")]),
        404,
        "unconfigured namespace"
    );
    assert_eq!(
        status(&[&url("room=priv.x")]),
        401,
        "token-only namespace, no token"
    );
    assert_eq!(status(&["-X", "POST", &url("room=feed.a")]), 405);
    assert_eq!(
        status(&["-H", "Origin: https://evil.example", &url("room=feed.a")]),
        403
    );
    // The token in the query parameter opens a private room (EventSource cannot set headers).
    let (_, text) = curl(&[
        "-N",
        "--max-time",
        "1",
        &url(&format!("room=priv.x&token={t}")),
    ]);
    assert!(text.contains("event: subscribed"), "{text}");

    // HTTP publish: errors are `error` events with the code's status.
    let (_, r) = publish(&server, r#"{"room":"priv.x","data":1}"#, &[]);
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(
        r.contains(r#""ev":"error""#) && r.contains(r#""code":"unauthorized""#),
        "{r}"
    );
    let (_, r) = publish(&server, r#"{"room":"priv.x","data":1}"#, &[&bearer]);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let (_, r) = publish(&server, r#"{"room":"feed.x","data":null}"#, &[]);
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let big = format!(r#"{{"room":"feed.x","data":"{}"}}"#, "x".repeat(70_000));
    let (_, r) = publish(&server, &big, &[]);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let (_, r) = publish(&server, r#"{"room":"a b","data":1}"#, &[]);
    assert!(r.contains(r#""code":"bad_room""#), "{r}");
    // CORS: the preflight and the answer carry the allowed origin.
    let (_, r) = curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example",
        &format!("{base}/publish"),
    ]);
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert!(
        r.contains("Access-Control-Allow-Origin: https://app.example"),
        "{r}"
    );
    assert!(
        r.contains("Access-Control-Allow-Headers: Authorization, Content-Type"),
        "{r}"
    );
    let (_, r) = publish(
        &server,
        r#"{"room":"feed.x","data":1}"#,
        &["Origin: https://app.example"],
    );
    assert!(
        r.contains("Access-Control-Allow-Origin: https://app.example"),
        "{r}"
    );
}

#[test]
fn long_poll_with_curl() {
    let server = server();
    let base = format!("http://{}", server.public);
    let poll = |q: &str| -> (Value, String) {
        let (_, out) = curl(&["-i", &format!("{base}/poll?{q}")]);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (serde_json::from_str(&body).unwrap_or(Value::Null), out)
    };
    // Without since: the room's position at once.
    let (first, raw) = poll("room=feed.lp");
    assert!(raw.contains("Cache-Control: no-store"), "{raw}");
    assert_eq!(first[0]["ev"], "subscribed", "{raw}");
    let epoch = first[0]["epoch"].as_str().expect("epoch").to_string();
    let since = |o: u64| format!("room=feed.lp&since=feed.lp%7C{epoch}%3A{o}");
    // Nothing new: held, then answered with a message published meanwhile.
    let publisher = {
        let server_public = server.public;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            let url = format!("http://{server_public}/publish");
            Command::new("curl")
                .args([
                    "-s",
                    "-X",
                    "POST",
                    "--data-binary",
                    r#"{"room":"feed.lp","data":"live"}"#,
                    &url,
                ])
                .output()
                .expect("curl");
        })
    };
    let started = std::time::Instant::now();
    let (held, raw) = poll(&since(0));
    publisher.join().expect("publisher");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the publish"
    );
    assert_eq!(held.as_array().map(Vec::len), Some(1), "{raw}");
    assert_eq!(held[0]["ev"], "msg");
    assert_eq!(
        (held[0]["offset"].clone(), held[0]["data"].clone()),
        (json!(1), json!("live"))
    );
    // Recoverable: the messages after since at once, without a subscribed event.
    publish(&server, r#"{"room":"feed.lp","data":"two"}"#, &[]);
    publish(&server, r#"{"room":"feed.lp","data":"three"}"#, &[]);
    let (after, raw) = poll(&since(1));
    let offsets: Vec<u64> = after
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            assert_eq!(e["ev"], "msg", "{raw}");
            e["offset"].as_u64().unwrap_or(0)
        })
        .collect();
    assert_eq!(offsets, [2, 3]);
    // Nothing for the whole hold: an empty array.
    let started = std::time::Instant::now();
    let (empty, raw) = poll(&since(3));
    assert_eq!(empty, json!([]), "{raw}");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // Refusals are error events in JSON.
    let (err, raw) = poll("room=priv.x");
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert_eq!(err["code"], "unauthorized");
}
