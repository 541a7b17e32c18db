//! `[[feeds]]`: one feed definition and its defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AuthMode, CheckMethod, EventsConfig, Secret, TerminalConfig, TransitionConfig};
use crate::pointer::Pointer;

/// One `[[feeds]]` entry: an upstream list endpoint turned into an SSE stream.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Upstream GET path that is polled, optionally with a fixed query
    /// (`/api/imports?state=active`) merged into every poll's query.
    pub poll: String,
    /// Path EventSource clients open (default `/sse/<name>`).
    #[serde(default)]
    pub sse: Option<String>,
    /// Time between two polls of one feed.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Adaptive cadence: the shortest time between two polls, used after a
    /// poll that changed the list. Absent: `interval` (see `feed::cadence`).
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interval_min: Option<Duration>,
    /// Adaptive cadence: the longest time between two polls, reached while
    /// the list stays unchanged; also caps `Cache-Control: max-age`.
    /// Absent: `interval`.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interval_max: Option<Duration>,
    /// JSON Pointer to each item's unique id.
    #[serde(default = "default_id")]
    pub id: Pointer,
    /// JSON Pointer to the array of items in the body (`""` = the body is the array).
    #[serde(default)]
    pub items: Pointer,
    /// JSON Pointers (inside an item) whose changes alone never make an `updated`.
    #[serde(default)]
    pub ignore: Vec<Pointer>,
    /// A feed keeps polling this long after its last subscriber left, then stops.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_linger")]
    pub linger: Duration,
    /// Upper bound of the back-off between polls while the upstream fails,
    /// and of a `Retry-After` the upstream asks for.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// Who may see this feed: `forward`, `check` or `none`.
    #[serde(default)]
    pub auth: AuthMode,
    /// A query parameter carrying a token (EventSource cannot send headers):
    /// moved into `Authorization: Bearer <token>`, never forwarded as a parameter.
    #[serde(default)]
    pub token_param: Option<String>,
    /// The query parameters clients may send (others get 400). Absent: any.
    #[serde(default)]
    pub query: Option<Vec<String>>,
    /// `check` mode: upstream path of the admission request (default: the poll path).
    #[serde(default)]
    pub check: Option<String>,
    /// `check` mode: method of the admission request.
    #[serde(default)]
    pub check_method: CheckMethod,
    /// `check` mode: how often an admitted subscriber is checked again.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_recheck")]
    pub recheck: Duration,
    /// `check`/`none` mode: environment variable whose value is sent as
    /// `Authorization` on the shared polls.
    #[serde(default)]
    pub credentials_env: Option<String>,
    /// The value of `credentials_env`, read once at startup.
    #[serde(skip)]
    pub credentials: Option<Secret>,
    /// The event contract: per event kind a name and a data template.
    #[serde(default)]
    pub events: EventsConfig,
    /// The body (at `items`) is one object, not a list: an object feed.
    #[serde(default)]
    pub object: bool,
    /// Object feeds: JSON Pointer to an array whose new entries become `appended` events.
    #[serde(default)]
    pub append: Option<Pointer>,
    /// Object feeds: a field whose values end the stream with a final event.
    #[serde(default)]
    pub terminal: Option<TerminalConfig>,
    /// Events sent when an item's field reaches a value (`[[feeds.transitions]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<TransitionConfig>,
    /// While a feed of this definition is live, plain GETs of its poll path
    /// (same query and credentials) are answered from its latest poll.
    #[serde(default)]
    pub serve_polls: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_id() -> Pointer {
    Pointer::parse("/id").unwrap_or_default()
}
fn default_linger() -> Duration {
    Duration::from_secs(10)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_recheck() -> Duration {
    Duration::from_secs(30)
}

impl FeedConfig {
    /// A feed definition with every default, for code that builds configs (demo, tests).
    pub fn new(name: &str, poll: &str) -> Self {
        Self {
            name: name.to_owned(),
            poll: poll.to_owned(),
            sse: None,
            interval: default_interval(),
            interval_min: None,
            interval_max: None,
            id: default_id(),
            items: Pointer::default(),
            ignore: Vec::new(),
            linger: default_linger(),
            backoff_max: default_backoff_max(),
            auth: AuthMode::default(),
            token_param: None,
            query: None,
            check: None,
            check_method: CheckMethod::default(),
            recheck: default_recheck(),
            credentials_env: None,
            credentials: None,
            events: EventsConfig::default(),
            object: false,
            append: None,
            terminal: None,
            transitions: Vec::new(),
            serve_polls: false,
        }
    }

    /// The upstream path of `poll`, without its fixed query.
    pub(crate) fn poll_path(&self) -> &str {
        self.poll.split_once('?').map_or(&self.poll, |(p, _)| p)
    }

    /// The fixed query of `poll` (`state=active`), empty without one.
    pub(crate) fn poll_query(&self) -> &str {
        self.poll.split_once('?').map_or("", |(_, q)| q)
    }

    /// The SSE path, with its default applied.
    pub fn sse_path(&self) -> String {
        self.sse
            .clone()
            .unwrap_or_else(|| format!("/sse/{}", self.name))
    }
}
