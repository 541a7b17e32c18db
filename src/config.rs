//! Typed configuration: the TOML file, its defaults, environment overrides and
//! the one-time validation that runs before anything listens.
//!
//! This module owns the *shape* of the configuration and every rule about which
//! values are acceptable. It must never do I/O beyond reading the file and the
//! process environment (and, through [`crate::tls`], the certificate files it
//! names), and nothing outside it re-validates: a [`Config`] that exists is a
//! config that is valid.
//!
//! Errors name the file, the line and the key (`config.toml:12: feeds[0].interval: ...`)
//! so a platform engineer can fix a ConfigMap without reading source code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
}

/// `[server]`: the listener pollcast accepts clients on.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long shutdown waits for in-flight requests before closing them.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// `[server.tls]`: when present the listener speaks TLS only (HTTP/2 and
    /// HTTP/1.1 chosen by ALPN); when absent, plain HTTP/1.1 and h2c.
    pub tls: Option<TlsConfig>,
    /// A client must send its whole request head within this long after
    /// connecting (or after its previous request), or it is disconnected.
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) or `"*"` for any.
    pub allowed_origins: Vec<String>,
    /// Allow `withCredentials` (cookies, Authorization). Never with `"*"`.
    pub allow_credentials: bool,
    /// Request headers a preflight may ask for.
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, `http://host:port` (an optional path prefix is kept).
    pub url: UpstreamUrl,
    /// Per upstream request: for pass-through, from the end of the request
    /// body until response headers arrive;
    /// for polls, the whole request including the body.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Largest poll response body accepted, in bytes; a larger one fails the poll.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Idle pooled upstream connections are closed after this long.
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    /// A `: keepalive` comment is written after this much silence.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Sent as `retry:` at the start of every stream: EventSource's reconnect delay.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// Events kept per feed for `Last-Event-ID` resume.
    pub history: usize,
    /// A client connection whose writes make no progress for this long (it
    /// stopped reading, or vanished without a FIN) is closed.
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

/// `[log]`: what pollcast writes to stderr.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Most verbose level of pollcast's own messages (dependencies log at `warn`).
    pub level: LogLevel,
    /// `text` for people, `json` (one object per line) for log collectors.
    pub format: LogFormat,
}

/// `[log] level`, `--log-level`, `POLLCAST_LOG_LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: &'static str = "error, warn, info, debug, trace";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("`{s}` is not one of {}", Self::ALL))
    }
}

/// `[log] format`, `--log-format`, `POLLCAST_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("`{s}` is not one of text, json"))
    }
}

/// `[admin]`: pollcast's own endpoints (probes, metrics, ...).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    pub listen: Option<SocketAddr>,
    /// An upstream path that must answer 2xx for `/readyz` to say ready.
    /// Without it, ready means the upstream has answered at least once.
    pub ready_probe: Option<String>,
    /// How long a `/readyz` verdict about the upstream is reused.
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Upstream GET path that is polled.
    pub poll: String,
    /// Path EventSource clients open (default `/sse/<name>`).
    #[serde(default)]
    pub sse: Option<String>,
    /// Time between two polls of one feed.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Adaptive cadence: the shortest time between two polls, used after a
    /// poll that changed the list. Absent: `interval` (see `feed::cadence`).
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interval_min: Option<Duration>,
    /// Adaptive cadence: the longest time between two polls, reached while
    /// the list stays unchanged; also caps `Cache-Control: max-age`.
    /// Absent: `interval`.
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
    #[serde(with = "humantime_serde", default = "default_linger")]
    pub linger: Duration,
    /// Upper bound of the back-off between polls while the upstream fails,
    /// and of a `Retry-After` the upstream asks for.
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
    /// While a feed of this definition is live, plain GETs of its poll path
    /// (same query and credentials) are answered from its latest poll.
    #[serde(default)]
    pub serve_polls: bool,
}

/// `[feeds.events]`: the event contract of one feed. Every kind left out
/// keeps pollcast's default contract.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
}

/// One event kind: `{ event = "job_added", data = { job = "{{item}}" }, send = true }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// SSE event name; `""` sends unnamed events (`message` in EventSource).
    pub event: Option<String>,
    /// JSON data template (any TOML value) with `{{placeholders}}`.
    pub data: Option<toml::Value>,
    /// `false` never sends this kind.
    pub send: Option<bool>,
}

/// `[feeds.terminal]`: when `field` reaches one of `values`, send that event and end.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// JSON Pointer (inside the object) to the status field.
    pub field: Pointer,
    /// Field value -> event sent when it is reached.
    pub values: std::collections::BTreeMap<String, EventSpec>,
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
            serve_polls: false,
        }
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
        }
    }
}

