//! Structure-aware fuzzing of the live server: many connections send random valid and invalid op
//! sequences (subscribe, resume, unsubscribe, publish, event, presence, history, ping, garbage,
//! binary frames, oversized messages, abrupt drops) while an oracle checks every delivered
//! message: it was published (never invented, never another room's), to a room the receiver
//! may read and is subscribed to, in order, with no duplicate and no hole; and at the end every
//! subscription still open has every acknowledged message of its room.
//!
//! `OPFUZZ_SECS` (default 8) sets the duration, `OPFUZZ_SEED` the seed (printed
//! on every run, so a failure can be replayed), `OPFUZZ_CONNS` the connections (12).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{try_connect, Client, Server};
use fastwebsockets::{Frame, OpCode, Payload};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "opfuzz-test-secret-0123456789-abcdefgh";
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
const MAX_MESSAGE: usize = 2048;

fn config() -> String {
    format!(
        r#"
[websocket]
max_message_bytes = {MAX_MESSAGE}
[limits]
ops_per_second = 100000
ops_burst = 100000
handshakes_per_ip_per_second = 10000
handshake_burst = 10000
[namespaces.pub]
history_size = 10000
[namespaces.team]
history_size = 10000
[namespaces.inbox]
[[auth.keys]]
alg = "HS256"
secret = "{SECRET}"
"#
    )
}

