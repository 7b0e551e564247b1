use super::*;

const POLICY: HistoryPolicy = HistoryPolicy {
    size: 100,
    ttl: Duration::from_secs(60),
};
const NOW_MS: u64 = 1_764_090_000_000;

fn room() -> RoomName {
    "chat.a".into()
}

fn epoch(e: &str) -> Epoch {
    e.into()
}

fn live(e: &str, offset: u64) -> Live {
    Live {
        epoch: epoch(e),
        offset,
        at_ms: NOW_MS,
        data: Bytes::from(format!("{{\"n\":{offset}}}")),
    }
}

fn read(e: &str, latest: u64, offsets: impl IntoIterator<Item = u64>) -> ReadResult {
    ReadResult {
        epoch: epoch(e),
        latest,
        now_ms: NOW_MS,
        entries: offsets
            .into_iter()
            .map(|offset| Entry {
                offset,
                at_ms: NOW_MS,
                data: Bytes::from(format!("{{\"n\":{offset}}}")),
            })
            .collect(),
    }
}

/// What the actions say, compactly: `sub`, `unsub`, `read(id,from)`, `msg(e,o)`, `rec(token,
/// latest,recovered,[offsets])`, `gap(from,to)`, `fail(token)`.
fn show(out: &mut Vec<Action>) -> Vec<String> {
    out.drain(..)
        .map(|a| match a {
            Action::Subscribe(_) => "sub".into(),
            Action::Unsubscribe(_) => "unsub".into(),
            Action::Read { id, from, .. } => format!("read({id},{from:?})"),
            Action::Emit { event, .. } => match event {
                BrokerEvent::Appended { message, .. } => {
                    format!("msg({},{})", message.epoch, message.offset)
                }
                BrokerEvent::Recovered {
                    token, recovery, ..
                } => format!(
                    "rec({token},{},{},{:?})",
                    recovery.latest,
                    recovery.recovered,
                    recovery
                        .messages
                        .iter()
                        .map(|m| m.offset)
                        .collect::<Vec<_>>()
                ),
                BrokerEvent::Gap { from, to, .. } => format!("gap({from},{to})"),
                BrokerEvent::Failed { token, .. } => format!("fail({token})"),
                other => format!("{other:?}"),
            },
        })
        .collect()
}

/// A sequencer with the room synced at `E`/`last`, delivering.
fn synced(last: u64) -> (Sequencer, Vec<Action>) {
    let mut s = Sequencer::new();
    let mut out = Vec::new();
    s.interest(&room(), 0, true, &mut out);
    s.recover(&room(), 0, 1, None, POLICY, &mut out);
    s.subscribed(&room(), &mut out);
    s.read_done(&room(), 1, read("E", last, []), &mut out);
    assert_eq!(
        show(&mut out),
        ["sub", "read(1,None)", &format!("rec(1,{last},false,[])")]
    );
    (s, out)
}

#[test]
fn live_messages_flow_in_order_and_duplicates_are_dropped() {
    let (mut s, mut out) = synced(5);
    s.live(&room(), live("E", 5), &mut out);
    s.live(&room(), live("E", 6), &mut out);
    s.live(&room(), live("E", 6), &mut out);
    s.live(&room(), live("E", 7), &mut out);
    assert_eq!(show(&mut out), ["msg(E,6)", "msg(E,7)"]);
}

#[test]
fn a_hole_in_the_echo_is_filled_from_the_stream() {
    let (mut s, mut out) = synced(5);
    s.live(&room(), live("E", 8), &mut out);
    s.live(&room(), live("E", 9), &mut out);
    assert_eq!(
        show(&mut out),
        ["read(2,Some(5))"],
        "9 waits behind the read"
    );
    s.read_done(&room(), 2, read("E", 8, [6, 7, 8]), &mut out);
    assert_eq!(
        show(&mut out),
        ["msg(E,6)", "msg(E,7)", "msg(E,8)", "msg(E,9)"],
        "8 from the echo is a duplicate of the read's"
    );
}

#[test]
fn offsets_the_stream_lost_become_a_gap() {
    let (mut s, mut out) = synced(5);
    s.live(&room(), live("E", 10), &mut out);
    show(&mut out);
    s.read_done(&room(), 2, read("E", 10, [8, 10]), &mut out);
    assert_eq!(
        show(&mut out),
        ["gap(6,7)", "msg(E,8)", "gap(9,9)", "msg(E,10)"]
    );
}

