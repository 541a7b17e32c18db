//! Typed configuration: the TOML file, its defaults, environment overrides and
//! the one-time validation that runs before anything listens.
//!
//! This module owns the *shape* of the configuration and every rule about which
//! values are acceptable: the model and its defaults here, `load` (file,
//! line and column of every error), `env` (environment overrides),
//! `validate` (rules across values). It imports no feature of the crate: the
//! checks that need one (an event contract compiles, a certificate loads) are
//! handed in as [`Checks`] by whoever loads the config. It must never do I/O
//! beyond reading the file and the process environment, and nothing outside
//! it re-validates: a [`Config`] that exists is a config that is valid.
//!
//! Errors name the file, the line and the key (`config.toml:12: feeds[0].interval: ...`)
//! so a platform engineer can fix a ConfigMap without reading source code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod cluster;
mod env;
mod error;
mod load;
mod log;
pub mod overrides;
mod reload;
pub mod schema;
mod sources;
#[cfg(test)]
mod tests;
mod trace;
mod url;
mod validate;

pub use cluster::{ClusterConfig, ClusterSecret, SECRET_ENV as CLUSTER_SECRET_ENV};
pub use error::{ConfigError, Problem};
pub use log::{LogConfig, LogFormat, LogLevel};
pub use reload::ReloadConfig;
pub use sources::Sources;
pub use trace::TraceConfig;
pub use url::UpstreamUrl;
pub use validate::Checks;

use crate::cidr::Cidr;
use crate::pointer::Pointer;

/// Query parameters that belong to pollcast and are never forwarded
/// upstream (a config may not list them in a feed's `query`).
pub const OWN_PARAMS: &[&str] = &["lastEventId"];

/// The default of `[admin] prefix`, under which pollcast serves its own endpoints.
pub const DEFAULT_ADMIN_PREFIX: &str = "/_pollcast";

/// The default of `[admin] listen`: operator endpoints on loopback only, so a
/// bare binary never serves them to the clients of `[server] listen`.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// `[admin] listen`: an address, or `""` for none.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "" => Ok(None),
            a => a.parse().map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an address like 127.0.0.1:9090 (or \"\" for none): {e}"
                ))
            }),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub sse: SseConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub cors: CorsConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// `[cluster]`: several replicas share polls and event ids through Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// `[trace]`: OpenTelemetry spans, exported over OTLP when configured.
    #[serde(default)]
    pub trace: TraceConfig,
}

/// `[server]`: the listener pollcast accepts clients on.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long shutdown waits for in-flight requests before closing them.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// `[server.tls]`: when present the listener speaks TLS only (HTTP/2 and
    /// HTTP/1.1 chosen by ALPN); when absent, plain HTTP/1.1 and h2c.
    pub tls: Option<TlsConfig>,
    /// A client must send its whole request head within this long after
    /// connecting (or after its previous request), or it is disconnected.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line plus headers) accepted, in bytes;
    /// HTTP/1.1 answers 431 above it, HTTP/2 refuses the stream.
    pub max_header_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            drain_timeout: Duration::from_secs(10),
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
        }
    }
}

/// `[server.tls]`: PEM files for the client listener. Relative paths are
/// resolved against the config file's directory.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// hyper refuses smaller HTTP/1.1 read buffers.
pub const MIN_HEADER_SIZE: usize = 8192;

/// `[limits]`: how much any client, and all clients together, may make
/// pollcast hold. 0 disables a limit.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Live feed instances (poll loops) over all definitions; over it: 503.
    pub max_feeds: usize,
    /// Live feed instances of one `[[feeds]]` definition; over it: 503.
    pub max_feeds_per_definition: usize,
    /// Open SSE streams in total; over it: 503.
    pub max_subscribers: usize,
    /// Open SSE streams per client IP address; over it: 429.
    pub max_subscribers_per_client: usize,
    /// Live feed instances one client IP address started (they count until
    /// they end, even when others joined them); over it: 429.
    pub max_feeds_per_client: usize,
    /// Bytes the retained state of all live feeds may take (see
    /// `crate::budget`); a new feed over it: 503.
    pub max_feed_memory: u64,
    /// Sent as `Retry-After` with every 429 and 503 pollcast gives for a limit.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_feeds: 2000,
            max_feeds_per_definition: 1000,
            max_subscribers: 10_000,
            max_subscribers_per_client: 256,
            max_feeds_per_client: 64,
            max_feed_memory: 128 * 1024 * 1024,
            retry_after: Duration::from_secs(10),
        }
    }
}

/// `[cors]`: which browser origins may open the SSE paths.
/// Pass-through responses are never touched: the upstream owns their CORS.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) or `"*"` for any.
    pub allowed_origins: Vec<String>,
    /// Allow `withCredentials` (cookies, Authorization). Never with `"*"`.
    pub allow_credentials: bool,
    /// Request headers a preflight may ask for.
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            allowed_headers: ["authorization", "last-event-id", "cache-control", "accept"]
                .map(String::from)
                .to_vec(),
            max_age: Duration::from_secs(600),
        }
    }
}

