//! The default event contract: which event names pollcast sends and what JSON
//! each carries.
//!
//! This module owns the mapping from a change (or a feed status) to an event
//! name and a JSON data document. It is the one place a different contract
//! would plug in. It must never frame SSE (that is `sse::encode`) and never
//! decide what changed (that is `diff`). Raw item bytes are spliced in as they
//! are: they are valid compact JSON already, so no per-item serialisation happens.

use std::time::SystemTime;

use super::diff::Change;
use super::extract::ItemList;

pub const SNAPSHOT: &str = "snapshot";
pub const ADDED: &str = "added";
pub const UPDATED: &str = "updated";
pub const REMOVED: &str = "removed";
pub const STALE: &str = "stale";
pub const RECOVERED: &str = "recovered";

/// `{"items":[...]}` with the items in upstream order.
pub fn snapshot(list: &ItemList) -> Vec<u8> {
    let len: usize = list.items.iter().map(|i| i.raw.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 12);
    out.extend_from_slice(b"{\"items\":[");
    for (n, item) in list.items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.raw);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Event name and data for one change.
pub fn change(change: &Change<'_>) -> (&'static str, Vec<u8>) {
    match change {
        Change::Added(item) => (
            ADDED,
            splice(&[b"{\"id\":", item.id(), b",\"item\":", &item.raw, b"}"]),
        ),
        Change::Updated { item, patch } => {
            let patch = serde_json::to_vec(patch).unwrap_or_else(|_| b"[]".to_vec());
            (
                UPDATED,
                splice(&[
                    b"{\"id\":",
                    item.id(),
                    b",\"item\":",
                    &item.raw,
                    b",\"patch\":",
                    &patch,
                    b"}",
                ]),
            )
        }
        Change::Removed(item) => (REMOVED, splice(&[b"{\"id\":", item.id(), b"}"])),
    }
}

/// `stale`: the upstream is failing; the last good snapshot still stands.
pub fn stale(reason: &str, failures: u32, since: SystemTime) -> Vec<u8> {
    serde_json::json!({
        "reason": reason,
        "failures": failures,
        "since": humantime::format_rfc3339_millis(since).to_string(),
    })
    .to_string()
    .into_bytes()
}

/// `recovered`: polls succeed again.
pub fn recovered(stale_since: SystemTime, failures: u32) -> Vec<u8> {
    serde_json::json!({
        "stale_since": humantime::format_rfc3339_millis(stale_since).to_string(),
        "failures": failures,
    })
    .to_string()
    .into_bytes()
}

fn splice(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::extract::extract;
    use crate::pointer::Pointer;
    use bytes::Bytes;
    use serde_json::{json, Value};

    #[test]
    fn payloads_are_valid_json_with_ids_as_given() {
        let (list, _) = extract(
            Bytes::from_static(br#"[{"id":"a","v":1},{"id":2.50}]"#),
            &Pointer::default(),
            &Pointer::parse("/id").expect("p"),
        )
        .expect("list");
        let snap: Value = serde_json::from_slice(&snapshot(&list)).expect("json");
        assert_eq!(snap, json!({"items":[{"id":"a","v":1},{"id":2.5}]}));
        let (name, data) = change(&Change::Removed(&list.items[1]));
        assert_eq!(name, REMOVED);
        assert_eq!(data, br#"{"id":2.50}"#);
        let (name, data) = change(&Change::Added(&list.items[0]));
        assert_eq!(name, ADDED);
        let v: Value = serde_json::from_slice(&data).expect("json");
        assert_eq!(v, json!({"id":"a","item":{"id":"a","v":1}}));
    }
}