#[test]
fn recovery_is_answered_at_the_position_its_read_reached() {
    let (mut s, mut out) = synced(10);
    s.recover(&room(), 0, 7, Some((epoch("E"), 7)), POLICY, &mut out);
    assert_eq!(show(&mut out), ["read(2,Some(7))"]);
    // Published after the read was sent; its echo arrives before the read's answer.
    s.live(&room(), live("E", 11), &mut out);
    s.live(&room(), live("E", 12), &mut out);
    assert!(show(&mut out).is_empty(), "held back during the read");
    s.read_done(&room(), 2, read("E", 11, [8, 9, 10, 11]), &mut out);
    assert_eq!(
        show(&mut out),
        ["msg(E,11)", "rec(7,11,true,[8, 9, 10, 11])", "msg(E,12)"],
        "11 goes to the old subscribers before the answer, 12 after it to everyone"
    );
}

#[test]
fn requests_at_the_current_position_are_answered_without_a_read() {
    let (mut s, mut out) = synced(4);
    s.recover(&room(), 0, 2, None, POLICY, &mut out);
    s.recover(&room(), 0, 3, Some((epoch("E"), 4)), POLICY, &mut out);
    assert_eq!(show(&mut out), ["rec(2,4,false,[])", "rec(3,4,true,[])"]);
    s.recover(&room(), 0, 4, Some((epoch("OLD"), 4)), POLICY, &mut out);
    assert_eq!(show(&mut out), ["read(2,Some(4))"]);
    // Requests during a read wait for it; one at the position is answered right after.
    s.recover(&room(), 0, 5, None, POLICY, &mut out);
    assert!(show(&mut out).is_empty());
    s.read_done(&room(), 2, read("E", 4, []), &mut out);
    assert_eq!(show(&mut out), ["rec(4,4,false,[])", "rec(5,4,false,[])"]);
}

#[test]
fn recovery_past_the_history_or_its_age_is_not_recovered() {
    let (mut s, mut out) = synced(10);
    s.recover(&room(), 0, 7, Some((epoch("E"), 2)), POLICY, &mut out);
    show(&mut out);
    s.read_done(&room(), 2, read("E", 10, [5, 6, 7, 8, 9, 10]), &mut out);
    assert_eq!(show(&mut out), ["rec(7,10,false,[])"], "3 and 4 are gone");

    s.recover(&room(), 0, 8, Some((epoch("E"), 8)), POLICY, &mut out);
    s.live(&room(), live("E", 11), &mut out);
    show(&mut out);
    let mut old = read("E", 11, [9, 10, 11]);
    old.entries[0].at_ms = NOW_MS - 61_000;
    s.read_done(&room(), 3, old, &mut out);
    let shown = show(&mut out);
    assert!(
        shown.contains(&"rec(8,11,false,[])".to_string()),
        "9 is past the TTL: {shown:?}"
    );
    assert!(
        shown.contains(&"msg(E,11)".to_string()),
        "the live subscribers still get 11: {shown:?}"
    );
}

#[test]
fn a_lost_link_fails_requests_then_resyncs_every_room() {
    let (mut s, mut out) = synced(3);
    s.recover(&room(), 0, 9, Some((epoch("E"), 1)), POLICY, &mut out);
    show(&mut out);
    s.down("redis connection lost", &mut out);
    assert_eq!(show(&mut out), ["fail(9)"]);
    s.live(&room(), live("E", 4), &mut out);
    s.recover(&room(), 0, 10, None, POLICY, &mut out);
    assert_eq!(show(&mut out), ["fail(10)"], "nothing waits on a dead link");
    s.up(&mut out);
    assert_eq!(show(&mut out), ["sub"]);
    // The read sent before the link was lost answers late: ignored.
    s.read_done(&room(), 2, read("E", 3, []), &mut out);
    assert!(show(&mut out).is_empty());
    s.subscribed(&room(), &mut out);
    assert_eq!(show(&mut out), ["read(3,Some(3))"]);
    s.read_done(&room(), 3, read("E", 6, [4, 5, 6]), &mut out);
    assert_eq!(show(&mut out), ["msg(E,4)", "msg(E,5)", "msg(E,6)"]);
}