/// Who may see a feed, and whose credentials its polls carry.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Each subscriber's `Authorization` and `Cookie` are forwarded on the
    /// polls and are part of the feed's identity.
    #[default]
    Forward,
    /// One shared poll with pollcast's own credentials; each subscriber is
    /// admitted by a check request carrying its own credentials.
    Check,
    /// A public feed: credentials are neither forwarded nor part of identity.
    None,
}

/// Method of the admission request in `check` mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
pub enum CheckMethod {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
}

/// A credential read from the environment: usable as a header, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(http::HeaderValue);

impl Secret {
    /// `None` when `value` cannot be a header value.
    pub fn new(value: &str) -> Option<Self> {
        let mut v = http::HeaderValue::from_str(value).ok()?;
        v.set_sensitive(true);
        Some(Self(v))
    }

    pub fn header(&self) -> &http::HeaderValue {
        &self.0
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether `name` can be an SSE event name (or a JSON field name that
/// config puts on the wire) without breaking framing: non-empty, at most 128
/// bytes, printable ASCII without spaces or `:` (so no line break, no field
/// separator, nothing a parser could split).
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// `[upstream]`: the API pollcast sits in front of.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, `http://host:port` (an optional path prefix is kept).
    pub url: UpstreamUrl,
    /// Per upstream request: for pass-through, from the end of the request
    /// body until response headers arrive;
    /// for polls, the whole request including the body.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Largest poll response body accepted, in bytes; a larger one fails the poll.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Idle pooled upstream connections are closed after this long.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_pool_idle")]
    pub pool_idle_timeout: Duration,
    /// At most this many idle pooled connections are kept.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// Pass-through sends the client's `Host` instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are kept and appended to;
    /// from anyone else they are replaced. Addresses or CIDR blocks.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Pass-through also sends an RFC 7239 `Forwarded` header.
    #[serde(default)]
    pub forwarded: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_body() -> usize {
    16 * 1024 * 1024
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(90)
}
fn default_pool_max_idle() -> usize {
    64
}

/// `[sse]`: how subscriber streams behave.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    /// A `: keepalive` comment is written after this much silence.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Sent as `retry:` at the start of every stream: EventSource's reconnect delay.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// Events kept per feed for `Last-Event-ID` resume.
    pub history: usize,
    /// A client connection whose writes make no progress for this long (it
    /// stopped reading, or vanished without a FIN) is closed.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            history: 1024,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// `[admin]`: pollcast's own endpoints (probes, metrics, ...).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Path prefix of every pollcast endpoint; SSE paths may not use it.
    pub prefix: String,
    /// The listener of the operator endpoints (metrics, status, stats,
    /// refresh); loopback by default ([`DEFAULT_ADMIN_LISTEN`]). The main
    /// listener then answers only the public ones (probes, the browser
    /// client). `None` (written `""`) serves every endpoint on the main
    /// listener: only where that listener is not reachable by clients.
    #[serde(with = "optional_addr")]
    #[schemars(with = "String")]
    pub listen: Option<SocketAddr>,
    /// An upstream path that must answer 2xx for `/readyz` to say ready.
    /// Without it, ready means the upstream has answered at least once.
    pub ready_probe: Option<String>,
    /// How long a `/readyz` verdict about the upstream is reused.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub ready_cache: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_ADMIN_PREFIX.to_owned(),
            listen: Some(DEFAULT_ADMIN_LISTEN),
            ready_probe: None,
            ready_cache: Duration::from_secs(1),
        }
    }
}

impl AdminConfig {
    /// Whether `path` is `prefix` or below it.
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

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
    pub fn poll_path(&self) -> &str {
        self.poll.split_once('?').map_or(&self.poll, |(p, _)| p)
    }

    /// The fixed query of `poll` (`state=active`), empty without one.
    pub fn poll_query(&self) -> &str {
        self.poll.split_once('?').map_or("", |(_, q)| q)
    }

    /// The SSE path, with its default applied.
    pub fn sse_path(&self) -> String {
        self.sse
            .clone()
            .unwrap_or_else(|| format!("/sse/{}", self.name))
    }
}

impl UpstreamConfig {
    pub fn new(url: UpstreamUrl) -> Self {
        Self {
            url,
            timeout: default_timeout(),
            max_body: default_max_body(),
            pool_idle_timeout: default_pool_idle(),
            pool_max_idle: default_pool_max_idle(),
            preserve_host: false,
            trusted_proxies: Vec::new(),
            forwarded: false,
        }
    }
}

impl Config {
    /// A config with defaults everywhere, for code that builds configs (demo, tests).
    pub fn new(upstream: UpstreamUrl, feeds: Vec<FeedConfig>) -> Self {
        Self {
            server: ServerConfig::default(),
            upstream: UpstreamConfig::new(upstream),
            sse: SseConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            feeds,
            limits: LimitsConfig::default(),
            cors: CorsConfig::default(),
            reload: ReloadConfig::default(),
            cluster: None,
            trace: TraceConfig::default(),
        }
    }
}
