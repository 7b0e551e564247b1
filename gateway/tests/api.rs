//! The server API on the admin listener, driven by curl: publish (one and a batch), presence,
//! history, the room list, disconnecting a user, node info; key checks and error events.

mod common;

use std::process::{Command, Stdio};

use common::{try_connect, Client, Received, Server};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "api-test-secret-0123456789-0123456789";
const KEY: &str = "api-key-for-tests";

fn server() -> Server {
    Server::start_strict(
        2,
        &format!(
            r#"
strict_namespaces = true
[rooms]
anonymous = "publish"
[namespaces.doc]
anonymous = "publish"
presence = true
[namespaces.feed]
anonymous = "publish"
[[auth.keys]]
alg = "HS256"
secret = "{SECRET}"
[api]
key = "{KEY}"
"#
        ),
    )
}

/// `curl` against the admin listener; returns (status, JSON body).
fn api(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", server.admin);
    let mut args: Vec<String> = vec![
        "-s".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        method.into(),
    ];
    if let Some(k) = key {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {k}"));
    }
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            b.into(),
        ]);
    }
    args.push(url);
    let out = Command::new("curl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("curl (apt package curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn user(server: &Server, sub: &str) -> Client {
    try_connect(
        server.public,
        std::net::Ipv4Addr::LOCALHOST,
        "/ws",
        &format!("Authorization: Bearer {}\r\n", token(sub)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_with_curl() {
    let server = server();
    let k = Some(KEY);
    // The key is required; errors are `error` events.
    let (s, body) = api(&server, "GET", "/api/node", None, None);
    assert_eq!(
        (s, body["ev"].clone(), body["code"].clone()),
        (401, json!("error"), json!("unauthorized"))
    );
    let (s, _) = api(&server, "GET", "/api/node", None, Some("wrong"));
    assert_eq!(s, 401);
    let (s, node) = api(&server, "GET", "/api/node", None, k);
    assert_eq!(s, 200);
    assert_eq!(
        (node["shards"].clone(), node["ready"].clone()),
        (json!(2), json!(true))
    );

    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    alice.subscribe(1, "doc.1", None).await;
    bob.subscribe(1, "doc.1", None).await;
    bob.subscribe(2, "feed.a", None).await;

    // Publish one, then a batch with one bad message among good ones.
    let (s, one) = api(
        &server,
        "POST",
        "/api/publish",
        Some(r#"{"room":"feed.a","data":{"n":1}}"#),
        k,
    );
    assert_eq!((s, one["offset"].clone()), (200, json!(1)));
    let batch = r#"{"messages":[{"room":"feed.a","data":2},{"room":"no space","data":0},{"room":"feed.a","data":3},{"room":"nowhere.x","data":4}]}"#;
    let (s, res) = api(&server, "POST", "/api/publish/batch", Some(batch), k);
    assert_eq!(s, 200);
    let results = res["results"].as_array().expect("results");
    assert_eq!(results[0]["offset"], 2);
    assert_eq!(results[1]["code"], "bad_room");
    assert_eq!(results[2]["offset"], 3);
    assert_eq!(results[3]["code"], "not_found");
    for expected in [json!({"n": 1}), json!(2), json!(3)] {
        loop {
            let ev = bob.recv().await;
            if ev["ev"] == "msg" {
                assert_eq!(ev["data"], expected);
                break;
            }
        }
    }

    // Presence and history.
    let (s, p) = api(&server, "GET", "/api/presence?room=doc.1", None, k);
    assert_eq!((s, p["count"].clone()), (200, json!(2)), "{p}");
    let users: Vec<&str> = p["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert!(users.contains(&"alice") && users.contains(&"bob"), "{p}");
    let (s, _) = api(&server, "GET", "/api/presence?room=feed.a", None, k);
    assert_eq!(s, 403, "presence is off in feed");
    let (s, h) = api(&server, "GET", "/api/history?room=feed.a&limit=2", None, k);
    assert_eq!(s, 200);
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect();
    assert_eq!(offsets, [2, 3]);
    let epoch = h["epoch"].as_str().expect("epoch").to_string();
    let (_, h) = api(
        &server,
        "GET",
        &format!("/api/history?room=feed.a&since={epoch}:1"),
        None,
        k,
    );
    assert_eq!(h["recovered"], true);
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(2));
    let (s, _) = api(
        &server,
        "GET",
        "/api/history?room=feed.a&since=bad",
        None,
        k,
    );
    assert_eq!(s, 400);

    // The room list counts subscribers over both shards.
    let (s, rooms) = api(&server, "GET", "/api/rooms", None, k);
    assert_eq!(s, 200);
    let find = |r: &str| {
        rooms["rooms"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["room"] == r).cloned())
    };
    assert_eq!(
        find("doc.1").map(|x| x["subscribers"].clone()),
        Some(json!(2)),
        "{rooms}"
    );
    assert_eq!(
        find("feed.a").map(|x| x["subscribers"].clone()),
        Some(json!(1))
    );

    // Disconnect a user: their connection closes with 4003; others stay.
    let (s, d) = api(
        &server,
        "POST",
        "/api/disconnect",
        Some(r#"{"user":"bob"}"#),
        k,
    );
    assert_eq!((s, d["closed"].clone()), (200, json!(1)));
    let code = loop {
        if let Received::Close(code, _) = bob.next().await {
            break code;
        }
    };
    assert_eq!(code, 4003);
    let leave_or_live = alice.drain(std::time::Duration::from_millis(200)).await;
    assert!(leave_or_live.iter().all(|e| e["ev"] != "error"));
    alice.send(json!({"op": "ping", "id": 5})).await;
    assert_eq!(alice.recv().await["ev"], "pong");

    // SLO: every written room frame counted per namespace, against its target.
    let (s, slo) = api(&server, "GET", "/api/slo", None, k);
    assert_eq!((s, slo["window_s"].clone()), (200, json!(60)), "{slo}");
    let feed = slo["namespaces"]
        .as_array()
        .and_then(|l| l.iter().find(|n| n["namespace"] == "feed").cloned())
        .expect("feed");
    assert_eq!(feed["writes"], 3, "{slo}");
    assert_eq!(feed["target_p99_ms"], 10);
    assert!(feed["p99_ms"].as_f64().is_some_and(|p| p >= 0.0), "{feed}");
    assert!(feed["meets_target"].is_boolean());

    // Wrong methods and unknown endpoints.
    let (s, _) = api(&server, "GET", "/api/publish", None, k);
    assert_eq!(s, 405);
    let (s, body) = api(&server, "GET", "/api/nope", None, k);
    assert_eq!((s, body["code"].clone()), (404, json!("not_found")));
}
