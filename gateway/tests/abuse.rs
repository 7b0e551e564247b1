//! Abuse, all at once: while a calm room is measured, other clients open ten times the
//! connection cap, hold half-sent handshakes (slowloris), send a frame announcing 2^40 bytes, a
//! decompression bomb, subscribe to more rooms than allowed and flood publishes. The gateway
//! stays up, the calm room keeps being served promptly and completely, every abuser gets the
//! answer `docs/security.md` documents for it, and the server's RSS stays under the configured
//! memory budget.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect, Client, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CAP: usize = 60;
const MAX_MESSAGE: usize = 65536;
const BUDGET_MIB: u64 = 256;

fn config() -> String {
    format!(
        r#"
[websocket]
max_message_bytes = {MAX_MESSAGE}
handshake_timeout_ms = 1000
[limits]
max_connections = {CAP}
memory_budget_bytes = {}
max_rooms_per_connection = 8
ops_per_second = 200
ops_burst = 200
rate_limit_strikes = 50
handshakes_per_ip_per_second = 100000
handshake_burst = 100000
retry_after_min_s = 1
retry_after_max_s = 2
[rooms]
anonymous = "publish"
"#,
        BUDGET_MIB * 1024 * 1024
    )
}

/// The status code a handshake from `from` gets (0: no answer within 3 s), keeping the stream.
async fn handshake(addr: SocketAddr, from: Ipv4Addr) -> (u16, Option<TcpStream>) {
    let attempt = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((from, 0))).ok()?;
        let mut s = socket.connect(addr).await.ok()?;
        let req = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        let code = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((code, s))
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Some((code, s))) => (code, Some(s)),
        _ => (0, None),
    }
}

