//! Several gateway nodes sharing rooms through a real `redis-server` on loopback: one order per
//! room on every node, recovery across nodes, presence across nodes, and the failures the bridge
//! must survive (Redis killed and restarted, its subscriber connection killed, a node killed).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{connect, metric, Client, FreezingProxy, Redis, RedisCluster, RedisSentinel, Server};
use serde_json::{json, Value};

/// The `[broker]` keys of a test node; `reconnect` is the backoff floor and ceiling in ms.
fn broker(redis: &Redis, reconnect: (u64, u64)) -> String {
    format!(
        "kind = \"redis\"\nurl = \"{}\"\nprefix = \"t{}\"\npresence_ttl_ms = 1500\ncanary_interval_ms = 500\ncanary_timeout_ms = 1500\nreconnect_min_ms = {}\nreconnect_max_ms = {}",
        redis.url(),
        std::process::id(),
        reconnect.0,
        reconnect.1
    )
}

const ROOMS: &str = r#"
[api]
key = "test-api-key"
[rooms]
history_size = 1000
history_ttl_ms = 600000
[namespaces.doc]
anonymous = "publish"
presence = true
join_leave = true
"#;

fn node(redis: &Redis, name: &str) -> Server {
    node_with(redis, name, (50, 500))
}

fn node_with(redis: &Redis, name: &str, reconnect: (u64, u64)) -> Server {
    let s = Server::start_on_redis(2, name, &broker(redis, reconnect), ROOMS);
    assert!(
        s.wait_ready(200, Duration::from_secs(10)),
        "node {name} became ready on redis"
    );
    s
}

/// Every room message a client got: (offset, data).
fn messages(events: &[Value], room: &str) -> Vec<(u64, Value)> {
    events
        .iter()
        .filter(|e| e["ev"] == "msg" && e["room"] == room)
        .map(|e| (e["offset"].as_u64().unwrap_or(0), e["data"].clone()))
        .collect()
}

