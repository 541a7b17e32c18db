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
