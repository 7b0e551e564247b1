//! The Rust client SDK (`ringcast-client`) against the real gateway: publish acks, presence and
//! history, and what it promises across a gateway restart: it reconnects with backoff,
//! resubscribes from its last offset (nothing lost, nothing twice while history holds), sends
//! what was published while it was offline, and says `recovered: false` when history is gone.
//! Binary messages (`publish_binary`, `RoomEvent::Binary`) share all of it with JSON ones.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, Redis, Server};
use ringcast_client::{Backoff, Client, ClientConfig, ClientError, ConnState, RoomEvent};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

fn config(addr: std::net::SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new(addr.to_string());
    c.backoff = Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(5),
    };
    c.publish_timeout = Duration::from_secs(8);
    c
}

/// Reads messages until `last` arrives (bounded); returns the offsets and the subscribed events.
async fn collect(
    sub: &mut ringcast_client::Subscription,
    last: u64,
) -> (Vec<u64>, Vec<(bool, bool)>) {
    let mut offsets = Vec::new();
    let mut subscribed = Vec::new();
    let read = async {
        while let Some(ev) = sub.next().await {
            match ev {
                RoomEvent::Message { offset, .. } => {
                    offsets.push(offset);
                    if offset >= last {
                        return;
                    }
                }
                RoomEvent::Subscribed {
                    recovered, resumed, ..
                } => subscribed.push((recovered, resumed)),
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
    (offsets, subscribed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_presence_and_history() {
    let server = Server::start(
        2,
        "[namespaces.doc]\nanonymous = \"publish\"\npresence = true\n",
    );
    let client = Client::connect(config(server.public));
    assert!(client.wait_open(Duration::from_secs(5)).await);
    let mut sub = client.subscribe("doc.sdk", true).await.expect("subscribe");
    assert!(matches!(
        client.subscribe("doc.sdk", false).await,
        Err(ClientError::AlreadySubscribed)
    ));
    for i in 0..5 {
        let p = client
            .publish("doc.sdk", &json!({"i": i}))
            .await
            .expect("ack");
        assert_eq!(p.offset, i + 1);
    }
    let (offsets, _) = collect(&mut sub, 5).await;
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    let presence = client.presence("doc.sdk").await.expect("presence");
    assert_eq!(
        presence["members"].as_array().map(Vec::len),
        Some(1),
        "{presence}"
    );
    let history = client
        .history("doc.sdk", None, Some(2))
        .await
        .expect("history");
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
    // A refusal comes back as the server's error.
    let err = client.publish("bad room!", &json!(1)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Server { ref code, .. } if code == "bad_room"),
        "{err}"
    );
    client.close();
    let mut state = client.state();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if matches!(*state.borrow_and_update(), ConnState::Closed { .. }) {
                return;
            }
            if state.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "closed state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_loses_nothing_and_offline_publishes_go_out() {
    // Redis keeps the history across the restart of the client's node.
    let redis = Redis::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let broker = format!(
        "[broker]\nkind = \"redis\"\nurl = \"{}\"\nprefix = \"sdk{}\"\nreconnect_min_ms = 50\n[rooms]\nhistory_size = 1000\nhistory_ttl_ms = 600000\n",
        redis.url(),
        std::process::id()
    );
    let start = |name: &str| {
        let s = Server::launch(
            1,
            &broker,
            &[
                ("RINGCAST_ROOMS__ANONYMOUS", "publish"),
                ("RINGCAST_NODE_NAME", name),
                ("RINGCAST_LISTEN", listen.as_str()),
            ],
        );
        assert!(s.wait_ready(200, Duration::from_secs(10)));
        s
    };
    let mut node = start("sdk-a");
    let other = Server::start_on_redis(1, "sdk-b", &broker.replace("[broker]\n", ""), "");
    assert!(other.wait_ready(200, Duration::from_secs(10)));

    let client = Client::connect(config(node.public));
    let mut sub = client
        .subscribe("chat.sdk", false)
        .await
        .expect("subscribe");
    let publisher = Client::connect(config(other.public));
    for i in 0..10 {
        publisher
            .publish("chat.sdk", &json!({"i": i}))
            .await
            .expect("ack");
    }
    let (first, _) = collect(&mut sub, 10).await;
    assert_eq!(first, (1..=10).collect::<Vec<_>>());

    // The node dies; messages keep coming through the other node; the client also publishes
    // while it has no connection.
    node.signal(libc::SIGKILL);
    let _ = node.wait_exit(Duration::from_secs(5));
    for i in 10..20 {
        publisher
            .publish("chat.sdk", &json!({"i": i}))
            .await
            .expect("ack");
    }
    let offline = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("chat.sdk", &json!({"offline": true})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _node = start("sdk-a2");
    let ack = offline
        .await
        .expect("task")
        .expect("the offline publish went out after the reconnect");
    assert_eq!(ack.offset, 21);
    let (rest, subscribed) = collect(&mut sub, 21).await;
    assert_eq!(
        rest,
        (11..=21).collect::<Vec<_>>(),
        "resumed: nothing lost, nothing twice"
    );
    assert_eq!(subscribed, [(true, true)], "resumed with recovered: true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_history_is_reported_as_not_recovered() {
    // The embedded broker forgets the room when the process dies: the client must say so.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = [
        ("RINGCAST_ROOMS__ANONYMOUS", "publish"),
        ("RINGCAST_LISTEN", listen.as_str()),
    ];
    let mut server = Server::launch(1, "", &env);
    let client = Client::connect(config(server.public));
    let mut sub = client
        .subscribe("chat.lost", false)
        .await
        .expect("subscribe");
    client.publish("chat.lost", &json!(1)).await.expect("ack");
    let (got, _) = collect(&mut sub, 1).await;
    assert_eq!(got, [1]);
    server.signal(libc::SIGKILL);
    let _ = server.wait_exit(Duration::from_secs(5));
    let _again = Server::launch(1, "", &env);
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match sub.next().await {
                Some(RoomEvent::Subscribed {
                    recovered, resumed, ..
                }) => return (recovered, resumed),
                Some(_) => continue,
                None => return (true, false),
            }
        }
    })
    .await
    .expect("resubscribed after the restart");
    assert_eq!(
        event,
        (false, true),
        "resumed, and told the history is gone"
    );
}

/// What a mixed room carries, as the tests compare it: JSON text or bytes, with the offset.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Json(u64, String),
    Bin(u64, Vec<u8>),
}

/// The room messages of `events` (other events skipped).
fn got(events: &[RoomEvent]) -> Vec<Got> {
    events
        .iter()
        .filter_map(|ev| match ev {
            RoomEvent::Message { offset, data, .. } => Some(Got::Json(*offset, data.get().into())),
            RoomEvent::Binary { offset, data, .. } => Some(Got::Bin(*offset, data.clone())),
            _ => None,
        })
        .collect()
}

/// Reads events until the message at offset `last` (JSON or binary) arrives (bounded); returns
/// every event read.
async fn collect_events(sub: &mut ringcast_client::Subscription, last: u64) -> Vec<RoomEvent> {
    let mut events = Vec::new();
    let read = async {
        while let Some(ev) = sub.next().await {
            let done = ev.message_offset().is_some_and(|o| o >= last);
            events.push(ev);
            if done {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
    events
}

/// Bytes that differ per offset and include 0x00 and 0xff.
fn payload(n: u64) -> Vec<u8> {
    vec![0x00, 0xff, n as u8, 0x00, 0x80, 0xff]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_messages_are_published_received_and_kept_in_history() {
    let server = Server::start(2, "");
    let client = Client::connect(config(server.public));
    let publisher = Client::connect(config(server.public));
    let mut sub = client
        .subscribe("game.sdk", false)
        .await
        .expect("subscribe");
    let all: Vec<u8> = (0..=255u8).collect();
    // Mixed JSON and binary (an empty payload included) in one room: one offset sequence.
    let mut want = Vec::new();
    let ack = publisher
        .publish_binary("game.sdk", &all)
        .await
        .expect("ack");
    assert_eq!(ack.offset, 1);
    want.push(Got::Bin(1, all.clone()));
    let ack = publisher
        .publish("game.sdk", &json!({"n": 2}))
        .await
        .expect("ack");
    assert_eq!(ack.offset, 2);
    want.push(Got::Json(2, r#"{"n":2}"#.into()));
    let ack = publisher
        .publish_binary("game.sdk", b"")
        .await
        .expect("ack");
    assert_eq!(ack.offset, 3);
    want.push(Got::Bin(3, Vec::new()));
    // The subscriber publishes too: it receives its own binary message.
    let ack = client
        .publish_binary("game.sdk", &payload(4))
        .await
        .expect("ack");
    assert_eq!(ack.offset, 4);
    want.push(Got::Bin(4, payload(4)));
    let ack = publisher
        .publish("game.sdk", &json!("five"))
        .await
        .expect("ack");
    assert_eq!((ack.offset, ack.epoch.is_empty()), (5, false));
    want.push(Got::Json(5, r#""five""#.into()));

    let events = collect_events(&mut sub, 5).await;
    assert_eq!(got(&events), want, "{events:?}");
    assert!(events.iter().all(|ev| match ev {
        RoomEvent::Message { epoch, .. } | RoomEvent::Binary { epoch, .. } => *epoch == ack.epoch,
        _ => true,
    }));

    // History: typed (binary items decoded), and as JSON (binary items carry `bin`).
    let history = client
        .history_messages("game.sdk", None, None)
        .await
        .expect("history");
    assert_eq!(
        (history.epoch.as_str(), history.offset, history.recovered),
        (ack.epoch.as_str(), 5, false)
    );
    assert_eq!(got(&history.messages), want);
    let page = client
        .history_messages("game.sdk", Some((ack.epoch.clone(), 2)), Some(2))
        .await
        .expect("history since");
    assert!(page.recovered);
    assert_eq!(got(&page.messages), want[2..4]);
    let raw = client
        .history("game.sdk", None, None)
        .await
        .expect("history");
    assert_eq!(
        raw["messages"][0]["bin"].as_str().map(str::len),
        Some(344),
        "{raw}"
    );
    assert_eq!(raw["messages"][2]["bin"], "", "{raw}");
    assert_eq!(raw["messages"][1]["data"], json!({"n": 2}), "{raw}");

    // Refusals come back like a JSON publish's: from the server, or locally for a room that does
    // not fit the envelope.
    let err = client.publish_binary("bad room!", b"x").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Server { ref code, .. } if code == "bad_room"),
        "{err}"
    );
    let err = client
        .publish_binary(&"r".repeat(300), b"x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Server { ref code, .. } if code == "bad_room"),
        "{err}"
    );
    // The connection is still fine, and the room's offsets went on.
    let ack = client
        .publish_binary("game.sdk", &[0xff])
        .await
        .expect("ack");
    assert_eq!(ack.offset, 6);
    let events = collect_events(&mut sub, 6).await;
    assert_eq!(got(&events), [Got::Bin(6, vec![0xff])]);
}

/// A TCP proxy in front of the gateway that can cut every connection it carries and refuse new
/// ones (a network failure the gateway does not see coming).
struct CutProxy {
    addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    cut: broadcast::Sender<()>,
}

impl CutProxy {
    async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let blocked = Arc::new(AtomicBool::new(false));
        let (cut, _) = broadcast::channel(4);
        let (b, c) = (blocked.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if b.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cut = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        CutProxy { addr, blocked, cut }
    }

    /// Closes every connection; with `block`, refuses new ones until `block(false)`.
    fn cut(&self, block: bool) {
        self.block(block);
        let _ = self.cut.send(());
    }

    fn block(&self, on: bool) {
        self.blocked.store(on, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_binary_and_json_messages_in_offset_order() {
    let server = Server::start(2, "");
    let proxy = CutProxy::start(server.public).await;
    let client = Client::connect(config(proxy.addr));
    let publisher = Client::connect(config(server.public));
    let mut sub = client
        .subscribe("game.resume", false)
        .await
        .expect("subscribe");
    // Odd offsets binary, even ones JSON.
    let publish = |n: u64| {
        let publisher = publisher.clone();
        async move {
            let ack = if n % 2 == 1 {
                publisher.publish_binary("game.resume", &payload(n)).await
            } else {
                publisher.publish("game.resume", &json!({"n": n})).await
            };
            assert_eq!(ack.expect("ack").offset, n);
        }
    };
    let want = |from: u64, to: u64| -> Vec<Got> {
        (from..=to)
            .map(|n| {
                if n % 2 == 1 {
                    Got::Bin(n, payload(n))
                } else {
                    Got::Json(n, format!(r#"{{"n":{n}}}"#))
                }
            })
            .collect()
    };
    for n in 1..=6 {
        publish(n).await;
    }
    let first = collect_events(&mut sub, 6).await;
    assert_eq!(got(&first), want(1, 6));

    // The link drops; messages go on without the client, which publishes bytes meanwhile.
    proxy.cut(true);
    let mut state = client.state();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(*state.borrow_and_update(), ConnState::Reconnecting { .. }) {
            if state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    })
    .await
    .expect("the client noticed the cut");
    for n in 7..=14 {
        publish(n).await;
    }
    let offline = {
        let client = client.clone();
        tokio::spawn(async move { client.publish_binary("game.resume", &payload(15)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.block(false);
    let ack = offline
        .await
        .expect("task")
        .expect("the offline binary publish went out after the reconnect");
    assert_eq!(ack.offset, 15);
    publish(16).await;
    let rest = collect_events(&mut sub, 16).await;
    assert_eq!(
        got(&rest),
        want(7, 16),
        "replayed in order, nothing lost or twice"
    );
    let subscribed: Vec<(bool, bool)> = rest
        .iter()
        .filter_map(|ev| match ev {
            RoomEvent::Subscribed {
                recovered, resumed, ..
            } => Some((*recovered, *resumed)),
            _ => None,
        })
        .collect();
    assert_eq!(subscribed, [(true, true)], "resumed with recovered: true");
}
