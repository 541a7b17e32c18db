//! Object feeds: a body (or the value at `items`) that is one object rather
//! than a list, followed as it changes.
//!
//! This module owns reading raw JSON by pointer without building values
//! (the object itself, its id, the array whose appended entries are told, the
//! status field that ends a feed). It must never decide what changed as a
//! whole (that is `diff`) nor render events (that is `contract`). Values stay
//! slices of the poll body: item bytes are exactly as the upstream wrote them.

use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::extract::{compact, single, ExtractError, Item, ItemList};
use crate::pointer::Pointer;

/// Extract an object feed's body: the object at `at` becomes the one item,
/// with the id at `id` (none when the object has no such field).
pub(crate) fn extract_object(
    body: Bytes,
    at: &Pointer,
    id: &Pointer,
) -> Result<ItemList, ExtractError> {
    let body = compact(body);
    let text = std::str::from_utf8(&body).map_err(|_| ExtractError::NotUtf8)?;
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| ExtractError::InvalidJson(e.to_string()))?;
    let obj = find(root, at.tokens())
        .map_err(|e| ExtractError::InvalidJson(e.to_string()))?
        .ok_or_else(|| ExtractError::ItemsMissing(at.as_str().to_owned()))?;
    if !obj.get().starts_with('{') {
        return Err(ExtractError::NotAnObject(at.as_str().to_owned()));
    }
    let start = offset(text, obj.get());
    let raw = body.slice(start..start + obj.get().len());
    let id = match find(obj, id.tokens()).ok().flatten() {
        Some(v) => {
            let s = offset(obj.get(), v.get());
            s..s + v.get().len()
        }
        None => 0..0,
    };
    Ok(single(raw, id))
}

/// Where `inner` (a subslice of `outer`) starts in `outer`.
fn offset(outer: &str, inner: &str) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// The raw JSON at `at` inside one compact JSON value, if any.
pub(crate) fn find_raw<'a>(value: &'a [u8], at: &Pointer) -> Option<&'a [u8]> {
    find_raw_in(raw_root(value)?, at)
}

/// One compact JSON value as a [`RawValue`], to look up several pointers
/// in it without scanning it again from the top for each.
pub(crate) fn raw_root(value: &[u8]) -> Option<&RawValue> {
    serde_json::from_str(std::str::from_utf8(value).ok()?).ok()
}

/// The raw JSON at `at` inside `root`, if any.
pub(crate) fn find_raw_in<'a>(root: &'a RawValue, at: &Pointer) -> Option<&'a [u8]> {
    find(root, at.tokens())
        .ok()
        .flatten()
        .map(|r| r.get().as_bytes())
}

/// The text of the value at `at`: a string's contents, anything else as its JSON.
pub(crate) fn text_at(value: &[u8], at: &Pointer) -> Option<String> {
    let raw = find_raw(value, at)?;
    match raw.first() {
        Some(b'"') => serde_json::from_slice(raw).ok(),
        _ => Some(String::from_utf8_lossy(raw).into_owned()),
    }
}

/// New entries of the array at `at` in an object feed's item: `Some(json array)`
/// when the new array extends the old one, `None` when it did not grow or was
/// rewritten (then it counts as an ordinary update).
pub fn appended(old: &Item, new: &Item, at: &Pointer) -> Option<Vec<u8>> {
    let (_, entries) = appended_entries(old, new, at)?;
    let mut out = Vec::new();
    push_array(&mut out, entries.iter().copied());
    Some(out)
}

/// Raw JSON values written into `out` as one array.
pub(crate) fn push_array<'a>(out: &mut Vec<u8>, values: impl IntoIterator<Item = &'a [u8]>) {
    out.push(b'[');
    for (n, v) in values.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v);
    }
    out.push(b']');
}

/// [`appended`] entry by entry: the index of the first new entry and each
/// new entry's raw JSON (slices of `new`).
pub(crate) fn appended_entries<'a>(
    old: &Item,
    new: &'a Item,
    at: &Pointer,
) -> Option<(usize, Vec<&'a [u8]>)> {
    let a = find_raw(&old.raw, at)?;
    let b = find_raw(&new.raw, at)?;
    let a: Vec<&RawValue> = serde_json::from_slice(a).ok()?;
    let b: Vec<&RawValue> = serde_json::from_slice(b).ok()?;
    if b.len() <= a.len() || a.iter().zip(&b).any(|(x, y)| x.get() != y.get()) {
        return None;
    }
    Some((
        a.len(),
        b[a.len()..].iter().map(|e| e.get().as_bytes()).collect(),
    ))
}

/// Every entry of the array at `at` in an object feed's item (none when it is
/// missing or not an array), as raw JSON slices of the item.
pub fn entries<'a>(item: &'a Item, at: &Pointer) -> Vec<&'a [u8]> {
    find_raw(&item.raw, at)
        .and_then(|a| serde_json::from_slice::<Vec<&RawValue>>(a).ok())
        .map(|v| v.into_iter().map(|e| e.get().as_bytes()).collect())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).expect("pointer")
    }

    #[test]
    fn object_with_and_without_id_keeps_upstream_bytes() {
        // A body with line breaks is compacted, so the object fits one `data:` line.
        let body = Bytes::from_static(b"{\"job\":\n {\"z\":1, \"id\": \"j\\\"1\", \"a\": [1]}}");
        let l = extract_object(body, &p("/job"), &p("/id")).expect("object");
        assert_eq!(&l.items[0].raw[..], br#"{"z":1,"id":"j\"1","a":[1]}"#);
        assert_eq!(l.items[0].id(), br#""j\"1""#);
        let l = extract_object(Bytes::from_static(br#"{"a":1}"#), &p(""), &p("/id")).expect("ok");
        assert_eq!(l.items[0].id(), b"");
        assert!(l.get(b"").is_some());
        assert_eq!(
            extract_object(Bytes::from_static(b"[1]"), &p(""), &p("/id")).unwrap_err(),
            ExtractError::NotAnObject(String::new())
        );
        assert!(extract_object(Bytes::from_static(b"{"), &p(""), &p("/id")).is_err());
    }

    #[test]
    fn appended_entries_only_when_the_array_grew() {
        let item = |raw: &'static str| {
            extract_object(Bytes::from_static(raw.as_bytes()), &p(""), &p("/id"))
                .expect("object")
                .items
                .remove(0)
        };
        let at = p("/tx");
        let a = item(r#"{"tx":[{"b":1,"a":2}]}"#);
        let b = item(r#"{"tx":[{"b":1,"a":2},{"z":1,"y":2},3]}"#);
        assert_eq!(
            appended(&a, &b, &at).as_deref(),
            Some(&br#"[{"z":1,"y":2},3]"#[..])
        );
        assert_eq!(appended(&b, &a, &at), None);
        let c = item(r#"{"tx":[{"b":9},1]}"#);
        assert_eq!(appended(&a, &c, &at), None, "rewritten, not appended");
        assert_eq!(text_at(&b.raw, &p("/tx/2")).as_deref(), Some("3"));
    }
}
