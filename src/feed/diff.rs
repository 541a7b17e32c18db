//! Comparing two successive snapshots of a feed.
//!
//! This module owns the decision of *what changed*: which ids appeared,
//! disappeared or changed content, and the RFC 6902 patch between an item's
//! old and new content. Unchanged items are recognised by comparing raw bytes;
//! only items whose bytes differ are parsed. It must never encode SSE or know
//! about subscribers.

use serde_json::Value;

use super::extract::{Item, ItemList};
use crate::pointer::Pointer;

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<'a> {
    Added(&'a Item),
    Updated {
        item: &'a Item,
        patch: json_patch::Patch,
    },
    Removed(&'a Item),
}

/// The changes that turn `old` into `new`, keyed by id.
///
/// Order: removals first (in the old list's order), then additions and
/// updates in the new list's order. `ignore` pointers are removed from both
/// sides before deciding whether an item changed; items whose bytes differ but
/// whose content is equal (key order, number spelling) are not updated.
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
fn changed(old: &Item, new: &Item, ignore: &[Pointer]) -> Option<json_patch::Patch> {
    // Both sides were validated by `extract`; a parse failure here cannot
    // happen, and is treated as a change with a whole-document replace.
    let (Ok(a), Ok(b)) = (
        serde_json::from_slice::<Value>(&old.raw),
        serde_json::from_slice::<Value>(&new.raw),
    ) else {
        return Some(json_patch::Patch(Vec::new()));
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
    Some(json_patch::diff(&a, &b))
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
            serde_json::to_value(patch).expect("json"),
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
}
