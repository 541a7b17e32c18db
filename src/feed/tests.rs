use super::*;
use crate::pointer::Pointer;
use crate::wire as encode;

fn feed(history: usize) -> Feed {
    Feed::new(
        FeedKey::new(0, String::new(), None, None),
        Arc::new(FeedConfig::new("t", "/t")),
        history,
    )
}

fn list(body: &'static str) -> Arc<ItemList> {
    let (l, _) = extract::extract(
        Bytes::from_static(body.as_bytes()),
        &Pointer::default(),
        &Pointer::parse("/id").expect("p"),
    )
    .expect("list");
    Arc::new(l)
}

fn drain(f: &Feed, c: &mut Cursor) -> Vec<String> {
    let mut out = VecDeque::new();
    f.pull(c, &mut out);
    out.into_iter()
        .map(|o| match o {
            Out::Bytes(b) | Out::Event { bytes: b, .. } => String::from_utf8_lossy(&b).into_owned(),
            Out::Tagged { seq, body, .. } => {
                format!("id: {}\n{}", f.id(seq), String::from_utf8_lossy(&body))
            }
            Out::Snapshot(seq, s) => {
                let (head, tail) = s.encoded();
                format!(
                    "{}id: {}\n{}",
                    String::from_utf8_lossy(&head),
                    f.id(seq),
                    String::from_utf8_lossy(&tail)
                )
            }
        })
        .collect()
}

fn ev(f: &Feed, n: &str) -> (u64, Bytes) {
    let seq = f.next_seq();
    (seq, encode::event(&f.id(seq), n, b"{}"))
}

#[test]
fn new_cursor_waits_for_first_snapshot_then_follows_history() {
    let f = feed(10);
    let mut c = f.cursor(None);
    assert!(drain(&f, &mut c).is_empty());
    f.publish(list("[]"), vec![], true);
    let got = drain(&f, &mut c);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("event: snapshot"), "{got:?}");
    let e = ev(&f, "added");
    f.publish(list(r#"[{"id":1}]"#), vec![e], false);
    let got = drain(&f, &mut c);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("event: added") && got[0].contains(&f.id(2)),
        "{got:?}"
    );
    assert!(drain(&f, &mut c).is_empty());
}

#[test]
fn resume_replays_exactly_or_falls_back_to_snapshot() {
    let f = feed(2);
    f.publish(list("[]"), vec![], true);
    for _ in 0..2 {
        let e = ev(&f, "added");
        f.publish(list("[]"), vec![e], false);
    }
    // seq is 3; history holds 2 and 3.
    let mut c = f.cursor(Some(&f.id(2)));
    assert_eq!(drain(&f, &mut c).len(), 1);
    let mut c = f.cursor(Some(&f.id(1)));
    assert_eq!(drain(&f, &mut c).len(), 2);
    let mut c = f.cursor(Some(&f.id(3)));
    assert!(drain(&f, &mut c).is_empty());
    let e = ev(&f, "added");
    f.publish(list("[]"), vec![e], false);
    // 1 fell out of the history: snapshot instead.
    let mut c = f.cursor(Some(&f.id(1)));
    let got = drain(&f, &mut c);
    assert!(got.len() == 1 && got[0].contains("snapshot"), "{got:?}");
    // Another instance's id, garbage, or the future: snapshot.
    for id in ["ffffffffffff:2", "nonsense", &f.id(99)] {
        let mut c = f.cursor(Some(id));
        let got = drain(&f, &mut c);
        assert!(got[0].contains("snapshot"), "{id}: {got:?}");
    }
}

#[test]
fn lagging_cursor_is_resynced_with_a_snapshot() {
    let f = feed(1);
    f.publish(list("[]"), vec![], true);
    let mut c = f.cursor(None);
    drain(&f, &mut c);
    for _ in 0..3 {
        let e = ev(&f, "added");
        f.publish(list("[]"), vec![e], false);
    }
    let got = drain(&f, &mut c);
    assert!(got.len() == 1 && got[0].contains("snapshot"), "{got:?}");
    assert_eq!(c.resyncs, 1);
}

/// The id an encoded block carries, if any.
fn id_of(block: &str) -> Option<&str> {
    block
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .filter(|id| !id.is_empty())
}

