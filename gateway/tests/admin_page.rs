//! The admin page: `GET /admin` (the static page) and `GET /api/overview` (its snapshot) behind
//! the API key; the snapshot's figures under load (connections per shard and transport, the
//! busiest rooms with their publish rate, the SLO); and the page itself in headless Chromium
//! against two nodes on Redis under load, turning red when Redis goes away (screenshots in
//! `reports/admin-page/`).

mod common;

use std::time::{Duration, Instant};

use common::{http, node_script, Redis, Server};
use serde_json::{json, Value};

const KEY: &str = "admin-page-test-key";

fn config(extra: &str) -> String {
    format!(
        r#"
[namespaces.load]
anonymous = "publish"
latency_target_ms = 50
[api]
key = "{KEY}"
{extra}
"#
    )
}

fn overview(server: &Server, key: Option<&str>) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, body) = http(server.admin, "GET", "/api/overview", &headers, "");
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, json)
}

/// Polls the snapshot until `ok` holds (or fails with the last one).
fn overview_until(server: &Server, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = overview(server, Some(KEY));
        assert_eq!(status, 200, "{v}");
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_page_and_its_snapshot_need_the_key() {
    let server = Server::start(2, &config(""));
    let (status, body) = http(server.admin, "GET", "/admin", &[], "");
    assert_eq!(status, 200);
    assert!(body.contains("<title>ringcast admin</title>"), "{body}");
    // The page is static (no figures in it); its data needs the key.
    let (status, v) = overview(&server, None);
    assert_eq!((status, &v["code"]), (401, &json!("unauthorized")), "{v}");
    let (status, _) = overview(&server, Some("wrong-key"));
    assert_eq!(status, 401);
    let (status, v) = overview(&server, Some(KEY));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["node"]["name"], "test");
    assert_eq!(v["node"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["node"]["shards"], 2);
    assert_eq!(v["node"]["driver"], server.driver.as_str());
    assert_eq!(v["ready"], json!({"ok": true, "reason": "ready"}));
    assert_eq!(v["broker"], json!({"kind": "embedded"}));
    assert_eq!(v["cluster"], Value::Null);
    assert_eq!(v["shards"].as_array().map(Vec::len), Some(2));
    let (status, _) = http(
        server.admin,
        "POST",
        "/api/overview",
        &[("Authorization", &format!("Bearer {KEY}"))],
        "",
    );
    assert_eq!(status, 405);

    // Without an API key there is no page either.
    let off = Server::start(1, "");
    assert_eq!(http(off.admin, "GET", "/admin", &[], "").0, 404);
    assert_eq!(overview(&off, Some(KEY)).0, 404);
}

#[test]
fn the_snapshot_counts_connections_rooms_rates_and_latency() {
    let server = Server::start(2, &config(""));
    let rt = rt();
    let mut clients = Vec::new();
    rt.block_on(async {
        for i in 0..6 {
            let mut c = common::connect(server.public).await;
            let room = if i < 4 { "load.hot" } else { "load.warm" };
            c.subscribe(1, room, None).await;
            clients.push(c);
        }
    });
    let v = overview_until(&server, "6 connections and 2 rooms", |v| {
        v["connections"]["total"] == 6 && v["rooms"]["count"] == 2
    });
    assert_eq!(v["connections"]["websocket"], 6, "{v:#}");
    let per_shard: u64 = v["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["connections"]["total"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_shard, 6, "{v:#}");

    // Publish for a while; the hot room must lead with a rate and its messages counted.
    let auth = format!("Bearer {KEY}");
    let publish_until = Instant::now() + Duration::from_millis(2500);
    let mut n = 0;
    while Instant::now() < publish_until {
        n += 1;
        let room = if n % 4 == 0 { "load.warm" } else { "load.hot" };
        let (status, body) = http(
            server.admin,
            "POST",
            "/api/publish",
            &[("Authorization", &auth)],
            &json!({"room": room, "data": {"n": n}}).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        if n % 10 == 0 {
            // Snapshots while publishing roll the rates (at most once a second).
            overview(&server, Some(KEY));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let v = overview_until(&server, "the hot room first with a rate", |v| {
        v["rooms"]["busiest"][0]["room"] == "load.hot"
            && v["rooms"]["busiest"][0]["rate_per_s"].as_f64() > Some(1.0)
    });
    let hot = &v["rooms"]["busiest"][0];
    assert_eq!(hot["subscribers"], 4, "{v:#}");
    assert_eq!(hot["namespace"], "load", "{v:#}");
    assert!(hot["messages"].as_u64() > Some(10), "{v:#}");
    let warm = &v["rooms"]["busiest"][1];
    assert_eq!(
        (&warm["room"], &warm["subscribers"]),
        (&json!("load.warm"), &json!(2)),
        "{v:#}"
    );
    let load = v["slo"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ns| ns["namespace"] == "load")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(load["target_p99_ms"], 50, "{v:#}");
    assert!(
        load["writes"].as_u64() >= Some(n),
        "every message written to 2+ clients: {v:#}"
    );
    assert!(load["p99_ms"].is_number(), "{v:#}");

    // Quiet again: the rate falls back to zero.
    overview_until(&server, "the rate to fall", |v| {
        v["rooms"]["busiest"][0]["rate_per_s"].as_f64() == Some(0.0)
    });
    rt.block_on(async move { drop(clients) });
    overview_until(&server, "the connections to close", |v| {
        v["connections"]["total"] == 0
    });
}

/// Two nodes on one Redis with a short presence TTL (so the node list fills within a second).
fn redis_node(redis: &Redis, name: &str, prefix: &str) -> Server {
    let s = Server::launch(
        2,
        &config(&format!(
            "[broker]\nkind = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"\npresence_ttl_ms = 3000\ncanary_interval_ms = 300\ncanary_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 400",
            redis.url()
        )),
        &[
            ("RINGCAST_ROOMS__ANONYMOUS", "publish"),
            ("RINGCAST_NODE_NAME", name),
        ],
    );
    assert!(
        s.wait_ready(200, Duration::from_secs(15)),
        "{name} became ready"
    );
    s
}

#[test]
fn with_redis_the_snapshot_lists_the_nodes_and_the_link() {
    let redis = Redis::start();
    let prefix = format!("adminpage{}", std::process::id());
    let a = redis_node(&redis, "node-a", &prefix);
    let b = redis_node(&redis, "node-b", &prefix);
    let v = overview_until(&a, "both nodes listed", |v| {
        v["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    });
    let nodes = &v["cluster"]["nodes"];
    assert_eq!(nodes[0]["name"], "node-a", "{v:#}");
    assert_eq!(nodes[0]["self"], true, "{v:#}");
    assert_eq!(nodes[1]["name"], "node-b", "{v:#}");
    assert_eq!(nodes[1]["self"], false, "{v:#}");
    assert_eq!(nodes[1]["admin"], b.admin.to_string(), "{v:#}");
    assert_eq!(nodes[1]["shards"], 2, "{v:#}");
    assert_eq!(v["broker"]["kind"], "redis");
    assert_eq!(v["broker"]["connected"], true);
    assert_eq!(v["broker"]["canary_ok"], true);
    assert_eq!(v["broker"]["problem"], Value::Null);
    // One key under one hash tag holds the list (so it works on Redis Cluster too).
    let fields = redis.cli(&["HKEYS", &format!("{prefix}:{{~nodes}}")]);
    assert!(
        fields.contains("node-a") && fields.contains("node-b"),
        "{fields}"
    );

    // A node that stops refreshing drops out within the TTL.
    drop(b);
    overview_until(&a, "node-b to expire", |v| {
        v["cluster"]["nodes"].as_array().map(Vec::len) == Some(1)
    });
}

#[test]
fn the_page_in_chromium_shows_load_and_a_red_readiness() {
    let redis = Redis::start();
    let prefix = format!("adminbrowser{}", std::process::id());
    let a = redis_node(&redis, "node-a", &prefix);
    let _b = redis_node(&redis, "node-b", &prefix);
    let artifacts = concat!(env!("CARGO_MANIFEST_DIR"), "/../reports/admin-page");
    std::fs::create_dir_all(artifacts).expect("artifacts directory");
    let admin = format!("http://{}", a.admin);
    let public = a.public.to_string();
    let stop_redis = format!("redis-cli -h 127.0.0.1 -p {} shutdown nosave", redis.port);
    let (result, ok) = node_script(
        "admin-browser.mjs",
        &[
            "--admin",
            &admin,
            "--public",
            &public,
            "--key",
            KEY,
            "--expect-nodes",
            "2",
            "--unready-cmd",
            &stop_redis,
            "--screenshot-dir",
            artifacts,
        ],
        120,
    );
    assert!(ok, "{result}");
    assert_eq!(result["wrong_key_refused"], true, "{result}");
    assert_eq!(result["red"]["ready"], "false", "{result}");
    assert_eq!(result["red"]["colour"], "rgb(207, 34, 46)", "{result}");
    for shot in ["admin-page.png", "admin-page-not-ready.png"] {
        let len = std::fs::metadata(format!("{artifacts}/{shot}"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
}
