use super::*;
use std::time::Duration;

fn msg(room: &str, offset: u64, key: Option<u64>, policy: SlowConsumer) -> Rc<RoomMsg> {
    Rc::new(RoomMsg {
        room: room.into(),
        epoch: "e".into(),
        offset,
        data: Bytes::new(),
        published_at: Instant::now(),
        policy,
        key,
        max_age: None,
        namespace: 0,
    })
}

fn frame(tag: &str, len: usize) -> Bytes {
    let mut v = tag.as_bytes().to_vec();
    v.resize(len, b'.');
    Bytes::from(v)
}

/// What the client would read: the tags of room frames and the gaps.
fn drain(o: &mut Outbox) -> Vec<String> {
    let mut out = Vec::new();
    for e in &o.entries {
        match &e.kind {
            Kind::Gap(g) => out.push(format!("gap {}:{}-{}", g.room, g.from, g.to)),
            _ => out.push(
                String::from_utf8_lossy(&e.frame)
                    .trim_end_matches('.')
                    .to_string(),
            ),
        }
    }
    out
}

#[test]
fn bounded_and_partial_writes() {
    let mut o = Outbox::new(10, Form::Ws);
    assert_eq!(o.push(Bytes::from_static(b"abcdef")), Push::QueuedFirst);
    assert_eq!(o.push(Bytes::from_static(b"ghij")), Push::Queued);
    assert_eq!(o.push(Bytes::from_static(b"k")), Push::Overflow);
    assert_eq!(o.push_control(Bytes::from_static(b"k")), Push::Queued);
    {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        assert_eq!(o.slices(&mut slices).0, 3);
    }
    assert_eq!(o.advance(8), 1);
    assert_eq!(o.queued_bytes(), 3);
    {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        assert_eq!(o.slices(&mut slices).0, 2);
        assert_eq!(&*slices[0], b"ij");
    }
    o.discard_unstarted();
    assert_eq!(o.queued_bytes(), 2, "the partly written frame stays");
    assert_eq!(o.advance(2), 1);
    assert!(o.is_empty());
}

#[test]
fn one_huge_frame_is_accepted_into_an_empty_queue() {
    let mut o = Outbox::new(4, Form::Ws);
    assert_eq!(o.push(Bytes::from(vec![0u8; 100])), Push::QueuedFirst);
}

#[test]
fn disconnect_policy_overflows_after_live_frames_are_dropped() {
    let mut o = Outbox::new(100, Form::Ws);
    o.push_room(frame("r1", 40), msg("r", 1, None, SlowConsumer::Disconnect));
    assert_eq!(o.push_live(frame("typing", 40)), Push::Queued);
    assert_eq!(o.push_live(frame("typing2", 40)), Push::Dropped);
    // A room message makes room by dropping the live frame first.
    assert_eq!(
        o.push_room(frame("r2", 40), msg("r", 2, None, SlowConsumer::Disconnect)),
        Push::Queued
    );
    assert_eq!(drain(&mut o), ["r1", "r2"]);
    assert_eq!(
        o.push_room(frame("r3", 40), msg("r", 3, None, SlowConsumer::Disconnect)),
        Push::Overflow
    );
    assert_eq!(o.take_actions().live_dropped, 2);
}

#[test]
fn drop_oldest_leaves_merged_gaps_in_order() {
    let mut o = Outbox::new(300, Form::Ws);
    for i in 1..=3 {
        o.push_room(
            frame(&format!("r{i}"), 100),
            msg("r", i, None, SlowConsumer::DropOldest),
        );
    }
    // The gap marker takes bytes too, so making room for r4 takes r1 and r2.
    o.push_room(
        frame("r4", 100),
        msg("r", 4, None, SlowConsumer::DropOldest),
    );
    assert_eq!(drain(&mut o), ["gap r:1-2", "r3", "r4"]);
    // Later drops merge into the same marker.
    o.push_room(
        frame("r5", 100),
        msg("r", 5, None, SlowConsumer::DropOldest),
    );
    o.push_room(
        frame("r6", 100),
        msg("r", 6, None, SlowConsumer::DropOldest),
    );
    assert_eq!(drain(&mut o), ["gap r:1-4", "r5", "r6"]);
    assert_eq!(o.take_actions().dropped_oldest, 4);
    assert!(
        o.queued_bytes() <= 300 + 100,
        "bounded: {}",
        o.queued_bytes()
    );
}