#[test]
fn a_new_epoch_is_read_from_its_start() {
    let (mut s, mut out) = synced(7);
    s.live(&room(), live("F", 2), &mut out);
    assert_eq!(show(&mut out), ["read(2,Some(0))"]);
    s.read_done(&room(), 2, read("F", 2, [1, 2]), &mut out);
    assert_eq!(show(&mut out), ["msg(F,1)", "msg(F,2)"]);
    s.live(&room(), live("F", 3), &mut out);
    assert_eq!(show(&mut out), ["msg(F,3)"]);

    // Found by a resync read rather than the echo: read again from the start.
    s.down("x", &mut out);
    s.up(&mut out);
    s.subscribed(&room(), &mut out);
    assert_eq!(show(&mut out), ["sub", "read(3,Some(3))"]);
    s.read_done(&room(), 3, read("G", 5, []), &mut out);
    assert_eq!(show(&mut out), ["read(4,Some(0))"]);
    s.read_done(&room(), 4, read("G", 5, [3, 4, 5]), &mut out);
    assert_eq!(
        show(&mut out),
        ["gap(1,2)", "msg(G,3)", "msg(G,4)", "msg(G,5)"]
    );
}

#[test]
fn losing_interest_unsubscribes_and_forgets_the_room() {
    let (mut s, mut out) = synced(1);
    s.interest(&room(), 0, false, &mut out);
    assert_eq!(show(&mut out), ["unsub"]);
    s.live(&room(), live("E", 2), &mut out);
    assert!(show(&mut out).is_empty());
    assert!(s.is_empty());
}

#[test]
fn a_message_missed_for_a_full_shard_is_read_once_the_shard_has_room() {
    let (mut s, mut out) = synced(5);
    s.live(&room(), live("E", 6), &mut out);
    s.missed(&room());
    s.live(&room(), live("E", 8), &mut out);
    assert_eq!(
        show(&mut out),
        ["msg(E,6)"],
        "7 was missed; 8 waits with it"
    );
    assert_eq!(s.behind(), 1);
    s.catch_up(|_| false, &mut out);
    assert!(out.is_empty(), "the shard is still full");
    s.catch_up(|_| true, &mut out);
    assert_eq!(show(&mut out), ["read(2,Some(6))"]);
    assert_eq!(s.behind(), 0);
    s.read_done(&room(), 2, read("E", 8, [7, 8]), &mut out);
    s.live(&room(), live("E", 9), &mut out);
    assert_eq!(show(&mut out), ["msg(E,7)", "msg(E,8)", "msg(E,9)"]);
}

#[test]
fn a_message_missed_during_a_read_is_read_after_it() {
    let (mut s, mut out) = synced(5);
    s.live(&room(), live("E", 7), &mut out);
    assert_eq!(show(&mut out), ["read(2,Some(5))"]);
    s.missed(&room());
    s.read_done(&room(), 2, read("E", 7, [6, 7]), &mut out);
    assert_eq!(show(&mut out), ["msg(E,6)", "msg(E,7)"]);
    assert_eq!(s.behind(), 1, "8 went by during the read");
    s.catch_up(|_| true, &mut out);
    assert_eq!(show(&mut out), ["read(3,Some(7))"]);
    s.read_done(&room(), 3, read("E", 8, [6, 7, 8]), &mut out);
    assert_eq!(show(&mut out), ["msg(E,8)"]);
}

#[test]
fn held_back_messages_past_the_bound_are_read_again_not_lost() {
    let (mut s, mut out) = synced(0);
    s.live(&room(), live("E", 2), &mut out);
    assert_eq!(show(&mut out), ["read(2,Some(0))"]);
    let big = |offset| Live {
        data: Bytes::from(vec![b'x'; MAX_BUFFERED_BYTES / 2]),
        ..live("E", offset)
    };
    s.live(&room(), big(3), &mut out);
    s.live(&room(), big(4), &mut out);
    s.live(&room(), big(5), &mut out);
    s.read_done(&room(), 2, read("E", 2, [1, 2]), &mut out);
    assert_eq!(
        show(&mut out),
        ["msg(E,1)", "msg(E,2)", "msg(E,3)"],
        "3 was held back; 4 and 5 did not fit"
    );
    assert_eq!(s.behind(), 1);
    s.catch_up(|_| true, &mut out);
    assert_eq!(show(&mut out), ["read(3,Some(3))"]);
    s.read_done(&room(), 3, read("E", 5, [4, 5]), &mut out);
    assert_eq!(show(&mut out), ["msg(E,4)", "msg(E,5)"]);
}
