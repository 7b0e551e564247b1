//! Two ringcast nodes on Redis behind HAProxy with the shipped `deploy/haproxy/haproxy.cfg`:
//! one node stops (SIGTERM, graceful) or dies (`kill -9`); its clients reconnect through HAProxy
//! to the other node and resume from their last offset with nothing lost and nothing twice.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, connect_lenient, free_port, Redis, Server};
use serde_json::json;

const MESSAGES: u64 = 120;
const SUBSCRIBERS: usize = 6;

fn config_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// HAProxy running the shipped config, killed on drop.
struct Haproxy {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_env(a: &Server, b: &Server, bind: &str) -> Vec<(String, String)> {
    vec![
        ("LB_BIND".into(), bind.into()),
        ("LB_NODE_A".into(), a.public.to_string()),
        ("LB_NODE_B".into(), b.public.to_string()),
        ("LB_NODE_A_ADMIN_HOST".into(), a.admin.ip().to_string()),
        ("LB_NODE_A_ADMIN_PORT".into(), a.admin.port().to_string()),
        ("LB_NODE_B_ADMIN_HOST".into(), b.admin.ip().to_string()),
        ("LB_NODE_B_ADMIN_PORT".into(), b.admin.port().to_string()),
    ]
}

fn start_haproxy(a: &Server, b: &Server) -> Haproxy {
    let cfg = config_path("deploy/haproxy/haproxy.cfg");
    let port = free_port();
    let env = haproxy_env(a, b, &format!("127.0.0.1:{port}"));
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .envs(env.clone())
        .output()
        .expect("haproxy is installed (scripts/test-all.sh installs it)");
    assert!(
        check.status.success(),
        "haproxy -c on the shipped config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Haproxy { child, addr }
}

fn node(redis: &Redis, name: &str) -> Server {
    let broker = format!(
        "kind = \"redis\"\nurl = \"{}\"\nprefix = \"f{}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500",
        redis.url(),
        std::process::id()
    );
    let s = Server::start_on_redis(
        2,
        name,
        &broker,
        "[rooms]\nhistory_size = 1000\nhistory_ttl_ms = 600000\n[shutdown]\ndrain_ms = 1000\nreconnect_hint_max_ms = 300\n",
    );
    assert!(s.wait_ready(200, Duration::from_secs(10)));
    s
}

/// A subscriber that connects through the load balancer and, whenever its connection ends,
/// reconnects and resumes from its last offset. Returns every offset it got, in order, and how
/// many times it reconnected.
async fn resuming_subscriber(lb: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (Vec<u64>, u32) {
    let mut offsets = Vec::new();
    let mut position: Option<(String, u64)> = None;
    let mut reconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    'connections: while Instant::now() < deadline {
        let Some(mut c) = connect_lenient(lb).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut op = json!({"op": "subscribe", "id": 1, "room": "chat.failover"});
        if let Some((epoch, offset)) = &position {
            op["since"] = json!({"epoch": epoch, "offset": offset});
        }
        c.send(op).await;
        loop {
            match c.try_next(Duration::from_millis(200)).await {
                Ok(Some(ev)) => match ev["ev"].as_str() {
                    Some("subscribed") => {
                        let epoch = ev["epoch"].as_str().unwrap_or("").to_string();
                        if let Some((e, _)) = &position {
                            assert_eq!(*e, epoch, "same epoch on the other node");
                            assert_eq!(ev["recovered"], true, "resumed: {ev}");
                        } else {
                            position = Some((epoch, ev["offset"].as_u64().unwrap_or(0)));
                        }
                    }
                    Some("msg") => {
                        let o = ev["offset"].as_u64().unwrap_or(0);
                        offsets.push(o);
                        if let Some((_, last)) = &mut position {
                            *last = o;
                        }
                    }
                    Some("error") => {
                        // A subscribe that raced the node's shutdown: try again elsewhere.
                        reconnects += 1;
                        continue 'connections;
                    }
                    _ => {}
                },
                Ok(None) => {
                    if stop.load(Ordering::SeqCst) && offsets.last() == Some(&MESSAGES) {
                        return (offsets, reconnects);
                    }
                }
                Err(()) => {
                    reconnects += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'connections;
                }
            }
        }
    }
    (offsets, reconnects)
}

async fn failover(kill: bool) {
    let redis = Redis::start();
    let (mut a, b) = (node(&redis, "node-a"), node(&redis, "node-b"));
    let lb = start_haproxy(&a, &b);
    // Let HAProxy's health checks see both nodes up.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let subs: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| tokio::spawn(resuming_subscriber(lb.addr, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The publisher talks to node B directly (node B stays up).
    let mut publisher = connect(b.public).await;
    let publishing = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let ev = publisher
                .publish(i + 1, "chat.failover", json!({"i": i}))
                .await;
            assert_eq!(ev["offset"], i + 1);
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    if kill {
        a.signal(libc::SIGKILL);
    } else {
        a.sigterm();
    }
    let status = a.wait_exit(Duration::from_secs(10)).expect("node A exited");
    if !kill {
        assert!(status.success(), "graceful stop exits 0: {status:?}");
    }
    publishing.await.expect("publisher");
    stop.store(true, Ordering::SeqCst);
    let mut reconnected = 0;
    for s in subs {
        let (offsets, reconnects) = s.await.expect("subscriber");
        assert_eq!(
            offsets,
            (1..=MESSAGES).collect::<Vec<_>>(),
            "every message once, in order, across the failover"
        );
        reconnected += reconnects;
    }
    assert!(
        reconnected > 0,
        "some subscribers were on node A and moved (HAProxy spreads them)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gracefully_stopped_nodes_clients_resume_through_haproxy() {
    failover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nodes_clients_resume_through_haproxy() {
    failover(true).await;
}