#[test]
fn partly_written_front_is_never_touched() {
    let mut o = Outbox::new(200, Form::Ws);
    o.push_room(
        frame("r1", 100),
        msg("r", 1, None, SlowConsumer::DropOldest),
    );
    o.push_room(
        frame("r2", 100),
        msg("r", 2, None, SlowConsumer::DropOldest),
    );
    o.advance(10);
    o.push_room(
        frame("r3", 100),
        msg("r", 3, None, SlowConsumer::DropOldest),
    );
    assert_eq!(drain(&mut o), ["r1", "gap r:2-2", "r3"]);
}

#[test]
fn conflate_keeps_the_newest_per_key_and_order_of_others() {
    let mut o = Outbox::new(250, Form::Ws);
    let c = SlowConsumer::Conflate;
    o.push_room(frame("a1", 100), msg("p", 1, Some(1), c));
    o.push_room(frame("b2", 100), msg("p", 2, Some(2), c));
    // Past the mark: a3 replaces a1.
    o.push_room(frame("a3", 100), msg("p", 3, Some(1), c));
    assert_eq!(drain(&mut o), ["gap p:1-1", "b2", "a3"]);
    o.push_room(frame("b4", 100), msg("p", 4, Some(2), c));
    assert_eq!(drain(&mut o), ["gap p:1-2", "a3", "b4"]);
    o.push_room(frame("a5", 100), msg("p", 5, Some(1), c));
    assert_eq!(drain(&mut o), ["gap p:1-3", "b4", "a5"]);
    // Another room with the same key is not conflated with this one.
    o.push_room(frame("q6", 100), msg("q", 6, Some(1), c));
    assert_eq!(drain(&mut o), ["gap p:1-3", "b4", "a5", "q6"]);
    assert_eq!(o.take_actions().conflated, 3);
}

#[test]
fn conflate_converges_and_stays_bounded_under_a_long_flood() {
    // 20 keys, 10,000 ticks, nothing written: the queue holds at most one message per key.
    let mut o = Outbox::new(2_000, Form::Ws);
    for i in 0..10_000u64 {
        let key = i % 20;
        let push = o.push_room(
            frame(&format!("k{key}v{i}"), 100),
            msg("p", i + 1, Some(key), SlowConsumer::Conflate),
        );
        assert_ne!(push, Push::Overflow);
    }
    let rooms: Vec<String> = drain(&mut o)
        .into_iter()
        .filter(|s| !s.starts_with("gap"))
        .collect();
    assert_eq!(rooms.len(), 20);
    for key in 0..20u64 {
        let newest = (0..10_000u64).rev().find(|i| i % 20 == key).unwrap();
        assert!(rooms.contains(&format!("k{key}v{newest}")), "{rooms:?}");
    }
    assert!(
        o.queued_bytes() < 2 * 2_000 + 20 * 120,
        "{}",
        o.queued_bytes()
    );
}

#[test]
fn conflate_without_a_key_disconnects_at_the_hard_limit() {
    let mut o = Outbox::new(200, Form::Ws);
    let mut overflowed = false;
    for i in 0..10 {
        if o.push_room(frame("x", 100), msg("p", i, None, SlowConsumer::Conflate)) == Push::Overflow
        {
            overflowed = true;
            break;
        }
    }
    assert!(overflowed);
    assert!(o.queued_bytes() <= 200 * CONFLATE_HARD_LIMIT);
}

