//! Chaos on loopback, under continuous load: two nodes on one Redis (AOF, `appendfsync always`),
//! resuming clients (the Rust SDK) subscribed on both, a publisher retrying what was refused.
//! In one run: Redis killed with `kill -9` and restarted; Redis paused with SIGSTOP (a hung
//! broker) and resumed; node A killed with `kill -9` and restarted on its ports; node B's
//! descriptor table filled until it cannot accept. The run ends with a loss and duplicate
//! count per resuming client, which must be zero: every acknowledged message arrives, no
//! offset arrives twice.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, Redis, Server};
use ringcast_client::{Backoff, Client, ClientConfig, ClientError, RoomEvent};
use serde_json::{json, Value};

const ROOM: &str = "doc.chaos";

fn rooms() -> String {
    r#"
[rooms]
history_size = 100000
history_ttl_ms = 600000
[namespaces.doc]
anonymous = "publish"
"#
    .to_string()
}

fn broker(redis: &Redis) -> String {
    format!(
        "kind = \"redis\"\nurl = \"{}\"\nprefix = \"chaos{}\"\ncanary_interval_ms = 300\ncanary_timeout_ms = 1000\nreconnect_min_ms = 50\nreconnect_max_ms = 400",
        redis.url(),
        std::process::id()
    )
}

/// A node on fixed ports, so that it can be restarted where its clients look for it.
fn node(redis: &Redis, name: &str, public: u16, admin: u16) -> Server {
    let listen = format!("127.0.0.1:{public}");
    let admin_listen = format!("127.0.0.1:{admin}");
    let s = Server::launch(
        2,
        &format!("[broker]\n{}\n{}", broker(redis), rooms()),
        &[
            ("RINGCAST_ROOMS__ANONYMOUS", "publish"),
            ("RINGCAST_NODE_NAME", name),
            ("RINGCAST_LISTEN", &listen),
            ("RINGCAST_ADMIN_LISTEN", &admin_listen),
        ],
    );
    assert!(
        s.wait_ready(200, Duration::from_secs(15)),
        "{name} became ready"
    );
    s
}

fn sdk(addr: std::net::SocketAddr) -> Client {
    let mut c = ClientConfig::new(addr.to_string());
    c.backoff = Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(300),
        reset_after: Duration::from_secs(5),
    };
    c.publish_timeout = Duration::from_secs(10);
    Client::connect(c)
}

/// What one resuming client received: offsets in arrival order and the publisher's `i`s.
#[derive(Default)]
struct Seen {
    offsets: Vec<u64>,
    is: Vec<u64>,
    unrecovered: u64,
}

