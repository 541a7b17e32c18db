//! What a JSON Schema says about a response: an array, an object with
//! these properties, or something else, with `$ref`, `allOf` and
//! single-alternative `anyOf`/`oneOf` (FastAPI's `Optional[...]`) seen through.
//!
//! This module owns flattening schemas into that [`Shape`]. It must never
//! decide which array is a list or which field an id (that is `detect`).

use super::doc::{Doc, Node};
use super::InitError;

/// How deep `allOf`/`anyOf` nesting is followed before giving up.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Array,
    Object,
    Other,
}

/// A schema flattened.
pub(crate) struct Shape<'a> {
    pub kind: Kind,
    /// Object properties, in document order, each with its (unresolved) schema.
    pub props: Vec<(String, Node<'a>)>,
    pub required: Vec<String>,
    /// Array element schema.
    pub items: Option<Node<'a>>,
    /// Where the schema was defined (after `$ref`s), for comments.
    pub at: String,
}

impl Shape<'_> {
    /// The schema's name when it is a `components/schemas` or `definitions` entry.
    pub(crate) fn name(&self) -> Option<&str> {
        let (parent, name) = self.at.rsplit_once('/')?;
        (parent == "#/components/schemas" || parent == "#/definitions").then_some(name)
    }
}

pub(crate) fn shape<'a>(doc: &Doc<'a>, node: Node<'a>) -> Result<Shape<'a>, InitError> {
    flatten(doc, node, 0)
}

fn flatten<'a>(doc: &Doc<'a>, node: Node<'a>, depth: usize) -> Result<Shape<'a>, InitError> {
    let node = doc.resolve(node)?;
    let mut out = Shape {
        kind: declared_kind(node.value),
        props: Vec::new(),
        required: Vec::new(),
        items: doc.get(&node, "items"),
        at: node.at.clone(),
    };
    if depth > MAX_DEPTH {
        return Err(doc.error(&node, "schema nesting too deep (allOf/anyOf loop?)"));
    }
    if let Some(props) = doc.get(&node, "properties") {
        for (k, v) in doc.entries(&props) {
            out.props.push((k.to_owned(), v));
        }
    }
    if let Some(req) = node.value.get("required").and_then(|r| r.as_array()) {
        out.required
            .extend(req.iter().filter_map(|r| r.as_str()).map(str::to_owned));
    }
    if let Some(all) = doc.get(&node, "allOf") {
        for part in doc.elements(&all) {
            let part = flatten(doc, part, depth + 1)?;
            merge(&mut out, part);
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(alts) = doc.get(&node, key) else {
            continue;
        };
        let mut real = Vec::new();
        for alt in doc.elements(&alts) {
            let alt = doc.resolve(alt)?;
            if !is_null(alt.value) {
                real.push(alt);
            }
        }
        if let [only] = real.as_slice() {
            let part = flatten(doc, only.clone(), depth + 1)?;
            merge(&mut out, part);
        }
    }
    if out.kind == Kind::Other {
        if out.items.is_some() {
            out.kind = Kind::Array;
        } else if !out.props.is_empty() {
            out.kind = Kind::Object;
        }
    }
    Ok(out)
}

fn merge<'a>(into: &mut Shape<'a>, part: Shape<'a>) {
    if into.kind == Kind::Other {
        into.kind = part.kind;
    }
    if into.items.is_none() {
        into.items = part.items;
    }
    for (k, v) in part.props {
        if !into.props.iter().any(|(n, _)| *n == k) {
            into.props.push((k, v));
        }
    }
    for r in part.required {
        if !into.required.contains(&r) {
            into.required.push(r);
        }
    }
    // A wrapper (`allOf: [{$ref: Page}]`) is best named by what it wraps.
    if into.props.len() == 1 || into.at.ends_with("/schema") {
        into.at = part.at;
    }
}

/// `type: array`, `type: [array, "null"]` (3.1), `type: object`.
fn declared_kind(v: &serde_json::Value) -> Kind {
    let one = |t: &str| match t {
        "array" => Kind::Array,
        "object" => Kind::Object,
        _ => Kind::Other,
    };
    match v.get("type") {
        Some(serde_json::Value::String(t)) => one(t),
        Some(serde_json::Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .filter(|t| *t != "null")
            .map(one)
            .next()
            .unwrap_or(Kind::Other),
        _ => Kind::Other,
    }
}

fn is_null(v: &serde_json::Value) -> bool {
    v.get("type").and_then(|t| t.as_str()) == Some("null")
        || v.get("enum")
            .and_then(|e| e.as_array())
            .is_some_and(|e| e.iter().all(|x| x.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_of_merges_and_optional_any_of_is_seen_through() {
        let v = json!({
            "components": {"schemas": {
                "Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
                "Item": {"allOf": [{"$ref": "#/components/schemas/Base"},
                                   {"properties": {"name": {"type": "string"}}, "required": ["name"]}]},
                "Page": {"type": "object", "properties": {
                    "items": {"anyOf": [{"type": "array", "items": {"$ref": "#/components/schemas/Item"}}, {"type": "null"}]},
                    "total": {"type": "integer"}}}
            }},
            "s": {"$ref": "#/components/schemas/Page"}
        });
        let doc = Doc::new(&v, "t");
        let s = shape(&doc, doc.get(&doc.root(), "s").expect("s")).expect("shape");
        assert_eq!(s.kind, Kind::Object);
        assert_eq!(s.name(), Some("Page"));
        let (_, items) = s
            .props
            .iter()
            .find(|(n, _)| n == "items")
            .expect("items")
            .clone();
        let items = shape(&doc, items).expect("items");
        assert_eq!(items.kind, Kind::Array);
        let item = shape(&doc, items.items.expect("element")).expect("item");
        assert_eq!(item.kind, Kind::Object);
        let names: Vec<&str> = item.props.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["id", "name"]);
        assert_eq!(item.required, ["id", "name"]);
    }

    #[test]
    fn three_one_type_lists_and_implicit_kinds() {
        let v = json!({"a": {"type": ["array", "null"], "items": {}}, "b": {"properties": {"x": {}}}, "c": {"type": "string"}});
        let doc = Doc::new(&v, "t");
        let root = doc.root();
        let k = |key: &str| {
            shape(&doc, doc.get(&root, key).expect("key"))
                .expect("shape")
                .kind
        };
        assert_eq!(k("a"), Kind::Array);
        assert_eq!(k("b"), Kind::Object);
        assert_eq!(k("c"), Kind::Other);
    }
}