#[test]
fn stale_messages_are_dropped_with_a_gap() {
    let mut o = Outbox::new(10_000, Form::Ws);
    let old = Instant::now() - Duration::from_millis(500);
    let aged = |offset, at| {
        Rc::new(RoomMsg {
            room: "p".into(),
            epoch: "e".into(),
            offset,
            data: Bytes::new(),
            published_at: at,
            policy: SlowConsumer::Disconnect,
            key: None,
            max_age: Some(Duration::from_millis(100)),
            namespace: 0,
        })
    };
    o.push_room(frame("old1", 10), aged(1, old));
    o.push_room(frame("old2", 10), aged(2, old));
    o.push_room(frame("new3", 10), aged(3, Instant::now()));
    o.drop_stale(Instant::now());
    assert_eq!(drain(&mut o), ["gap p:1-2", "new3"]);
    assert_eq!(o.take_actions().expired, 2);
    // Counting is balanced: once the rest is written, nothing is aged.
    let n = o.queued_bytes();
    o.advance(n);
    assert_eq!(o.aged, 0);
}

#[test]
fn discarding_keeps_the_aged_count_of_a_partly_written_front() {
    let mut o = Outbox::new(10_000, Form::Ws);
    let aged = Rc::new(RoomMsg {
        room: "p".into(),
        epoch: "e".into(),
        offset: 1,
        data: Bytes::new(),
        published_at: Instant::now(),
        policy: SlowConsumer::Disconnect,
        key: None,
        max_age: Some(Duration::from_secs(60)),
        namespace: 0,
    });
    o.push_room(frame("a1", 10), aged.clone());
    o.push_room(frame("a2", 10), aged);
    o.advance(3);
    o.discard_unstarted();
    assert_eq!(o.aged, 1);
    // Writing the rest of the front frame brings it to zero without underflow.
    o.advance(7);
    assert_eq!(o.aged, 0);
    assert!(o.is_empty());
}

#[test]
fn live_count_is_kept_and_a_full_queue_is_not_rescanned() {
    let mut o = Outbox::new(1000, Form::Ws);
    o.push_live(frame("l1", 100));
    o.push_room(
        frame("r1", 100),
        msg("r", 1, None, SlowConsumer::DropOldest),
    );
    assert_eq!(o.live, 1);
    o.advance(100);
    assert_eq!(o.live, 0, "a written live frame leaves the count");
    // Thousands of pushes into a full drop-oldest queue stay fast (no scan per push).
    let started = Instant::now();
    for i in 2..20_000u64 {
        o.push_room(frame("r", 100), msg("r", i, None, SlowConsumer::DropOldest));
    }
    assert!(o.queued_bytes() <= 1000 + 200, "{}", o.queued_bytes());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn conflating_out_of_key_order_leaves_no_touching_gaps() {
    // Keys in a shuffled order: a gap merged into the marker before it may then touch the one
    // after it (the review saw `gap(463-463) gap(464-465) gap(466-468)`); they are one.
    let mut o = Outbox::new(1_000, Form::Ws);
    let mut rng = 7u64;
    for i in 0..5_000u64 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = (rng >> 33) % 13;
        o.push_room(
            frame(&format!("k{key}"), 100),
            msg("p", i + 1, Some(key), SlowConsumer::Conflate),
        );
    }
    let mut last: Option<u64> = None;
    for e in &o.entries {
        match &e.kind {
            Kind::Gap(g) => {
                assert!(
                    last.is_none_or(|to| to + 1 != g.from),
                    "touching gaps at {}",
                    g.from
                );
                last = Some(g.to);
            }
            _ => last = None,
        }
    }
}

#[test]
fn pongs_wait_in_a_bounded_number_and_then_the_newest_answers_the_latest_ping() {
    // Finding 4 of issue 19: a ping flood from a client that never reads.
    let mut o = Outbox::new(1_000, Form::Ws);
    for i in 0..MAX_PENDING_PONGS {
        o.push_pong(frame(&format!("p{i}"), 10));
    }
    o.push_room(frame("m", 100), msg("r", 1, None, SlowConsumer::Disconnect));
    for i in MAX_PENDING_PONGS..100_000 {
        o.push_pong(frame(&format!("p{i}"), 10));
    }
    let got = drain(&mut o);
    assert_eq!(got.len(), MAX_PENDING_PONGS + 1);
    assert_eq!(
        got[MAX_PENDING_PONGS - 1],
        "p99999",
        "the newest answers the latest ping"
    );
    assert_eq!(got[MAX_PENDING_PONGS], "m");
    assert_eq!(o.queued_bytes(), MAX_PENDING_PONGS * 10 + 100);
    // Written pongs free their places.
    let written = o.queued_bytes();
    o.advance(written);
    o.push_pong(frame("q", 10));
    assert_eq!(drain(&mut o), ["q"]);
}