/// Publishes `n` messages `{p, i}` with acks, retrying a message that got `unavailable` until it
/// is acknowledged (so every message counts once as accepted). Returns the acked `i`s.
async fn publish_all(c: &mut Client, room: &str, p: &str, n: u64, pause: Duration) -> Vec<u64> {
    let mut acked = Vec::new();
    let mut id = 0;
    for i in 0..n {
        loop {
            id += 1;
            c.send(json!({"op": "publish", "id": id, "room": room, "data": {"p": p, "i": i}}))
                .await;
            let ev = loop {
                let ev = c.recv().await;
                if ev["id"] == id {
                    break ev;
                }
            };
            if ev["ev"] == "published" {
                acked.push(i);
                break;
            }
            assert_eq!(
                ev["code"], "unavailable",
                "only unavailable is retried: {ev}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_deliver_every_message_in_one_order() {
    let redis = Redis::start();
    let (a, b, c) = (
        node(&redis, "node-a"),
        node(&redis, "node-b"),
        node(&redis, "node-c"),
    );
    let mut subs = Vec::new();
    for server in [&a, &b, &c, &a, &b, &c] {
        let mut c = connect(server.public).await;
        let ev = c.subscribe(1, "chat.order", None).await;
        assert_eq!(ev["offset"], 0);
        subs.push(c);
    }
    let mut tasks = Vec::new();
    for (i, server) in [&a, &b, &c].into_iter().enumerate() {
        let mut c = connect(server.public).await;
        tasks.push(tokio::spawn(async move {
            publish_all(&mut c, "chat.order", &format!("p{i}"), 100, Duration::ZERO).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("publisher").len(), 100);
    }
    let mut orders = Vec::new();
    for c in &mut subs {
        let got = messages(&c.drain(Duration::from_millis(700)).await, "chat.order");
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (1..=300).collect::<Vec<_>>(),
            "every offset once, in order"
        );
        let mut per_publisher: HashMap<String, Vec<u64>> = HashMap::new();
        for (_, d) in &got {
            per_publisher
                .entry(d["p"].as_str().unwrap_or("").to_string())
                .or_default()
                .push(d["i"].as_u64().unwrap_or(u64::MAX));
        }
        for (p, is) in &per_publisher {
            assert_eq!(
                is,
                &(0..100).collect::<Vec<_>>(),
                "{p}'s messages in its order"
            );
        }
        orders.push(got);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "every subscriber on every node saw the same sequence"
    );
    assert!(metric(a.admin, "ringcast_bridge_connected") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_resumes_on_another_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "node-a"), node(&redis, "node-b"));
    let mut sub = connect(a.public).await;
    let ev = sub.subscribe(1, "chat.resume", None).await;
    let epoch = ev["epoch"].as_str().expect("epoch").to_string();
    let mut publisher = connect(b.public).await;
    publish_all(&mut publisher, "chat.resume", "p", 5, Duration::ZERO).await;
    let got = messages(&sub.drain(Duration::from_millis(400)).await, "chat.resume");
    assert_eq!(got.len(), 5);
    drop(sub);
    // Missed while away; then resumed on the other node.
    publish_all(&mut publisher, "chat.resume", "p", 7, Duration::ZERO).await;
    let mut back = connect(b.public).await;
    let ev = back.subscribe(1, "chat.resume", Some((&epoch, 5))).await;
    assert_eq!(ev["recovered"], true, "{ev}");
    assert_eq!(
        ev["epoch"],
        epoch.as_str(),
        "offsets mean the same on every node"
    );
    assert_eq!(ev["offset"], 12);
    publish_all(&mut publisher, "chat.resume", "p", 1, Duration::ZERO).await;
    let got = messages(&back.drain(Duration::from_millis(400)).await, "chat.resume");
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (6..=13).collect::<Vec<_>>(), "the gap, then live");

    // History reads the same stream from either node.
    let mut c = connect(a.public).await;
    c.send(json!({"op": "history", "id": 3, "room": "chat.resume", "limit": 4}))
        .await;
    let h = c.recv().await;
    assert_eq!(h["ev"], "history", "{h}");
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["offset"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(offsets, [10, 11, 12, 13]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_and_live_events_span_nodes_and_a_dead_node_leaves() {
    let redis = Redis::start();
    let (a, mut b) = (node(&redis, "node-a"), node(&redis, "node-b"));
    let mut on_a = connect(a.public).await;
    on_a.send(json!({"op": "subscribe", "id": 1, "room": "doc.x", "presence": true}))
        .await;
    assert_eq!(on_a.recv().await["ev"], "subscribed");
    let mut on_b = connect(b.public).await;
    on_b.send(json!({"op": "subscribe", "id": 1, "room": "doc.x", "presence": true}))
        .await;
    assert_eq!(on_b.recv().await["ev"], "subscribed");
    let join = on_a.recv().await;
    assert_eq!(
        join["ev"], "join",
        "a join on node B reaches node A: {join}"
    );
    let b_client = on_b.hello["client"]
        .as_str()
        .expect("client id")
        .to_string();
    assert_eq!(join["member"]["client"], b_client.as_str());

    for (c, who) in [(&mut on_a, "A"), (&mut on_b, "B")] {
        c.send(json!({"op": "presence", "id": 9, "room": "doc.x"}))
            .await;
        let p = c.recv().await;
        assert_eq!(p["ev"], "presence", "{p}");
        assert_eq!(
            p["members"].as_array().map(Vec::len),
            Some(2),
            "node {who} sees both members: {p}"
        );
    }
    // An ephemeral event crosses nodes and is not stored.
    on_b.send(json!({"op": "event", "room": "doc.x", "data": {"typing": true}}))
        .await;
    let ev = on_a.recv().await;
    assert_eq!(ev["ev"], "event", "{ev}");
    assert_eq!(ev["data"]["typing"], true);

    // Node B dies without a word: its member disappears within the presence TTL.
    b.signal(libc::SIGKILL);
    let _ = b.wait_exit(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut members = 2;
    while Instant::now() < deadline {
        on_a.send(json!({"op": "presence", "id": 10, "room": "doc.x"}))
            .await;
        let p = loop {
            let p = on_a.recv().await;
            if p["ev"] == "presence" {
                break p;
            }
        };
        members = p["members"].as_array().map_or(0, Vec::len);
        if members == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(members, 1, "node B's member expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_loses_no_accepted_message() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, "node-a"), node(&redis, "node-b"));
    let mut sub = connect(b.public).await;
    sub.subscribe(1, "chat.chaos", None).await;
    let mut publisher = connect(a.public).await;
    let task = tokio::spawn(async move {
        publish_all(
            &mut publisher,
            "chat.chaos",
            "p",
            150,
            Duration::from_millis(10),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill9();
    assert!(
        a.wait_ready(503, Duration::from_secs(5)),
        "readyz turns red"
    );
    let (status, body) = common::http(
        a.admin,
        "GET",
        "/api/node",
        &[("Authorization", "Bearer test-api-key")],
        "",
    );
    let node: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(status, 200, "{body}");
    assert_eq!(node["ready"], false, "{body}");
    assert_eq!(node["broker"]["kind"], "redis", "{body}");
    assert_eq!(node["broker"]["connected"], false, "{body}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    assert!(
        a.wait_ready(200, Duration::from_secs(10)),
        "and green again"
    );
    let acked = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("publisher finished")
        .expect("publisher");
    assert_eq!(acked.len(), 150);
    let got = messages(&sub.drain(Duration::from_millis(1000)).await, "chat.chaos");
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    let is: Vec<u64> = got.iter().filter_map(|(_, d)| d["i"].as_u64()).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap and no duplicate: {offsets:?}"
    );
    // A publish whose ack was lost with the connection may be stored twice (at-least-once on
    // retry); every accepted one is there, in order.
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<u64> = is.iter().copied().filter(|i| seen.insert(*i)).collect();
    assert_eq!(
        firsts,
        (0..150).collect::<Vec<_>>(),
        "every accepted message, in order"
    );
    assert!(metric(a.admin, "ringcast_bridge_reconnects_total") >= 1.0);
    assert!(metric(b.admin, "ringcast_bridge_reconnects_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_subscription_connection_is_rebuilt_without_loss() {
    let redis = Redis::start();
    // Node B comes back slowly, so node A publishes while B is away: B must read those from
    // the stream.
    let a = node(&redis, "node-a");
    let b = node_with(&redis, "node-b", (800, 1000));
    let mut sub = connect(b.public).await;
    sub.subscribe(1, "chat.pubsub", None).await;
    let mut publisher = connect(a.public).await;
    let task = tokio::spawn(async move {
        publish_all(
            &mut publisher,
            "chat.pubsub",
            "p",
            100,
            Duration::from_millis(10),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u32>().unwrap_or(0) >= 2,
        "killed {killed}"
    );
    task.await.expect("publisher");
    let got = messages(&sub.drain(Duration::from_millis(1000)).await, "chat.pubsub");
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=100).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
    assert!(metric(b.admin, "ringcast_bridge_reconnects_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_shards_rooms_and_keeps_their_order() {
    let cluster = RedisCluster::start();
    let broker = format!(
        "kind = \"redis-cluster\"\nurl = \"{}\"\nprefix = \"c{}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500",
        cluster.urls(),
        std::process::id()
    );
    let a = Server::start_on_redis(2, "node-a", &broker, ROOMS);
    let b = Server::start_on_redis(2, "node-b", &broker, ROOMS);
    for s in [&a, &b] {
        assert!(
            s.wait_ready(200, Duration::from_secs(15)),
            "ready on the cluster"
        );
    }
    // Rooms spread over the cluster's slots (and so over its three primaries).
    let rooms: Vec<String> = (0..6).map(|i| format!("chat.c{i}")).collect();
    let mut sub = connect(b.public).await;
    for (i, r) in rooms.iter().enumerate() {
        sub.subscribe(i as u64 + 1, r, None).await;
    }
    let mut publisher = connect(a.public).await;
    for r in &rooms {
        publish_all(&mut publisher, r, "p", 20, Duration::ZERO).await;
    }
    let got = sub.drain(Duration::from_millis(700)).await;
    for r in &rooms {
        let offsets: Vec<u64> = messages(&got, r).iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (1..=20).collect::<Vec<_>>(), "room {r}");
    }
    let slots: std::collections::BTreeSet<String> = rooms
        .iter()
        .map(|r| {
            cluster.nodes[0].cli(&[
                "CLUSTER",
                "KEYSLOT",
                &format!("c{}:{{{r}}}:s", std::process::id()),
            ])
        })
        .collect();
    assert!(slots.len() > 1, "the rooms live on several slots");
    let pattern = format!("c{}:*", std::process::id());
    let sharded: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["PUBSUB", "SHARDCHANNELS", &pattern])
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .sum();
    let plain: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["PUBSUB", "CHANNELS", &pattern])
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .sum();
    assert!(
        sharded >= rooms.len(),
        "sharded pub/sub: {sharded} shard channels"
    );
    assert_eq!(plain, 0, "no cluster-wide pub/sub");
    // Recovery reads the room's stream on its shard.
    let mut back = connect(b.public).await;
    let ev = back
        .subscribe(
            1,
            &rooms[3],
            Some((got_epoch(&got, &rooms[3]).as_str(), 15)),
        )
        .await;
    assert_eq!(ev["recovered"], true, "{ev}");
    let replay = messages(&back.drain(Duration::from_millis(300)).await, &rooms[3]);
    assert_eq!(
        replay.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [16, 17, 18, 19, 20]
    );
}

fn got_epoch(events: &[Value], room: &str) -> String {
    events
        .iter()
        .find(|e| e["ev"] == "msg" && e["room"] == room)
        .and_then(|e| e["epoch"].as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_of_a_killed_node_resume_on_another() {
    let redis = Redis::start();
    let (a, mut b) = (node(&redis, "node-a"), node(&redis, "node-b"));
    let mut sub = connect(b.public).await;
    let ev = sub.subscribe(1, "chat.failover", None).await;
    let epoch = ev["epoch"].as_str().expect("epoch").to_string();
    let mut publisher = connect(a.public).await;
    publish_all(&mut publisher, "chat.failover", "p", 10, Duration::ZERO).await;
    let got = messages(
        &sub.drain(Duration::from_millis(400)).await,
        "chat.failover",
    );
    let last = got.last().map_or(0, |(o, _)| *o);
    assert_eq!(last, 10);
    b.signal(libc::SIGKILL);
    let _ = b.wait_exit(Duration::from_secs(5));
    // Published while the client had no node.
    publish_all(&mut publisher, "chat.failover", "p", 6, Duration::ZERO).await;
    let mut moved = connect(a.public).await;
    let ev = moved
        .subscribe(1, "chat.failover", Some((&epoch, last)))
        .await;
    assert_eq!(ev["recovered"], true, "{ev}");
    let replay = messages(
        &moved.drain(Duration::from_millis(400)).await,
        "chat.failover",
    );
    assert_eq!(
        replay.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (11..=16).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_canary_catches_a_subscription_that_silently_stopped() {
    let redis = Redis::start();
    let proxy = FreezingProxy::start(redis.port);
    let a = node(&redis, "node-a");
    let through_proxy = broker(&redis, (50, 500))
        .replace(&redis.url(), &format!("redis://127.0.0.1:{}", proxy.port));
    let b = Server::start_on_redis(2, "node-b", &through_proxy, ROOMS);
    assert!(b.wait_ready(200, Duration::from_secs(10)));
    let mut sub = connect(b.public).await;
    sub.subscribe(1, "chat.canary", None).await;
    let mut publisher = connect(a.public).await;
    let task = tokio::spawn(async move {
        publish_all(
            &mut publisher,
            "chat.canary",
            "p",
            150,
            Duration::from_millis(10),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The subscription's TCP connection stays up but delivers nothing: only the canary sees it.
    proxy.freeze_subscriptions();
    let (status, body) = loop_until_red(&b).await;
    assert_eq!(status, 503, "readyz turned red: {body}");
    assert!(body.contains("canary"), "{body}");
    assert!(
        b.wait_ready(200, Duration::from_secs(10)),
        "and green after the reconnect"
    );
    task.await.expect("publisher");
    let got = messages(&sub.drain(Duration::from_millis(1000)).await, "chat.canary");
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=150).collect::<Vec<_>>(),
        "what the frozen subscription missed was read from the stream"
    );
    assert!(metric(b.admin, "ringcast_bridge_reconnects_total") >= 1.0);
}

/// Polls `/readyz` until it is not 200 (up to 5 s); returns the last answer.
async fn loop_until_red(s: &Server) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = common::http(s.admin, "GET", "/readyz", &[], "");
        if status != 200 || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_that_lost_acknowledged_messages_starts_a_new_epoch() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "node-a"), node(&redis, "node-b"));
    let mut sub = connect(b.public).await;
    let ev = sub.subscribe(1, "chat.lost", None).await;
    let old_epoch = ev["epoch"].as_str().expect("epoch").to_string();
    let mut publisher = connect(a.public).await;
    publish_all(&mut publisher, "chat.lost", "p", 10, Duration::ZERO).await;
    assert_eq!(
        messages(&sub.drain(Duration::from_millis(400)).await, "chat.lost").len(),
        10
    );
    // What a failover to a replica that missed the last writes looks like: offsets 6..=10 gone.
    let meta = format!("t{}:{{chat.lost}}:m", std::process::id());
    redis.cli(&["HSET", &meta, "s", "5"]);
    // Every node resyncs (its subscription connection is killed) and finds the room behind it.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(a.wait_ready(200, Duration::from_secs(5)) && b.wait_ready(200, Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_all(&mut publisher, "chat.lost", "p", 2, Duration::ZERO).await;
    let got = sub.drain(Duration::from_millis(500)).await;
    let fresh: Vec<(String, u64)> = got
        .iter()
        .filter(|e| e["ev"] == "msg")
        .map(|e| {
            (
                e["epoch"].as_str().unwrap_or("").to_string(),
                e["offset"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(fresh.len(), 2, "{got:?}");
    assert!(
        fresh.iter().all(|(e, _)| *e != old_epoch),
        "a new epoch: {fresh:?}"
    );
    assert_eq!(fresh.iter().map(|(_, o)| *o).collect::<Vec<_>>(), [1, 2]);
    // Offsets of the old epoch are never handed out again: resuming from it is not recovered.
    let mut back = connect(a.public).await;
    let ev = back.subscribe(1, "chat.lost", Some((&old_epoch, 10))).await;
    assert_eq!(ev["recovered"], false, "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_failover_moves_the_node_to_the_new_primary() {
    let s = RedisSentinel::start();
    let broker = format!(
        "kind = \"redis-sentinel\"\nurl = \"{}\"\nsentinel_service = \"mymaster\"\nprefix = \"s{}\"\ncanary_interval_ms = 300\ncanary_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 500",
        s.sentinel.url(),
        std::process::id()
    );
    let a = Server::start_on_redis(2, "node-a", &broker, ROOMS);
    let b = Server::start_on_redis(2, "node-b", &broker, ROOMS);
    for n in [&a, &b] {
        assert!(
            n.wait_ready(200, Duration::from_secs(10)),
            "ready through the sentinel"
        );
    }
    let mut sub = connect(b.public).await;
    sub.subscribe(1, "chat.failover", None).await;
    let mut publisher = connect(a.public).await;
    publish_all(&mut publisher, "chat.failover", "p", 20, Duration::ZERO).await;
    // Let the replica catch up, then fail over.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let off = |r: &Redis| {
            r.cli(&["INFO", "replication"])
                .lines()
                .find_map(|l| {
                    l.strip_prefix("master_repl_offset:")
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        if off(&s.primary) == off(&s.replica) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = s.primary_port();
    s.sentinel.cli(&["SENTINEL", "FAILOVER", "mymaster"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.primary_port() == old && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.primary_port(),
        s.replica.port.to_string(),
        "the replica was promoted"
    );
    // Publishing goes on (retrying `unavailable` while the node moves to the new primary).
    publish_all(
        &mut publisher,
        "chat.failover",
        "p",
        20,
        Duration::from_millis(20),
    )
    .await;
    let got = messages(
        &sub.drain(Duration::from_millis(1000)).await,
        "chat.failover",
    );
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=40).collect::<Vec<_>>(),
        "nothing lost across the failover"
    );
    let role = s.replica.cli(&["ROLE"]);
    assert!(role.starts_with("master"), "{role}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_a_hung_redis_fills_the_bridge_to_its_bound_then_publishes_are_refused() {
    // Issue 19: every queue is bounded in bytes. With Redis stopped (SIGSTOP: connected, but
    // answering nothing), publishes wait in the bridge; past limits.shard_inbox_bytes (64 KiB)
    // the next ones are refused at once instead of queued.
    let redis = Redis::start();
    let s = Server::start_on_redis(
        1,
        "a",
        &broker(&redis, (50, 500)),
        &format!("{ROOMS}\n[limits]\nshard_inbox_bytes = 65536\n"),
    );
    assert!(s.wait_ready(200, Duration::from_secs(10)), "ready on redis");
    let mut c = common::connect(s.public).await;
    redis.signal(libc::SIGSTOP);
    let pad = "x".repeat(8000);
    for i in 0..40u64 {
        c.send(json!({"op": "publish", "id": i, "room": "doc.bounded", "data": {"pad": pad}}))
            .await;
    }
    let answers = c.drain(Duration::from_millis(800)).await;
    redis.signal(libc::SIGCONT);
    let refused = answers
        .iter()
        .filter(|e| {
            e["ev"] == "error"
                && e["code"] == "unavailable"
                && e["reason"].as_str().is_some_and(|r| r.contains("behind"))
        })
        .count();
    assert!(refused >= 25, "{refused} of 40 refused: {answers:?}");
    // Redis back: the bridge drains, its count goes back down, publishes are taken again
    // (a fresh client: the first one still has answers of the flood on their way).
    assert!(s.wait_ready(200, Duration::from_secs(15)), "ready again");
    let mut fresh = connect(s.public).await;
    let acked = publish_all(&mut fresh, "doc.bounded", "after", 3, Duration::ZERO).await;
    assert_eq!(acked, vec![0, 1, 2]);
}

/// Polls a bridge handle until `until` says done or `limit` passes; returns every event.
fn poll_until(
    b: &mut broker_bridge::redis::RedisBroker,
    limit: Duration,
    until: impl Fn(&[broker_bridge::BrokerEvent]) -> bool,
) -> Vec<broker_bridge::BrokerEvent> {
    use broker_bridge::Broker;
    let mut events = Vec::new();
    let deadline = Instant::now() + limit;
    while !until(&events) && Instant::now() < deadline {
        b.poll_events(&mut events);
        std::thread::sleep(Duration::from_millis(20));
    }
    events
}

#[test]
fn bounded_a_stalled_shard_is_sent_at_most_its_bound_and_then_every_message_in_order() {
    // Issue 19: the bridge's queue of other nodes' messages to a shard is bounded in bytes.
    // The shard of one bridge (64 KiB bound) stops draining while another publishes 1.2 MB
    // into its room: what waits for it stays within the bound (the rest waits in Redis'
    // stream); once it drains again, the room reads what it missed, and every message comes,
    // once, in order, without a gap.
    use broker_bridge::redis::{start, RedisSettings};
    use broker_bridge::{Broker, Completion, OrderedHistory};
    use broker_bridge::{BrokerEvent, HistoryPolicy, RoomName};
    use std::sync::Arc;

    const BOUND: usize = 64 << 10;
    const N: u64 = 300;
    let redis = Redis::start();
    let bridge = |bound| {
        let settings = RedisSettings {
            urls: vec![redis.url()],
            prefix: format!("stall{}", std::process::id()),
            max_queued_bytes: bound,
            ..RedisSettings::default()
        };
        let (mut handles, health) =
            start(settings, 1, Arc::new(|_| {}), Box::new(|| {})).expect("bridge starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !health.is_ready() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(health.is_ready(), "bridge ready");
        handles.remove(0)
    };
    let mut reader = bridge(BOUND);
    let mut writer = bridge(64 << 20);
    let room: RoomName = "chat.stall".into();
    let policy = HistoryPolicy {
        size: 1000,
        ttl: Duration::from_secs(600),
    };
    reader.set_interest(&room, true);
    let first = reader.recover(&room, None, policy, 1, Instant::now());
    assert!(matches!(first, Ok(Completion::Pending)), "{first:?}");
    let synced = poll_until(&mut reader, Duration::from_secs(10), |evs| {
        evs.iter()
            .any(|e| matches!(e, BrokerEvent::Recovered { token: 1, .. }))
    });
    assert!(
        synced
            .iter()
            .any(|e| matches!(e, BrokerEvent::Recovered { token: 1, .. })),
        "the room synced: {synced:?}"
    );

    let pad = "x".repeat(4000);
    for i in 0..N {
        let data = bytes::Bytes::from(format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"));
        let r = writer.publish(&room, data, policy, 100 + i, Instant::now());
        assert!(matches!(r, Ok(Completion::Pending)), "publish {i}: {r:?}");
    }
    let acks = poll_until(&mut writer, Duration::from_secs(20), |evs| {
        evs.iter()
            .filter(|e| matches!(e, BrokerEvent::Acked { .. }))
            .count() as u64
            == N
    });
    let acked = acks
        .iter()
        .filter(|e| matches!(e, BrokerEvent::Acked { .. }))
        .count() as u64;
    assert_eq!(acked, N, "every publish stored: {:?}", acks.last());
    // Every echo has reached the reader's bridge by now (the acks came after the publishes'
    // echoes on one Redis); the reader's shard has not drained since.
    std::thread::sleep(Duration::from_millis(500));
    let mut waiting = Vec::new();
    reader.poll_events(&mut waiting);
    let held: usize = waiting.iter().map(BrokerEvent::weight).sum();
    assert!(
        held <= BOUND + 8192,
        "{held} bytes waited for the stalled shard ({} events), bound {BOUND}",
        waiting.len()
    );
    assert!(held >= BOUND / 2, "the bound was reached: {held} bytes");

    // Drained: the room catches up from the stream.
    let rest = poll_until(&mut reader, Duration::from_secs(15), |evs| {
        evs.iter().any(|e| match e {
            BrokerEvent::Appended { message, .. } => message.offset == N,
            _ => false,
        })
    });
    let mut offsets = Vec::new();
    for e in waiting.iter().chain(&rest) {
        match e {
            BrokerEvent::Appended { message, .. } => offsets.push(message.offset),
            BrokerEvent::Gap { from, to, .. } => panic!("gap {from}..={to}"),
            _ => {}
        }
    }
    assert_eq!(
        offsets,
        (1..=N).collect::<Vec<_>>(),
        "every message once, in order"
    );
}
