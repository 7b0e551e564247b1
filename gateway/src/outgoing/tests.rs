use std::rc::Rc;
use std::time::Instant;

use proto_codec::protocol::{binary_payload, stored_binary, ErrorCode};

use super::*;
use crate::auth::Principal;
use crate::endpoint::Endpoint;
use crate::endpoint::{app::App, poll::Poll, pusher::Pusher, sse::Sse, yjs::Yjs};

fn conn(endpoint: impl Endpoint) -> ConnShared {
    ConnShared::new(
        1,
        endpoint.profile(),
        false,
        1 << 20,
        Instant::now(),
        Rc::new(Principal::anonymous()),
    )
}

fn pusher_conn(socket_id: &str) -> ConnShared {
    let c = conn(Pusher::new(Ok(0)));
    *c.pusher.borrow_mut() = Some(Box::new(crate::pusher::PusherConn {
        app: 0,
        socket_id: socket_id.into(),
        user: None,
        presence_users: Default::default(),
    }));
    c
}

fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap()
}

/// The JSON of a Pusher frame (a server text frame).
fn pusher_json(frame: &Bytes) -> serde_json::Value {
    let payload = proto_codec::sse::text_payload(frame).expect("a text frame");
    serde_json::from_slice(payload).unwrap()
}

fn msg<'a>(room: &'a str, data: &'a Bytes) -> MsgRef<'a> {
    MsgRef {
        room,
        epoch: "e1",
        offset: 7,
        data,
    }
}

#[test]
fn each_form_of_a_room_message_is_built_from_its_fields() {
    let data = Bytes::from_static(br#"{"px":1}"#);
    let m = msg("prices.BTC", &data);
    let shared = room_message_frame("prices.BTC", "e1", 7, &data).into_frame();
    let mut forms = RoomForms::new(m, Some(shared.clone()), None);

    assert_eq!(forms.for_conn(&conn(App)), Some(&shared));
    let json = forms.for_conn(&conn(Poll)).cloned().unwrap();
    assert_eq!(
        text(&json),
        r#"{"ev":"msg","room":"prices.BTC","epoch":"e1","offset":7,"data":{"px":1}}"#
    );
    let sse = forms.for_conn(&conn(Sse::default())).cloned().unwrap();
    assert_eq!(
        text(&sse),
        format!("event: msg\nid: prices.BTC|e1:7\ndata: {}\n\n", text(&json))
    );
    // A JSON message has no y-protocols form, and outside a Pusher room no Pusher form.
    let yjs = conn(Yjs {
        room: "prices.BTC".into(),
    });
    assert_eq!(forms.for_conn(&yjs), None);
    assert_eq!(forms.for_conn(&pusher_conn("1.1")), None);

    // A replayed message (no shared frame) gets the same WebSocket frame, built on first use.
    let mut replay = RoomForms::new(m, None, None);
    assert_eq!(replay.for_conn(&conn(App)), Some(&shared));
}

#[test]
fn a_binary_message_is_a_document_update_for_y_websocket_and_base64_for_json() {
    let data = stored_binary(b"\x01\x02\x03");
    let m = msg("docs.a", &data);
    let mut forms = RoomForms::new(m, None, None);
    let yjs = conn(Yjs {
        room: "docs.a".into(),
    });
    let update = forms.for_conn(&yjs).cloned().unwrap();
    assert_eq!(update, yjs_update_frame(binary_payload(&data).unwrap()));
    let json = forms.for_conn(&conn(Poll)).cloned().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["bin"], "AQID");
    assert_eq!(forms.for_conn(&pusher_conn("1.1")), None, "no Pusher form");
    assert_eq!(forms.for_conn(&conn(App)).unwrap()[0], 0x82);
}

