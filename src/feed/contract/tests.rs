use super::changes::changed_fields;
use super::*;
use crate::feed::diff::Change;
use crate::feed::extract::extract;
use serde_json::{json, Value};

fn default_render() -> Render {
    let c = Contract::compile(&FeedConfig::new("t", "/t")).expect("default compiles");
    Render::new(c, "t", &[])
}

#[test]
fn default_payloads_are_the_historical_bytes() {
    let (list, _) = extract(
        Bytes::from_static(br#"[{"id":"a","v":1},{"id":2.50}]"#),
        &Pointer::default(),
        &Pointer::parse("/id").expect("p"),
    )
    .expect("list");
    let r = default_render();
    let (head, tail) = r.snapshot(&list);
    assert!(head.is_empty());
    assert_eq!(
        &tail[..],
        b"event: snapshot\ndata: {\"items\":[{\"id\":\"a\",\"v\":1},{\"id\":2.50}]}\n\n"
    );
    let ev = r.changes(&Poll {
        old: &list,
        new: &list,
        changes: &[
            Change::Removed(&list.items[1]),
            Change::Added(&list.items[0]),
        ],
        appended: None,
        ignore: &[],
        timestamp: "\"t\"",
    });
    assert_eq!(ev[0].0, "removed");
    assert_eq!(ev[0].1, br#"{"id":2.50}"#);
    assert_eq!(ev[1].0, "added");
    assert_eq!(ev[1].1, br#"{"id":"a","item":{"id":"a","v":1}}"#);
    let since = SystemTime::UNIX_EPOCH;
    assert_eq!(
        &r.stale("x \"y\"", 3, since)[..],
        b"event: stale\ndata: {\"failures\":3,\"reason\":\"x \\\"y\\\"\",\"since\":\"1970-01-01T00:00:00.000Z\"}\n\n"
    );
    let v: Value =
        serde_json::from_slice(&r.recovered(since, 2)[b"event: recovered\ndata: ".len()..])
            .expect("json");
    assert_eq!(
        v,
        json!({"failures": 2, "stale_since": "1970-01-01T00:00:00.000Z"})
    );
    assert_eq!(&r.keepalive()[..], b":keepalive\n\n");
    assert!(r.connect().is_none());
}

#[test]
fn changed_fields_are_top_level_sorted_and_skip_ignored() {
    let patch = json_patch::diff(
        &json!({"id":1,"ram_gb":8,"price_usd":5,"meta":{"a":1},"seen":1}),
        &json!({"id":1,"ram_gb":16,"price_usd":6,"meta":{"a":2},"seen":2}),
    );
    let ignore = [Pointer::parse("/seen").expect("p")];
    assert_eq!(
        changed_fields(&patch, &ignore),
        br#"["meta","price_usd","ram_gb"]"#
    );
}

#[test]
fn bad_names_and_placeholders_name_the_key() {
    let mut def = FeedConfig::new("t", "/t");
    def.events.added = Some(EventSpec {
        event: Some("a\nb".into()),
        ..EventSpec::default()
    });
    let (key, msg) = Contract::compile(&def).unwrap_err();
    assert_eq!(key, "events.added");
    assert!(msg.contains("line break"), "{msg}");
    def.events.added = Some(EventSpec {
        data: Some(toml::Value::String("{{patch}}".into())),
        ..EventSpec::default()
    });
    let (key, msg) = Contract::compile(&def).unwrap_err();
    assert_eq!(key, "events.added");
    assert!(
        msg.contains("{{patch}}") && msg.contains("{{item}}"),
        "{msg}"
    );
    let mut def = FeedConfig::new("t", "/api/{id}");
    def.sse = Some("/sse/x".into());
    assert_eq!(Contract::compile(&def).unwrap_err().0, "poll");
}

#[test]
fn new_keys_are_checked_naming_the_key() {
    let mut def = FeedConfig::new("t", "/t");
    def.events.batch_of = vec!["moved".into()];
    assert_eq!(Contract::compile(&def).unwrap_err().0, "events.batch_of");
    let mut def = FeedConfig::new("t", "/t");
    def.object = true;
    def.events.append_each = true;
    assert_eq!(Contract::compile(&def).unwrap_err().0, "events.append_each");
    let mut def = FeedConfig::new("t", "/t");
    def.transitions.push(crate::config::TransitionConfig {
        field: Pointer::parse("/status").expect("p"),
        to: "done".into(),
        event: Some("x".into()),
        data: Some(toml::Value::String("{{patch}}".into())),
    });
    assert_eq!(Contract::compile(&def).unwrap_err().0, "transitions[0]");
    // {{index}} is for list feeds only.
    let mut def = FeedConfig::new("t", "/t");
    def.object = true;
    def.events.updated = Some(EventSpec {
        data: Some(toml::Value::String("{{index}}".into())),
        ..EventSpec::default()
    });
    assert_eq!(Contract::compile(&def).unwrap_err().0, "events.updated");
}

#[test]
fn a_transition_fires_once_when_the_value_is_reached() {
    let mut def = FeedConfig::new("t", "/t");
    def.transitions.push(crate::config::TransitionConfig {
        field: Pointer::parse("/s").expect("p"),
        to: "done".into(),
        event: Some("done".into()),
        data: Some(
            toml::from_str::<toml::Table>(r#"v = { n = "{{item/n}}" }"#).expect("t")["v"].clone(),
        ),
    });
    let r = Render::new(Contract::compile(&def).expect("compiles"), "t", &[]);
    let list = |s: &'static str| {
        extract(
            Bytes::from_static(s.as_bytes()),
            &Pointer::default(),
            &Pointer::parse("/id").expect("p"),
        )
        .expect("list")
        .0
    };
    let names = |old: &ItemList, new: &ItemList| -> Vec<String> {
        let changes = crate::feed::diff::diff(old, new, &[]);
        r.changes(&Poll {
            old,
            new,
            changes: &changes,
            appended: None,
            ignore: &[],
            timestamp: "null",
        })
        .into_iter()
        .map(|(n, d)| format!("{n} {}", String::from_utf8_lossy(&d)))
        .collect()
    };
    let a = list(r#"[{"id":1,"s":"run","n":1}]"#);
    let b = list(r#"[{"id":1,"s":"done","n":2},{"id":2,"s":"done","n":5}]"#);
    let c = list(r#"[{"id":1,"s":"done","n":3},{"id":2,"s":"done","n":5}]"#);
    let got = names(&a, &b);
    assert!(got.contains(&r#"done {"n":2}"#.to_owned()), "{got:?}");
    assert!(
        got.contains(&r#"done {"n":5}"#.to_owned()),
        "added already done: {got:?}"
    );
    assert!(
        !names(&b, &c).iter().any(|e| e.starts_with("done ")),
        "already done"
    );
}

/// An `append_each` job: `progress` for the object, `tx` per entry of `/tx`,
/// `done` when `/s` is `done` (the stream stays open).
fn job_def() -> FeedConfig {
    let mut def = FeedConfig::new("t", "/t");
    def.object = true;
    def.append = Some(Pointer::parse("/tx").expect("p"));
    def.events.append_each = true;
    let spec = |event: &str, data: &str| EventSpec {
        event: Some(event.into()),
        data: Some(toml::Value::String(data.into())),
        send: None,
    };
    def.events.snapshot = Some(spec("progress", "{{item/s}}"));
    def.events.updated = Some(spec("progress", "{{item/s}}"));
    def.events.appended = Some(spec("tx", "{{entry}}"));
    let table: toml::Table = toml::from_str(
        r#"field = "/s"
close = false
values.done = { event = "done", data = "{{item/s}}" }"#,
    )
    .expect("toml");
    def.terminal = Some(toml::Value::Table(table).try_into().expect("terminal"));
    def
}

#[test]
fn each_event_of_a_poll_counts_the_entries_a_client_holds_once_it_has_it() {
    let def = job_def();
    let r = Render::new(Contract::compile(&def).expect("compiles"), "t", &[]);
    let body = |s: &str| Bytes::from(s.to_owned());
    let first = crate::feed::update::prepare(&def, &r, None, body(r#"{"s":"run","tx":[1]}"#))
        .expect("ok")
        .expect("update");
    let prev = first.into_parts();
    let next = body(r#"{"s":"done","tx":[1,2,3]}"#);
    let update = crate::feed::update::prepare(&def, &r, Some(&prev), next)
        .expect("ok")
        .expect("update");
    let ids: Vec<String> = update
        .encode(5, |s| format!("e:{s}"))
        .iter()
        .map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    // The object's update comes before its new entries; the terminal after.
    assert_eq!(ids, ["id: e:5.1", "id: e:6.2", "id: e:7.3", "id: e:8.3"]);
    // Without append_each, ids carry no count.
    let mut plain = def.clone();
    plain.events.append_each = false;
    let r = Render::new(Contract::compile(&plain).expect("compiles"), "t", &[]);
    let update =
        crate::feed::update::prepare(&plain, &r, Some(&prev), body(r#"{"s":"run","tx":[1,2]}"#))
            .expect("ok")
            .expect("update");
    let (_, e) = &update.encode(5, |s| format!("e:{s}"))[0];
    assert!(e.starts_with(b"id: e:5\n"), "{e:?}");
}

#[test]
fn a_snapshot_for_a_client_holding_entries_leaves_them_out() {
    let def = job_def();
    let r = Render::new(Contract::compile(&def).expect("compiles"), "t", &[]);
    let list = crate::feed::object::extract_object(
        Bytes::from_static(br#"{"s":"done","tx":["a","b"]}"#),
        &Pointer::default(),
        &Pointer::parse("/id").expect("p"),
    )
    .expect("object");
    assert_eq!(r.held(&list), Some(2));
    let o = r.snapshot_events(&list);
    let text = |p: (Bytes, Bytes, Bytes)| {
        [p.0, p.1, Bytes::from_static(b"ID\n"), p.2]
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<String>()
            .replace("data: ", "")
            .replace("event: ", "")
    };
    let all = "progress\n\"done\"\n\ntx\n\"a\"\n\ntx\n\"b\"\n\nID\ndone\n\"done\"\n\n";
    assert_eq!(text(o.parts(0)), all);
    assert_eq!(
        text(o.parts(1)),
        "progress\n\"done\"\n\ntx\n\"b\"\n\nID\ndone\n\"done\"\n\n"
    );
    assert_eq!(
        text(o.parts(2)),
        "progress\n\"done\"\n\nID\ndone\n\"done\"\n\n"
    );
    assert_eq!(
        text(o.parts(3)),
        text(o.parts(2)),
        "never more than there are"
    );
    // Without the terminal event the id goes on the snapshot itself.
    let mut open = def.clone();
    open.terminal = None;
    let r = Render::new(Contract::compile(&open).expect("compiles"), "t", &[]);
    let o = r.snapshot_events(&list);
    assert_eq!(text(o.parts(2)), "ID\nprogress\n\"done\"\n\n");
    assert_eq!(text(o.parts(1)), "progress\n\"done\"\n\nID\ntx\n\"b\"\n\n");
}