async fn subscriber(client: Client, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let mut sub = client.subscribe(ROOM, false).await.expect("subscribe");
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
        else {
            continue;
        };
        let mut s = seen.lock().expect("seen");
        match ev {
            RoomEvent::Message { offset, data, .. } => {
                s.offsets.push(offset);
                let v: Value = serde_json::from_str(data.get()).unwrap_or_default();
                if let Some(i) = v["i"].as_u64() {
                    s.is.push(i);
                }
            }
            RoomEvent::Subscribed {
                recovered: false,
                resumed: true,
                ..
            } => s.unrecovered += 1,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_loses_and_duplicates_nothing_for_resuming_clients() {
    let mut redis = Redis::start();
    let (pa, aa, pb, ab) = (free_port(), free_port(), free_port(), free_port());
    let mut a = node(&redis, "node-a", pa, aa);
    let b = node(&redis, "node-b", pb, ab);
    let stop = Arc::new(AtomicBool::new(false));
    let mut subs = Vec::new();
    for addr in [a.public, b.public, b.public] {
        let client = sdk(addr);
        assert!(client.wait_open(Duration::from_secs(5)).await);
        let seen = Arc::new(Mutex::new(Seen::default()));
        subs.push((
            seen.clone(),
            tokio::spawn(subscriber(client, seen, stop.clone())),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The publisher, on node B: every message is retried until acknowledged.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let retried = Arc::new(Mutex::new(0u64));
    let publisher = {
        let (acked, retried, stop) = (acked.clone(), retried.clone(), stop.clone());
        let client = sdk(b.public);
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match client.publish(ROOM, &json!({"i": i})).await {
                    Ok(_) => {
                        acked.lock().expect("acked").push(i);
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(
                        ClientError::Server { .. }
                        | ClientError::ConnectionLost
                        | ClientError::Timeout,
                    ) => {
                        *retried.lock().expect("retried") += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("publish: {e}"),
                }
            }
        })
    };
    let pause = || tokio::time::sleep(Duration::from_millis(800));
    pause().await;

    eprintln!("chaos: kill -9 Redis, restart");
    redis.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    assert!(
        a.wait_ready(200, Duration::from_secs(15)) && b.wait_ready(200, Duration::from_secs(15))
    );
    pause().await;

    eprintln!("chaos: SIGSTOP Redis for 2.5 s (a hung broker), SIGCONT");
    redis.signal(libc_sig::SIGSTOP);
    assert!(
        b.wait_ready(503, Duration::from_secs(5)),
        "the canary turns a hung broker red"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.signal(libc_sig::SIGCONT);
    assert!(
        a.wait_ready(200, Duration::from_secs(15)) && b.wait_ready(200, Duration::from_secs(15))
    );
    pause().await;

    eprintln!("chaos: kill -9 node A, restart on its ports");
    a.signal(libc_sig::SIGKILL);
    let _ = a.wait_exit(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    a = node(&redis, "node-a", pa, aa);
    pause().await;

    eprintln!("chaos: fill node B's descriptor table");
    let open_now = b.fd_count();
    let status = std::process::Command::new("prlimit")
        .arg(format!("--nofile={}:{}", open_now + 16, open_now + 16))
        .arg("--pid")
        .arg(b.pid().to_string())
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit");
    let mut hogs = Vec::new();
    for _ in 0..64 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(b.public),
        )
        .await
        {
            hogs.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let full = b.fd_count();
    eprintln!(
        "chaos: node B holds {full} descriptors of {} allowed",
        open_now + 16
    );
    drop(hogs);
    // Room again (the accept loop backs off on EMFILE, then takes connections again).
    let _ = std::process::Command::new("prlimit")
        .arg("--nofile=65536:65536")
        .arg("--pid")
        .arg(b.pid().to_string())
        .status();
    let fresh = tokio::time::timeout(Duration::from_secs(5), common::connect_lenient(b.public))
        .await
        .ok()
        .flatten();
    assert!(
        fresh.is_some(),
        "node B accepts again once descriptors are free"
    );
    pause().await;

    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    // Let every subscriber catch up, then stop them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked: Vec<u64> = acked.lock().expect("acked").clone();
    let retried = *retried.lock().expect("retried");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (n, (seen, task)) in subs.into_iter().enumerate() {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        let s = seen.lock().expect("seen");
        let mut offsets = BTreeSet::new();
        let duplicates = s.offsets.iter().filter(|o| !offsets.insert(**o)).count();
        let reordered = s.offsets.windows(2).filter(|w| w[1] <= w[0]).count();
        let got: BTreeSet<u64> = s.is.iter().copied().collect();
        let lost = acked.iter().filter(|i| !got.contains(i)).count();
        report.push(format!(
            "client {n}: {} messages, lost {lost}, duplicated offsets {duplicates}, out of order {reordered}, resumes without recovery {}",
            s.offsets.len(),
            s.unrecovered
        ));
        if lost + duplicates + reordered > 0 || s.unrecovered > 0 {
            failures.push(n);
        }
    }
    eprintln!(
        "chaos: {} acknowledged publishes ({retried} refused or unanswered and retried)\n{}",
        acked.len(),
        report.join("\n")
    );
    assert!(acked.len() > 100, "the load ran");
    assert!(failures.is_empty(), "{}", report.join("\n"));
    drop(a);
}

/// Signal numbers (Linux).
mod libc_sig {
    pub const SIGKILL: i32 = 9;
    pub const SIGCONT: i32 = 18;
    pub const SIGSTOP: i32 = 19;
}