/// A masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads until a close frame: its code (0: none within 5 s).
async fn close_code(s: &mut TcpStream) -> u16 {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Frames from the server are unmasked; find a close (0x88).
            let mut at = 0;
            while at + 2 <= buf.len() {
                let (op, len) = (buf[at] & 0x0f, (buf[at + 1] & 0x7f) as usize);
                let (hdr, len) = match len {
                    126 if at + 4 <= buf.len() => {
                        (4, u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize)
                    }
                    126 => break,
                    127 => break,
                    l => (2, l),
                };
                if at + hdr + len > buf.len() {
                    break;
                }
                if op == 0x8 && len >= 2 {
                    return Some(u16::from_be_bytes([buf[at + hdr], buf[at + hdr + 1]]));
                }
                at += hdr + len;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The next error code among a client's events (empty: none within 5 s).
async fn next_error(c: &mut Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match c.try_next(Duration::from_millis(200)).await {
            Ok(Some(ev)) if ev["ev"] == "error" => return ev["code"].as_str().unwrap_or("").into(),
            Ok(_) => {}
            Err(()) => return "closed".into(),
        }
    }
    String::new()
}

/// The calm room: a publisher at 50 msg/s with its send time in each message, each subscriber
/// read by its own task. Returns (latencies in µs, messages expected, received, the clients).
async fn calm(
    secs: u64,
    subs: Vec<Client>,
    publisher: &mut Client,
    phase: &str,
) -> (Vec<u64>, u64, u64, Vec<Client>) {
    let base = Instant::now();
    let n = secs * 50;
    let room = format!("calm.{phase}");
    let mut readers = Vec::new();
    for (i, mut c) in subs.into_iter().enumerate() {
        c.subscribe(i as u64 + 1, &room, None).await;
        readers.push(tokio::spawn(async move {
            let deadline = base + Duration::from_secs(secs + 5);
            let (mut lat, mut received) = (Vec::new(), 0u64);
            while received < n && Instant::now() < deadline {
                if let Ok(Some(ev)) = c.try_next(Duration::from_millis(50)).await {
                    if ev["ev"] == "msg" {
                        received += 1;
                        let t = ev["data"]["t"].as_u64().unwrap_or(0);
                        lat.push((base.elapsed().as_micros() as u64).saturating_sub(t));
                    }
                }
            }
            (c, lat, received)
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for k in 0..n {
        tick.tick().await;
        let sent = base.elapsed().as_micros() as u64;
        publisher
            .send(json!({"op": "publish", "room": room, "data": {"t": sent, "k": k}}))
            .await;
    }
    let (mut all, mut received, mut clients) = (Vec::new(), 0, Vec::new());
    for r in readers {
        let (c, lat, got) = r.await.expect("reader");
        all.extend(lat);
        received += got;
        clients.push(c);
    }
    (all, n * clients.len() as u64, received, clients)
}

fn p99(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() * 99 / 100).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abuse_all_at_once_leaves_the_gateway_serving() {
    let server = Arc::new(Server::start_strict(2, &config()));
    let addr = server.public;
    let pid = server.pid();
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(connect(addr).await);
    }
    let mut publisher = connect(addr).await;
    let (alone, want, got, subs) = calm(2, subs, &mut publisher, "alone").await;
    assert_eq!(got, want, "the calm room alone gets everything");
    let p99_alone = p99(alone);

    // The abusers that need a connection slot get theirs first.
    let (mut huge, head) =
        common::raw_upgrade_from(addr, Ipv4Addr::new(127, 0, 0, 2), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (code, bomb) = {
        let socket = TcpSocket::new_v4().expect("socket");
        let mut s = socket.connect(addr).await.expect("connect");
        let req = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).await.expect("read"), 1);
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.contains("permessage-deflate"), "{head}");
        (head[9..12].parse::<u16>().unwrap_or(0), s)
    };
    assert_eq!(code, 101);
    let mut bomb = bomb;
    let mut rooms = connect(addr).await;
    let mut flooder = connect(addr).await;

    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak_rss.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(common::rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut abusers = tokio::task::JoinSet::new();
    // 10x the connection cap, from many source addresses.
    let statuses: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    for i in 0..CAP * 10 {
        let statuses = statuses.clone();
        abusers.spawn(async move {
            let from = Ipv4Addr::new(127, 0, 1 + (i / 200) as u8, 1 + (i % 200) as u8);
            let (code, stream) = handshake(addr, from).await;
            *statuses.lock().expect("statuses").entry(code).or_default() += 1;
            // Hold what was granted for a while.
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(stream);
        });
    }
    // Slowloris: a request line and nothing more.
    for i in 0..20u8 {
        let answers = answers.clone();
        abusers.spawn(async move {
            let socket = TcpSocket::new_v4().expect("socket");
            let _ = socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 3, 1 + i), 0)));
            let Ok(mut s) = socket.connect(addr).await else {
                return;
            };
            let _ = s.write_all(b"GET /ws HTTP/1.1\r\n").await;
            let mut head = [0u8; 12];
            let code =
                match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
                    Ok(Ok(_)) => String::from_utf8_lossy(&head[9..12]).to_string(),
                    _ => "none".into(),
                };
            answers
                .lock()
                .expect("answers")
                .insert(format!("slowloris {i}"), code);
        });
    }
    // A frame announcing 2^40 bytes.
    {
        let answers = answers.clone();
        abusers.spawn(async move {
            let mut header = vec![0x81, 0x80 | 127];
            header.extend_from_slice(&(1u64 << 40).to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]);
            let _ = huge.write_all(&header).await;
            let code = close_code(&mut huge).await;
            answers
                .lock()
                .expect("answers")
                .insert("huge frame".into(), code.to_string());
        });
    }
    // A decompression bomb: 64 MiB of zeros deflated to a few KiB.
    {
        let answers = answers.clone();
        abusers.spawn(async move {
            let compressed = proto_codec::ws::deflate::compress_message(&vec![0u8; 64 << 20], 15);
            let _ = bomb.write_all(&frame(0x80 | 0x40 | 0x1, &compressed)).await;
            let code = close_code(&mut bomb).await;
            answers
                .lock()
                .expect("answers")
                .insert("decompression bomb".into(), code.to_string());
        });
    }
    // More rooms than allowed.
    {
        let answers = answers.clone();
        abusers.spawn(async move {
            for r in 0..8 {
                rooms.subscribe(r + 1, &format!("many.r{r}"), None).await;
            }
            rooms
                .send(json!({"op": "subscribe", "id": 99, "room": "many.r8"}))
                .await;
            let code = next_error(&mut rooms).await;
            answers
                .lock()
                .expect("answers")
                .insert("9th room".into(), code);
        });
    }
    // A publish flood past the op rate.
    {
        let answers = answers.clone();
        abusers.spawn(async move {
            let mut first_error = String::new();
            for k in 0..5000u64 {
                flooder
                    .send(json!({"op": "publish", "room": "flood.x", "data": {"k": k}}))
                    .await;
            }
            let mut closed = 0u16;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match flooder.try_next_or_close(Duration::from_millis(200)).await {
                    Ok(Some(ev)) if ev["ev"] == "error" && first_error.is_empty() => {
                        first_error = ev["code"].as_str().unwrap_or("").into();
                    }
                    Ok(_) => {}
                    Err(code) => {
                        closed = code.unwrap_or(0);
                        break;
                    }
                }
            }
            let mut a = answers.lock().expect("answers");
            a.insert("publish flood: first error".into(), first_error);
            a.insert("publish flood: close".into(), closed.to_string());
        });
    }
    let (abused, want, got, _subs) = calm(3, subs, &mut publisher, "abused").await;
    while abusers.join_next().await.is_some() {}
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let p99_abused = p99(abused);
    let (health, _) = common::http(server.admin, "GET", "/healthz", &[], "");
    let statuses = statuses.lock().expect("statuses").clone();
    let answers = answers.lock().expect("answers").clone();
    let peak = peak_rss.load(Ordering::Relaxed);
    eprintln!(
        "abuse: calm p99 alone {:.2} ms, under abuse {:.2} ms ({got}/{want} delivered); connection flood statuses {statuses:?}; answers {answers:?}; peak RSS {:.1} MiB (budget {BUDGET_MIB} MiB)",
        p99_alone as f64 / 1000.0,
        p99_abused as f64 / 1000.0,
        peak as f64 / 1048576.0
    );
    assert_eq!(health, 200, "the gateway stays up");
    assert_eq!(got, want, "the calm room gets every message under abuse");
    assert!(
        p99_abused <= 100_000,
        "the calm room stays prompt: p99 {p99_abused} µs"
    );
    assert!(
        peak <= BUDGET_MIB << 20,
        "RSS stays under the budget: {peak}"
    );
    // Past the cap: 503 (docs/security.md); nothing else but upgrades.
    let refused = statuses.get(&503).copied().unwrap_or(0);
    assert!(
        refused >= (CAP * 10 - CAP) as u64 / 2,
        "most of the flood is refused with 503: {statuses:?}"
    );
    assert!(
        statuses.keys().all(|c| matches!(c, 101 | 503)),
        "only upgrades and 503: {statuses:?}"
    );
    for (k, v) in &answers {
        let want = match k.as_str() {
            k if k.starts_with("slowloris") => "408",
            "huge frame" | "decompression bomb" => "1009",
            "9th room" => "limit_exceeded",
            "publish flood: first error" => "rate_limited",
            "publish flood: close" => "4009",
            _ => "?",
        };
        assert_eq!(v, want, "{k}: {answers:?}");
    }
    assert_eq!(answers.len(), 20 + 5, "every abuser reported: {answers:?}");
}
