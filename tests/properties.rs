//! Correctness by construction, checked on random inputs (proptest):
//! - applying the emitted `added` / `updated` (its RFC 6902 patch) / `removed`
//!   events to the old keyed state yields exactly the new state, and the
//!   events follow the new list's order;
//! - inserting each `added` item at its `{{index}}` (after the poll's
//!   removals) rebuilds the upstream's new order, and `{{after}}` names the
//!   id before it;
//! - any JSON value, SSE-encoded by pollcast and parsed back by an independent
//!   SSE parser (eventsource-stream), is the same value; any text keeps its
//!   lines (line breaks normalised to `\n`, as the SSE spec defines).

use std::collections::BTreeMap;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use pollcast::feed::{contract, diff, extract};
use pollcast::pointer::Pointer;
use pollcast::sse::encode;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Items with unique ids (numbers or strings) and a few changing fields.
fn items() -> impl Strategy<Value = Vec<Value>> {
    let id = prop_oneof![
        (0u8..24).prop_map(|n| json!(n)),
        "[a-e]{1,2}".prop_map(Value::String),
    ];
    let item = (
        id,
        proptest::option::of(0u8..4),
        proptest::option::of("[xy\\n\"é]{0,3}"),
    )
        .prop_map(|(id, a, b)| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), id);
            if let Some(a) = a {
                m.insert("a".into(), json!(a));
            }
            if let Some(b) = b {
                m.insert("b".into(), json!({"nested": [b]}));
            }
            Value::Object(m)
        });
    proptest::collection::vec(item, 0..16).prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|i| seen.insert(i["id"].to_string()))
            .collect()
    })
}