/// The upstream base URL: `http://authority[/prefix]`, validated at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `http://host:port`, used to build request URIs.
    pub origin: String,
    /// Path prefix without trailing slash (`""` when none).
    pub prefix: String,
    /// The `host[:port]` part, for logs and the `Host` header.
    pub authority: http::uri::Authority,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{s}`: https upstreams are not supported; pollcast runs beside the API and speaks plain http to it"
                ))
            }
            _ => return Err(format!("`{s}` must start with http://")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{s}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("`{s}` must not have a query string"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            origin: format!("http://{authority}"),
            prefix,
            authority,
        })
    }

    /// The absolute URI for an upstream path and query.
    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        format!("{}{}{}", self.origin, self.prefix, path_and_query).parse()
    }
}

/// For logs: a password in the URL's user info is shown as `REDACTED`.
impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.authority.as_str().rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => write!(f, "http://{user}:REDACTED@{host}{}", self.prefix),
                None => write!(f, "http://REDACTED@{host}{}", self.prefix),
            },
            None => write!(f, "{}{}", self.origin, self.prefix),
        }
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// A problem found by [`Config::validate`], located later against the source text.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// `(table, index)` for array tables such as `("feeds", 0)`, or a plain table name.
    pub table: Option<(String, Option<usize>)>,
    pub key: String,
    pub message: String,
}

impl Problem {
    fn feed(i: usize, key: &str, message: String) -> Self {
        Self {
            table: Some(("feeds".into(), Some(i))),
            key: key.into(),
            message,
        }
    }
    fn in_table(table: &str, key: &str, message: String) -> Self {
        Self {
            table: Some((table.into(), None)),
            key: key.into(),
            message,
        }
    }

    /// `feeds[0].interval`, `sse.history`, ...
    pub fn key_path(&self) -> String {
        match &self.table {
            Some((t, Some(i))) => format!("{t}[{i}].{}", self.key),
            Some((t, None)) => format!("{t}.{}", self.key),
            None => self.key.clone(),
        }
    }
}

impl Config {
    /// Read, parse, apply environment overrides and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parse and validate config text; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                key: key_at(text, line),
                message: e.message().trim().to_owned(),
            }
        })?;
        config.apply_env(|k| std::env::var(k).ok())?;
        let invalid = |p: Problem| {
            let (line, column) = locate(text, &p).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                key: p.key_path(),
                message: p.message,
            }
        };
        config
            .resolve_credentials(|k| std::env::var(k).ok())
            .map_err(invalid)?;
        config.validate().map_err(invalid)?;
        if let Some(tls) = &mut config.server.tls {
            let dir = path.parent().unwrap_or(Path::new(""));
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
            // Load once now so a bad certificate fails the start (and --check)
            // with the key named, not the first handshake.
            crate::tls::acceptor(tls)
                .map_err(|e| invalid(Problem::in_table("server.tls", e.key, e.to_string())))?;
        }
        Ok(config)
    }

    /// Environment overrides, one scheme: `POLLCAST_<TABLE>_<KEY>` in upper case.
    /// Only the keys a platform team changes per environment are overridable.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let err = |var: &str, message: String| ConfigError::Env {
            var: var.to_owned(),
            message,
        };
        if let Some(v) = get("POLLCAST_SERVER_LISTEN") {
            self.server.listen = v.parse().map_err(|e| {
                err(
                    "POLLCAST_SERVER_LISTEN",
                    format!("`{v}` is not an address like 0.0.0.0:8080: {e}"),
                )
            })?;
        }
        if let Some(v) = get("POLLCAST_UPSTREAM_URL") {
            self.upstream.url =
                UpstreamUrl::parse(&v).map_err(|m| err("POLLCAST_UPSTREAM_URL", m))?;
        }
        if let Some(v) = get("POLLCAST_LOG_LEVEL") {
            self.log.level = v.parse().map_err(|m| err("POLLCAST_LOG_LEVEL", m))?;
        }
        if let Some(v) = get("POLLCAST_LOG_FORMAT") {
            self.log.format = v.parse().map_err(|m| err("POLLCAST_LOG_FORMAT", m))?;
        }
        if let Some(v) = get("POLLCAST_ADMIN_LISTEN") {
            // Empty turns a listener set in the file off again.
            self.admin.listen = match v.trim() {
                "" => None,
                a => Some(a.parse().map_err(|e| {
                    err(
                        "POLLCAST_ADMIN_LISTEN",
                        format!(
                            "`{v}` is not an address like 127.0.0.1:9090 (or empty for none): {e}"
                        ),
                    )
                })?),
            };
        }
        if let Some(v) = get("POLLCAST_UPSTREAM_TIMEOUT") {
            self.upstream.timeout = humantime::parse_duration(&v).map_err(|e| {
                err(
                    "POLLCAST_UPSTREAM_TIMEOUT",
                    format!("`{v}` is not a duration like \"5s\": {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Read each feed's `credentials_env` variable. The value is kept only
    /// as a [`Secret`]; the error names the variable, never a value.
    pub fn resolve_credentials(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), Problem> {
        for (i, f) in self.feeds.iter_mut().enumerate() {
            let Some(var) = &f.credentials_env else {
                continue;
            };
            let value = get(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                Problem::feed(
                    i,
                    "credentials_env",
                    format!("environment variable {var} is not set or empty"),
                )
            })?;
            f.credentials = Some(Secret::new(&value).ok_or_else(|| {
                Problem::feed(
                    i,
                    "credentials_env",
                    format!("the value of {var} cannot be sent as an Authorization header"),
                )
            })?);
        }
        Ok(())
    }

    /// Every rule that involves more than one value, or a value serde cannot judge.
    pub fn validate(&self) -> Result<(), Problem> {
        self.validate_security()?;
        let positive = |d: Duration| d >= Duration::from_millis(1);
        if !positive(self.upstream.timeout) {
            return Err(Problem::in_table(
                "upstream",
                "timeout",
                "must be at least 1ms".into(),
            ));
        }
        if self.upstream.max_body == 0 {
            return Err(Problem::in_table(
                "upstream",
                "max_body",
                "must be at least 1 byte".into(),
            ));
        }
        for p in &self.upstream.trusted_proxies {
            if let Some(net) = p.canonical_if_different() {
                return Err(Problem::in_table(
                    "upstream",
                    "trusted_proxies",
                    format!("`{p}` has host bits set; write `{net}` for the block or the address alone for one host"),
                ));
            }
        }
        if self.sse.history == 0 {
            return Err(Problem::in_table(
                "sse",
                "history",
                "must be at least 1 event".into(),
            ));
        }
        if self.sse.write_timeout < Duration::from_millis(10) {
            return Err(Problem::in_table(
                "sse",
                "write_timeout",
                "must be at least 10ms".into(),
            ));
        }
        if !positive(self.sse.keepalive) {
            return Err(Problem::in_table(
                "sse",
                "keepalive",
                "must be at least 1ms".into(),
            ));
        }
        self.validate_admin()?;
        let mut names = std::collections::HashSet::new();
        let mut paths = std::collections::HashMap::new();
        for (i, f) in self.feeds.iter().enumerate() {
            if f.name.is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(Problem::feed(
                    i,
                    "name",
                    format!(
                        "`{}` must be non-empty and use only letters, digits, `_`, `-` and `.`",
                        f.name
                    ),
                ));
            }
            if !names.insert(f.name.as_str()) {
                return Err(Problem::feed(
                    i,
                    "name",
                    format!("`{}` is used by an earlier feed", f.name),
                ));
            }
            if !f.poll.starts_with('/') || f.poll.contains(['?', '#', ' ']) {
                return Err(Problem::feed(
                    i,
                    "poll",
                    format!(
                        "`{}` must be a path starting with `/` without query or fragment",
                        f.poll
                    ),
                ));
            }
            let sse = f.sse_path();
            if !sse.starts_with('/') || sse.contains(['?', '#', ' ']) {
                return Err(Problem::feed(
                    i,
                    "sse",
                    format!("`{sse}` must be a path starting with `/` without query or fragment"),
                ));
            }
            if self.admin.owns(&sse) {
                return Err(Problem::feed(
                    i,
                    "sse",
                    format!(
                        "`{sse}` is inside pollcast's own prefix {} ([admin] prefix)",
                        self.admin.prefix
                    ),
                ));
            }
            // Feeds sharing an SSE path are followed together by one stream.
            if let Some(&j) = paths.get(&sse) {
                let other: &FeedConfig = &self.feeds[j];
                if f.terminal.is_some() || other.terminal.is_some() {
                    return Err(Problem::feed(
                        i,
                        "sse",
                        format!("`{sse}` is shared with feeds[{j}]; a feed with `terminal` ends its stream and needs a path of its own"),
                    ));
                }
                // One stream sends one connect event and one keepalive: feeds
                // sharing it must agree on them rather than have one ignored.
                for (key, mine, theirs) in [
                    ("events.connect", &f.events.connect, &other.events.connect),
                    (
                        "events.keepalive",
                        &f.events.keepalive,
                        &other.events.keepalive,
                    ),
                ] {
                    if mine != theirs {
                        return Err(Problem::feed(
                            i,
                            key,
                            format!(
                                "feeds `{}` and `{}` share the stream `{sse}`, which sends one `{}`: set the same value on both (or on neither)",
                                other.name,
                                f.name,
                                &key["events.".len()..],
                            ),
                        ));
                    }
                }
            } else {
                paths.insert(sse.clone(), i);
            }
            if let Err((key, message)) = crate::feed::contract::check(f) {
                return Err(Problem::feed(i, &key, message));
            }
            if f.interval < Duration::from_millis(10) {
                return Err(Problem::feed(i, "interval", "must be at least 10ms".into()));
            }
            if f.serve_polls {
                crate::stragglers::check(f, &self.feeds, &self.admin, &self.upstream)
                    .map_err(|m| Problem::feed(i, "serve_polls", m))?;
            }
            if f.backoff_max < f.interval {
                return Err(Problem::feed(
                    i,
                    "backoff_max",
                    format!(
                        "must be at least the interval ({})",
                        humantime::format_duration(f.interval)
                    ),
                ));
            }
            validate_cadence(i, f)?;
        }
        Ok(())
    }
}

/// The adaptive interval's rules: `interval_min <= interval <= interval_max <= backoff_max`.
fn validate_cadence(i: usize, f: &FeedConfig) -> Result<(), Problem> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if let Some(min) = f.interval_min {
        if min < Duration::from_millis(10) {
            return Err(Problem::feed(
                i,
                "interval_min",
                "must be at least 10ms".into(),
            ));
        }
        if min > f.interval {
            return Err(Problem::feed(
                i,
                "interval_min",
                format!(
                    "must be at most the interval ({}), which is where the cadence starts",
                    show(f.interval)
                ),
            ));
        }
    }
    if let Some(max) = f.interval_max {
        if max < f.interval {
            return Err(Problem::feed(
                i,
                "interval_max",
                format!(
                    "must be at least the interval ({}), which is where the cadence starts",
                    show(f.interval)
                ),
            ));
        }
        if f.backoff_max < max {
            return Err(Problem::feed(
                i,
                "backoff_max",
                format!(
                    "must be at least interval_max ({}): backoff_max caps the delays after failures, which start from the current delay",
                    show(max)
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    fn validate_admin(&self) -> Result<(), Problem> {
        let a = &self.admin;
        let p = &a.prefix;
        if p.len() < 2
            || !p.starts_with('/')
            || p.ends_with('/')
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-.~".contains(c))
        {
            return Err(Problem::in_table(
                "admin",
                "prefix",
                format!("`{p}` must be a path like /_pollcast: starting with `/`, not `/` alone, no trailing `/`, only letters, digits and `/_-.~`"),
            ));
        }
        if let Some(listen) = a.listen {
            if listen == self.server.listen && listen.port() != 0 {
                return Err(Problem::in_table(
                    "admin",
                    "listen",
                    format!("{listen} is already [server] listen; use another port, or \"\" to serve admin endpoints on the main listener"),
                ));
            }
        }
        if let Some(probe) = &a.ready_probe {
            if !probe.starts_with('/') || probe.contains(['#', ' ']) {
                return Err(Problem::in_table(
                    "admin",
                    "ready_probe",
                    format!("`{probe}` must be an upstream path starting with `/`"),
                ));
            }
        }
        Ok(())
    }

    /// The configuration as it is used, defaults filled in, for `--check`.
    pub fn effective(&self) -> Config {
        let mut c = self.clone();
        for f in &mut c.feeds {
            f.sse = Some(f.sse_path());
        }
        c
    }
}

impl Config {
    /// The rules of the security keys: `[server]` request limits, `[limits]`,
    /// `[cors]` and each feed's `auth`, `token_param`, `query` and `check*`.
    fn validate_security(&self) -> Result<(), Problem> {
        if self.server.max_header_size < MIN_HEADER_SIZE
            || self.server.max_header_size > u32::MAX as usize
        {
            return Err(Problem::in_table(
                "server",
                "max_header_size",
                format!("must be between {MIN_HEADER_SIZE} and {} bytes", u32::MAX),
            ));
        }
        if self.server.header_read_timeout < Duration::from_millis(1) {
            return Err(Problem::in_table(
                "server",
                "header_read_timeout",
                "must be at least 1ms".into(),
            ));
        }
        if self.limits.retry_after < Duration::from_secs(1) {
            return Err(Problem::in_table(
                "limits",
                "retry_after",
                "must be at least 1s (Retry-After counts whole seconds)".into(),
            ));
        }
        for o in &self.cors.allowed_origins {
            if o == "*" {
                if self.cors.allow_credentials {
                    return Err(Problem::in_table(
                        "cors",
                        "allow_credentials",
                        "cannot be true while allowed_origins contains \"*\": list the origins that may send credentials".into(),
                    ));
                }
                continue;
            }
            if !valid_origin(o) {
                return Err(Problem::in_table(
                    "cors",
                    "allowed_origins",
                    format!("`{o}` is not an origin like https://app.example.com (scheme, host, optional port; no path)"),
                ));
            }
        }
        for h in &self.cors.allowed_headers {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(Problem::in_table(
                    "cors",
                    "allowed_headers",
                    format!("`{h}` is not a header name"),
                ));
            }
        }
        for (i, f) in self.feeds.iter().enumerate() {
            let param_ok = |p: &str| {
                !p.is_empty()
                    && !p.contains(['&', '=', '#', '+', '%', ' '])
                    && !OWN_PARAMS.contains(&p)
            };
            if let Some(t) = &f.token_param {
                if !param_ok(t) {
                    return Err(Problem::feed(
                        i,
                        "token_param",
                        format!(
                            "`{t}` must be a plain parameter name, not one of pollcast's own ({})",
                            OWN_PARAMS.join(", ")
                        ),
                    ));
                }
                if f.auth == AuthMode::None {
                    return Err(Problem::feed(
                        i,
                        "token_param",
                        "a feed with auth = \"none\" ignores credentials; remove token_param or choose another auth mode".into(),
                    ));
                }
            }
            for q in f.query.iter().flatten() {
                if !param_ok(q) || f.token_param.as_deref() == Some(q.as_str()) {
                    return Err(Problem::feed(
                        i,
                        "query",
                        format!("`{q}` must be a plain parameter name, not pollcast's own nor the token_param"),
                    ));
                }
            }
            if f.auth != AuthMode::Check && f.check.is_some() {
                return Err(Problem::feed(
                    i,
                    "check",
                    "is only used with auth = \"check\"".into(),
                ));
            }
            if let Some(c) = &f.check {
                if !c.starts_with('/') || c.contains(['#', ' ']) {
                    return Err(Problem::feed(
                        i,
                        "check",
                        format!("`{c}` must be an upstream path starting with `/`"),
                    ));
                }
                check_placeholders(f, c).map_err(|m| Problem::feed(i, "check", m))?;
            }
            // Polls made with pollcast's own credentials carry only the
            // parameters the operator named: a client must not choose what
            // the service account asks the upstream for.
            let service = f.credentials_env.is_some() || f.credentials.is_some();
            if f.auth != AuthMode::Forward && service && f.query.is_none() {
                return Err(Problem::feed(
                    i,
                    "query",
                    "is required on a feed that polls with service credentials (credentials_env) and auth = \"check\" or \"none\": without it every query parameter a client sends reaches a request made with those credentials; list the parameters clients may send (`query = []` for none)".into(),
                ));
            }
            if f.recheck < Duration::from_millis(10) {
                return Err(Problem::feed(i, "recheck", "must be at least 10ms".into()));
            }
            if f.auth == AuthMode::Forward && f.credentials_env.is_some() {
                return Err(Problem::feed(
                    i,
                    "credentials_env",
                    "auth = \"forward\" polls with each subscriber's own credentials; credentials_env needs auth = \"check\" or \"none\"".into(),
                ));
            }
        }
        Ok(())
    }
}

/// An explicit `check` path may use the SSE path's `{param}` placeholders
/// (filled in per subscriber, like the poll path), and no others.
fn check_placeholders(f: &FeedConfig, check: &str) -> Result<(), String> {
    let pattern = crate::route::Pattern::parse(check)?;
    let sse = crate::route::Pattern::parse(&f.sse_path())?;
    let known = sse.params();
    match pattern.params().into_iter().find(|p| !known.contains(p)) {
        Some(p) => Err(format!(
            "`{{{p}}}` is not a parameter of the SSE path `{}`",
            f.sse_path()
        )),
        None => Ok(()),
    }
}

/// `scheme://host[:port]`, nothing else: the form browsers send in `Origin`.
fn valid_origin(o: &str) -> bool {
    let Ok(uri) = o.parse::<Uri>() else {
        return false;
    };
    uri.scheme().is_some()
        && uri.authority().is_some()
        && !o.ends_with('/')
        && uri
            .path_and_query()
            .map_or(true, |pq| pq.as_str() == "/" || pq.as_str().is_empty())
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

/// The dotted key a line defines, e.g. `feeds[1].interval`, for parse errors.
fn key_at(text: &str, line: usize) -> String {
    let mut table = String::new();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    let mut key = String::new();
    for (n, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let c = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{c}]");
            *c += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
        if n + 1 == line {
            if let Some((k, _)) = t.split_once('=') {
                key = k.trim().trim_matches('"').to_owned();
            }
            break;
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// The line and column a validation problem refers to, found in the source
/// text: the key's own line, else its table's header line.
fn locate(text: &str, p: &Problem) -> Option<(usize, usize)> {
    let mut in_table = p.table.is_none();
    let mut seen = 0usize;
    let mut table_line = None;
    for (n, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            in_table = match &p.table {
                Some((name, Some(i))) if t.starts_with("[[") => {
                    let hit = t.trim_start_matches("[[").split("]]").next().map(str::trim)
                        == Some(name.as_str());
                    let want = hit && seen == *i;
                    if hit {
                        seen += 1;
                    }
                    want
                }
                Some((name, None)) => {
                    t.trim_start_matches('[').split(']').next().map(str::trim)
                        == Some(name.as_str())
                }
                _ => false,
            };
            if in_table {
                table_line = Some((n + 1, l.len() - l.trim_start().len() + 1));
            }
            continue;
        }
        if in_table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == p.key {
                    return Some((n + 1, l.len() - l.trim_start().len() + 1));
                }
            }
        }
    }
    table_line
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"

[upstream]
url = "http://127.0.0.1:3000"
timeout = "5s"

[[feeds]]
name = "jobs"
poll = "/api/jobs"
sse = "/sse/jobs"
interval = "1s"
id = "/id"
items = ""
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("t.toml"))
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.upstream.timeout, Duration::from_secs(5));
        assert_eq!(c.feeds[0].interval, Duration::from_secs(1));
        assert_eq!(c.feeds[0].linger, Duration::from_secs(10));
        assert_eq!(c.sse.keepalive, Duration::from_secs(15));
        assert_eq!(c.upstream.url.origin, "http://127.0.0.1:3000");
    }

    #[test]
    fn sse_path_defaults_from_name() {
        let c =
            parse("[upstream]\nurl='http://a:1'\n[[feeds]]\nname='x'\npoll='/x'\n").expect("ok");
        assert_eq!(c.feeds[0].sse_path(), "/sse/x");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let bad = GOOD.replace("interval = \"1s\"", "intervall = \"1s\"");
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:13:1:"), "{e}");
        assert!(e.contains("feeds[0].intervall"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let bad = GOOD.replace("timeout = \"5s\"", "timeout = \"five\"");
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:7:"), "{e}");
        assert!(e.contains("upstream.timeout"), "{e}");
    }

    #[test]
    fn shared_sse_path_is_allowed_but_not_with_terminal() {
        let shared =
            format!("{GOOD}\n[[feeds]]\nname = \"other\"\npoll = \"/x\"\nsse = \"/sse/jobs\"\n");
        assert!(parse(&shared).is_ok());
        let bad = format!(
            "{shared}object = true\nterminal = {{ field = \"/status\", values = {{ done = {{}} }} }}\n"
        );
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:20:1: feeds[1].sse:"), "{e}");
    }

    #[test]
    fn feeds_sharing_a_stream_must_agree_on_connect_and_keepalive() {
        let shared =
            format!("{GOOD}\n[[feeds]]\nname = \"other\"\npoll = \"/x\"\nsse = \"/sse/jobs\"\n");
        for key in ["connect", "keepalive"] {
            let bad = format!("{shared}events.{key} = {{ event = \"hello\" }}\n");
            let e = Config::from_toml(&bad, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("c.toml:"), "{e}");
            assert!(e.contains(&format!("feeds[1].events.{key}")), "{e}");
            assert!(e.contains("`jobs`") && e.contains("`other`"), "{e}");
        }
    }

    #[test]
    fn bad_pointer_is_rejected() {
        let bad = GOOD.replace("id = \"/id\"", "id = \"id\"");
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("feeds[0].id"), "{e}");
        assert!(e.contains("JSON Pointer"), "{e}");
    }

    #[test]
    fn https_upstream_is_explained() {
        let bad = GOOD.replace("http://127", "https://127");
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream.url") && e.contains("https"), "{e}");
    }

    #[test]
    fn pass_through_keys_default_off_and_parse() {
        let c = parse(GOOD).expect("ok");
        assert!(!c.upstream.preserve_host && !c.upstream.forwarded);
        assert!(c.upstream.trusted_proxies.is_empty());
        let on = GOOD.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\npreserve_host = true\nforwarded = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
        );
        let c = parse(&on).expect("ok");
        assert!(c.upstream.preserve_host && c.upstream.forwarded);
        assert_eq!(c.upstream.trusted_proxies.len(), 2);
    }

    #[test]
    fn bad_trusted_proxies_are_located() {
        let garbage = GOOD.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]",
        );
        let e = Config::from_toml(&garbage, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:8:"), "{e}");
        assert!(
            e.contains("upstream.trusted_proxies") && e.contains("lb.internal"),
            "{e}"
        );

        let sloppy = GOOD.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\ntrusted_proxies = [\"10.1.2.3/8\"]",
        );
        let e = Config::from_toml(&sloppy, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:8:"), "{e}");
        assert!(e.contains("upstream.trusted_proxies:"), "{e}");
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn env_overrides_apply_and_report_bad_values() {
        let mut c = parse(GOOD).expect("ok");
        c.apply_env(|k| (k == "POLLCAST_UPSTREAM_URL").then(|| "http://10.0.0.1:9000/v1".into()))
            .expect("ok");
        assert_eq!(c.upstream.url.to_string(), "http://10.0.0.1:9000/v1");
        let e = c
            .apply_env(|k| (k == "POLLCAST_SERVER_LISTEN").then(|| "nope".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("POLLCAST_SERVER_LISTEN"), "{e}");
    }
    const SECURE: &str = r#"
[server]
header_read_timeout = "3s"
max_header_size = 16384

[upstream]
url = "http://127.0.0.1:3000"

[limits]
max_feeds = 10
max_feeds_per_definition = 5
max_subscribers = 100
max_subscribers_per_client = 4
retry_after = "2s"

[cors]
allowed_origins = ["https://app.example.com"]
allow_credentials = true

[[feeds]]
name = "jobs"
poll = "/api/jobs"
token_param = "token"
query = ["status", "limit"]

[[feeds]]
name = "shared"
poll = "/api/shared"
auth = "check"
check = "/api/me"
check_method = "HEAD"
recheck = "5s"
credentials_env = "POLLCAST_TEST_SHARED_AUTH"
query = []
"#;

    fn parse_with_env(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.resolve_credentials(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .map_err(|p| format!("{}: {}", p.key_path(), p.message))?;
        c.validate()
            .map_err(|p| format!("{}: {}", p.key_path(), p.message))?;
        Ok(c)
    }

    #[test]
    fn security_keys_parse_and_the_secret_is_never_printed() {
        let c = parse_with_env(SECURE, &[("POLLCAST_TEST_SHARED_AUTH", "Bearer topsecret")])
            .expect("valid");
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(3));
        assert_eq!(c.server.max_header_size, 16384);
        assert_eq!(c.limits.max_subscribers_per_client, 4);
        assert_eq!(c.feeds[0].auth, AuthMode::Forward);
        assert_eq!(
            c.feeds[0].query.as_deref(),
            Some(&["status".to_owned(), "limit".to_owned()][..])
        );
        assert_eq!(c.feeds[1].auth, AuthMode::Check);
        assert_eq!(c.feeds[1].check_method, CheckMethod::Head);
        assert_eq!(
            c.feeds[1].credentials.as_ref().map(|s| s.header().clone()),
            Some(http::HeaderValue::from_static("Bearer topsecret"))
        );
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("topsecret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn security_defaults() {
        let c =
            parse("[upstream]\nurl='http://a:1'\n[[feeds]]\nname='x'\npoll='/x'\n").expect("ok");
        assert_eq!(c.feeds[0].auth, AuthMode::Forward);
        assert_eq!(c.feeds[0].query, None);
        assert_eq!(c.feeds[0].recheck, Duration::from_secs(30));
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_header_size, 65536);
        assert_eq!(c.limits.max_feeds, 2000);
        assert_eq!(c.limits.max_feeds_per_definition, 1000);
        assert_eq!(c.limits.max_subscribers, 10_000);
        assert_eq!(c.limits.max_subscribers_per_client, 256);
        assert_eq!(c.limits.max_feeds_per_client, 64);
        assert_eq!(c.limits.max_feed_memory, 128 * 1024 * 1024);
        assert!(c.cors.allowed_origins.is_empty() && !c.cors.allow_credentials);
        // Operator endpoints on loopback only.
        assert_eq!(c.admin.listen, Some(DEFAULT_ADMIN_LISTEN));
        assert!(c.admin.listen.is_some_and(|a| a.ip().is_loopback()));
    }

    #[test]
    fn admin_listen_takes_an_address_or_empty_for_the_main_listener() {
        let base = "[upstream]\nurl='http://a:1'\n[admin]\n";
        let c = parse(&format!("{base}listen = ''\n")).expect("empty");
        assert_eq!(c.admin.listen, None);
        let c = parse(&format!("{base}listen = '0.0.0.0:9091'\n")).expect("addr");
        assert_eq!(c.admin.listen, Some("0.0.0.0:9091".parse().expect("addr")));
        let e = parse(&format!("{base}listen = 'nine'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.listen") && e.contains("`nine`"), "{e}");
        // Written back as it was read (`--check`).
        let text = toml::to_string(&c.admin).expect("toml");
        assert!(text.contains("listen = \"0.0.0.0:9091\""), "{text}");
        let mut none = c.admin.clone();
        none.listen = None;
        let text = toml::to_string(&none).expect("toml");
        assert!(text.contains("listen = \"\""), "{text}");
    }

    #[test]
    fn a_missing_credentials_variable_names_the_variable() {
        let e = parse_with_env(SECURE, &[]).unwrap_err();
        assert!(e.starts_with("feeds[1].credentials_env"), "{e}");
        assert!(e.contains("POLLCAST_TEST_SHARED_AUTH"), "{e}");
    }

    #[test]
    fn wildcard_origin_with_credentials_is_refused_with_its_line() {
        let bad = SECURE
            .replace("[\"https://app.example.com\"]", "[\"*\"]")
            .replace("credentials_env = \"POLLCAST_TEST_SHARED_AUTH\"\n", "");
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:18:1: cors.allow_credentials:"), "{e}");
    }

    #[test]
    fn a_check_path_may_use_the_sse_paths_parameters() {
        let env = [("POLLCAST_TEST_SHARED_AUTH", "Bearer x")];
        let text = SECURE
            .replace(
                "poll = \"/api/shared\"",
                "poll = \"/api/projects/{project}/jobs\"\nsse = \"/sse/projects/{project}/jobs\"",
            )
            .replace("check = \"/api/me\"", "check = \"/api/projects/{project}\"");
        let c = parse_with_env(&text, &env).expect("valid");
        assert_eq!(c.feeds[1].check.as_deref(), Some("/api/projects/{project}"));
        let e = parse_with_env(
            &text.replace("/api/projects/{project}\"", "/api/projects/{other}\""),
            &env,
        )
        .unwrap_err();
        assert!(
            e.starts_with("feeds[1].check: `{other}` is not a parameter"),
            "{e}"
        );
        // Service credentials and no allowlist: the error says why.
        let e = parse_with_env(&text.replace("query = []\n", ""), &env).unwrap_err();
        assert!(e.starts_with("feeds[1].query: is required"), "{e}");
        assert!(e.contains("service credentials"), "{e}");
    }

    #[test]
    fn bad_security_values_are_refused() {
        let env = [("POLLCAST_TEST_SHARED_AUTH", "Bearer x")];
        for (from, to, key) in [
            (
                "max_header_size = 16384",
                "max_header_size = 1024",
                "server.max_header_size",
            ),
            (
                "retry_after = \"2s\"",
                "retry_after = \"10ms\"",
                "limits.retry_after",
            ),
            (
                "\"https://app.example.com\"",
                "\"https://app.example.com/path\"",
                "cors.allowed_origins",
            ),
            (
                "token_param = \"token\"",
                "token_param = \"lastEventId\"",
                "feeds[0].token_param",
            ),
            (
                "query = [\"status\", \"limit\"]",
                "query = [\"status\", \"token\"]",
                "feeds[0].query",
            ),
            (
                "query = [\"status\", \"limit\"]",
                "query = [\"a&b\"]",
                "feeds[0].query",
            ),
            ("auth = \"check\"", "auth = \"forward\"", "feeds[1].check"),
            (
                "check = \"/api/me\"",
                "check = \"api/me\"",
                "feeds[1].check",
            ),
            ("recheck = \"5s\"", "recheck = \"1ms\"", "feeds[1].recheck"),
            // Service credentials with check/none: an allowlist is required.
            ("query = []\n", "", "feeds[1].query"),
            // A check path names only the SSE path's parameters.
            (
                "check = \"/api/me\"",
                "check = \"/api/projects/{project}/me\"",
                "feeds[1].check",
            ),
        ] {
            let text = SECURE.replace(from, to);
            assert_ne!(text, SECURE, "{from}");
            let e = parse_with_env(&text, &env).unwrap_err();
            assert!(e.starts_with(key), "{to}: {e}");
        }
        let e = parse_with_env(
            &SECURE.replace("auth = \"check\"", "auth = \"maybe\""),
            &env,
        )
        .unwrap_err();
        assert!(e.contains("unknown variant"), "{e}");
        let forward = SECURE
            .replace("check = \"/api/me\"\n", "")
            .replace("auth = \"check\"", "auth = \"forward\"");
        let e = parse_with_env(&forward, &env).unwrap_err();
        assert!(e.starts_with("feeds[1].credentials_env"), "{e}");
        let none = SECURE.replace("query = [\"status\", \"limit\"]", "auth = \"none\"");
        let e = parse_with_env(&none, &env).unwrap_err();
        assert!(e.starts_with("feeds[0].token_param"), "{e}");
    }

    #[test]
    fn adaptive_interval_keys_parse_and_default_to_absent() {
        let c = parse(GOOD).expect("ok");
        assert_eq!(
            (c.feeds[0].interval_min, c.feeds[0].interval_max),
            (None, None)
        );
        let on = GOOD.replace(
            "interval = \"1s\"",
            "interval = \"1s\"\ninterval_min = \"500ms\"\ninterval_max = \"30s\"",
        );
        let c = parse(&on).expect("ok");
        assert_eq!(c.feeds[0].interval_min, Some(Duration::from_millis(500)));
        assert_eq!(c.feeds[0].interval_max, Some(Duration::from_secs(30)));
        // Only one of them is fine too: the other bound is the interval.
        let only_max = GOOD.replace(
            "interval = \"1s\"",
            "interval = \"1s\"\ninterval_max = \"10s\"",
        );
        assert!(parse(&only_max).is_ok());
        // Round trip through the effective config (`--check`).
        let text = toml::to_string(&c.effective()).expect("toml");
        assert!(text.contains("interval_min = \"500ms\""), "{text}");
        let plain = toml::to_string(&parse(GOOD).expect("ok")).expect("toml");
        assert!(!plain.contains("interval_m"), "{plain}");
    }

    #[test]
    fn adaptive_interval_rules_are_located() {
        for (keys, line, key, says) in [
            (
                "interval_min = \"5ms\"\ninterval = \"1s\"",
                13,
                "feeds[0].interval_min",
                "at least 10ms",
            ),
            (
                "interval_min = \"2s\"\ninterval = \"1s\"",
                13,
                "feeds[0].interval_min",
                "at most the interval (1s)",
            ),
            (
                "interval = \"1s\"\ninterval_max = \"500ms\"",
                14,
                "feeds[0].interval_max",
                "at least the interval (1s)",
            ),
            // backoff_max is not in the file: its table's header is named.
            (
                "interval = \"1s\"\ninterval_max = \"1m\"",
                9,
                "feeds[0].backoff_max",
                "at least interval_max (1m)",
            ),
            (
                "interval = \"1s\"\ninterval_max = \"never\"",
                14,
                "feeds[0].interval_max",
                "invalid",
            ),
        ] {
            let bad = GOOD.replace("interval = \"1s\"", keys);
            let e = Config::from_toml(&bad, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("c.toml:{line}:")), "{keys}: {e}");
            assert!(e.contains(key) && e.contains(says), "{keys}: {e}");
        }
        let ok = GOOD.replace(
            "interval = \"1s\"",
            "interval = \"1s\"\ninterval_max = \"1m\"\nbackoff_max = \"1m\"",
        );
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn the_default_contract_names_are_valid_event_names() {
        use crate::feed::contract::*;
        for name in [SNAPSHOT, ADDED, UPDATED, REMOVED, STALE, RECOVERED] {
            assert!(valid_event_name(name), "{name}");
        }
    }

    #[test]
    fn event_names_that_could_break_framing_are_invalid() {
        for ok in ["snapshot", "job_added", "listing.created", "a-b", "X1"] {
            assert!(valid_event_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\rb",
            "a:b",
            "é",
            "tab\t",
            &"x".repeat(129),
        ] {
            assert!(!valid_event_name(bad), "{bad:?}");
        }
    }
}
