//! The Rust client SDK (`ringcast-client`) against the real gateway: publish acks, presence and
//! history, and what it promises across a gateway restart: it reconnects with backoff,
//! resubscribes from its last offset (nothing lost, nothing twice while history holds), sends
//! what was published while it was offline, and says `recovered: false` when history is gone.

mod common;

use std::time::Duration;

use common::{free_port, Redis, Server};
use ringcast_client::{Backoff, Client, ClientConfig, ClientError, ConnState, RoomEvent};
use serde_json::json;

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