fn keyed(items: &[Value]) -> BTreeMap<String, Value> {
    items
        .iter()
        .map(|i| (i["id"].to_string(), i.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn added_items_at_their_index_rebuild_the_upstream_order(
        n in 0usize..12,
        removed in proptest::collection::vec(any::<bool>(), 12),
        inserts in proptest::collection::vec(0usize..20, 0..6),
    ) {
        let old: Vec<String> = (0..n).map(|i| format!("o{i}")).collect();
        let mut new: Vec<String> = old.iter().zip(&removed).filter(|(_, r)| !**r).map(|(i, _)| i.clone()).collect();
        for (k, pos) in inserts.iter().enumerate() {
            new.insert(pos % (new.len() + 1), format!("n{k}"));
        }
        let id = Pointer::parse("/id").expect("pointer");
        let parse = |v: &[String]| {
            let body = Value::from(v.iter().map(|i| json!({"id": i})).collect::<Vec<_>>()).to_string();
            extract::extract(Bytes::from(body), &Pointer::default(), &id).expect("valid list").0
        };
        let (a, b) = (parse(&old), parse(&new));
        let mut def = pollcast::config::FeedConfig::new("jobs", "/api/jobs");
        let data: toml::Table = toml::from_str(r#"v = { id = "{{id}}", index = "{{index}}", after = "{{after}}" }"#).expect("toml");
        def.events.added = Some(pollcast::config::EventSpec { event: None, data: Some(data["v"].clone()), send: None });
        let render = contract::Render::new(contract::Contract::compile(&def).expect("contract"), "jobs", &[]);
        let changes = diff::diff(&a, &b, &[]);
        let poll = contract::Poll { old: &a, new: &b, changes: &changes, appended: None, ignore: &[], timestamp: "null" };
        let mut state = old.clone();
        for (name, data) in render.changes(&poll) {
            let d: Value = serde_json::from_slice(&data).expect("JSON");
            let key = d["id"].as_str().expect("id").to_owned();
            match name.as_str() {
                "removed" => state.retain(|i| *i != key),
                "added" => {
                    let at = d["index"].as_u64().expect("index") as usize;
                    prop_assert!(at <= state.len(), "index {at} beyond {state:?}");
                    let after = if at == 0 { Value::Null } else { json!(state[at - 1]) };
                    prop_assert_eq!(&d["after"], &after);
                    state.insert(at, key);
                }
                other => prop_assert!(false, "unexpected {other}"),
            }
        }
        prop_assert_eq!(state, new);
    }

    #[test]
    fn events_turn_the_old_state_into_the_new_one(old in items(), new in items()) {
        let id = Pointer::parse("/id").expect("pointer");
        let parse = |v: &[Value]| {
            extract::extract(Bytes::from(Value::from(v.to_vec()).to_string()), &Pointer::default(), &id)
                .expect("valid list")
                .0
        };
        let (a, b) = (parse(&old), parse(&new));
        let mut state = keyed(&old);
        let order: Vec<String> = new.iter().map(|i| i["id"].to_string()).collect();
        let mut last_pos = None;
        // The default contract, rendered as pollcast renders it for a feed.
        let def = pollcast::config::FeedConfig::new("jobs", "/api/jobs");
        let render = contract::Render::new(
            contract::Contract::compile(&def).expect("default contract"),
            "jobs",
            &[],
        );
        let changes = diff::diff(&a, &b, &[]);
        let poll = contract::Poll { old: &a, new: &b, changes: &changes, appended: None, ignore: &[], timestamp: "null" };
        for (name, data) in render.changes(&poll) {
            let name = name.as_str();
            let d: Value = serde_json::from_slice(&data).expect("event data is JSON");
            let key = d["id"].to_string();
            match name {
                "removed" => {
                    prop_assert!(state.remove(&key).is_some(), "removed an unknown id {key}");
                    prop_assert!(last_pos.is_none(), "removals come first");
                }
                "added" | "updated" => {
                    if name == "added" {
                        prop_assert!(!state.contains_key(&key), "added a known id {key}");
                    } else {
                        let mut item = state.get(&key).cloned().expect("updated a known id");
                        let patch: json_patch::Patch =
                            serde_json::from_value(d["patch"].clone()).expect("RFC 6902 patch");
                        json_patch::patch(&mut item, &patch).expect("patch applies");
                        prop_assert_eq!(&item, &d["item"], "the patch yields the new item");
                    }
                    state.insert(key.clone(), d["item"].clone());
                    let pos = order.iter().position(|k| *k == key).expect("in the new list");
                    prop_assert!(last_pos < Some(pos), "events follow the new list's order");
                    last_pos = Some(pos);
                }
                other => prop_assert!(false, "unexpected event {other}"),
            }
        }
        prop_assert_eq!(state, keyed(&new));
    }
}

/// Arbitrary JSON, with strings full of line breaks, control characters,
/// unicode, and sometimes large.
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        ".{0,40}",
        "[\\n\\r\\t\"\\\\a😀é\\u{0}\\u{2028}]{0,40}",
        (0usize..100_000).prop_map(|n| "ab\r\ncd\n".repeat(n / 7)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z\\n\\r]{0,6}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Parse `wire` with eventsource-stream, delivered in chunks of `chunk` bytes.
fn parse_back(wire: &[u8], chunk: usize) -> Vec<eventsource_stream::Event> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = wire
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(
        futures_util::stream::iter(chunks)
            .eventsource()
            .map(|e| e.expect("parses"))
            .collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn json_survives_sse_encoding(v in json_value(), pretty in any::<bool>(), chunk in 64usize..8192) {
        // Pretty printing puts real line breaks into the data.
        let data = if pretty {
            serde_json::to_vec_pretty(&v).expect("json")
        } else {
            serde_json::to_vec(&v).expect("json")
        };
        let mut wire = encode::event("e1:1", "updated", &data).to_vec();
        wire.extend_from_slice(&encode::event("e1:2", "snapshot", b"{}"));
        let events = parse_back(&wire, chunk);
        prop_assert_eq!(events.len(), 2);
        prop_assert_eq!(&events[0].event, "updated");
        prop_assert_eq!(&events[0].id, "e1:1");
        // Exactly the bytes that were encoded (pretty JSON breaks lines with
        // `\n` only, which SSE keeps), so the same value: compared as parsed
        // from the original text, as serde_json reads floats the same way twice.
        let original = String::from_utf8(data.clone()).expect("utf-8");
        prop_assert_eq!(&events[0].data, &original);
        let back: Value = serde_json::from_str(&events[0].data).expect("JSON back");
        let sent: Value = serde_json::from_slice(&data).expect("JSON sent");
        prop_assert_eq!(back, sent);
        prop_assert_eq!(&events[1].data, "{}");
    }

    #[test]
    fn any_text_keeps_its_lines(text in "[a\\n\\r😀: ]{0,64}", chunk in 1usize..16) {
        let wire = encode::event("i", "x", text.as_bytes());
        let events = parse_back(&wire, chunk);
        prop_assert_eq!(events.len(), 1);
        let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert_eq!(&events[0].data, &normalised);
    }
}

// ------------------------------------------- poll paths stay under their prefix

/// Pieces attackers put in a path parameter: dots and separators in every
/// encoding depth, Tomcat's `;`, control characters, and harmless text.
fn hostile_value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("."),
        Just("%2e"),
        Just("%2E"),
        Just("%252e"),
        Just("%25252E"),
        Just("/"),
        Just("%2f"),
        Just("%2F"),
        Just("%252f"),
        Just("\\"),
        Just("%5c"),
        Just("%5C"),
        Just(";"),
        Just("%3B"),
        Just("%00"),
        Just("%0a"),
        Just("%"),
        Just("%25"),
        Just("?"),
        Just("%3f"),
        Just("#"),
        Just("%23"),
        Just("a"),
        Just("7"),
        Just("-"),
        Just("~"),
        Just("%41"),
    ];
    proptest::collection::vec(piece, 1..7).prop_map(|v| v.concat())
}

/// What the most lenient upstream could make of a path: percent-decoded
/// again and again, `\` taken for `/`, `;params` dropped from each segment,
/// then dot-segments removed.
fn lenient(path: &str) -> String {
    let mut p = path.to_owned();
    for _ in 0..4 {
        p = percent_encoding::percent_decode_str(&p)
            .decode_utf8_lossy()
            .into_owned();
    }
    let p = p.replace('\\', "/");
    let p: Vec<&str> = p
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
        .collect();
    pollcast::route::normalize(&p.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// No path-parameter or query value a client sends can make a poll leave
    /// the configured path: every value the SSE route accepts and
    /// `check_value` lets through fills a poll path that, normalised per RFC
    /// 3986 (and even decoded as leniently as any upstream might), starts
    /// with the pattern's literal prefix and has its number of segments.
    #[test]
    fn no_value_makes_a_poll_leave_its_prefix(
        a in hostile_value(),
        b in hostile_value(),
        query in "[a-z=&%2eE/?#.;\\\\]{0,24}",
    ) {
        use pollcast::route::{check_value, normalize, Pattern};
        let sse = Pattern::parse("/sse/boards/{board}/posts/{post}").expect("sse");
        let poll = Pattern::parse("/api/v1/boards/{board}/posts/{post}/comments").expect("poll");
        let requested = format!("/sse/boards/{a}/posts/{b}");
        let Some(values) = sse.matches(&requested) else {
            // Not this route (a raw `/` made more segments): not a feed.
            return Ok(());
        };
        if values.iter().any(|v| check_value(v).is_err()) {
            return Ok(()); // 400 before any poll
        }
        let mut def = pollcast::config::FeedConfig::new("b", "/api/v1/boards/{board}/posts/{post}/comments");
        def.sse = Some("/sse/boards/{board}/posts/{post}".into());
        let Ok(id) = pollcast::feed::key::identify(0, &def, Some(&query), &http::HeaderMap::new()) else {
            return Ok(()); // 400 before any poll
        };
        let filled = poll.fill(&sse.params(), &values);
        let target = if id.key.query.is_empty() {
            filled
        } else {
            format!("{filled}?{}", id.key.query)
        };
        let up = pollcast::config::UpstreamUrl::parse("http://upstream:3000/base").expect("url");
        let Ok(uri) = up.join(&target) else {
            return Ok(()); // not a valid URI: the poll fails, it goes nowhere
        };
        let (prefix, segments) = poll.literal_prefix();
        let want_prefix = format!("/base{prefix}/");
        for path in [normalize(uri.path()), lenient(uri.path())] {
            prop_assert!(path.starts_with(&want_prefix), "{} -> {}", target, path);
            prop_assert_eq!(path.split('/').count(), segments + 2, "{} -> {}", target, path);
            prop_assert!(path.ends_with("/comments"), "{} -> {}", target, path);
        }
    }
}
