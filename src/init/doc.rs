//! An OpenAPI or Swagger document as a JSON tree, read from JSON or YAML
//! text, and walked with the JSON Pointer of every node kept, so that any
//! complaint names its place. Local `$ref`s are followed here.
//!
//! This module owns parsing and `$ref` resolution. It must never decide
//! what a document means (that is `openapi`) nor fetch anything.

use serde_json::Value;

use super::detect::escape;
use super::InitError;

/// Parse a document: JSON when it starts with `{` or `[`, YAML otherwise.
/// Errors carry `source:line:column`.
pub(crate) fn parse(text: &str, source: &str) -> Result<Value, InitError> {
    let syntax = |line: usize, column: usize, why: String| InitError::Syntax {
        place: source.to_owned(),
        line,
        column,
        why,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with(['{', '[']) {
        serde_json::from_str(text).map_err(|e| {
            let why = e.to_string();
            // serde_json appends " at line L column C"; the location is in front.
            let why = why
                .rsplit_once(" at line ")
                .map_or(why.as_str(), |(w, _)| w)
                .to_owned();
            syntax(e.line(), e.column(), format!("not valid JSON: {why}"))
        })
    } else {
        serde_norway::from_str::<Value>(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let why = e.to_string();
            let why = why
                .rsplit_once(" at line ")
                .map_or(why.as_str(), |(w, _)| w)
                .to_owned();
            syntax(line, column, format!("not valid YAML: {why}"))
        })
    }
}

/// A node of the document and where it is (`#/paths/~1items/get`).
#[derive(Clone)]
pub(crate) struct Node<'a> {
    pub value: &'a Value,
    pub at: String,
}

/// The whole document, for `$ref` lookups and error messages.
pub(crate) struct Doc<'a> {
    pub root: &'a Value,
    pub source: &'a str,
}

/// How many `$ref`s in a row may be followed before it counts as a loop.
const MAX_HOPS: usize = 32;

impl<'a> Doc<'a> {
    pub(crate) fn new(root: &'a Value, source: &'a str) -> Self {
        Self { root, source }
    }

    pub(crate) fn root(&self) -> Node<'a> {
        Node {
            value: self.root,
            at: "#".into(),
        }
    }

    /// An error at `node`.
    pub(crate) fn error(&self, node: &Node<'_>, why: impl Into<String>) -> InitError {
        InitError::At {
            place: self.source.to_owned(),
            pointer: node.at.clone(),
            why: why.into(),
        }
    }

    /// The child `key` of an object node, its pointer extended.
    pub(crate) fn get(&self, node: &Node<'a>, key: &str) -> Option<Node<'a>> {
        let value = node.value.as_object()?.get(key)?;
        Some(Node {
            value,
            at: format!("{}/{}", node.at, escape(key)),
        })
    }

    /// The entries of an object node (none for anything else).
    pub(crate) fn entries(&self, node: &Node<'a>) -> Vec<(&'a str, Node<'a>)> {
        node.value
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let at = format!("{}/{}", node.at, escape(k));
                        (k.as_str(), Node { value: v, at })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The elements of an array node (none for anything else).
    pub(crate) fn elements(&self, node: &Node<'a>) -> Vec<Node<'a>> {
        node.value
            .as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, v)| Node {
                        value: v,
                        at: format!("{}/{i}", node.at),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Follow `$ref`s until a node without one. Only local references
    /// (`#/components/schemas/Item`, `#/definitions/Item`) are supported.
    pub(crate) fn resolve(&self, mut node: Node<'a>) -> Result<Node<'a>, InitError> {
        for _ in 0..MAX_HOPS {
            let Some(r) = node.value.get("$ref") else {
                return Ok(node);
            };
            let Some(r) = r.as_str() else {
                return Err(self.error(&node, "`$ref` is not a string"));
            };
            let Some(pointer) = r.strip_prefix('#') else {
                return Err(self.error(
                    &node,
                    format!("`$ref: {r}` points into another document; only local references (`#/...`) are supported: bundle the document into one file first"),
                ));
            };
            let decoded = percent_decode(pointer);
            let Some(value) = self.root.pointer(&decoded) else {
                return Err(self.error(
                    &node,
                    format!("`$ref: {r}` does not resolve: the document has nothing at {r}"),
                ));
            };
            node = Node {
                value,
                at: format!("#{decoded}"),
            };
        }
        Err(self.error(
            &node,
            format!("more than {MAX_HOPS} `$ref`s in a row: a reference loop"),
        ))
    }
}

/// `%7B` → `{` in a `$ref` fragment (URI fragment encoding).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = parse(
            "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {,}\n}",
            "api.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("api.json:3:"), "{e}");
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse("openapi: 3.0.3\npaths:\n  /a: [\n", "api.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("api.yaml:"), "{e}");
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn yaml_status_codes_become_string_keys() {
        let v = parse("responses:\n  200:\n    description: ok\n", "a.yaml").expect("yaml");
        assert!(v.pointer("/responses/200/description").is_some(), "{v}");
    }

    #[test]
    fn refs_resolve_with_their_place_or_fail_naming_it() {
        let v: Value = serde_json::json!({
            "components": {"schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"type": "object"},
                           "Loop": {"$ref": "#/components/schemas/Loop"}}},
            "x": {"$ref": "#/components/schemas/A"},
            "missing": {"$ref": "#/components/schemas/Nope"},
            "external": {"$ref": "other.yaml#/A"},
            "loop": {"$ref": "#/components/schemas/Loop"}
        });
        let doc = Doc::new(&v, "api.json");
        let root = doc.root();
        let x = doc
            .resolve(doc.get(&root, "x").expect("x"))
            .expect("resolves");
        assert_eq!(x.at, "#/components/schemas/B");
        let e = doc
            .resolve(doc.get(&root, "missing").expect("m"))
            .err()
            .expect("fails")
            .to_string();
        assert!(e.starts_with("api.json: #/missing: "), "{e}");
        assert!(e.contains("#/components/schemas/Nope"), "{e}");
        let e = doc
            .resolve(doc.get(&root, "external").expect("e"))
            .err()
            .expect("fails")
            .to_string();
        assert!(e.contains("another document"), "{e}");
        let e = doc
            .resolve(doc.get(&root, "loop").expect("l"))
            .err()
            .expect("fails")
            .to_string();
        assert!(e.contains("loop"), "{e}");
    }
}
