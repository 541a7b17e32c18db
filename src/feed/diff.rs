//! Comparing two successive snapshots of a feed.
//!
//! This module owns the decision of *what changed*: which ids appeared,
//! disappeared or changed content, and the RFC 6902 patch between an item's
//! old and new content. Unchanged items are recognised by comparing raw bytes;
//! only items whose bytes differ are parsed. It must never encode SSE or know
//! about subscribers, and never change data: numbers are parsed exactly
//! (serde_json's `arbitrary_precision`), so any change of the upstream's
//! numbers is a change and a patch carries them as the upstream wrote them.

use serde_json::Value;

use super::extract::{Item, ItemList};
use super::object::{find_raw_in, raw_root};
use crate::pointer::Pointer;
use serde_json::value::RawValue;

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<'a> {
    Added(&'a Item),
    Updated { item: &'a Item, patch: Patch },
    Removed(&'a Item),
}

/// What turns an item's previous content into its new one.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// RFC 6902 operations between the two parsed documents.
    Ops(json_patch::Patch),
    /// One `replace` of the whole document with the new item's raw bytes:
    /// for content that JSON text allows but a parsed value cannot hold
    /// (a lone surrogate escape, `"\ud83d"`), so the patch still applies.
    /// `fields`: the top-level fields whose raw bytes differ, sorted.
    Replace { fields: Vec<String> },
}

impl Patch {
    /// The patch as JSON text; `item` is the new item's raw bytes.
    ///
    /// Each value is copied from `item` byte for byte (the paths of a
    /// computed diff point into the new document), so numbers keep the
    /// upstream's spelling (`1E2` stays `1E2`) and `previous + patch` gives
    /// exactly the item sent beside it; a value that cannot be found there is
    /// serialized from its parsed form, which is exact too.
    pub fn encode(&self, item: &[u8]) -> Vec<u8> {
        match self {
            Patch::Ops(p) => {
                let mut out = Vec::with_capacity(64 * p.0.len() + 2);
                // Parsed once for all operations' values.
                let root = raw_root(item);
                out.push(b'[');
                for (n, op) in p.0.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    encode_op(op, root, &mut out);
                }
                out.push(b']');
                out
            }
            Patch::Replace { .. } => {
                let mut out = Vec::with_capacity(item.len() + 40);
                out.extend_from_slice(br#"[{"op":"replace","path":"","value":"#);
                out.extend_from_slice(item);
                out.extend_from_slice(b"}]");
                out
            }
        }
    }
}

/// One operation, its value taken from `item`'s raw bytes where found.
fn encode_op(op: &json_patch::PatchOperation, item: Option<&RawValue>, out: &mut Vec<u8>) {
    use json_patch::PatchOperation as P;
    let (name, path, value) = match op {
        P::Add(o) => ("add", &o.path, &o.value),
        P::Replace(o) => ("replace", &o.path, &o.value),
        P::Remove(o) => {
            out.extend_from_slice(br#"{"op":"remove","path":"#);
            json_string(&o.path.to_string(), out);
            out.push(b'}');
            return;
        }
        // `diff` emits only add, remove and replace.
        other => {
            out.extend_from_slice(&serde_json::to_vec(other).unwrap_or_else(|_| b"{}".to_vec()));
            return;
        }
    };
    let path = path.to_string();
    out.extend_from_slice(br#"{"op":""#);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(br#"","path":"#);
    json_string(&path, out);
    out.extend_from_slice(br#","value":"#);
    let raw = item
        .zip(Pointer::parse(&path).ok())
        .and_then(|(root, p)| find_raw_in(root, &p))
        .filter(|raw| serde_json::from_slice::<Value>(raw).is_ok_and(|v| v == *value));
    match raw {
        Some(raw) => out.extend_from_slice(raw),
        None => {
            out.extend_from_slice(&serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
        }
    }
    out.push(b'}');
}

fn json_string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec()));
}

/// The changes that turn `old` into `new`, keyed by id.
///
/// Order: removals first (in the old list's order), then additions and
/// updates in the new list's order. `ignore` pointers are removed from both
/// sides before deciding whether an item changed; items whose bytes differ but
/// whose content is equal (key order, white space) are not updated; numbers
/// are compared as written, so `1.0` -> `1` is an update.
pub fn diff<'a>(old: &'a ItemList, new: &'a ItemList, ignore: &[Pointer]) -> Vec<Change<'a>> {
    let mut out = Vec::new();
    for item in &old.items {
        if !new.contains(item.key()) {
            out.push(Change::Removed(item));
        }
    }
    for item in &new.items {
        match old.get(item.key()) {
            None => out.push(Change::Added(item)),
            Some(prev) if prev.raw == item.raw => {}
            Some(prev) => {
                if let Some(patch) = changed(prev, item, ignore) {
                    out.push(Change::Updated { item, patch });
                }
            }
        }
    }
    out
}

/// The patch from `old` to `new`, or `None` when they are equal apart from ignored fields.
fn changed(old: &Item, new: &Item, ignore: &[Pointer]) -> Option<Patch> {
    // Both sides are valid JSON (`extract` checked), but valid JSON text may
    // hold what a parsed value cannot (a lone surrogate escape): their bytes
    // differ, so it is a change, told as a whole-document replace.
    let (Ok(a), Ok(b)) = (
        serde_json::from_slice::<Value>(&old.raw),
        serde_json::from_slice::<Value>(&new.raw),
    ) else {
        return Some(Patch::Replace {
            fields: raw_changed_fields(&old.raw, &new.raw),
        });
    };
    if !ignore.is_empty() {
        let (mut a2, mut b2) = (a.clone(), b.clone());
        for p in ignore {
            p.remove_from(&mut a2);
            p.remove_from(&mut b2);
        }
        if a2 == b2 {
            return None;
        }
    } else if a == b {
        return None;
    }
    Some(Patch::Ops(json_patch::diff(&a, &b)))
}

/// Top-level fields whose raw values differ (added or removed included),
/// sorted; empty when either side is not an object.
fn raw_changed_fields(old: &[u8], new: &[u8]) -> Vec<String> {
    use std::collections::BTreeMap;
    type Fields<'a> = BTreeMap<String, &'a RawValue>;
    let (Ok(a), Ok(b)) = (
        serde_json::from_slice::<Fields>(old),
        serde_json::from_slice::<Fields>(new),
    ) else {
        return Vec::new();
    };
    let mut names: Vec<String> = a
        .iter()
        .filter(|(k, v)| !matches!(b.get(*k), Some(w) if w.get() == v.get()))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::extract::extract;
    use bytes::Bytes;
    use serde_json::json;

    fn list(v: Value) -> ItemList {
        let p = Pointer::parse("").expect("p");
        let id = Pointer::parse("/id").expect("p");
        extract(Bytes::from(v.to_string()), &p, &id)
            .expect("list")
            .0
    }

    fn kinds(c: &[Change]) -> Vec<String> {
        c.iter()
            .map(|c| match c {
                Change::Added(i) => format!("+{}", String::from_utf8_lossy(i.key())),
                Change::Updated { item, .. } => format!("~{}", String::from_utf8_lossy(item.key())),
                Change::Removed(i) => format!("-{}", String::from_utf8_lossy(i.key())),
            })
            .collect()
    }

    #[test]
    fn added_updated_removed_in_order() {
        let old = list(json!([{"id":1,"s":"a"},{"id":2,"s":"b"},{"id":3}]));
        let new = list(json!([{"id":4},{"id":3},{"id":1,"s":"z"}]));
        let c = diff(&old, &new, &[]);
        assert_eq!(kinds(&c), ["-2", "+4", "~1"]);
        let Change::Updated { patch, .. } = &c[2] else {
            panic!("not an update")
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&patch.encode(b"")).expect("json"),
            json!([{"op":"replace","path":"/s","value":"z"}])
        );
    }

    #[test]
    fn equal_content_with_different_bytes_is_not_an_update() {
        let p = Pointer::parse("").expect("p");
        let id = Pointer::parse("/id").expect("p");
        let a = extract(Bytes::from_static(br#"[{"id":1,"a":1,"b":2}]"#), &p, &id)
            .expect("a")
            .0;
        let b = extract(Bytes::from_static(br#"[{"b":2,"id":1,"a":1}]"#), &p, &id)
            .expect("b")
            .0;
        assert!(diff(&a, &b, &[]).is_empty());
    }

    #[test]
    fn ignored_fields_do_not_update() {
        let ignore = [Pointer::parse("/updated_at").expect("p")];
        let old = list(json!([{"id":1,"s":"a","updated_at":1}]));
        let new = list(json!([{"id":1,"s":"a","updated_at":2}]));
        assert!(diff(&old, &new, &ignore).is_empty());
        let newer = list(json!([{"id":1,"s":"b","updated_at":3}]));
        assert_eq!(kinds(&diff(&old, &newer, &ignore)), ["~1"]);
    }

    #[test]
    fn identical_lists_produce_nothing() {
        let a = list(json!([{"id":1},{"id":"x"}]));
        assert!(diff(&a, &a.clone(), &[]).is_empty());
    }

    fn item_list(raw: &str) -> ItemList {
        let p = Pointer::parse("").expect("p");
        let id = Pointer::parse("/id").expect("p");
        extract(Bytes::from(raw.to_owned()), &p, &id)
            .expect("list")
            .0
    }

    /// The one update between two single-item lists, with its patch applied
    /// to the previous item: it must give the new item exactly.
    fn update_of(old: &str, new: &str) -> Option<(String, Value, Value)> {
        let (a, b) = (item_list(old), item_list(new));
        let c = diff(&a, &b, &[]);
        let Some(Change::Updated { item, patch }) = c.first() else {
            assert!(c.is_empty(), "{c:?}");
            return None;
        };
        let mut doc: Value = serde_json::from_slice(&a.items[0].raw).expect("old");
        let text = String::from_utf8(patch.encode(&item.raw)).expect("utf8");
        let ops: json_patch::Patch = serde_json::from_str(&text).expect("patch is JSON");
        json_patch::patch(&mut doc, &ops).expect("patch applies");
        let want: Value = serde_json::from_slice(&item.raw).expect("new");
        Some((text, doc, want))
    }

    #[test]
    fn neighbouring_doubles_are_an_update_sent_exactly() {
        let (text, got, want) = update_of(
            r#"[{"id":1,"v":1.8841761630028488}]"#,
            r#"[{"id":1,"v":1.8841761630028486}]"#,
        )
        .expect("a change of one ULP is an update");
        assert_eq!(got, want);
        assert!(text.contains("1.8841761630028486"), "{text}");
        let (text, ..) = update_of(r#"[{"id":1,"v":0}]"#, r#"[{"id":1,"v":94.52706955539223}]"#)
            .expect("update");
        assert_eq!(
            text,
            r#"[{"op":"replace","path":"/v","value":94.52706955539223}]"#
        );
    }

    #[test]
    fn a_lone_surrogate_gets_a_whole_replace_that_applies() {
        let old = r#"[{"id":1,"t":"lone \ud83d a","n":1}]"#;
        let new = r#"[{"id":1,"t":"lone \ud83d b","n":1}]"#;
        let (a, b) = (item_list(old), item_list(new));
        let c = diff(&a, &b, &[]);
        let [Change::Updated { item, patch }] = c.as_slice() else {
            panic!("one update expected: {c:?}")
        };
        assert_eq!(
            patch,
            &Patch::Replace {
                fields: vec!["t".into()]
            }
        );
        let text = String::from_utf8(patch.encode(&item.raw)).expect("utf8");
        assert_eq!(
            text,
            r#"[{"op":"replace","path":"","value":{"id":1,"t":"lone \ud83d b","n":1}}]"#
        );
        // Later changes of the same item are told too.
        let newer = item_list(r#"[{"id":1,"t":"lone \ud83d b","n":2}]"#);
        assert_eq!(diff(&b, &newer, &[]).len(), 1);
    }

    /// A JSON number as text: shortest round-trip doubles, long decimals,
    /// integers beyond 2^64, exponents.
    fn number() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            any::<i64>().prop_map(|i| i.to_string()),
            "-?[1-9][0-9]{20,40}",
            "-?[0-9]\\.[0-9]{17,40}",
            "-?[1-9]\\.[0-9]{1,20}[eE][+-]?[1-9][0-9]{0,2}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_change_of_a_number_is_an_update_that_applies_exactly(
            x in number(),
            y in number(),
            nested in proptest::bool::ANY,
        ) {
            let wrap = |n: &str| if nested {
                format!(r#"[{{"id":1,"a":{{"b":[{n},2]}},"c":{n}}}]"#)
            } else {
                format!(r#"[{{"id":1,"v":{n}}}]"#)
            };
            let (old, new) = (wrap(&x), wrap(&y));
            match update_of(&old, &new) {
                None => proptest::prop_assert_eq!(&x, &y),
                Some((text, got, want)) => {
                    proptest::prop_assert_ne!(&x, &y);
                    proptest::prop_assert_eq!(&got, &want);
                    // The number reaches the subscriber as the upstream wrote it.
                    proptest::prop_assert!(text.contains(&y), "{} lacks {}", text, y);
                }
            }
        }
    }
}