fn token(user: &str) -> String {
    let claims = json!({
        "sub": user,
        "exp": jsonwebtoken::get_current_timestamp() + 600,
        "ringcast": {
            "subscribe": ["pub.*", "team.{user}"],
            "publish": ["pub.*", "team.{user}", "inbox.*"],
            "presence": ["pub.*"],
        }
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// What the token lets `user` read.
fn may_read(user: &str, room: &str) -> bool {
    room.starts_with("pub.") || room == format!("team.{user}")
}

/// Rooms the fuzzer picks from: readable, forbidden, write-only, unknown and invalid ones.
const ROOMS: [&str; 12] = [
    "pub.0", "pub.1", "pub.2", "team.u0", "team.u1", "team.u2", "team.u3", "inbox.x", "nons.x", "",
    "bad room", "pub.",
];

/// A small deterministic generator (xorshift64*): one stream per connection from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// What every connection shares: the published messages and the acknowledged offsets.
#[derive(Default)]
struct Registry {
    /// Message key → the room it was published to.
    published: HashMap<String, String>,
    /// Room → the highest acknowledged offset (one epoch: the embedded broker never changes it).
    acked: HashMap<String, u64>,
}

/// What the oracle found wrong, and what it counted.
#[derive(Default, Debug)]
struct Outcome {
    violations: Vec<String>,
    delivered: u64,
    published: u64,
    errors: HashMap<String, u64>,
    reconnects: u64,
    closes_expected: u64,
}

/// One connection's view: its subscriptions and the next offset each must deliver.
struct Session {
    client: Client,
    user: &'static str,
    /// Room → (epoch, next expected offset).
    subs: HashMap<String, (String, u64)>,
    /// Subscribes sent and not answered yet: op id → (room, since offset).
    pending_subs: HashMap<u64, (String, Option<u64>)>,
    /// Rooms whose unsubscribe was sent and not answered (messages may still arrive).
    leaving: HashSet<String>,
}

async fn open(server: &Server, user: &'static str) -> Session {
    let client = try_connect(
        server.public,
        std::net::Ipv4Addr::LOCALHOST,
        "/ws",
        &format!("Authorization: Bearer {}\r\n", token(user)),
    )
    .await
    .unwrap_or_else(|e| panic!("connect: {e}"));
    Session {
        client,
        user,
        subs: HashMap::new(),
        pending_subs: HashMap::new(),
        leaving: HashSet::new(),
    }
}

/// Checks one event against the oracle.
fn check(
    s: &mut Session,
    ev: &Value,
    reg: &Mutex<Registry>,
    last_seen: &mut HashMap<String, (String, u64)>,
    out: &mut Outcome,
    who: &str,
) {
    match ev["ev"].as_str().unwrap_or("") {
        "msg" => {
            out.delivered += 1;
            let room = ev["room"].as_str().unwrap_or("").to_string();
            let key = ev["data"]["k"].as_str().unwrap_or("").to_string();
            let epoch = ev["epoch"].as_str().unwrap_or("").to_string();
            let offset = ev["offset"].as_u64().unwrap_or(0);
            match reg.lock().expect("registry").published.get(&key) {
                None => out.violations.push(format!("{who}: never published: {ev}")),
                Some(r) if *r != room => out
                    .violations
                    .push(format!("{who}: published to {r}, delivered in {ev}")),
                Some(_) => {}
            }
            if !may_read(s.user, &room) {
                out.violations
                    .push(format!("{who}: may not read {room}: {ev}"));
            }
            match s.subs.get_mut(&room) {
                Some((e, next)) if *e == epoch && *next == offset => *next += 1,
                Some((e, next)) => out.violations.push(format!(
                    "{who}: expected {room} {e}:{next}, got {epoch}:{offset} (duplicate, hole or reorder)"
                )),
                None if s.leaving.contains(&room) => {}
                None => out.violations.push(format!("{who}: not subscribed to {room}: {ev}")),
            }
            last_seen.insert(room, (epoch, offset));
        }
        "subscribed" => {
            let id = ev["id"].as_u64().unwrap_or(0);
            let room = ev["room"].as_str().unwrap_or("").to_string();
            let epoch = ev["epoch"].as_str().unwrap_or("").to_string();
            let offset = ev["offset"].as_u64().unwrap_or(0);
            let since = s.pending_subs.remove(&id).and_then(|(_, since)| since);
            let next = match (ev["recovered"].as_bool(), since) {
                (Some(true), Some(since)) => since + 1,
                _ => offset + 1,
            };
            if !may_read(s.user, &room) {
                out.violations
                    .push(format!("{who}: subscribed to a forbidden room: {ev}"));
            }
            s.leaving.remove(&room);
            s.subs.insert(room, (epoch, next));
        }
        "unsubscribed" => {
            let room = ev["room"].as_str().unwrap_or("").to_string();
            s.subs.remove(&room);
            s.leaving.remove(&room);
        }
        "published" => {
            let room = ev["room"].as_str().unwrap_or("").to_string();
            let offset = ev["offset"].as_u64().unwrap_or(0);
            let mut reg = reg.lock().expect("registry");
            let acked = reg.acked.entry(room).or_default();
            *acked = (*acked).max(offset);
        }
        "error" => {
            let code = ev["code"].as_str().unwrap_or("?").to_string();
            if code == "internal" {
                out.violations.push(format!("{who}: internal error: {ev}"));
            }
            if let Some(id) = ev["id"].as_u64() {
                s.pending_subs.remove(&id);
            }
            *out.errors.entry(code).or_default() += 1;
        }
        _ => {}
    }
}

/// Reads what arrived within `wait`; `Err` (with the close code, if any) when the connection
/// ended.
async fn pump(
    s: &mut Session,
    wait: Duration,
    reg: &Mutex<Registry>,
    last_seen: &mut HashMap<String, (String, u64)>,
    out: &mut Outcome,
    who: &str,
) -> Result<(), Option<u16>> {
    while let Some(ev) = s.client.try_next_or_close(wait).await? {
        check(s, &ev, reg, last_seen, out, who);
    }
    Ok(())
}

/// One fuzzing connection (reconnecting after every close it provoked) until `until`.
async fn fuzz_conn(
    server: Arc<Server>,
    conn: usize,
    seed: u64,
    until: Instant,
    reg: Arc<Mutex<Registry>>,
) -> (Outcome, Session, HashMap<String, (String, u64)>) {
    let mut rng = Rng(seed ^ (conn as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let user = USERS[conn % USERS.len()];
    let who = format!("conn {conn} ({user})");
    let mut out = Outcome::default();
    // The last position seen per room, across reconnects: a resume picks up from it.
    let mut last_seen: HashMap<String, (String, u64)> = HashMap::new();
    let mut s = open(&server, user).await;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let room = rng.pick(&ROOMS).to_string();
        // A close the op provokes: the connection is reopened after it.
        let mut provoked = None;
        let mut last_op = String::from("read only");
        match rng.below(100) {
            0..=29 => {
                let key = format!("c{conn}-{n}");
                reg.lock()
                    .expect("registry")
                    .published
                    .insert(key.clone(), room.clone());
                out.published += 1;
                let op = json!({"op": "publish", "id": n, "room": room, "data": {"k": key, "pad": "x".repeat(rng.below(200) as usize)}});
                last_op = op.to_string();
                s.client.send(op).await;
            }
            30..=44 => {
                let mut op = json!({"op": "subscribe", "id": n, "room": room});
                let since = match last_seen.get(&room) {
                    Some((epoch, offset)) if rng.below(2) == 0 => {
                        op["since"] = json!({"epoch": epoch, "offset": offset});
                        Some(*offset)
                    }
                    _ => None,
                };
                if !s.subs.contains_key(&room) {
                    s.pending_subs.insert(n, (room.clone(), since));
                }
                last_op = op.to_string();
                s.client.send(op).await;
            }
            45..=54 => {
                let room = s
                    .subs
                    .keys()
                    .nth(rng.below(s.subs.len().max(1) as u64) as usize)
                    .cloned()
                    .unwrap_or(room);
                if s.subs.contains_key(&room) {
                    s.leaving.insert(room.clone());
                    s.subs.remove(&room);
                }
                s.client
                    .send(json!({"op": "unsubscribe", "id": n, "room": room}))
                    .await;
            }
            55..=59 => {
                s.client
                    .send(json!({"op": "event", "room": room, "data": {"typing": true}}))
                    .await
            }
            60..=64 => {
                s.client
                    .send(json!({"op": "presence", "id": n, "room": room}))
                    .await
            }
            65..=69 => {
                s.client
                    .send(json!({"op": "history", "id": n, "room": room, "limit": rng.below(20)}))
                    .await
            }
            70..=74 => s.client.send(json!({"op": "ping", "id": n})).await,
            75..=89 => {
                let garbage = [
                    json!("not an object"),
                    json!({"op": "fly", "id": n}),
                    json!({"op": "publish", "id": "x", "room": room, "data": 1}),
                    json!({"op": "publish", "id": n, "room": room, "data": null}),
                    json!({"op": "subscribe", "id": n}),
                    json!({"op": "subscribe", "id": n, "room": room, "since": {"epoch": 3}}),
                    json!({"op": "subscribe", "id": n, "room": "x".repeat(300)}),
                    json!({"op": "history", "id": n, "room": room, "limit": -1}),
                    json!({"id": n}),
                ];
                let g = &garbage[rng.below(garbage.len() as u64) as usize];
                last_op = g.to_string();
                s.client.send(g.clone()).await;
                if rng.below(4) == 0 {
                    last_op.push_str(" + a cut JSON text");
                    // Not even JSON.
                    s.client
                        .send_frame(Frame::text(Payload::Owned(b"{\"op\": \"publ".to_vec())))
                        .await;
                }
            }
            90..=91 => {
                s.client
                    .send_frame(Frame::new(
                        true,
                        OpCode::Binary,
                        None,
                        Payload::Owned(vec![9, 2, 3]),
                    ))
                    .await;
                // Not a binary publish: answered with an error event (bad_request).
                last_op = "a malformed binary message".into();
            }
            92 => {
                let big =
                    json!({"op": "publish", "room": "pub.0", "data": "y".repeat(MAX_MESSAGE + 10)});
                s.client.send(big).await;
                last_op = "an oversized message".into();
                provoked = Some(1009);
            }
            93 => provoked = Some(0), // an abrupt drop
            94 => {
                // A refresh with an invalid token closes 4001 (docs/protocol.md §4.5).
                last_op = "refresh with an invalid token".into();
                s.client
                    .send(json!({"op": "refresh", "id": n, "token": "a.b.c"}))
                    .await;
                provoked = Some(4001);
            }
            _ => {}
        }
        let wait = Duration::from_millis(1 + rng.below(3));
        let alive = pump(&mut s, wait, &reg, &mut last_seen, &mut out, &who).await;
        if let Some(code) = provoked {
            if code != 0 {
                // Read up to the close (events before it are checked as usual).
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut closed = alive.err();
                while closed.is_none() && Instant::now() < deadline {
                    closed = pump(
                        &mut s,
                        Duration::from_millis(100),
                        &reg,
                        &mut last_seen,
                        &mut out,
                        &who,
                    )
                    .await
                    .err();
                }
                if closed != Some(Some(code)) {
                    out.violations.push(format!(
                        "{who}: {last_op}: expected close {code}, got {closed:?}"
                    ));
                }
            }
            out.closes_expected += 1;
            out.reconnects += 1;
            s = open(&server, user).await;
        } else if let Err(code) = alive {
            out.violations.push(format!(
                "{who}: the server closed the connection ({code:?}) after op #{n} ({last_op}) without cause"
            ));
            out.reconnects += 1;
            s = open(&server, user).await;
        }
    }
    (out, s, last_seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_op_sequences_never_break_delivery_guarantees() {
    let secs: u64 = std::env::var("OPFUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let conns: usize = std::env::var("OPFUZZ_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("OPFUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("opfuzz: seed {seed}, {conns} connections, {secs} s (OPFUZZ_SEED={seed} replays the op choices)");
    let server = Arc::new(Server::start_strict(2, &config()));
    let reg = Arc::new(Mutex::new(Registry::default()));
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|c| tokio::spawn(fuzz_conn(server.clone(), c, seed, until, reg.clone())))
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("fuzzing task"));
    }
    // Quiet: every connection reads what is still coming, then each open subscription must hold
    // every acknowledged message of its room.
    let mut total = Outcome::default();
    for (i, (out, mut s, mut last_seen)) in results.into_iter().enumerate() {
        let who = format!("conn {i} ({})", s.user);
        let mut out = out;
        let _ = pump(
            &mut s,
            Duration::from_millis(500),
            &reg,
            &mut last_seen,
            &mut out,
            &who,
        )
        .await;
        let acked = reg.lock().expect("registry").acked.clone();
        for (room, (_, next)) in &s.subs {
            let want = acked.get(room).copied().unwrap_or(0);
            if next.saturating_sub(1) < want {
                out.violations.push(format!(
                    "{who}: {room} delivered up to {} of {want} acknowledged",
                    next.saturating_sub(1)
                ));
            }
        }
        total.violations.extend(out.violations);
        total.delivered += out.delivered;
        total.published += out.published;
        total.reconnects += out.reconnects;
        total.closes_expected += out.closes_expected;
        for (k, v) in out.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    let (status, _) = common::http(server.admin, "GET", "/healthz", &[], "");
    eprintln!(
        "opfuzz: published {} (acknowledged per room: {:?}), delivered {}, provoked closes {}, error events {:?}, violations {}",
        total.published,
        reg.lock().expect("registry").acked,
        total.delivered,
        total.closes_expected,
        total.errors,
        total.violations.len()
    );
    assert_eq!(status, 200, "the server stays up");
    assert!(
        total.delivered > 100,
        "the fuzzer delivered too little to mean anything"
    );
    assert!(
        total.violations.is_empty(),
        "seed {seed}: {} violations, first ones:\n{}",
        total.violations.len(),
        total.violations[..total.violations.len().min(20)].join("\n")
    );
}
