//! Turning one upstream response body into an ordered, id-keyed item list.
//!
//! This module owns the reading of upstream JSON: finding the items array
//! (`items` pointer), each item's id (`id` pointer), and the raw bytes of every
//! item. Items stay as slices of the body (`Bytes`), never rebuilt into
//! `serde_json::Value`: unchanged items are recognised by their bytes alone.
//! It must never panic on any body, and never decide what changed (that is `diff`).

use std::hash::BuildHasher;
use std::ops::Range;

use bytes::Bytes;
use hashbrown::hash_table::{Entry, HashTable};
use hashbrown::DefaultHashBuilder as RandomState;

use super::scan::scan;
use crate::pointer::Pointer;

/// One item of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The whole item, compact JSON: a slice of the poll body, no copy.
    pub raw: Bytes,
    /// Where the id is in `raw`, exactly as the upstream wrote it.
    id: Range<usize>,
    /// The canonical key, only when it differs from the id's bytes (a string
    /// id with escapes); usually the id's bytes are the key.
    canonical: Option<Box<[u8]>>,
}

impl Item {
    /// The id exactly as the upstream wrote it (compact JSON).
    pub fn id(&self) -> &[u8] {
        &self.raw[self.id.clone()]
    }

    /// Canonical form of the id, for matching: numbers as written, strings
    /// re-escaped, so `"\u0061"` and `"a"` are one id and `1` and `"1"` two.
    pub fn key(&self) -> &[u8] {
        self.canonical.as_deref().unwrap_or_else(|| self.id())
    }
}

/// The items of one successful poll, in upstream order, unique by id.
///
/// The index holds positions into `items`, hashed by key: no key is copied.
#[derive(Default, Clone)]
pub struct ItemList {
    pub items: Vec<Item>,
    index: HashTable<usize>,
    hasher: RandomState,
}

impl std::fmt::Debug for ItemList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.items).finish()
    }
}

impl ItemList {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Item> {
        let key = key.as_ref();
        self.index
            .find(self.hasher.hash_one(key), |&i| self.items[i].key() == key)
            .map(|&i| &self.items[i])
    }
    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Append `item` unless its id is already present (then `false`).
    fn push(&mut self, item: Item) -> bool {
        let items = &self.items;
        let hasher = &self.hasher;
        let hash = hasher.hash_one(item.key());
        match self.index.entry(
            hash,
            |&i| items[i].key() == item.key(),
            |&i| hasher.hash_one(items[i].key()),
        ) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(self.items.len());
                self.items.push(item);
                true
            }
        }
    }
}

/// A poll body that cannot become an item list; the poll counts as failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("body is not UTF-8 JSON")]
    NotUtf8,
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("no value at items pointer `{0}`")]
    ItemsMissing(String),
    #[error("value at items pointer `{0}` is not an array")]
    NotAnArray(String),
    #[error("value at items pointer `{0}` is not an object (the feed has `object = true`)")]
    NotAnObject(String),
}

/// Items skipped while extracting: logged, never fatal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Items without a string or number at the id pointer.
    pub missing_id: usize,
    /// Items whose id was already seen earlier in the list (the first one wins).
    pub duplicate_id: usize,
}

/// Extract the item list from a poll body.
///
/// Outcomes, all deterministic: items without a usable id (missing, or not a
/// string/number) are skipped; of items sharing an id the first is kept.
/// The body is read once by [`scan`], which validates it and finds the spans;
/// items then become slices of the body without any copy.
pub fn extract(
    body: Bytes,
    items: &Pointer,
    id: &Pointer,
) -> Result<(ItemList, Skipped), ExtractError> {
    let body = compact(body);
    std::str::from_utf8(&body).map_err(|_| ExtractError::NotUtf8)?;
    let found = scan(&body, items.tokens(), id.tokens())
        .map_err(|e| ExtractError::InvalidJson(e.to_string()))?;
    if !found.items_present {
        return Err(ExtractError::ItemsMissing(items.as_str().to_owned()));
    }
    if !found.items_is_array {
        return Err(ExtractError::NotAnArray(items.as_str().to_owned()));
    }

    let mut list = ItemList {
        items: Vec::with_capacity(found.elements.len()),
        index: HashTable::with_capacity(found.elements.len()),
        hasher: RandomState::default(),
    };
    let mut skipped = Skipped::default();
    for (el, id_span) in found.elements {
        let Some(id_span) = id_span else {
            skipped.missing_id += 1;
            continue;
        };
        let Ok(canonical) = canonical_key(&body[id_span.clone()]) else {
            skipped.missing_id += 1;
            continue;
        };
        let item = Item {
            id: id_span.start - el.start..id_span.end - el.start,
            raw: body.slice(el),
            canonical,
        };
        if !list.push(item) {
            skipped.duplicate_id += 1;
        }
    }
    Ok((list, skipped))
}