#[test]
fn a_pusher_rooms_message_reaches_every_pusher_client_but_the_excluded_socket() {
    let stored =
        Bytes::from_static(br#"{"event":"e","channel":"c","data":"{\"a\":1}","socket_id":"1.2"}"#);
    let m = msg("pusher.app1/c", &stored);
    let mut forms = RoomForms::new(m, None, None);
    let got = forms.for_conn(&pusher_conn("1.1")).cloned().unwrap();
    let v = pusher_json(&got);
    assert_eq!(
        (v["event"].as_str(), v["channel"].as_str()),
        (Some("e"), Some("c"))
    );
    assert!(v.get("socket_id").is_none(), "{v}");
    assert_eq!(
        forms.for_conn(&pusher_conn("1.2")),
        None,
        "the sender's socket"
    );
}

#[test]
fn live_events_reach_each_form_and_a_gap_closes_a_document_client() {
    let room: RoomName = "pusher.app1/presence-x".into();
    let member = Member {
        client: "n-0-1".into(),
        user: Some("u1".into()),
        info: None,
    };
    let join = LiveMsg::new(room.clone(), LiveEvent::Join(member));
    let mut forms = LiveForms::new(&join);
    let Rendered::Send(ws) = forms.for_conn(&conn(App)) else {
        panic!("app clients get joins")
    };
    let v: serde_json::Value =
        serde_json::from_slice(proto_codec::sse::text_payload(&ws).unwrap()).unwrap();
    assert_eq!(
        (v["ev"].as_str(), v["member"]["user"].as_str()),
        (Some("join"), Some("u1"))
    );
    let Rendered::Send(sse) = forms.for_conn(&conn(Sse::default())) else {
        panic!("SSE clients get joins")
    };
    assert!(text(&sse).starts_with("event: join\ndata: {\"ev\":\"join\""));
    let Rendered::Send(p) = forms.for_conn(&pusher_conn("1.1")) else {
        panic!("Pusher clients get member_added")
    };
    assert_eq!(pusher_json(&p)["event"], "pusher_internal:member_added");
    let yjs = conn(Yjs { room: room.clone() });
    assert_eq!(forms.for_conn(&yjs), Rendered::Skip);

    let gap = LiveMsg::new(
        room.clone(),
        LiveEvent::Gap {
            epoch: "e".into(),
            from: 3,
            to: 9,
        },
    );
    let mut forms = LiveForms::new(&gap);
    assert!(
        matches!(forms.for_conn(&yjs), Rendered::Close(c) if c.code == CloseCode::TRY_AGAIN_LATER)
    );
    assert_eq!(forms.for_conn(&pusher_conn("1.1")), Rendered::Skip);

    let awareness = LiveMsg::new(room, LiveEvent::Awareness(Bytes::from_static(b"\x01\x00")));
    let mut forms = LiveForms::new(&awareness);
    assert_eq!(
        forms.for_conn(&yjs),
        Rendered::Send(encode_frame(OpCode::Binary, false, b"\x01\x00"))
    );
    assert_eq!(forms.for_conn(&conn(App)), Rendered::Skip);
    assert_eq!(forms.for_conn(&conn(Sse::default())), Rendered::Skip);
}

#[test]
fn an_ephemeral_events_frame_is_the_app_event_and_its_json_is_shared() {
    let data = Bytes::from_static(br#"{"typing":true}"#);
    let live = LiveMsg::new(
        "chat.1".into(),
        LiveEvent::Event {
            data: data.clone(),
            source: Source::Client,
        },
    );
    let raw = RawValue::from_string(text(&data).to_string()).unwrap();
    let expected = ServerEvent::Event {
        room: "chat.1".into(),
        data: &raw,
    };
    let mut forms = LiveForms::new(&live);
    assert_eq!(
        forms.for_conn(&conn(App)),
        Rendered::Send(expected.to_frame())
    );
    assert_eq!(
        forms.for_conn(&conn(Poll)),
        Rendered::Send(Bytes::from(expected.to_json()))
    );
}

#[test]
fn live_events_cross_nodes_typed_with_their_source() {
    let room: RoomName = "chat.1".into();
    let events = [
        LiveEvent::Event {
            data: Bytes::from_static(br#"{"a":[1,2]}"#),
            source: Source::Pusher,
        },
        LiveEvent::Join(Member {
            client: "c".into(),
            user: None,
            info: Some(RawValue::from_string(r#"{"n":1}"#.into()).unwrap()),
        }),
        LiveEvent::Leave(Member {
            client: "c".into(),
            user: Some("u".into()),
            info: None,
        }),
    ];
    for event in events {
        let live = LiveMsg::new(room.clone(), event);
        let Some(broker_bridge::LiveEvent::App(json)) = live.to_node() else {
            panic!("an app event")
        };
        let back = LiveMsg::app_from_node(&json).expect("parses");
        let again = LiveMsg::new(room.clone(), back);
        assert_eq!(again.ws, live.ws, "{}", text(&json));
        if let (LiveEvent::Event { source: a, .. }, LiveEvent::Event { source: b, .. }) =
            (&live.event, &again.event)
        {
            assert_eq!(a, b);
        }
    }
    // A node from before `src` sent the app event's JSON: read as a client's.
    let old = br#"{"ev":"event","room":"chat.1","data":{"x":1}}"#;
    assert!(matches!(
        LiveMsg::app_from_node(old),
        Some(LiveEvent::Event {
            source: Source::Client,
            ..
        })
    ));
    for bad in [
        &b"{"[..],
        b"[]",
        br#"{"ev":"join"}"#,
        br#"{"ev":"msg","data":1}"#,
    ] {
        assert!(LiveMsg::app_from_node(bad).is_none());
    }
    // A gap is each node's own; awareness keeps its kind.
    let gap = LiveMsg::new(
        room.clone(),
        LiveEvent::Gap {
            epoch: "e".into(),
            from: 1,
            to: 2,
        },
    );
    assert!(gap.to_node().is_none());
    let aw = LiveMsg::new(room, LiveEvent::Awareness(Bytes::from_static(b"\x01")));
    assert_eq!(
        aw.to_node(),
        Some(broker_bridge::LiveEvent::Awareness(Bytes::from_static(
            b"\x01"
        )))
    );
}

#[test]
fn answers_take_each_endpoints_form() {
    let subscribed = |recovered| {
        Outgoing::Event(ServerEvent::Subscribed {
            id: Some(1),
            room: "pusher.app1/c".into(),
            epoch: "e".into(),
            offset: 3,
            recovered,
        })
    };
    // A long poll answers the messages after a recovered `since`, not its `subscribed`.
    let poll = conn(Poll);
    assert_eq!(subscribed(true).render(&poll), Rendered::Skip);
    assert!(matches!(subscribed(false).render(&poll), Rendered::Send(_)));
    let Rendered::Send(sse) = subscribed(false).render(&conn(Sse::default())) else {
        panic!()
    };
    assert!(text(&sse).starts_with("event: subscribed\ndata: {\"ev\":\"subscribed\""));
    let Rendered::Send(p) = subscribed(false).render(&pusher_conn("1.1")) else {
        panic!()
    };
    assert_eq!(
        pusher_json(&p)["event"],
        "pusher_internal:subscription_succeeded"
    );

    // y-websocket has no error message: an error is the close that says why.
    let yjs = conn(Yjs { room: "d.a".into() });
    let refused = Outgoing::error(None, ErrorCode::TooLarge, "update too big");
    let Rendered::Close(close) = refused.render(&yjs) else {
        panic!()
    };
    assert_eq!(close.code, CloseCode::MESSAGE_TOO_BIG);
    assert!(close.reason.contains("update too big"));
    assert_eq!(subscribed(false).render(&yjs), Rendered::Skip);

    // A y-protocols answer reaches only a y-websocket connection.
    let sync = Outgoing::Yjs(Bytes::from_static(b"\x82\x01\x00"));
    assert!(matches!(sync.render(&yjs), Rendered::Send(_)));
    assert_eq!(sync.render(&conn(App)), Rendered::Skip);

    // A replayed message is rendered like a live one: with its position as the SSE id.
    let replayed = Outgoing::Replayed(Replayed {
        room: "chat.1".into(),
        epoch: "e".into(),
        offset: 12,
        data: Bytes::from_static(b"1"),
    });
    let Rendered::Send(sse) = replayed.render(&conn(Sse::default())) else {
        panic!()
    };
    assert!(
        text(&sse).starts_with("event: msg\nid: chat.1|e:12\n"),
        "{}",
        text(&sse)
    );
}