#[test]
fn gap_notices_are_written_in_the_connections_form() {
    // Before typed outgoing values, every queue wrote its gap notice as a WebSocket frame: an
    // SSE stream got frame bytes, a Pusher client an engine event.
    let fill = |form| {
        let mut o = Outbox::new(200, form);
        for i in 1..=3 {
            o.push_room(
                frame(&format!("m{i}"), 100),
                msg("r", i, None, SlowConsumer::DropOldest),
            );
        }
        o
    };
    let sse = fill(Form::Sse);
    let gaps: Vec<&Bytes> = sse
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Gap(_)))
        .map(|e| &e.frame)
        .collect();
    assert_eq!(gaps.len(), 1);
    let text = std::str::from_utf8(gaps[0]).unwrap();
    assert!(
        text.starts_with("event: gap\ndata: {\"ev\":\"gap\",\"room\":\"r\""),
        "{text:?}"
    );
    assert!(text.ends_with("\n\n"));

    let json = fill(Form::Json);
    let gap = json
        .entries
        .iter()
        .find(|e| matches!(e.kind, Kind::Gap(_)))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&gap.frame).unwrap();
    assert_eq!(
        (v["ev"].as_str(), v["from"].as_u64()),
        (Some("gap"), Some(1))
    );

    // Pusher has no gap notice: the message is only dropped.
    let mut pusher = fill(Form::Pusher);
    assert_eq!(drain(&mut pusher), ["m2", "m3"]);
    assert_eq!(pusher.queued_bytes(), 200);
}

#[test]
fn a_document_clients_queue_never_drops_or_expires_an_update() {
    // A y-websocket client has no gap notice: skipping an update would leave its document
    // behind for good. Whatever the namespace's policy, a full queue closes it instead.
    for policy in [SlowConsumer::DropOldest, SlowConsumer::Conflate] {
        let mut o = Outbox::new(200, Form::Yjs);
        assert_eq!(
            o.push_room(frame("m1", 150), msg("r", 1, Some(0), policy)),
            Push::QueuedFirst
        );
        assert_eq!(
            o.push_room(frame("m2", 150), msg("r", 2, Some(0), policy)),
            Push::Overflow
        );
        assert_eq!(drain(&mut o), ["m1"]);
    }
    let mut o = Outbox::new(10_000, Form::Yjs);
    let old = Rc::new(RoomMsg {
        published_at: Instant::now() - Duration::from_secs(5),
        max_age: Some(Duration::from_millis(10)),
        ..Rc::try_unwrap(msg("r", 1, None, SlowConsumer::DropOldest)).unwrap()
    });
    o.push_room(frame("m1", 10), old);
    o.drop_stale(Instant::now());
    assert_eq!(drain(&mut o), ["m1"]);
    o.advance(10);
    assert!(o.is_empty());
}

#[test]
fn an_empty_outbox_gives_its_allocation_back_and_a_queued_one_keeps_its_frames() {
    let mut o = Outbox::new(1 << 20, Form::Ws);
    assert!(matches!(o.push(frame("a", 10)), Push::QueuedFirst));
    o.release_if_empty();
    assert_eq!(
        drain(&mut o),
        vec!["a"],
        "a queued frame survives the release"
    );
    assert_eq!(o.advance(10), 1);
    assert!(o.is_empty());
    assert!(
        o.entries.capacity() > 0,
        "drained, the queue still holds its allocation"
    );
    o.release_if_empty();
    assert_eq!(
        o.entries.capacity(),
        0,
        "released: an idle connection's outbox owns nothing"
    );
    assert!(matches!(o.push(frame("b", 10)), Push::QueuedFirst));
    assert_eq!(drain(&mut o), vec!["b"]);
}
