//! RFC 6901 JSON Pointers, parsed once from the config.
//!
//! This module owns the syntax of pointers and their use on `serde_json::Value`.
//! Navigating raw, unparsed bodies lives in `feed::extract`; this module must
//! never allocate per lookup beyond what `serde_json` does.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A parsed JSON Pointer: `""` is the whole document, `/a/0/b~1c` has tokens
/// `a`, `0`, `b/c`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self::default());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON Pointer (RFC 6901): it must be empty or start with `/`, e.g. `/{text}`"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut tok = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => tok.push('~'),
                        Some('1') => tok.push('/'),
                        _ => {
                            return Err(format!(
                                "`{text}` is not a JSON Pointer (RFC 6901): `~` must be followed by 0 or 1"
                            ))
                        }
                    }
                } else {
                    tok.push(c);
                }
            }
            tokens.push(tok);
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    #[cfg(test)]
    pub(crate) fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Remove what the pointer designates from `value`, if present.
    pub(crate) fn remove_from(&self, value: &mut Value) {
        let Some((last, parents)) = self.tokens.split_last() else {
            *value = Value::Null;
            return;
        };
        let mut cur = value;
        for t in parents {
            cur = match cur {
                Value::Object(m) => match m.get_mut(t.as_str()) {
                    Some(v) => v,
                    None => return,
                },
                Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(v) => v,
                    None => return,
                },
                _ => return,
            };
        }
        match cur {
            Value::Object(m) => {
                m.remove(last.as_str());
            }
            Value::Array(a) => {
                if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < a.len()) {
                    a.remove(i);
                }
            }
            _ => {}
        }
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Pointer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pointer::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_escapes() {
        let p = Pointer::parse("/a~1b/~0c/0").expect("valid");
        assert_eq!(p.tokens(), ["a/b", "~c", "0"]);
        assert!(Pointer::parse("").expect("valid").is_root());
        assert!(Pointer::parse("a").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }

    #[test]
    fn removes_nested_fields() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        Pointer::parse("/a/b").expect("valid").remove_from(&mut v);
        Pointer::parse("/l/0").expect("valid").remove_from(&mut v);
        Pointer::parse("/missing/x")
            .expect("valid")
            .remove_from(&mut v);
        assert_eq!(v, json!({"a": {"c": 2}, "l": [2]}));
    }
}
