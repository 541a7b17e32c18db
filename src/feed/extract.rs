//! Turning one upstream response body into an ordered, id-keyed item list.
//!
//! This module owns the reading of upstream JSON: finding the items array
//! (`items` pointer), each item's id (`id` pointer), and the raw bytes of every
//! item. Items stay as slices of the body (`Bytes`), never rebuilt into
//! `serde_json::Value`: unchanged items are recognised by their bytes alone.
//! It must never panic on any body, and never decide what changed (that is `diff`).

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::pointer::Pointer;

/// One item of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Canonical form of the id, for matching: numbers as written, strings re-escaped.
    pub key: Box<str>,
    /// The id exactly as the upstream wrote it (compact JSON).
    pub id: Bytes,
    /// The whole item, compact JSON.
    pub raw: Bytes,
}

/// The items of one successful poll, in upstream order, unique by id.
#[derive(Debug, Default, Clone)]
pub struct ItemList {
    pub items: Vec<Item>,
    pub index: HashMap<Box<str>, usize>,
}

impl ItemList {
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.index.get(key).map(|&i| &self.items[i])
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
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
}

/// Items skipped while extracting: logged, never fatal.
#[derive(Debug, Default, PartialEq, Eq)]
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
pub fn extract(
    body: Bytes,
    items: &Pointer,
    id: &Pointer,
) -> Result<(ItemList, Skipped), ExtractError> {
    let body = compact(body);
    let text = std::str::from_utf8(&body).map_err(|_| ExtractError::NotUtf8)?;
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| ExtractError::InvalidJson(e.to_string()))?;
    let array = find(root, items.tokens())
        .map_err(|e| ExtractError::InvalidJson(e.to_string()))?
        .ok_or_else(|| ExtractError::ItemsMissing(items.as_str().to_owned()))?;
    let elements: Vec<&RawValue> = if array.get().starts_with('[') {
        serde_json::from_str(array.get()).map_err(|e| ExtractError::InvalidJson(e.to_string()))?
    } else {
        return Err(ExtractError::NotAnArray(items.as_str().to_owned()));
    };

    let mut list = ItemList {
        items: Vec::with_capacity(elements.len()),
        index: HashMap::with_capacity(elements.len()),
    };
    let mut skipped = Skipped::default();
    for el in elements {
        let Some(id_raw) = find(el, id.tokens()).ok().flatten() else {
            skipped.missing_id += 1;
            continue;
        };
        let Some(key) = id_key(id_raw) else {
            skipped.missing_id += 1;
            continue;
        };
        if list.index.contains_key(&key) {
            skipped.duplicate_id += 1;
            continue;
        }
        list.index.insert(key.clone(), list.items.len());
        list.items.push(Item {
            key,
            id: body.slice_ref(id_raw.get().as_bytes()),
            raw: body.slice_ref(el.get().as_bytes()),
        });
    }
    Ok((list, skipped))
}

/// The matching key of an id: numbers by their text, strings by their value.
fn id_key(raw: &RawValue) -> Option<Box<str>> {
    let s = raw.get();
    match s.as_bytes().first()? {
        b'"' => {
            let v: String = serde_json::from_str(s).ok()?;
            serde_json::to_string(&v).ok().map(String::into_boxed_str)
        }
        b'-' | b'0'..=b'9' => Some(s.into()),
        _ => None,
    }
}

/// Follow pointer tokens through raw JSON without building values.
fn find<'a>(
    mut cur: &'a RawValue,
    tokens: &[String],
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    for t in tokens {
        let mut de = serde_json::Deserializer::from_str(cur.get());
        let next = match cur.get().as_bytes().first() {
            Some(b'{') => FindKey(t).deserialize(&mut de)?,
            Some(b'[') => match t.parse::<usize>() {
                Ok(i) => FindIndex(i).deserialize(&mut de)?,
                Err(_) => None,
            },
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

struct FindKey<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a map key with the wanted token without allocating for plain keys.
struct KeyIs<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

struct FindIndex(usize);

impl<'de> DeserializeSeed<'de> for FindIndex {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FindIndex {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        loop {
            if i == self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// Remove insignificant whitespace when the body has line breaks, so raw item
/// bytes are single-line JSON and can be embedded in SSE `data:` lines as they are.
/// Bodies without line breaks are returned untouched (no copy).
pub fn compact(body: Bytes) -> Bytes {
    if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
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
        assert_eq!(&l.items[1].id[..], br#""b""#);
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
        assert_eq!(&l.items[2].id[..], br#""\u0061""#);
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
