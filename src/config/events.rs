//! `[feeds.events]`, `[feeds.terminal]` and `[[feeds.transitions]]`: the
//! event contract of one feed as written in the config (compiled by
//! `feed::contract`).

use serde::{Deserialize, Serialize};

use crate::pointer::Pointer;

/// `[feeds.events]`: the event contract of one feed. Every kind left out
/// keeps pollcast's default contract.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub connect: Option<EventSpec>,
    pub snapshot: Option<EventSpec>,
    pub added: Option<EventSpec>,
    pub updated: Option<EventSpec>,
    pub removed: Option<EventSpec>,
    pub appended: Option<EventSpec>,
    pub keepalive: Option<EventSpec>,
    pub stale: Option<EventSpec>,
    pub recovered: Option<EventSpec>,
    pub chunk_start: Option<EventSpec>,
    pub chunk: Option<EventSpec>,
    pub chunk_end: Option<EventSpec>,
    /// Send the snapshot as `chunk_start`, chunks of this many items, `chunk_end` (0 = one event).
    #[serde(default)]
    pub chunk_size: usize,
    /// Events of one poll with the same name and data are sent once.
    #[serde(default)]
    pub coalesce: bool,
    /// A poll that changed anything sends the whole snapshot again instead of
    /// added/updated/removed events.
    #[serde(default)]
    pub resend: bool,
    /// One event per poll that changed anything, gathering its changes (off by default).
    #[serde(default)]
    pub batch: Option<EventSpec>,
    /// The change kinds `batch` gathers: any of "added", "updated", "removed".
    #[serde(default = "default_batch_of")]
    pub batch_of: Vec<String>,
    /// Object feeds with `append`: one `appended` event per new entry, and the
    /// entries present when a stream opens after its snapshot.
    #[serde(default)]
    pub append_each: bool,
}

/// One event kind: `{ event = "job_added", data = { job = "{{item}}" }, send = true }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// SSE event name; `""` sends unnamed events (`message` in EventSource).
    pub event: Option<String>,
    /// JSON data template (any TOML value) with `{{placeholders}}`.
    #[schemars(with = "Option<serde_json::Value>")]
    pub data: Option<toml::Value>,
    /// `false` never sends this kind.
    pub send: Option<bool>,
}

/// `[feeds.terminal]`: when `field` reaches one of `values`, send that event and end.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// JSON Pointer (inside the object) to the status field.
    pub field: Pointer,
    /// Field value -> event sent when it is reached.
    pub values: std::collections::BTreeMap<String, EventSpec>,
    /// `false`: the terminal event is an ordinary event (sent once when the
    /// value is reached, and after the snapshot while it holds) and streams stay open.
    #[serde(default = "default_true")]
    pub close: bool,
}

/// `[[feeds.transitions]]`: when an item's `field` becomes `to`, send `event`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionConfig {
    /// JSON Pointer (inside an item) to the watched field.
    pub field: Pointer,
    /// The value (its text: a string's contents, anything else as JSON) that fires the event.
    pub to: String,
    /// SSE event name (default: the value of `to`); `""` = unnamed.
    pub event: Option<String>,
    /// JSON data template (default: `"{{item}}"`).
    #[schemars(with = "Option<serde_json::Value>")]
    pub data: Option<toml::Value>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            connect: None,
            snapshot: None,
            added: None,
            updated: None,
            removed: None,
            appended: None,
            keepalive: None,
            stale: None,
            recovered: None,
            chunk_start: None,
            chunk: None,
            chunk_end: None,
            chunk_size: 0,
            coalesce: false,
            resend: false,
            batch: None,
            batch_of: default_batch_of(),
            append_each: false,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_batch_of() -> Vec<String> {
    ["added", "updated", "removed"].map(String::from).to_vec()
}
