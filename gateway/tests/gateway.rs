//! Black-box tests: the real `ringcast` binary on loopback, real WebSocket clients.
//!
//! The I/O driver comes from `RINGCAST_IO_DRIVER` (the test script runs this file once per
//! driver).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{connect, http, raw_upgrade, Server};
use fastwebsockets::{Frame, OpCode, Payload};
use serde_json::{json, Value};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn reports_the_requested_driver() {
    let server = Server::start(1, "");
    match common::driver().as_str() {
        "epoll" => assert_eq!(server.driver, "epoll"),
        "io-uring" => assert_eq!(server.driver, "io_uring"),
        _ => assert!(["io_uring", "epoll"].contains(&server.driver.as_str())),
    }
    if server.driver == "io_uring" {
        // Evidence io_uring is really used: the process holds an io_uring fd.
        let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid())).expect("fd dir");
        let uring = fds
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .any(|p| p.to_string_lossy().contains("io_uring"));
        assert!(uring, "no io_uring fd");
    }
}

#[test]
fn pub_sub_across_shards_in_order() {
    let server = Server::start(4, "");
    rt().block_on(async {
        // Enough clients that SO_REUSEPORT spreads them over all four shards.
        let mut subs = Vec::new();
        for _ in 0..32 {
            let mut c = connect(server.public).await;
            c.subscribe(1, "prices.BTC", None).await;
            subs.push(c);
        }
        let shards: std::collections::HashSet<String> = subs
            .iter()
            .map(|c| {
                c.hello["client"]
                    .as_str()
                    .unwrap_or("")
                    .split('-')
                    .nth(1)
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(
            shards.len() >= 2,
            "clients all landed on one shard: {shards:?}"
        );
        let mut publisher = connect(server.public).await;
        for i in 0..50u64 {
            let ack = publisher
                .publish(100 + i, "prices.BTC", json!({"tick": i}))
                .await;
            assert_eq!(ack["offset"], i + 1);
        }
        for c in &mut subs {
            for i in 0..50u64 {
                let ev = c.recv().await;
                assert_eq!(ev["ev"], "msg");
                assert_eq!(ev["room"], "prices.BTC");
                assert_eq!(ev["offset"], i + 1, "{ev}");
                assert_eq!(ev["data"]["tick"], i);
            }
        }
    });
}

#[test]
fn rooms_are_isolated_and_ordered_with_many_publishers() {
    let server = Server::start(3, "");
    rt().block_on(async {
        let mut a = connect(server.public).await;
        let mut b = connect(server.public).await;
        a.subscribe(1, "chat.a", None).await;
        b.subscribe(1, "chat.b", None).await;
        let mut tasks = Vec::new();
        for p in 0..4u64 {
            let addr = server.public;
            tasks.push(tokio::spawn(async move {
                let mut c = connect(addr).await;
                for i in 0..40u64 {
                    let room = if i % 2 == 0 { "chat.a" } else { "chat.b" };
                    c.publish(i, room, json!({"p": p, "i": i})).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
        for (client, room) in [(&mut a, "chat.a"), (&mut b, "chat.b")] {
            let mut last_offset = 0u64;
            let mut last_i: HashMap<u64, u64> = HashMap::new();
            for _ in 0..80 {
                let ev = client.recv().await;
                assert_eq!(ev["room"], room, "leak from another room: {ev}");
                let offset = ev["offset"].as_u64().unwrap_or(0);
                assert_eq!(offset, last_offset + 1, "gap or reorder: {ev}");
                last_offset = offset;
                let (p, i) = (
                    ev["data"]["p"].as_u64().unwrap_or(99),
                    ev["data"]["i"].as_u64().unwrap_or(0),
                );
                if let Some(prev) = last_i.insert(p, i) {
                    assert!(i > prev, "publisher {p} reordered: {prev} then {i}");
                }
            }
            assert!(
                client.is_quiet(Duration::from_millis(200)).await,
                "extra messages in {room}"
            );
        }
    });
}

#[test]
fn recovery_after_reconnect() {
    let server = Server::start(2, "[rooms]\nhistory_size = 10\n");
    rt().block_on(async {
        let mut sub = connect(server.public).await;
        let ev = sub.subscribe(1, "game.1", None).await;
        assert_eq!(ev["recovered"], false);
        let epoch = ev["epoch"].as_str().unwrap_or("").to_string();
        let mut publisher = connect(server.public).await;
        for i in 1..=3u64 {
            publisher.publish(i, "game.1", json!(i)).await;
        }
        for i in 1..=3u64 {
            assert_eq!(sub.recv().await["offset"], i);
        }
        drop(sub);
        for i in 4..=8u64 {
            publisher.publish(i, "game.1", json!(i)).await;
        }
        // Resume from offset 3: the five missed messages, then live ones, no gap, no duplicate.
        let mut sub = connect(server.public).await;
        let ev = sub.subscribe(2, "game.1", Some((&epoch, 3))).await;
        assert_eq!(ev["recovered"], true, "{ev}");
        assert_eq!(ev["offset"], 8);
        for i in 4..=8u64 {
            let m = sub.recv().await;
            assert_eq!(
                (m["offset"].as_u64(), m["data"].as_u64()),
                (Some(i), Some(i)),
                "{m}"
            );
        }
        publisher.publish(9, "game.1", json!(9)).await;
        assert_eq!(sub.recv().await["offset"], 9);

        // Too old (history holds 10 messages: 1 is gone after 11), or another epoch: not recovered.
        for i in 10..=12u64 {
            publisher.publish(i, "game.1", json!(i)).await;
        }
        let mut late = connect(server.public).await;
        let ev = late.subscribe(3, "game.1", Some((&epoch, 0))).await;
        assert_eq!(ev["recovered"], false, "{ev}");
        let mut other = connect(server.public).await;
        let ev = other
            .subscribe(4, "game.1", Some(("not-the-epoch", 5)))
            .await;
        assert_eq!(ev["recovered"], false, "{ev}");
        assert!(
            other.is_quiet(Duration::from_millis(200)).await,
            "no replay without recovery"
        );
    });
}

#[test]
fn op_errors_are_answered_not_dropped() {
    let server = Server::start(
        1,
        "[rooms]\nmax_data_bytes = 100\n[limits]\nmax_rooms_per_connection = 2\n",
    );
    rt().block_on(async {
        let mut c = connect(server.public).await;
        let cases = [
            (json!({"op": "fly", "id": 1}), "unknown_op"),
            (json!({"op": "subscribe", "id": 2}), "bad_request"),
            (
                json!({"op": "subscribe", "id": 3, "room": "bad room"}),
                "bad_room",
            ),
            (
                json!({"op": "unsubscribe", "id": 4, "room": "a"}),
                "not_subscribed",
            ),
            (
                json!({"op": "publish", "id": 5, "room": "a", "data": "x".repeat(200)}),
                "too_large",
            ),
            (
                json!({"op": "presence", "id": 6, "room": "a"}),
                "not_enabled",
            ),
        ];
        for (op, code) in cases {
            let id = op["id"].clone();
            c.send(op).await;
            let ev = c.recv().await;
            assert_eq!(
                (ev["ev"].as_str(), ev["code"].as_str()),
                (Some("error"), Some(code)),
                "{ev}"
            );
            assert_eq!(ev["id"], id);
        }
        c.subscribe(7, "a", None).await;
        c.send(json!({"op": "subscribe", "id": 8, "room": "a"}))
            .await;
        assert_eq!(c.recv().await["code"], "already_subscribed");
        c.subscribe(9, "b", None).await;
        c.send(json!({"op": "subscribe", "id": 10, "room": "c"}))
            .await;
        assert_eq!(c.recv().await["code"], "limit_exceeded");
        c.send(json!({"op": "unsubscribe", "id": 11, "room": "a"}))
            .await;
        let ev = c.recv().await;
        assert_eq!(
            (ev["ev"].as_str(), ev["id"].as_u64()),
            (Some("unsubscribed"), Some(11))
        );
        c.send(json!({"op": "ping", "id": 12})).await;
        assert_eq!(c.recv().await, json!({"ev": "pong", "id": 12}));
        // Still usable after all that.
        c.publish(13, "b", json!("ok")).await;
        // Every error event was counted: six refused ops, already_subscribed, limit_exceeded.
        let admin = server.admin;
        let (_, metrics) =
            tokio::task::spawn_blocking(move || http(admin, "GET", "/metrics", &[], ""))
                .await
                .expect("metrics");
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ringcast_op_errors_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert_eq!(counted, Some(8.0), "{metrics}");
        // Each connection's task is allocated for its whole life: keep it small (the handshake's
        // buffers once made it 3.5 KB).
        let task_bytes = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ringcast_connection_task_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(f64::MAX);
        assert!(
            task_bytes <= 1024.0,
            "connection task is {task_bytes} bytes"
        );
    });
}

#[test]
fn protocol_violations_close_with_their_codes() {
    let server = Server::start(1, "[websocket]\nmax_message_bytes = 1024\n");
    rt().block_on(async {
        // A binary message that is not a binary publish is an error event, not a close.
        let mut c = connect(server.public).await;
        c.send_frame(Frame::binary(Payload::Owned(b"\x01\x02".to_vec())))
            .await;
        let ev = c.recv().await;
        assert_eq!(
            (ev["ev"].as_str(), ev["code"].as_str()),
            (Some("error"), Some("bad_request"))
        );

        let mut c = connect(server.public).await;
        c.send_frame(Frame::text(Payload::Owned(vec![b'a'; 2000])))
            .await;
        assert_eq!(c.recv_close().await.0, 1009);

        let mut c = connect(server.public).await;
        c.send_frame(Frame::text(Payload::Owned(vec![b'{', 0xff, 0xfe])))
            .await;
        assert_eq!(c.recv_close().await.0, 1007);

        let mut c = connect(server.public).await;
        c.send_frame(Frame::new(
            true,
            OpCode::Close,
            None,
            Payload::Owned(vec![0x03, 0xe8, b'b', b'y', b'e']),
        ))
        .await;
        assert_eq!(c.recv_close().await, (1000, String::new()));
    });
}

#[test]
fn handshake_refusals_have_statuses_and_reasons() {
    let server = Server::start(1, "");
    rt().block_on(async {
        let (_, head) = raw_upgrade(server.public, "/nope", "").await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let (_, head) = raw_upgrade(server.public, "/echo", "").await;
        assert!(head.starts_with("HTTP/1.1 404"), "echo is off by default: {head}");
        let mut s = tokio::net::TcpStream::connect(server.public).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut s,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write");
        let head = common::read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
        let mut s = tokio::net::TcpStream::connect(server.public).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let head = common::read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 426"), "plain GET: {head}");
        let mut s = tokio::net::TcpStream::connect(server.public).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut s,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
        )
        .await
        .expect("write");
        let head = common::read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 400"), "bad key: {head}");
    });
}

#[test]
fn handshake_timeout_answers_408() {
    let server = Server::start(1, "[websocket]\nhandshake_timeout_ms = 300\n");
    rt().block_on(async {
        let mut s = tokio::net::TcpStream::connect(server.public)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /ws HTTP/1.1\r\n")
            .await
            .expect("write");
        let head = tokio::time::timeout(Duration::from_secs(3), common::read_head(&mut s))
            .await
            .expect("answered before 3 s");
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    });
}

#[test]
fn heartbeat_timeout_closes_a_silent_client() {
    let server = Server::start(
        1,
        "[websocket]\nheartbeat_interval_ms = 200\nheartbeat_timeout_ms = 300\n",
    );
    rt().block_on(async {
        // A client that reads but never answers pings.
        let (stream, head) = raw_upgrade(server.public, "/ws", "").await;
        assert!(head.starts_with("HTTP/1.1 101"));
        let mut ws =
            fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets::Role::Client);
        ws.set_auto_pong(false);
        ws.set_auto_close(false);
        let start = std::time::Instant::now();
        let mut saw_ping = false;
        let code = loop {
            let f = tokio::time::timeout(Duration::from_secs(5), ws.read_frame())
                .await
                .expect("frames keep coming")
                .expect("read");
            match f.opcode {
                OpCode::Ping => saw_ping = true,
                OpCode::Close => break u16::from_be_bytes([f.payload[0], f.payload[1]]),
                _ => {}
            }
        };
        assert!(saw_ping);
        assert_eq!(code, 4005);
        assert!(start.elapsed() < Duration::from_secs(3));

        // A client that answers pings stays.
        let mut c = connect(server.public).await;
        assert!(
            c.is_quiet(Duration::from_millis(1500)).await,
            "a live client must not be closed"
        );
        c.send(json!({"op": "ping", "id": 1})).await;
        assert_eq!(c.recv().await["ev"], "pong");
    });
}

#[test]
fn slow_consumer_is_closed_with_4008_and_others_keep_flowing() {
    let server = Server::start(
        2,
        "[websocket]\noutbound_high_water_bytes = 65536\nmax_message_bytes = 65536\n[api]\nkey = \"k\"\n",
    );
    rt().block_on(async {
        // The slow one subscribes, then stops reading.
        let (slow_stream, head) = raw_upgrade(server.public, "/ws", "").await;
        assert!(head.starts_with("HTTP/1.1 101"));
        let mut slow =
            fastwebsockets::WebSocket::after_handshake(slow_stream, fastwebsockets::Role::Client);
        slow.write_frame(Frame::text(Payload::Owned(
            json!({"op":"subscribe","id":1,"room":"feed"})
                .to_string()
                .into_bytes(),
        )))
        .await
        .expect("subscribe");
        let mut fast = connect(server.public).await;
        fast.subscribe(1, "feed", None).await;
        let payload = "x".repeat(8000);
        let body = json!({"room": "feed", "data": payload}).to_string();
        let admin = server.admin;
        // 600 × 8 KB = 4.8 MB: far past what the kernel buffers plus 64 KiB can hold.
        let mut received = 0;
        for i in 0..600 {
            let b = body.clone();
            let (status, resp) = tokio::task::spawn_blocking(move || {
                http(
                    admin,
                    "POST",
                    "/api/publish",
                    &[
                        ("Authorization", "Bearer k"),
                        ("Content-Type", "application/json"),
                    ],
                    &b,
                )
            })
            .await
            .expect("api");
            assert_eq!(status, 200, "{resp}");
            let ev = fast.recv().await;
            assert_eq!(ev["offset"], i + 1);
            received += 1;
        }
        assert_eq!(received, 600, "the fast client got everything");
        let (_, metrics) = http(server.admin, "GET", "/metrics", &[], "");
        let closes: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ringcast_slow_consumer_closes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(closes >= 1.0, "no slow-consumer close counted:\n{metrics}");
        // Reading now, the slow client finds the close frame after what was already in flight.
        let code = loop {
            let f = tokio::time::timeout(Duration::from_secs(10), slow.read_frame())
                .await
                .expect("frames")
                .expect("read");
            if f.opcode == OpCode::Close {
                break u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        };
        assert_eq!(code, 4008);
    });
}

#[test]
fn api_publish_needs_the_key() {
    let server = Server::start(2, "[api]\nkey = \"secret\"\n");
    rt().block_on(async {
        let mut c = connect(server.public).await;
        c.subscribe(1, "news", None).await;
        let admin = server.admin;
        let (status, body) = tokio::task::spawn_blocking(move || {
            http(
                admin,
                "POST",
                "/api/publish",
                &[("Authorization", "Bearer wrong")],
                r#"{"room":"news","data":1}"#,
            )
        })
        .await
        .expect("api");
        assert_eq!(status, 401, "{body}");
        let (status, body) = tokio::task::spawn_blocking(move || {
            http(
                admin,
                "POST",
                "/api/publish",
                &[("Authorization", "Bearer secret")],
                r#"{"room":"news","data":{"h":"hi"}}"#,
            )
        })
        .await
        .expect("api");
        assert_eq!(status, 200, "{body}");
        let ack: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(ack["offset"], 1);
        let ev = c.recv().await;
        assert_eq!(
            (ev["ev"].as_str(), ev["data"]["h"].as_str()),
            (Some("msg"), Some("hi"))
        );
        let (status, _) = http(
            admin,
            "POST",
            "/api/publish",
            &[("Authorization", "Bearer secret")],
            r#"{"room":"bad room","data":1}"#,
        );
        assert_eq!(status, 400);
        assert_eq!(http(admin, "GET", "/healthz", &[], "").0, 200);
        assert_eq!(http(admin, "GET", "/readyz", &[], "").0, 200);
        assert_eq!(http(admin, "GET", "/nope", &[], "").0, 404);
    });
}

#[test]
fn graceful_shutdown_closes_with_1001_and_exits_0() {
    let mut server = Server::start(
        2,
        "[shutdown]\ndrain_ms = 500\nreconnect_hint_max_ms = 2000\n[api]\nkey = \"k\"\n",
    );
    rt().block_on(async {
        let mut clients = Vec::new();
        for _ in 0..8 {
            let mut c = connect(server.public).await;
            c.subscribe(1, "bye", None).await;
            clients.push(c);
        }
        server.sigterm();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let admin = server.admin;
        let (status, _) =
            tokio::task::spawn_blocking(move || http(admin, "GET", "/readyz", &[], ""))
                .await
                .expect("readyz");
        assert_eq!(status, 503, "readyz fails while draining");
        for c in &mut clients {
            let (code, reason) = c.recv_close().await;
            assert_eq!(code, 1001);
            let hint: Value = serde_json::from_str(&reason).expect("reason is JSON");
            assert!(
                hint["reconnect_after_ms"]
                    .as_u64()
                    .is_some_and(|ms| ms <= 2000),
                "{reason}"
            );
        }
    });
    let status = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn echo_endpoint_echoes_when_enabled() {
    let server = Server::start(1, "[websocket]\necho_endpoint = true\n");
    rt().block_on(async {
        let (stream, head) = raw_upgrade(server.public, "/echo", "").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut ws = fastwebsockets::FragmentCollector::new(
            fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets::Role::Client),
        );
        ws.write_frame(Frame::binary(Payload::Owned(vec![1, 2, 3])))
            .await
            .expect("send");
        let f = ws.read_frame().await.expect("echo");
        assert_eq!(
            (f.opcode, f.payload.to_vec()),
            (OpCode::Binary, vec![1, 2, 3])
        );
    });
}

#[test]
fn pipelined_first_frame_after_the_upgrade_is_processed() {
    let server = Server::start(1, "");
    rt().block_on(async {
        // The upgrade request and the first op arrive in one write.
        let mut stream = tokio::net::TcpStream::connect(server.public).await.expect("connect");
        let mut frame = bytes::BytesMut::new();
        proto_codec::ws::frame::write_masked_frame(
            &mut frame,
            true,
            false,
            proto_codec::ws::OpCode::Text,
            [1, 2, 3, 4],
            br#"{"op":"ping","id":77}"#,
        );
        let mut req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
        req.extend_from_slice(&frame);
        tokio::io::AsyncWriteExt::write_all(&mut stream, &req).await.expect("write");
        let head = common::read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"));
        let ws = fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets::Role::Client);
        let mut c = fastwebsockets::FragmentCollector::new(ws);
        let mut got = Vec::new();
        for _ in 0..2 {
            let f = c.read_frame().await.expect("frame");
            got.push(serde_json::from_slice::<Value>(&f.payload).expect("json"));
        }
        assert_eq!(got[0]["ev"], "hello");
        assert_eq!(got[1], json!({"ev": "pong", "id": 77}));
    });
}

#[test]
fn nothing_follows_our_close_frame() {
    // The server closes a silent client (heartbeat) while its room keeps getting messages: after
    // the close frame, while it waits for the client's close, nothing else may be written.
    use proto_codec::ws::{Decoder, DecoderConfig, Message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(
        1,
        "[websocket]\nheartbeat_interval_ms = 200\nheartbeat_timeout_ms = 300\n",
    );
    rt().block_on(async {
        let (mut stream, head) = raw_upgrade(server.public, "/ws", "").await;
        assert!(head.starts_with("HTTP/1.1 101"));
        let mut out = bytes::BytesMut::new();
        let op = br#"{"op":"subscribe","id":1,"room":"busy"}"#;
        proto_codec::ws::frame::write_masked_frame(
            &mut out,
            true,
            false,
            proto_codec::ws::OpCode::Text,
            [7, 7, 7, 7],
            op,
        );
        stream.write_all(&out).await.expect("subscribe");
        let addr = server.public;
        let publisher = tokio::spawn(async move {
            let mut p = connect(addr).await;
            for i in 0..400u64 {
                p.send(json!({"op": "publish", "room": "busy", "data": i}))
                    .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        // Read everything until the server ends the connection (close timeout after 4005).
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut all))
            .await
            .expect("server ended the connection")
            .expect("read");
        let mut decoder = Decoder::new(DecoderConfig::client(1 << 20));
        let mut pos = 0;
        let mut kinds = Vec::new();
        while pos < all.len() {
            let d = decoder.decode(&mut all[pos..]).expect("valid frames");
            pos += d.consumed;
            match d.message {
                Some(Message::Close(c)) => kinds.push(format!("close {:?}", c.map(|(c, _)| c.0))),
                Some(Message::Ping(_)) => kinds.push("ping".to_string()),
                Some(_) => kinds.push("frame".to_string()),
                None => break,
            }
        }
        let close_at = kinds
            .iter()
            .position(|k| k.starts_with("close"))
            .expect("a close frame");
        assert_eq!(kinds[close_at], "close Some(4005)");
        assert!(
            kinds[..close_at].iter().filter(|k| *k == "frame").count() > 10,
            "traffic flowed before the close"
        );
        assert_eq!(
            close_at,
            kinds.len() - 1,
            "{} frames after the close",
            kinds.len() - 1 - close_at
        );
        publisher.await.expect("publisher");
    });
}

#[test]
fn draining_shards_keep_serving_rooms_they_home() {
    // Four connections over two shards; each publishes, right after SIGTERM, to a room homed on
    // the shard it is NOT on. Every publish must be acked (or the connection closed first by
    // the drain, which is spread over 3 s).
    let server = Server::start(2, "[shutdown]\ndrain_ms = 3000\n");
    rt().block_on(async {
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(connect(server.public).await);
        }
        server.sigterm();
        let mut acked = 0;
        for (i, c) in clients.iter_mut().enumerate() {
            let shard: usize = c.hello["client"]
                .as_str()
                .unwrap_or("")
                .split('-')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let room = (0..100)
                .map(|n| format!("drain.{i}.{n}"))
                .find(|r| gateway::mailbox::home_shard(r, 2) != shard)
                .expect("a room homed elsewhere");
            c.send(json!({"op": "publish", "id": 1, "room": room, "data": 1}))
                .await;
            let sent = std::time::Instant::now();
            match c.next().await {
                common::Received::Event(ev) => {
                    assert_eq!(ev["ev"], "published", "{ev}");
                    acked += 1;
                }
                common::Received::Close(code, _) => {
                    assert_eq!(code, 1001);
                    assert!(
                        sent.elapsed() < Duration::from_millis(200),
                        "the ack was lost; the drain close came later"
                    );
                }
            }
        }
        assert!(acked >= 1, "no publish was acked during the drain");
    });
}

#[test]
fn raw_broadcast_endpoint_for_benchmarks() {
    let off = Server::start(1, "");
    let server = Server::start(2, "[websocket]\nraw_endpoint = true\n");
    rt().block_on(async {
        let (_, head) = raw_upgrade(off.public, "/raw/r", "").await;
        assert!(head.starts_with("HTTP/1.1 404"), "off by default: {head}");
        let mut subs = Vec::new();
        for _ in 0..4 {
            let (stream, head) = raw_upgrade(server.public, "/raw/r", "").await;
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            subs.push(fastwebsockets::WebSocket::after_handshake(
                stream,
                fastwebsockets::Role::Client,
            ));
        }
        let (stream, head) = raw_upgrade(server.public, "/raw/r?role=pub", "").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut publisher =
            fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets::Role::Client);
        // Subscriptions settle through the rooms' home shard; give them a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..3 {
            publisher
                .write_frame(Frame::text(Payload::Owned(
                    format!("tick {i}").into_bytes(),
                )))
                .await
                .expect("publish");
        }
        for s in &mut subs {
            for i in 0..3 {
                let f = tokio::time::timeout(Duration::from_secs(5), s.read_frame())
                    .await
                    .expect("frame")
                    .expect("read");
                assert_eq!(
                    (f.opcode, f.payload.to_vec()),
                    (OpCode::Text, format!("tick {i}").into_bytes())
                );
            }
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(200), publisher.read_frame())
                .await
                .is_err(),
            "a ?role=pub connection receives nothing"
        );
    });
}

#[test]
fn binary_messages_fan_out_replay_and_have_a_json_form() {
    use base64::Engine as _;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let server = Server::start(2, "");
    rt().block_on(async {
        let mut subs = Vec::new();
        for _ in 0..8 {
            let mut c = connect(server.public).await;
            c.subscribe(1, "game.1", None).await;
            subs.push(c);
        }
        let mut publisher = connect(server.public).await;
        let payload: Vec<u8> = (0..=255u8).chain([0, 0, 0xff]).collect();
        publisher.publish_binary(Some(5), "game.1", &payload).await;
        let ack = publisher.recv().await;
        assert_eq!(
            (ack["ev"].as_str(), ack["id"].as_u64()),
            (Some("published"), Some(5))
        );
        assert_eq!(ack["offset"], 1);
        let epoch = ack["epoch"].as_str().unwrap_or_default().to_string();
        // Without an id: no ack; an empty payload is a message too.
        publisher.publish_binary(None, "game.1", b"").await;
        let ack = publisher.publish(6, "game.1", json!({"json": true})).await;
        assert_eq!(ack["offset"], 3);
        for c in &mut subs {
            let m = c.recv().await;
            assert_eq!(m["binary_frame"], true, "{m}");
            assert_eq!(
                (m["offset"].as_u64(), m["bin"].as_str()),
                (Some(1), Some(b64(&payload).as_str()))
            );
            assert_eq!(m["epoch"], epoch.as_str());
            let m = c.recv().await;
            assert_eq!(
                (m["offset"].as_u64(), m["bin"].as_str()),
                (Some(2), Some(""))
            );
            let m = c.recv().await;
            assert_eq!(m["binary_frame"], Value::Null, "JSON stays text: {m}");
            assert_eq!(m["data"], json!({"json": true}));
        }
        // A resume replays the binary messages as binary frames.
        let mut late = connect(server.public).await;
        let sub = late.subscribe(1, "game.1", Some((&epoch, 0))).await;
        assert_eq!(sub["recovered"], true, "{sub}");
        let m = late.recv().await;
        assert_eq!(
            (m["binary_frame"].as_bool(), m["offset"].as_u64()),
            (Some(true), Some(1))
        );
        // `history` is JSON: binary items carry `bin`.
        late.send(json!({"op": "history", "id": 9, "room": "game.1"}))
            .await;
        let mut h = late.recv().await;
        while h["ev"] != "history" {
            h = late.recv().await;
        }
        assert_eq!(h["messages"][0]["bin"], b64(&payload).as_str(), "{h}");
        assert_eq!(h["messages"][0]["data"], Value::Null);
        assert_eq!(h["messages"][2]["data"], json!({"json": true}));
        // Long-polling answers the JSON form.
        let since = format!("game.1%7C{epoch}%3A0");
        let (status, body) = http(
            server.public,
            "GET",
            &format!("/poll?room=game.1&since={since}"),
            &[],
            "",
        );
        assert_eq!(status, 200, "{body}");
        let events: Value = serde_json::from_str(&body).expect("poll body is JSON");
        assert_eq!(events[0]["bin"], b64(&payload).as_str(), "{body}");
        assert_eq!(events[2]["data"], json!({"json": true}), "{body}");
        // A binary publish to a room the client may not use is refused like a JSON one.
        publisher.publish_binary(Some(7), "bad room", b"x").await;
        let e = publisher.recv().await;
        assert_eq!(
            (e["code"].as_str(), e["id"].as_u64()),
            (Some("bad_room"), Some(7))
        );
    });
}

/// `websocket.idle_timeout_ms`: an app connection that sends no data message is closed with
/// 4006; one that keeps sending ops stays open (pings and pongs alone do not count).
#[test]
fn a_connection_that_sends_no_op_idles_out_and_one_that_does_stays() {
    let server = Server::start(1, "[websocket]\nidle_timeout_ms = 600\n");
    rt().block_on(async {
        let mut quiet = connect(server.public).await;
        let mut busy = connect(server.public).await;
        for id in 1..=8 {
            busy.send(json!({"op": "subscribe", "id": id, "room": format!("idle.r{id}")}))
                .await;
            let ev = busy.recv().await;
            assert_eq!(ev["ev"], "subscribed", "{ev}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // 1.6 s have passed: the quiet one is gone, the busy one answers still.
        let (code, reason) = tokio::time::timeout(Duration::from_secs(3), quiet.recv_close())
            .await
            .expect("the quiet connection is closed");
        assert_eq!((code, reason.as_str()), (4006, "idle timeout"));
        busy.send(json!({"op": "subscribe", "id": 9, "room": "idle.r9"}))
            .await;
        assert_eq!(busy.recv().await["ev"], "subscribed");
    });
}
