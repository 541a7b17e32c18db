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
            Out::Tagged {
                seq, held, body, ..
            } => {
                format!(
                    "id: {}\n{}",
                    f.id_held(seq, held),
                    String::from_utf8_lossy(&body)
                )
            }
            Out::Snapshot { seq, snap, skip } => {
                let (head, middle, tail) = snap.encoded_from(skip);
                format!(
                    "{}{}id: {}\n{}",
                    String::from_utf8_lossy(&head),
                    String::from_utf8_lossy(&middle),
                    f.id_held(seq, snap.held),
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

/// An `append_each` object feed: entries of `/tx` told one by one as `tx`,
/// the object as `progress`.
fn progress_feed(history: usize) -> Feed {
    let mut def = FeedConfig::new("p", "/p");
    def.object = true;
    def.append = Some(Pointer::parse("/tx").expect("p"));
    def.events.append_each = true;
    let spec = |event: &str, data: toml::Value| crate::config::EventSpec {
        event: Some(event.into()),
        data: Some(data),
        send: None,
    };
    def.events.appended = Some(spec("tx", toml::Value::String("{{entry}}".into())));
    def.events.snapshot = Some(spec("progress", toml::Value::Table(Default::default())));
    Feed::new(
        FeedKey::new(0, String::new(), None, None),
        Arc::new(def),
        history,
    )
}

fn object(tx: &[u64]) -> Arc<ItemList> {
    let body = serde_json::json!({"id": 1, "tx": tx}).to_string();
    let l = object::extract_object(
        Bytes::from(body),
        &Pointer::default(),
        &Pointer::parse("/id").expect("p"),
    )
    .expect("object");
    Arc::new(l)
}

/// `(event, data)` of every event in `wire`, and the last id.
fn told(wire: &[String]) -> (Vec<String>, Option<String>) {
    let text = wire.concat();
    let mut last = None;
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        for line in block.lines() {
            if let Some(id) = line.strip_prefix("id: ") {
                last = Some(id.to_owned());
            }
        }
        let field = |n: &str| block.lines().find_map(|l| l.strip_prefix(n)).unwrap_or("");
        events.push(format!("{} {}", field("event: "), field("data: ")));
    }
    (events, last)
}

#[test]
fn a_snapshot_leaves_out_the_entries_the_clients_id_says_it_holds() {
    let f = progress_feed(10);
    f.publish(object(&[1, 2, 3]), vec![], true);
    let epoch = f.epoch();
    let cases: [(Option<String>, &[&str]); 6] = [
        (None, &["progress {}", "tx 1", "tx 2", "tx 3"]),
        // Another epoch (a restart): the count still holds.
        (Some("other:9.2".into()), &["progress {}", "tx 3"]),
        (Some("other:9.3".into()), &["progress {}"]),
        (
            Some("other:9.0".into()),
            &["progress {}", "tx 1", "tx 2", "tx 3"],
        ),
        // No count (an older version's id), or more than there is: everything.
        (
            Some("other:9".into()),
            &["progress {}", "tx 1", "tx 2", "tx 3"],
        ),
        (
            Some("other:9.4".into()),
            &["progress {}", "tx 1", "tx 2", "tx 3"],
        ),
    ];
    for (id, want) in cases {
        let mut c = f.cursor(id.as_deref());
        let (events, last) = told(&drain(&f, &mut c));
        assert_eq!(events, want, "{id:?}");
        assert_eq!(last, Some(format!("{epoch}:1.3")), "{id:?}");
    }
    // This instance's own id beyond its state cannot be replayed either.
    let mut c = f.cursor(Some(&format!("{epoch}:7.1")));
    assert_eq!(told(&drain(&f, &mut c)).0, ["progress {}", "tx 2", "tx 3"]);
}

#[test]
fn a_cursor_that_fell_out_of_the_history_keeps_what_it_was_sent() {
    let f = progress_feed(1);
    f.publish(object(&[1]), vec![], true);
    let mut c = f.cursor(None);
    assert_eq!(told(&drain(&f, &mut c)).0, ["progress {}", "tx 1"]);
    // Two events in two polls while the subscriber does not read.
    for n in [2u64, 3] {
        let seq = f.next_seq();
        let id = f.id_held(seq, Some(n));
        let e = encode::event(&id, "tx", n.to_string().as_bytes());
        f.publish(object(&(1..=n).collect::<Vec<_>>()), vec![(seq, e)], false);
    }
    let (events, last) = told(&drain(&f, &mut c));
    assert_eq!(events, ["progress {}", "tx 2", "tx 3"]);
    assert_eq!(last, Some(format!("{}:3.3", f.epoch())));
    assert_eq!(c.resyncs, 1);
    // Replayed events carry their own counts into the cursor: a status
    // event is told at the last one delivered.
    let seq = f.next_seq();
    let e = encode::event(&f.id_held(seq, Some(4)), "tx", b"4");
    f.publish(object(&[1, 2, 3, 4]), vec![(seq, e)], false);
    assert_eq!(
        told(&drain(&f, &mut c)).1,
        Some(format!("{}:4.4", f.epoch()))
    );
    f.set_stale(encode::body("stale", b"{}"));
    assert_eq!(
        told(&drain(&f, &mut c)).1,
        Some(format!("{}:4.4", f.epoch()))
    );
}

#[test]
fn a_feed_without_append_each_keeps_its_ids_and_takes_none_with_a_count() {
    let f = feed(10);
    f.publish(list("[]"), vec![], true);
    let e = ev(&f, "added");
    f.publish(list(r#"[{"id":1}]"#), vec![e], false);
    let mut c = f.cursor(Some(&f.id(1)));
    assert_eq!(
        drain(&f, &mut c),
        vec![format!("id: {}\nevent: added\ndata: {{}}\n\n", f.id(2))]
    );
    // A count is not part of this feed's ids: a snapshot, with a plain id.
    let mut c = f.cursor(Some(&format!("{}.0", f.id(1))));
    let got = drain(&f, &mut c);
    assert!(
        got.len() == 1 && got[0].contains(&format!("id: {}\n", f.id(2))),
        "{got:?}"
    );
}

#[test]
fn a_subscriber_gone_while_waiting_for_the_replica_to_catch_up_is_no_longer_counted() {
    // A replica at e1:1; ids up to e1:3 were told elsewhere.
    let f = feed(10);
    f.apply(applied("e1", 1, vec![], true));
    let mut gone = f.cursor(Some("e1:3"));
    assert!(drain(&f, &mut gone).is_empty(), "waits for the replica");
    let mut stays = f.cursor(Some("e1:2"));
    assert!(drain(&f, &mut stays).is_empty());
    let copy = stays.clone();
    assert_eq!(f.waiting(), 3, "each waiting cursor is counted once");
    // The first subscriber disconnects while waiting (its cursor dropped
    // without another pull), and so does the copy.
    drop(gone);
    drop(copy);
    assert_eq!(
        f.waiting(),
        1,
        "a cursor dropped while waiting is uncounted"
    );
    // The one left catches up: no longer waiting either.
    f.apply(applied("e1", 2, vec![cluster_event("e1", 2)], false));
    assert!(drain(&f, &mut stays).is_empty(), "at e1:2 already");
    assert_eq!(f.waiting(), 0);
    drop(stays);
    assert_eq!(f.waiting(), 0, "never below zero");
}
