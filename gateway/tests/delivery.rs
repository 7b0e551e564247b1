//! Delivery features against the real binary: presence with join/leave (also for a connection
//! that dies without a close), ephemeral events, the history op, and the slow-consumer policies
//! (conflate, drop-oldest, max_age) shown with a deliberately slow client next to a fast one.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{connect_slow, metric, try_connect, Client, Server};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "delivery-test-secret-0123456789-abcdef";

fn token(sub: &str, info: Value) -> String {
    let claims =
        json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600, "info": info});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn config() -> String {
    format!(
        r#"
[websocket]
max_message_bytes = 4096
[rooms]
anonymous = "publish"
[namespaces.doc]
anonymous = "publish"
presence = true
join_leave = true
[namespaces.quiet]
anonymous = "publish"
events = false
[namespaces.prices]
anonymous = "publish"
slow_consumer = "conflate"
conflation_key = "sym"
[namespaces.feed]
anonymous = "publish"
slow_consumer = "drop-oldest"
[namespaces.quotes]
anonymous = "publish"
slow_consumer = "drop-oldest"
max_age_ms = 1000
[[auth.keys]]
alg = "HS256"
secret = "{SECRET}"
"#
    )
}

async fn with_token(server: &Server, t: &str) -> Client {
    try_connect(
        server.public,
        std::net::Ipv4Addr::LOCALHOST,
        "/ws",
        &format!("Authorization: Bearer {t}\r\n"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The next event of a kind, skipping others.
async fn next_ev(c: &mut Client, ev: &str) -> Value {
    loop {
        let v = c.recv().await;
        if v["ev"] == ev {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_join_leave_and_a_dead_connection() {
    let server = Server::start_strict(2, &config());
    let mut alice = with_token(&server, &token("alice", json!({"name": "Ann"}))).await;
    alice.subscribe(1, "doc.1", None).await;
    // Several connections so that both shards take part.
    let mut others = Vec::new();
    for i in 0..3 {
        let mut c = with_token(&server, &token(&format!("u{i}"), Value::Null)).await;
        c.subscribe(1, "doc.1", None).await;
        let join = next_ev(&mut alice, "join").await;
        assert_eq!(join["member"]["user"], format!("u{i}"), "{join}");
        assert_eq!(join["member"]["client"], c.hello["client"]);
        others.push(c);
    }
    // The subscriber does not get its own join.
    assert!(others[2].is_quiet(Duration::from_millis(200)).await);
    alice
        .send(json!({"op": "presence", "id": 7, "room": "doc.1"}))
        .await;
    let p = next_ev(&mut alice, "presence").await;
    assert_eq!(p["id"], 7);
    let members = p["members"].as_array().expect("members");
    assert_eq!(members.len(), 4, "{p}");
    let me = members
        .iter()
        .find(|m| m["user"] == "alice")
        .expect("alice is a member");
    assert_eq!(me["info"], json!({"name": "Ann"}));
    // A connection that dies without a close frame leaves too.
    let dead = others.pop().expect("one");
    let dead_client = dead.hello["client"].clone();
    drop(dead);
    let leave = next_ev(&mut alice, "leave").await;
    assert_eq!(leave["member"]["client"], dead_client);
    // An unsubscribe is a leave as well.
    others[0]
        .send(json!({"op": "unsubscribe", "id": 2, "room": "doc.1"}))
        .await;
    let leave = next_ev(&mut alice, "leave").await;
    assert_eq!(leave["member"]["client"], others[0].hello["client"]);
    alice
        .send(json!({"op": "presence", "id": 8, "room": "doc.1"}))
        .await;
    assert_eq!(
        next_ev(&mut alice, "presence").await["members"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Presence needs the namespace to have it, and a subscription.
    alice
        .send(json!({"op": "presence", "id": 9, "room": "doc.2"}))
        .await;
    assert_eq!(next_ev(&mut alice, "error").await["code"], "not_subscribed");
    alice.subscribe(10, "feed.x", None).await;
    alice
        .send(json!({"op": "presence", "id": 11, "room": "feed.x"}))
        .await;
    assert_eq!(next_ev(&mut alice, "error").await["code"], "not_enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_events_reach_the_others_and_are_never_stored() {
    let server = Server::start(2, &config());
    let mut a = common::connect(server.public).await;
    let mut b = common::connect(server.public).await;
    let mut c = common::connect(server.public).await;
    for x in [&mut a, &mut b, &mut c] {
        x.subscribe(1, "doc.e", None).await;
    }
    a.send(json!({"op": "event", "room": "doc.e", "data": {"typing": true}}))
        .await;
    for x in [&mut b, &mut c] {
        let ev = next_ev(x, "event").await;
        assert_eq!(
            ev,
            json!({"ev": "event", "room": "doc.e", "data": {"typing": true}})
        );
    }
    // The sender gets joins (doc has presence) but never its own event.
    let to_sender = a.drain(Duration::from_millis(200)).await;
    assert!(
        to_sender.iter().all(|e| e["ev"] != "event"),
        "echoed: {to_sender:?}"
    );
    // Not stored: history is empty, and a message published after has offset 1.
    a.send(json!({"op": "history", "id": 3, "room": "doc.e"}))
        .await;
    let h = next_ev(&mut a, "history").await;
    assert_eq!(h["messages"], json!([]));
    assert_eq!(a.publish(4, "doc.e", json!(1)).await["offset"], 1);
    // Not subscribed, or events off: refused.
    let mut d = common::connect(server.public).await;
    d.send(json!({"op": "event", "id": 5, "room": "doc.e", "data": 1}))
        .await;
    assert_eq!(next_ev(&mut d, "error").await["code"], "not_subscribed");
    d.subscribe(6, "quiet.x", None).await;
    d.send(json!({"op": "event", "id": 7, "room": "quiet.x", "data": 1}))
        .await;
    assert_eq!(next_ev(&mut d, "error").await["code"], "not_enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_op_pages_and_recovers() {
    let server = Server::start(2, &config());
    let mut a = common::connect(server.public).await;
    for i in 1..=5 {
        a.publish(i, "feed.h", json!({"i": i})).await;
    }
    a.send(json!({"op": "history", "id": 10, "room": "feed.h", "limit": 2}))
        .await;
    let h = next_ev(&mut a, "history").await;
    assert_eq!(h["offset"], 5);
    assert_eq!(h["recovered"], false);
    assert_eq!(
        h["messages"],
        json!([{"offset": 4, "data": {"i": 4}}, {"offset": 5, "data": {"i": 5}}])
    );
    let epoch = h["epoch"].clone();
    a.send(json!({"op": "history", "id": 11, "room": "feed.h", "since": {"epoch": epoch, "offset": 1}, "limit": 2}))
        .await;
    let h = next_ev(&mut a, "history").await;
    assert_eq!(h["recovered"], true);
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect();
    assert_eq!(offsets, [2, 3]);
    a.send(json!({"op": "history", "id": 12, "room": "feed.h", "since": {"epoch": "other", "offset": 1}}))
        .await;
    let h = next_ev(&mut a, "history").await;
    assert_eq!(
        (h["recovered"].clone(), h["messages"].clone()),
        (json!(false), json!([]))
    );
}

/// What a slow client saw of one room: every `msg` and `gap`, in order.
struct Seen {
    msgs: Vec<(u64, Value)>,
    gaps: usize,
    /// `gap` events that came right after another `gap` of the room (their ranges touch).
    touching_gaps: usize,
}

/// The last `px` a client saw per `sym`.
fn newest_per_key(seen: &Seen) -> HashMap<String, u64> {
    let mut newest = HashMap::new();
    for (_, data) in &seen.msgs {
        if let (Some(sym), Some(px)) = (data["sym"].as_str(), data["px"].as_u64()) {
            newest.insert(sym.to_string(), px);
        }
    }
    newest
}

/// Reads everything a client gets for `room`, and checks that messages and gaps cover offsets
/// 1..=last exactly once, in increasing order (so a resume from the last offset is right).
async fn read_all(c: &mut Client, room: &str, last: u64) -> Seen {
    let mut next = 1u64;
    let mut seen = Seen {
        msgs: Vec::new(),
        gaps: 0,
        touching_gaps: 0,
    };
    let mut after_gap = false;
    while next <= last {
        let ev = c.recv().await;
        if ev["room"] != room {
            continue;
        }
        match ev["ev"].as_str() {
            Some("msg") => {
                after_gap = false;
                assert_eq!(ev["offset"], next, "offsets must continue: {ev}");
                seen.msgs.push((next, ev["data"].clone()));
                next += 1;
            }
            Some("gap") => {
                assert_eq!(ev["from"], next, "a gap starts where the stream was: {ev}");
                let to = ev["to"].as_u64().expect("to");
                assert!(to >= next);
                next = to + 1;
                seen.gaps += 1;
                seen.touching_gaps += usize::from(after_gap);
                after_gap = true;
            }
            _ => {}
        }
    }
    seen
}

/// Floods `room` with `n` messages over `keys` symbols while a slow client does not read; the
/// fast client, reading all along, must get every one. Returns the last value published per
/// symbol.
async fn flood(server: &Server, room: &str, n: u64, keys: u64) -> HashMap<String, u64> {
    flood_keyed(server, room, n, |i| i % keys).await
}

/// [`flood`] with the key of message `i` chosen by `key_of`.
async fn flood_keyed(
    server: &Server,
    room: &str,
    n: u64,
    key_of: impl Fn(u64) -> u64,
) -> HashMap<String, u64> {
    let mut fast = common::connect(server.public).await;
    fast.subscribe(1, room, None).await;
    let reader = tokio::spawn(async move {
        for i in 1..=n {
            let ev = loop {
                let v = fast.recv().await;
                if v["ev"] == "msg" {
                    break v;
                }
                eprintln!("fast got {v}");
            };
            assert_eq!(ev["offset"], i);
            assert_eq!(ev["data"]["px"], i);
        }
    });
    let mut publisher = common::connect(server.public).await;
    let pad = "x".repeat(1000);
    let mut last = HashMap::new();
    for i in 1..=n {
        let sym = format!("S{}", key_of(i));
        last.insert(sym.clone(), i);
        publisher
            .send(json!({"op": "publish", "room": room, "data": {"sym": sym, "px": i, "pad": pad}}))
            .await;
        // About 5,000 messages (5 MB) a second: a pace a reading client keeps up with, even
        // with other tests on the same two cores.
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The fast client gets everything, in order.
    reader
        .await
        .expect("the fast client got every message in order");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflation_gives_a_slow_client_the_latest_value_of_every_key() {
    let server = Server::start(1, &config());
    let room = "prices.all";
    let mut slow = connect_slow(server.public, 4096, "").await;
    slow.subscribe(1, room, None).await;
    let n = 10_000;
    let last = flood(&server, room, n, 10).await;
    // Let the sweep refresh the gauge, then check the slow client's queue stayed bounded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = metric(server.admin, "ringcast_outbound_queued_bytes");
    assert!(
        queued <= (2 * 1024 * 1024 + 10 * 1300) as f64,
        "queue not bounded: {queued}"
    );
    assert!(metric(server.admin, "ringcast_slow_consumer_actions_total") > 0.0);
    let seen = read_all(&mut slow, room, n).await;
    assert!(seen.gaps > 0, "the slow client should have been conflated");
    assert!(
        (seen.msgs.len() as u64) < n,
        "got {} of {n}",
        seen.msgs.len()
    );
    // The latest value of every key arrived.
    assert_eq!(newest_per_key(&seen), last);
    // The connection is still open and still served.
    let mut p = common::connect(server.public).await;
    p.publish(1, room, json!({"sym": "S1", "px": 0})).await;
    let ev = next_ev(&mut slow, "msg").await;
    assert_eq!(ev["offset"], n + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_and_max_age_leave_exact_gaps() {
    let server = Server::start(1, &config());
    for room in ["feed.all", "quotes.all"] {
        let mut slow = connect_slow(server.public, 4096, "").await;
        slow.subscribe(1, room, None).await;
        let n = 8_000;
        flood(&server, room, n, 7).await;
        if room.starts_with("quotes") {
            // Everything still queued is now older than max_age (1 s).
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let seen = read_all(&mut slow, room, n).await;
        assert!(seen.gaps > 0, "{room}: no gap");
        assert!((seen.msgs.len() as u64) < n, "{room}");
        if room == "feed.all" {
            // drop-oldest keeps the newest: the last message arrives.
            assert_eq!(seen.msgs.last().map(|m| m.0), Some(n));
        }
    }
    let expired = {
        let (_, body) = common::http(server.admin, "GET", "/metrics", &[], "");
        body.lines()
            .find(|l| l.contains("action=\"max_age\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(expired > 0.0, "max_age dropped nothing");
}

/// A flood that keeps every connection of a shard busy must not stop the shard from accepting
/// new connections (it did: connections re-woke themselves, monoio never parked, and the
/// listener's pending connection waited indefinitely).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_are_accepted_during_a_flood() {
    let server = Server::start(
        1,
        "[namespaces.flood]\nanonymous = \"publish\"\nslow_consumer = \"drop-oldest\"\n",
    );
    let addr = server.public;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let mut c = common::connect(addr).await;
        c.subscribe(1, "flood.x", None).await;
        tasks.push(tokio::spawn(async move {
            loop {
                c.drain(Duration::from_millis(50)).await;
            }
        }));
    }
    for _ in 0..2 {
        let mut p = common::connect(addr).await;
        tasks.push(tokio::spawn(async move {
            let pad = "f".repeat(200);
            loop {
                p.send(json!({"op": "publish", "room": "flood.x", "data": pad}))
                    .await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let started = std::time::Instant::now();
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        try_connect(addr, std::net::Ipv4Addr::LOCALHOST, "/ws", ""),
    )
    .await;
    let took = started.elapsed();
    for t in &tasks {
        t.abort();
    }
    let mut c = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("refused during the flood: {e}"),
        Err(_) => panic!("no handshake within 5 s during the flood"),
    };
    c.send(json!({"op": "ping", "id": 1})).await;
    assert_eq!(next_ev(&mut c, "pong").await["id"], 1);
    eprintln!("handshake during the flood took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_merge_a_resuming_conflated_client_gets_one_gap_per_run_of_dropped_offsets() {
    // docs/protocol.md §16.3: adjacent gaps of a room merge into one. Keys in a shuffled order
    // once left runs of touching gaps (`gap(463-463) gap(464-465) gap(466-468)`, issue 19).
    let server = Server::start(1, &config());
    let room = "prices.shuffled";
    let mut slow = connect_slow(server.public, 4096, "").await;
    slow.subscribe(1, room, None).await;
    let n = 6_000;
    let key_of = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) % 13;
    let last = flood_keyed(&server, room, n, key_of).await;
    let seen = read_all(&mut slow, room, n).await;
    assert!(seen.gaps > 0, "the slow client should have been conflated");
    assert_eq!(seen.touching_gaps, 0, "of {} gaps", seen.gaps);
    assert_eq!(newest_per_key(&seen), last);
}

/// An event stream in a `drop-oldest` namespace that falls behind gets its gap notice as an SSE
/// event. Before typed outgoing values, every queue wrote the notice as a WebSocket frame: the
/// stream carried frame bytes (`0x81`, a length, the JSON) in the middle of its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_stream_gets_its_gap_as_an_sse_event() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(1, &config());
    let room = "feed.sse";
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(server.public).await.expect("connect");
    let request = format!(
        "GET /sse?room={room} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.public
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    // Wait until the subscription is in force (its `subscribed` event).
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&text).contains("event: subscribed") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the stream starts")
            .expect("read");
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&text));
        text.extend_from_slice(&buf[..n]);
    }
    let n = 8_000;
    flood(&server, room, n, 7).await;
    // Read until the last message's event (drop-oldest keeps the newest).
    let last = format!("\"offset\":{n},");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&text).contains(&last) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the last message arrives")
            .expect("read");
        assert!(n > 0, "stream ended");
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(text).expect("an event stream is UTF-8 text");
    let body = &text[text.find("\r\n\r\n").expect("head") + 4..];
    let (mut gaps, mut msgs, mut next) = (0, 0, 1u64);
    for block in body.split("\n\n").filter(|b| !b.is_empty()) {
        let mut event = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v);
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v);
            } else {
                assert!(
                    line.starts_with(':') || line.starts_with("id: "),
                    "not an SSE line: {line:?}"
                );
            }
        }
        let (Some(event), Some(data)) = (event, data) else {
            continue;
        };
        let v: Value = serde_json::from_str(data).expect("each event's data is JSON");
        assert_eq!(v["ev"], event, "the event name is its `ev`");
        match event {
            "gap" => {
                assert_eq!(v["from"], next, "a gap starts where the stream was: {v}");
                next = v["to"].as_u64().expect("to") + 1;
                gaps += 1;
            }
            "msg" => {
                assert_eq!(v["offset"], next, "offsets continue: {v}");
                next += 1;
                msgs += 1;
            }
            _ => {}
        }
    }
    assert!(
        gaps > 0,
        "the stream fell behind: no gap in {msgs} messages"
    );
    assert_eq!(next, n + 1);
}
