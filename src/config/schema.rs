//! The JSON Schema of config.toml, generated from the config types (their
//! serde attributes: defaults, `deny_unknown_fields`, enum spellings; their
//! doc comments become descriptions), for editors that complete and check
//! TOML against a schema (taplo, Even Better TOML) and for CI.
//!
//! It must never be written by hand: `pollcast --print-schema` writes
//! docs/config.schema.json, and a test fails when that file is stale.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::Config;

/// The units `humantime` reads in a duration such as `"1m 30s"`.
const DURATION: &str = r"^\s*([0-9]+\s*(nsec|ns|usec|us|µs|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y)\s*)+$";

/// A duration field: a string like `"2s"` or `"500ms"`.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION,
        "examples": ["2s", "500ms", "1m 30s"]
    })
}

/// The schema of the whole file (JSON Schema draft-07, which every TOML
/// editor's validator reads).
pub fn schema() -> serde_json::Value {
    let mut root = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Config>();
    root.insert("title".into(), "pollcast config.toml".into());
    root.into()
}

impl JsonSchema for super::UpstreamUrl {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UpstreamUrl".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^http://",
            "description": "http://host:port, optionally with a path prefix (https is not supported)."
        })
    }
}

impl JsonSchema for crate::pointer::Pointer {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JsonPointer".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(/([^~]|~[01])*)*$",
            "description": "A JSON Pointer (RFC 6901): empty, or starting with `/`."
        })
    }
}

impl JsonSchema for crate::cidr::Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IP address or a CIDR block such as 10.0.0.0/8."
        })
    }
}
