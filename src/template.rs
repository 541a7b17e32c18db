//! JSON data templates: the `data` of a configured event, with placeholders.
//!
//! A template is any TOML value (usually an inline table). It is compiled once
//! at startup into literal byte runs and holes, so rendering is concatenation:
//! no JSON value is built per event. Two kinds of hole:
//!
//! - a string that is exactly one placeholder, `"{{item}}"`, is replaced by the
//!   placeholder's JSON value as is (object, array, number, string...);
//! - a placeholder inside a longer string (or a key), `"job {{id}} done"`, is
//!   replaced by its text: a JSON string's contents, or any other value's JSON
//!   text, escaped as string contents.
//!
//! Output is always one valid JSON document: literals are serialized by
//! `serde_json` and every hole holds a complete JSON value or escaped string
//! contents. `{{item/<JSON Pointer>}}` (where `{{item}}` is in scope) is the
//! value at that pointer inside the item (`null` when absent).
//! This module owns template syntax and rendering; it must never know
//! what the placeholders mean (that is `feed::contract`) or frame SSE.

use std::fmt;

use crate::pointer::Pointer;

/// A value a template can refer to. `Path(i)` is the i-th path parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Items,
    Item,
    Id,
    Patch,
    Changes,
    New,
    Total,
    Sent,
    Chunk,
    Timestamp,
    Feed,
    Reason,
    Failures,
    Since,
    StaleSince,
    Ids,
    Count,
    Index,
    After,
    Entry,
    Path(usize),
    /// The value at the template's i-th field pointer inside `{{item}}`.
    Field(usize),
}

impl Slot {
    /// Every named slot, for parsing and for error messages.
    const NAMED: &'static [(&'static str, Slot)] = &[
        ("items", Slot::Items),
        ("item", Slot::Item),
        ("id", Slot::Id),
        ("patch", Slot::Patch),
        ("changes", Slot::Changes),
        ("new", Slot::New),
        ("total", Slot::Total),
        ("sent", Slot::Sent),
        ("chunk", Slot::Chunk),
        ("timestamp", Slot::Timestamp),
        ("feed", Slot::Feed),
        ("reason", Slot::Reason),
        ("failures", Slot::Failures),
        ("since", Slot::Since),
        ("stale_since", Slot::StaleSince),
        ("ids", Slot::Ids),
        ("count", Slot::Count),
        ("index", Slot::Index),
        ("after", Slot::After),
        ("entry", Slot::Entry),
    ];

    fn name(self) -> &'static str {
        Self::NAMED
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("path", |(n, _)| n)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(Vec<u8>),
    /// The slot's JSON value.
    Raw(Slot),
    /// The slot's text, escaped as JSON string contents.
    Text(Slot),
}

/// A compiled data template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    /// The pointers of `{{item/...}}` placeholders, by `Slot::Field` index.
    fields: Vec<Pointer>,
}

/// Why a template cannot be used; the caller adds the config key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{{{name}}}}}`; here you can use: {allowed}")]
    Unknown { name: String, allowed: String },
    #[error("`{{{{` without a closing `}}}}` in `{0}`")]
    Unclosed(String),
    #[error("`{{{{{0}}}}}`: {1}")]
    BadPointer(String, String),
}

/// Where a template is used: which slots exist there, and the path parameter names.
pub struct Scope<'a> {
    pub slots: &'a [Slot],
    pub params: &'a [String],
}

impl Scope<'_> {
    fn resolve(&self, name: &str, fields: &mut Vec<Pointer>) -> Result<Slot, TemplateError> {
        if let (Some(p), true) = (name.strip_prefix("item"), self.slots.contains(&Slot::Item)) {
            if p.starts_with('/') {
                let at = Pointer::parse(p)
                    .map_err(|e| TemplateError::BadPointer(name.to_owned(), e.to_string()))?;
                let i = match fields.iter().position(|f| *f == at) {
                    Some(i) => i,
                    None => {
                        fields.push(at);
                        fields.len() - 1
                    }
                };
                return Ok(Slot::Field(i));
            }
        }
        let slot = if let Some(p) = name.strip_prefix("path.") {
            self.params.iter().position(|n| n == p).map(Slot::Path)
        } else {
            Slot::NAMED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .filter(|s| self.slots.contains(s))
        };
        slot.ok_or_else(|| {
            let mut allowed: Vec<String> = self
                .slots
                .iter()
                .map(|s| format!("{{{{{}}}}}", s.name()))
                .collect();
            allowed.extend(self.params.iter().map(|p| format!("{{{{path.{p}}}}}")));
            if self.slots.contains(&Slot::Item) {
                allowed.push("{{item/<JSON Pointer>}}".to_owned());
            }
            TemplateError::Unknown {
                name: name.to_owned(),
                allowed: allowed.join(", "),
            }
        })
    }
}