/// An object feed's one-item list: `raw` is the object, `id` the span of its
/// id in it (empty when it has none). Every version shares one fixed key, so
/// successive polls always compare the same item.
pub fn single(raw: Bytes, id: Range<usize>) -> ItemList {
    let mut list = ItemList {
        items: Vec::with_capacity(1),
        index: HashTable::with_capacity(1),
        hasher: RandomState::default(),
    };
    list.push(Item {
        raw,
        id,
        canonical: Some(Box::new([])),
    });
    list
}

/// The canonical key of an id when it is not the id's own bytes: numbers
/// match by their text, strings by their value (re-escaped). `Err`: the id is
/// neither a string nor a number.
fn canonical_key(id: &[u8]) -> Result<Option<Box<[u8]>>, ()> {
    match id.first() {
        Some(b'"') if !id.contains(&b'\\') => Ok(None),
        Some(b'"') => {
            let v: String = serde_json::from_slice(id).map_err(|_| ())?;
            let canon = serde_json::to_vec(&v).map_err(|_| ())?;
            Ok((canon != id).then(|| canon.into_boxed_slice()))
        }
        Some(b'-' | b'0'..=b'9') => Ok(None),
        _ => Err(()),
    }
}

/// Remove insignificant whitespace when the body has line breaks, so raw item
/// bytes are single-line JSON and can be embedded in SSE `data:` lines as they are.
/// Bodies without line breaks are returned untouched (no copy).
pub fn compact(body: Bytes) -> Bytes {
    if memchr::memchr2(b'\n', b'\r', &body).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in body.iter() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_string = true;
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr(s: &str) -> Pointer {
        Pointer::parse(s).expect("pointer")
    }

    fn ex(body: &str, items: &str) -> Result<(ItemList, Skipped), ExtractError> {
        extract(Bytes::from(body.to_owned()), &ptr(items), &ptr("/id"))
    }

    #[test]
    fn top_level_array() {
        let (l, s) = ex(r#"[{"id":1,"a":"x"},{"id":"b"}]"#, "").expect("ok");
        assert_eq!(s, Skipped::default());
        assert_eq!(l.items.len(), 2);
        assert_eq!(&l.items[0].raw[..], br#"{"id":1,"a":"x"}"#);
        assert_eq!(l.items[1].id(), br#""b""#);
        assert!(l.get("1").is_some() && l.get("\"b\"").is_some());
    }

    #[test]
    fn nested_items_and_pretty_bodies() {
        let body = "{\n  \"data\": {\"list\": [\n    {\"id\": 7, \"s\": \"a b\\n\"}\n  ]}\n}";
        let (l, _) = ex(body, "/data/list").expect("ok");
        assert_eq!(&l.items[0].raw[..], br#"{"id":7,"s":"a b\n"}"#);
    }

    #[test]
    fn string_and_number_ids_differ_and_escapes_match() {
        let (l, s) = ex(r#"[{"id":1},{"id":"1"},{"id":"\u0061"},{"id":"a"}]"#, "").expect("ok");
        assert_eq!(l.len(), 3);
        assert_eq!(s.duplicate_id, 1);
        assert_eq!(l.items[2].id(), br#""\u0061""#);
    }

    #[test]
    fn missing_and_bad_ids_are_skipped() {
        let (l, s) = ex(r#"[{"x":1},{"id":null},{"id":[1]},3,{"id":2}]"#, "").expect("ok");
        assert_eq!(l.len(), 1);
        assert_eq!(s.missing_id, 4);
    }

    #[test]
    fn failures_are_errors_not_panics() {
        assert!(matches!(ex("[{", ""), Err(ExtractError::InvalidJson(_))));
        assert!(matches!(
            ex(r#"{"a":1}"#, ""),
            Err(ExtractError::NotAnArray(_))
        ));
        assert!(matches!(
            ex(r#"{"a":1}"#, "/data"),
            Err(ExtractError::ItemsMissing(_))
        ));
        assert!(matches!(
            ex(r#"{"data":{}}"#, "/data"),
            Err(ExtractError::NotAnArray(_))
        ));
        assert!(matches!(
            extract(Bytes::from_static(b"\xff\xfe"), &ptr(""), &ptr("/id")),
            Err(ExtractError::NotUtf8)
        ));
        assert!(matches!(ex("", ""), Err(ExtractError::InvalidJson(_))));
    }

    #[test]
    fn index_tokens_navigate_arrays() {
        let (l, _) = ex(r#"[[{"id":1}],[{"id":2},{"id":3}]]"#, "/1").expect("ok");
        assert_eq!(l.len(), 2);
    }
}