#[test]
fn status_events_never_carry_a_position_ahead_of_what_was_sent() {
    // Upstream [1], then a failure, then [1,2,3]: the poller tells the
    // recovery first and publishes the two additions right after.
    let f = feed(16);
    f.publish(list(r#"[{"id":1}]"#), vec![], true);
    let mut c = f.cursor(None);
    let mut wire = drain(&f, &mut c);
    f.set_stale(encode::body("stale", b"{}"));
    wire.extend(drain(&f, &mut c));
    f.set_recovered(encode::body("recovered", b"{}"));
    for _ in 0..2 {
        let e = ev(&f, "added");
        f.publish(list(r#"[{"id":1}]"#), vec![e], false);
    }
    wire.extend(drain(&f, &mut c));
    let names: Vec<&str> = wire
        .iter()
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("event: ")))
        .collect();
    assert_eq!(names, ["snapshot", "stale", "recovered", "added", "added"]);
    // Ids on the stream never go down.
    let ids: Vec<u64> = wire
        .iter()
        .filter_map(|b| id_of(b))
        .map(|id| {
            id.rsplit(':')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("seq")
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{wire:?}");
    // Cut right after every event (status events included): a resume
    // from its id replays exactly the added events that followed it.
    for (i, block) in wire.iter().enumerate() {
        let id = id_of(block).expect("every event here has an id");
        let mut r = f.cursor(Some(id));
        let replay = drain(&f, &mut r);
        let want = wire[i + 1..]
            .iter()
            .filter(|b| b.contains("event: added"))
            .count();
        assert_eq!(
            replay.iter().filter(|b| b.contains("event: added")).count(),
            want,
            "resume after {block:?}: {replay:?}"
        );
        assert!(!replay.iter().any(|b| b.contains("snapshot")), "{replay:?}");
    }
}

#[test]
fn a_resume_during_an_outage_hears_stale_at_its_own_position() {
    let f = feed(16);
    f.publish(list("[]"), vec![], true);
    for _ in 0..3 {
        let e = ev(&f, "added");
        f.publish(list("[]"), vec![e], false);
    }
    let e = ev(&f, "added");
    f.publish(list("[]"), vec![e], false);
    f.set_stale(encode::body("stale", b"{}"));
    // Resumed from 3 of 5: `stale` must not claim 5 before 4 and 5 are sent.
    let mut c = f.cursor(Some(&f.id(3)));
    let got = drain(&f, &mut c);
    assert!(got[0].contains("event: stale"), "{got:?}");
    assert_eq!(id_of(&got[0]), Some(f.id(3).as_str()), "{got:?}");
    assert_eq!(id_of(&got[1]), Some(f.id(4).as_str()), "{got:?}");
    assert_eq!(id_of(&got[2]), Some(f.id(5).as_str()), "{got:?}");
}

#[test]
fn status_before_any_snapshot_has_no_id() {
    let f = feed(4);
    let mut c = f.cursor(None);
    f.set_stale(encode::body("stale", b"{}"));
    let got = drain(&f, &mut c);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("event: stale") && id_of(&got[0]).is_none(),
        "{got:?}"
    );
}

#[test]
fn status_is_told_once_on_entering_and_leaving() {
    let f = feed(4);
    f.publish(list("[]"), vec![], true);
    let mut c = f.cursor(None);
    drain(&f, &mut c);
    f.set_stale(encode::body("stale", b"{}"));
    f.set_stale(encode::body("stale", b"{}"));
    let got = drain(&f, &mut c).concat();
    assert_eq!(got.matches("event: stale").count(), 1, "{got}");
    // A subscriber arriving during the failure hears of it too.
    let mut late = f.cursor(None);
    let got = drain(&f, &mut late).concat();
    assert!(
        got.contains("snapshot") && got.contains("event: stale"),
        "{got}"
    );
    f.set_recovered(encode::body("recovered", b"{}"));
    assert!(drain(&f, &mut c).concat().contains("event: recovered"));
    assert!(drain(&f, &mut c).is_empty());
    // One that never saw the failure is not told of a recovery.
    let mut fresh = f.cursor(None);
    assert!(!drain(&f, &mut fresh).concat().contains("recovered"));
}

fn applied(epoch: &str, seq: u64, events: Vec<(u64, Bytes)>, reset: bool) -> Applied {
    Applied {
        epoch: epoch.into(),
        seq,
        base: 1,
        list: list("[]"),
        events,
        reset,
    }
}

fn cluster_event(epoch: &str, seq: u64) -> (u64, Bytes) {
    (
        seq,
        encode::event(&format!("{epoch}:{seq}"), "added", b"{}"),
    )
}

#[test]
fn a_resume_id_given_before_the_state_arrived_is_judged_when_it_does() {
    // A replica with no state yet (the cluster's arrives after the subscriber).
    let f = feed(10);
    let mut c = f.cursor(Some("e1:2"));
    assert!(drain(&f, &mut c).is_empty());
    f.apply(applied(
        "e1",
        3,
        vec![cluster_event("e1", 2), cluster_event("e1", 3)],
        true,
    ));
    let got = drain(&f, &mut c);
    assert_eq!(
        got,
        vec!["id: e1:3\nevent: added\ndata: {}\n\n"],
        "replayed, not resynced"
    );
    // Another epoch's id, given before the state: a snapshot.
    let g = feed(10);
    let mut d = g.cursor(Some("other:2"));
    g.apply(applied("e1", 3, vec![cluster_event("e1", 3)], true));
    let got = drain(&g, &mut d);
    assert!(
        got.len() == 1 && got[0].contains("event: snapshot"),
        "{got:?}"
    );
}

#[test]
fn a_new_epoch_gives_every_cursor_one_snapshot_and_applying_twice_repeats_nothing() {
    let f = feed(10);
    f.apply(applied("e1", 1, vec![], true));
    let mut c = f.cursor(None);
    assert_eq!(drain(&f, &mut c).len(), 1);
    f.apply(applied("e1", 2, vec![cluster_event("e1", 2)], false));
    // The leader's own apply and the follower's read of the same entry.
    f.apply(applied("e1", 2, vec![cluster_event("e1", 2)], false));
    assert_eq!(
        drain(&f, &mut c),
        vec!["id: e1:2\nevent: added\ndata: {}\n\n"]
    );
    // Same seq numbers, another epoch (Redis restarted empty): a snapshot.
    f.apply(applied("e2", 2, vec![], true));
    let got = drain(&f, &mut c);
    assert!(got.len() == 1 && got[0].contains("id: e2:2"), "{got:?}");
    assert_eq!(c.resyncs, 1);
    // Falling back to a local epoch: nothing until the local poll publishes.
    f.local_epoch();
    assert!(drain(&f, &mut c).is_empty());
    f.publish(list("[]"), vec![], true);
    let got = drain(&f, &mut c);
    assert!(
        got.len() == 1 && got[0].contains("event: snapshot"),
        "{got:?}"
    );
}