/// The values of one rendering: raw JSON per slot, `None` renders as `null`.
pub trait Vars {
    fn write(&self, slot: Slot, out: &mut Vec<u8>) -> bool;
    /// The raw JSON at `at` inside the item, for `{{item/...}}`.
    fn field(&self, _at: &Pointer, _out: &mut Vec<u8>) -> bool {
        false
    }
}

impl Template {
    /// Compile a TOML value against a scope.
    pub fn compile(value: &toml::Value, scope: &Scope<'_>) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut fields = Vec::new();
        compile_value(value, scope, &mut parts, &mut fields)?;
        // Merge adjacent literals so rendering copies as few runs as possible.
        let mut merged: Vec<Part> = Vec::with_capacity(parts.len());
        for p in parts {
            match (merged.last_mut(), p) {
                (Some(Part::Lit(a)), Part::Lit(b)) => a.extend_from_slice(&b),
                (_, p) => merged.push(p),
            }
        }
        Ok(Self {
            parts: merged,
            fields,
        })
    }

    /// Compile a template written as JSON (pollcast's built-in defaults).
    pub fn from_json(json: &str, scope: &Scope<'_>) -> Result<Self, TemplateError> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| TemplateError::Unclosed(e.to_string()))?;
        let t = toml::Value::try_from(v).map_err(|e| TemplateError::Unclosed(e.to_string()))?;
        Self::compile(&t, scope)
    }

    /// Whether rendering needs this slot (to skip computing unused values).
    pub fn uses(&self, slot: Slot) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Raw(s) | Part::Text(s) if *s == slot))
    }

    pub fn render(&self, vars: &dyn Vars) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.render_into(vars, &mut out);
        out
    }

    fn write(&self, vars: &dyn Vars, slot: Slot, out: &mut Vec<u8>) -> bool {
        match slot {
            Slot::Field(i) => self.fields.get(i).is_some_and(|at| vars.field(at, out)),
            s => vars.write(s, out),
        }
    }

    pub fn render_into(&self, vars: &dyn Vars, out: &mut Vec<u8>) {
        for p in &self.parts {
            match p {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Raw(s) => {
                    if !self.write(vars, *s, out) {
                        out.extend_from_slice(b"null");
                    }
                }
                Part::Text(s) => {
                    let mut raw = Vec::new();
                    if !self.write(vars, *s, &mut raw) {
                        raw.extend_from_slice(b"null");
                    }
                    push_text(&raw, out);
                }
            }
        }
    }
}

/// Append a raw JSON value as escaped string contents: a string's own text,
/// anything else as its JSON text.
fn push_text(raw: &[u8], out: &mut Vec<u8>) {
    let text: String = match raw.first() {
        Some(b'"') => serde_json::from_slice(raw).unwrap_or_default(),
        _ => String::from_utf8_lossy(raw).into_owned(),
    };
    let quoted = serde_json::to_string(&text).unwrap_or_else(|_| "\"\"".into());
    out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
}

fn compile_value(
    v: &toml::Value,
    scope: &Scope<'_>,
    out: &mut Vec<Part>,
    fields: &mut Vec<Pointer>,
) -> Result<(), TemplateError> {
    match v {
        toml::Value::String(s) => compile_string(s, scope, out, fields, true)?,
        toml::Value::Integer(i) => out.push(Part::Lit(i.to_string().into_bytes())),
        toml::Value::Float(f) => out.push(Part::Lit(
            serde_json::to_vec(f).unwrap_or_else(|_| b"null".to_vec()),
        )),
        toml::Value::Boolean(b) => out.push(Part::Lit(b.to_string().into_bytes())),
        toml::Value::Datetime(d) => compile_string(&d.to_string(), scope, out, fields, false)?,
        toml::Value::Array(a) => {
            out.push(Part::Lit(b"[".to_vec()));
            for (n, el) in a.iter().enumerate() {
                if n > 0 {
                    out.push(Part::Lit(b",".to_vec()));
                }
                compile_value(el, scope, out, fields)?;
            }
            out.push(Part::Lit(b"]".to_vec()));
        }
        toml::Value::Table(t) => {
            out.push(Part::Lit(b"{".to_vec()));
            for (n, (k, el)) in t.iter().enumerate() {
                if n > 0 {
                    out.push(Part::Lit(b",".to_vec()));
                }
                // Keys are always strings: placeholders in them are text.
                compile_string(k, scope, out, fields, false)?;
                out.push(Part::Lit(b":".to_vec()));
                compile_value(el, scope, out, fields)?;
            }
            out.push(Part::Lit(b"}".to_vec()));
        }
    }
    Ok(())
}

/// A string with placeholders; `whole` allows the exact-placeholder form that
/// inserts a raw JSON value.
fn compile_string(
    s: &str,
    scope: &Scope<'_>,
    out: &mut Vec<Part>,
    fields: &mut Vec<Pointer>,
    whole: bool,
) -> Result<(), TemplateError> {
    let mut pieces: Vec<Result<&str, Slot>> = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            return Err(TemplateError::Unclosed(s.to_owned()));
        };
        if start > 0 {
            pieces.push(Ok(&rest[..start]));
        }
        let name = rest[start + 2..start + 2 + len].trim();
        pieces.push(Err(scope.resolve(name, fields)?));
        rest = &rest[start + 2 + len + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Ok(rest));
    }
    if let ([Err(slot)], true) = (pieces.as_slice(), whole) {
        out.push(Part::Raw(*slot));
        return Ok(());
    }
    out.push(Part::Lit(b"\"".to_vec()));
    for p in pieces {
        match p {
            Ok(text) => {
                let q = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
                out.push(Part::Lit(q.as_bytes()[1..q.len() - 1].to_vec()));
            }
            Err(slot) => out.push(Part::Text(slot)),
        }
    }
    out.push(Part::Lit(b"\"".to_vec()));
    Ok(())
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Lit(b) => f.write_str(&String::from_utf8_lossy(b))?,
                Part::Raw(Slot::Field(i)) | Part::Text(Slot::Field(i)) => {
                    let at = self.fields.get(*i).map_or("", |p| p.as_str());
                    write!(f, "{{{{item{at}}}}}")?
                }
                Part::Raw(s) | Part::Text(s) => write!(f, "{{{{{}}}}}", s.name())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V;
    impl Vars for V {
        fn write(&self, slot: Slot, out: &mut Vec<u8>) -> bool {
            let v: &[u8] = match slot {
                Slot::Item => br#"{"id":7,"s":"a\"b"}"#,
                Slot::Id => br#""x\"y""#,
                Slot::Total => b"3",
                Slot::Path(0) => br#""j1""#,
                _ => return false,
            };
            out.extend_from_slice(v);
            true
        }
    }

    fn t(toml_value: &str) -> Result<Template, TemplateError> {
        let v: toml::Table = toml::from_str(&format!("v = {toml_value}")).expect("toml");
        Template::compile(
            &v["v"],
            &Scope {
                slots: &[Slot::Item, Slot::Id, Slot::Total, Slot::Feed],
                params: &["job_id".to_owned()],
            },
        )
    }

    fn render(toml_value: &str) -> String {
        String::from_utf8(t(toml_value).expect("compiles").render(&V)).expect("utf8")
    }

    #[test]
    fn whole_placeholders_insert_json_and_keep_key_order() {
        assert_eq!(
            render(r#"{ job = "{{item}}", z = 1, a = [true, 1.5, "{{total}}"] }"#),
            r#"{"job":{"id":7,"s":"a\"b"},"z":1,"a":[true,1.5,3]}"#
        );
        assert_eq!(render(r#""{{ item }}""#), r#"{"id":7,"s":"a\"b"}"#);
    }

    #[test]
    fn embedded_placeholders_are_escaped_text() {
        assert_eq!(
            render(
                r#"{ msg = "job {{id}} of {{total}}: {{item}}", "k{{path.job_id}}" = "{{feed}}" }"#
            ),
            r#"{"msg":"job x\"y of 3: {\"id\":7,\"s\":\"a\\\"b\"}","kj1":null}"#
        );
        let out = render(r#"{ msg = "line\nbreak {{id}}" }"#);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["msg"], "line\nbreak x\"y");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        let e = t(r#"{ a = "{{itme}}" }"#).unwrap_err().to_string();
        assert!(
            e.contains("`{{itme}}`") && e.contains("{{item}}") && e.contains("{{path.job_id}}"),
            "{e}"
        );
        assert!(t(r#"{ a = "{{patch}}" }"#).is_err(), "not in scope");
        assert!(t(r#"{ a = "{{path.nope}}" }"#).is_err());
        assert!(matches!(t(r#""{{item""#), Err(TemplateError::Unclosed(_))));
    }

    #[test]
    fn item_pointers_insert_fields_of_the_item() {
        struct F;
        impl Vars for F {
            fn write(&self, _: Slot, _: &mut Vec<u8>) -> bool {
                false
            }
            fn field(&self, at: &Pointer, out: &mut Vec<u8>) -> bool {
                let v: &[u8] = match at.as_str() {
                    "/n" => b"3",
                    "/a~1b" => br#""x""#,
                    _ => return false,
                };
                out.extend_from_slice(v);
                true
            }
        }
        let tpl = t(r#"{ n = "{{item/n}}", s = "got {{item/a~1b}}", m = "{{item/missing}}" }"#)
            .expect("compiles");
        assert_eq!(
            String::from_utf8(tpl.render(&F)).expect("utf8"),
            r#"{"n":3,"s":"got x","m":null}"#
        );
        assert_eq!(tpl.to_string().matches("{{item/").count(), 3);
        // Only where {{item}} is in scope.
        let none = Template::compile(
            &toml::Value::String("{{item/n}}".into()),
            &Scope {
                slots: &[Slot::Total],
                params: &[],
            },
        );
        assert!(none.is_err());
    }

    #[test]
    fn uses_reports_slots() {
        let tpl = t(r#"{ a = "{{id}}" }"#).expect("ok");
        assert!(tpl.uses(Slot::Id) && !tpl.uses(Slot::Item));
    }
}
