//! Shared test harness: a real HTTP upstream whose data the test changes,
//! pollcast started in-process on an ephemeral port, and a real SSE client
//! (reqwest + eventsource-stream) to read what pollcast sends.
//!
//! Everything waits on events or conditions with a generous deadline; nothing
//! sleeps and hopes.

#![allow(dead_code)]

pub mod child;
pub mod passthrough;
pub mod procstat;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use pollcast::config::{Config, FeedConfig, UpstreamUrl};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// What the list endpoint answers next.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 with the current items.
    Ok,
    /// This status with a short body.
    Status(u16),
    /// 200 with a body that is not JSON.
    InvalidJson,
    /// Wait this long before answering (to trigger timeouts).
    Delay(Duration),
    /// Nothing listens: new connections are refused and open ones are cut
    /// (the upstream process is down). Leaving this mode listens again on the same port.
    Refused,
    /// 200 announcing the whole body's length, half of it, then a TCP reset.
    ResetMidBody,
    /// 200 with the real body, announced in full, one byte every this often.
    Drip(Duration),
    /// These statuses in turn, one per request (a run of 500/502/503...).
    Statuses(Vec<u16>),
    /// This status with this `Retry-After` header value.
    RetryAfter(u16, String),
    /// 200 with exactly this body (truncated JSON, a vanished items array...).
    Body(&'static str),
    /// 200 with a valid JSON array of about this many bytes; with a
    /// `Content-Length` when `declared`, chunked otherwise.
    Huge { bytes: usize, declared: bool },
}

/// One request the upstream saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
    /// The upstream-side view of the connection's peer (pollcast's socket).
    pub peer: SocketAddr,
}

/// A fixed response for one path, served byte for byte.
#[derive(Clone, Debug)]
struct Raw {
    headers: Vec<(String, String)>,
    body: Bytes,
}

#[derive(Default)]
struct State {
    /// Items per `path?query` (falls back to per path).
    lists: HashMap<String, Value>,
    /// Fixed responses per path, served before anything else.
    raw: HashMap<String, Raw>,
    mode: Option<Mode>,
    seen: Vec<Seen>,
    /// Requests answered in the current mode (for `Mode::Statuses`).
    in_mode: usize,
    /// Open connections, so `Mode::Refused` can cut them.
    conns: Vec<tokio::task::AbortHandle>,
    /// Guarded paths: the `Authorization` values they accept.
    guards: HashMap<String, HashSet<String>>,
    /// Lists carry `ETag`/`Last-Modified` and honour `If-None-Match`.
    validators: bool,
    /// Lists answered `304 Not Modified`.
    not_modified: usize,
    /// Extra response headers on a path's list answers (200 and 304).
    list_headers: HashMap<String, Vec<(String, String)>>,
    /// Paths whose list changes with every request.
    ticking: HashSet<String>,
}

/// Response body of the test upstream: whole, streamed, or broken off.
type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

fn whole(b: Bytes) -> TestBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// A real HTTP upstream on an ephemeral loopback port.
///
/// - `GET <path>` of a list set with [`TestUpstream::set`] answers with that
///   list (per path and query when set that way, or for the path alone).
///   When the request has an `Authorization` header, `{{token}}` in string
///   values of the list is replaced by it, so per-user data is easy to make.
/// - A path made a guard with [`TestUpstream::guard`] answers 401 (with
///   `www-authenticate` and a JSON body) unless the request's `Authorization`
///   is one it accepts; accepted requests get the list, or `{"ok":true}`.
/// - `/echo...` answers with a JSON description of the request (method, path,
///   headers, body), status from `?status=`, and header `x-echo: yes`; each
///   `?header=name:value` is added to the response headers.
/// - `/pt/...`: streaming, WebSocket and broken endpoints, see [`passthrough`].
/// - Everything else: 404.
#[derive(Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    refusing: Arc<tokio::sync::watch::Sender<bool>>,
    /// The `/pt/...` endpoints' state (see [`passthrough`]).
    pub pass: Arc<passthrough::PassState>,
}

impl TestUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let refusing = Arc::new(tokio::sync::watch::channel(false).0);
        let pass = Arc::new(passthrough::PassState::default());
        tokio::spawn(accept_loop(
            listener,
            state.clone(),
            pass.clone(),
            refusing.subscribe(),
        ));
        Self {
            addr,
            state,
            refusing,
            pass,
        }
    }

    pub fn url(&self) -> UpstreamUrl {
        UpstreamUrl::parse(&format!("http://{}", self.addr)).expect("url")
    }

    /// Set the list served at `path_and_query` (e.g. `/api/jobs` or `/api/jobs?status=x`).
    pub fn set(&self, path_and_query: &str, items: Value) {
        self.state
            .lock()
            .unwrap()
            .lists
            .insert(path_and_query.to_owned(), items);
    }

    /// Serve exactly `body` with `headers` (and status 200) at `path`.
    pub fn set_raw(&self, path: &str, headers: &[(&str, &str)], body: Bytes) {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.state
            .lock()
            .unwrap()
            .raw
            .insert(path.to_owned(), Raw { headers, body });
    }

    /// Make `path` accept only these `Authorization` values (401 otherwise).
    pub fn guard(&self, path: &str, allowed: &[&str]) {
        self.state.lock().unwrap().guards.insert(
            path.to_owned(),
            allowed.iter().map(|s| s.to_string()).collect(),
        );
    }

    /// Let `path` accept `authorization` from now on.
    pub fn allow(&self, path: &str, authorization: &str) {
        let mut s = self.state.lock().unwrap();
        s.guards
            .entry(path.to_owned())
            .or_default()
            .insert(authorization.to_owned());
    }

    /// Make `path` refuse `authorization` from now on.
    pub fn revoke(&self, path: &str, authorization: &str) {
        if let Some(g) = self.state.lock().unwrap().guards.get_mut(path) {
            g.remove(authorization);
        }
    }

    /// Requests to `path` carrying this `Authorization` value.
    pub fn seen_with(&self, path: &str, authorization: &str) -> Vec<Seen> {
        self.seen(path)
            .into_iter()
            .filter(|s| {
                s.headers
                    .get("authorization")
                    .is_some_and(|v| v.as_bytes() == authorization.as_bytes())
            })
            .collect()
    }

    /// Give lists an `ETag` (a hash of the body) and a `Last-Modified`, and
    /// answer a matching `If-None-Match` with `304 Not Modified`.
    pub fn validators(&self, on: bool) {
        self.state.lock().unwrap().validators = on;
    }

    /// Send these headers (e.g. `Cache-Control`) with every list answer
    /// (200 or 304) at `path`, replacing any set before.
    pub fn list_headers(&self, path: &str, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.state
            .lock()
            .unwrap()
            .list_headers
            .insert(path.to_owned(), headers);
    }

    /// Make the list at `path` different on every request:
    /// `[{"id":"tick","n":<requests to path so far>}]`.
    pub fn ticking(&self, path: &str) {
        self.state.lock().unwrap().ticking.insert(path.to_owned());
    }

    /// Lists answered `304 Not Modified` so far.
    pub fn not_modified(&self) -> usize {
        self.state.lock().unwrap().not_modified
    }

    pub fn mode(&self, mode: Mode) {
        let refuse = matches!(mode, Mode::Refused);
        {
            let mut s = self.state.lock().unwrap();
            s.mode = Some(mode);
            s.in_mode = 0;
        }
        self.refusing.send_replace(refuse);
    }

    /// Wait until the port refuses connections (after `mode(Mode::Refused)`)
    /// or accepts them again.
    pub async fn wait_listening(&self, listening: bool) {
        let addr = self.addr;
        within("upstream listener state", async move {
            while tokio::net::TcpStream::connect(addr).await.is_ok() != listening {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Requests seen so far whose path starts with `path`.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.path_and_query.starts_with(path))
            .cloned()
            .collect()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    /// Wait until at least `n` requests to `path` have been seen.
    pub async fn wait_hits(&self, path: &str, n: usize) {
        wait_until(&format!("{n} hits on {path}"), || self.hits(path) >= n).await;
    }
}

/// Accept connections until told to refuse; then close the port and cut every
/// open connection, and listen again on the same port when told to.
async fn accept_loop(
    mut listener: TcpListener,
    st: Arc<Mutex<State>>,
    pass: Arc<passthrough::PassState>,
    mut refusing: tokio::sync::watch::Receiver<bool>,
) {
    let addr = listener.local_addr().expect("addr");
    loop {
        let refuse = tokio::select! {
            a = listener.accept() => Some(a),
            _ = refusing.wait_for(|r| *r) => None,
        };
        let accepted = match refuse {
            Some(a) => a,
            None => {
                drop(listener);
                for c in st.lock().unwrap().conns.drain(..) {
                    c.abort();
                }
                if refusing.wait_for(|r| !*r).await.is_err() {
                    return;
                }
                listener = loop {
                    // The port was ours a moment ago; SO_REUSEADDR lets us take it back.
                    match TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                };
                continue;
            }
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        // Closing with a reset (never a FIN) makes `Mode::ResetMidBody` a real RST.
        let _ = stream.set_zero_linger();
        let st2 = st.clone();
        let pass = pass.clone();
        let conn = tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (st, pass) = (st2.clone(), pass.clone());
                async move {
                    if req.uri().path().starts_with("/pt/") {
                        passthrough::handle(pass, peer, req).await
                    } else {
                        let r = handle(st, peer, req).await?;
                        Ok(r.map(|b| b.map_err(pollcast::BoxError::from).boxed_unsync()))
                    }
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
        let mut s = st.lock().unwrap();
        s.conns.retain(|c| !c.is_finished());
        s.conns.push(conn.abort_handle());
    }
}

async fn handle(
    st: Arc<Mutex<State>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let path = parts.uri.path().to_owned();
    let (mode, list, raw) = {
        let mut s = st.lock().unwrap();
        s.seen.push(Seen {
            method: parts.method.to_string(),
            path_and_query: pq.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            at: std::time::Instant::now(),
            peer,
        });
        let mut list = s.lists.get(&pq).or_else(|| s.lists.get(&path)).cloned();
        if s.ticking.contains(&path) {
            let n = s.seen.iter().filter(|x| x.path_and_query == pq).count();
            list = Some(serde_json::json!([{"id": "tick", "n": n}]));
        }
        let auth = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if let Some(allowed) = s.guards.get(&path) {
            if !auth.is_some_and(|a| allowed.contains(a)) {
                let mut r = Response::new(whole(Bytes::from_static(
                    b"{\"error\":\"invalid or revoked token\"}",
                )));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                let h = r.headers_mut();
                h.insert("content-type", "application/json".parse().expect("ct"));
                h.insert(
                    "www-authenticate",
                    "Bearer realm=\"test\"".parse().expect("hv"),
                );
                h.insert("access-control-allow-origin", "*".parse().expect("hv"));
                return Ok(r);
            }
        }
        let list = match list {
            None if s.guards.contains_key(&path) => Some(serde_json::json!({"ok": true})),
            list => list,
        };
        let raw = s.raw.get(&path).cloned();
        let mut mode = s.mode.clone().unwrap_or(Mode::Ok);
        if let Mode::Statuses(codes) = &mode {
            if !path.starts_with("/echo") && list.is_some() {
                mode = Mode::Status(codes[s.in_mode % codes.len()]);
                s.in_mode += 1;
            }
        }
        (mode, list, raw)
    };
    if let Some(raw) = raw {
        let mut r = Response::new(whole(raw.body));
        for (k, v) in raw.headers {
            r.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        return Ok(r);
    }
    let reply = |status: u16, ct: &str, body: Bytes| {
        let mut r = Response::new(whole(body));
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        r.headers_mut()
            .insert("content-type", ct.parse().expect("ct"));
        r
    };
    if path.starts_with("/echo") {
        let status = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("status=")))
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(v.to_str().unwrap_or("").to_owned()),
                )
            })
            .collect();
        let desc = serde_json::json!({
            "method": parts.method.as_str(),
            "path": pq,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        let mut r = reply(status, "application/json", Bytes::from(desc.to_string()));
        r.headers_mut().insert("x-echo", "yes".parse().expect("hv"));
        // `?header=name:value` adds a response header (repeatable).
        let extra = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == "header")
            .filter_map(|(_, v)| {
                let (name, value) = v.split_once(':')?;
                Some((
                    http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                    http::HeaderValue::from_str(value.trim()).ok()?,
                ))
            })
            .collect::<Vec<_>>();
        for (name, value) in extra {
            r.headers_mut().append(name, value);
        }
        return Ok(r);
    }
    let Some(list) = list else {
        return Ok(reply(404, "text/plain", Bytes::from_static(b"not found")));
    };
    match mode {
        Mode::Ok => {}
        Mode::Status(code) => {
            return Ok(reply(
                code,
                "text/plain",
                Bytes::from_static(b"failing on purpose"),
            ))
        }
        Mode::InvalidJson => {
            return Ok(reply(
                200,
                "application/json",
                Bytes::from_static(b"{\"items\": [tru"),
            ))
        }
        Mode::Delay(d) => tokio::time::sleep(d).await,
        Mode::Statuses(_) => {}
        Mode::RetryAfter(code, after) => {
            let mut r = reply(code, "text/plain", Bytes::from_static(b"come back later"));
            r.headers_mut()
                .insert("retry-after", after.parse().expect("header value"));
            return Ok(r);
        }
        Mode::Body(body) => return Ok(reply(200, "application/json", Bytes::from(body))),
        Mode::Huge { bytes, declared } => {
            let mut text = String::from("[");
            let mut n = 0;
            while text.len() < bytes {
                text.push_str(&format!("{{\"id\":{n},\"pad\":\"{}\"}},", "x".repeat(200)));
                n += 1;
            }
            text.push_str("{\"id\":\"last\"}]");
            let body = Bytes::from(text);
            if declared {
                return Ok(reply(200, "application/json", body));
            }
            let chunks: Vec<Result<_, std::io::Error>> = body
                .chunks(4096)
                .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
            let mut r = reply(200, "application/json", Bytes::new());
            *r.body_mut() = stream.boxed_unsync();
            return Ok(r);
        }
        Mode::Refused | Mode::ResetMidBody | Mode::Drip(_) => {}
    }
    let mut text = list.to_string();
    if let Some(auth) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        text = text.replace("{{token}}", auth);
    }
    let body = Bytes::from(text);
    match mode {
        Mode::ResetMidBody | Mode::Refused => {
            // The length promises the whole body; the error after half of it
            // makes hyper drop the connection, and zero linger turns that into a RST.
            let len = body.len();
            let half = body.slice(..len / 2);
            let frames = futures_util::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok(hyper::body::Frame::data(half)), 1)),
                        1 => {
                            // Let the head and the first half reach the client first.
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            let reset = std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "reset on purpose",
                            );
                            Some((Err(reset), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut r = reply(200, "application/json", Bytes::new());
            r.headers_mut().insert("content-length", len.into());
            *r.body_mut() = http_body_util::StreamBody::new(frames).boxed_unsync();
            Ok(r)
        }
        Mode::Drip(every) => {
            let len = body.len();
            let bytes =
                futures_util::stream::unfold((body, true), move |(rest, first)| async move {
                    if rest.is_empty() {
                        return None;
                    }
                    if !first {
                        tokio::time::sleep(every).await;
                    }
                    let frame = hyper::body::Frame::data(rest.slice(..1));
                    Some((Ok::<_, std::io::Error>(frame), (rest.slice(1..), false)))
                });
            let mut r = reply(200, "application/json", Bytes::new());
            r.headers_mut().insert("content-length", len.into());
            *r.body_mut() = http_body_util::StreamBody::new(bytes).boxed_unsync();
            Ok(r)
        }
        _ => {
            let mut s = st.lock().unwrap();
            let extra = s.list_headers.get(&path).cloned().unwrap_or_default();
            let with_extra = |mut r: Response<TestBody>| {
                for (k, v) in &extra {
                    r.headers_mut().append(
                        http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                        v.parse().expect("value"),
                    );
                }
                r
            };
            if !s.validators {
                return Ok(with_extra(reply(200, "application/json", body)));
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&body[..], &mut h);
            let etag = format!("\"{:x}\"", std::hash::Hasher::finish(&h));
            let lm = "Mon, 23 Nov 2026 10:00:00 GMT";
            let fresh = parts
                .headers
                .get("if-none-match")
                .is_some_and(|v| v.as_bytes() == etag.as_bytes());
            let mut r = if fresh {
                s.not_modified += 1;
                reply(304, "application/json", Bytes::new())
            } else {
                reply(200, "application/json", body)
            };
            r.headers_mut().insert("etag", etag.parse().expect("etag"));
            r.headers_mut()
                .insert("last-modified", lm.parse().expect("lm"));
            Ok(with_extra(r))
        }
    }
}

/// A config for one feed `jobs` polling `/api/jobs` every 50ms, on an ephemeral port.
pub fn config(upstream: &TestUpstream) -> Config {
    let mut feed = FeedConfig::new("jobs", "/api/jobs");
    feed.sse = Some("/sse/jobs".into());
    feed.interval = Duration::from_millis(50);
    feed.linger = Duration::from_millis(100);
    feed.backoff_max = Duration::from_millis(200);
    let mut c = Config::new(upstream.url(), vec![feed]);
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.listen = Some("127.0.0.1:0".parse().expect("addr"));
    c.upstream.timeout = Duration::from_secs(2);
    c.server.drain_timeout = Duration::from_secs(2);
    c
}

/// A real SSE client reading one pollcast stream.
pub struct Sse {
    events: Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>,
    pub status: u16,
    pub headers: HeaderMap,
}

impl Sse {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Self {
        Self::connect_using(&reqwest::Client::new(), url, headers).await
    }

    /// Connect with a client of the test's own (e.g. bound to another local address).
    pub async fn connect_using(
        client: &reqwest::Client,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Self {
        let mut req = client.get(url).header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("connect deadline")
            .expect("connect");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let events = resp
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        Self {
            events: Box::pin(events),
            status,
            headers,
        }
    }

    /// Read events from any response body (e.g. one from a hyper HTTP/2 client).
    pub fn from_response<B>(resp: http::Response<B>) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display + Send,
    {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let events = resp
            .into_body()
            .into_data_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        Self {
            events: Box::pin(events),
            status,
            headers,
        }
    }

    /// The next event, failing the test after [`DEADLINE`].
    pub async fn next(&mut self) -> Event {
        match tokio::time::timeout(DEADLINE, self.events.next()).await {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => panic!("SSE stream error: {e}"),
            Ok(None) => panic!("SSE stream ended"),
            Err(_) => panic!("no SSE event within {DEADLINE:?}"),
        }
    }

    /// The next event with this name, skipping others.
    pub async fn next_named(&mut self, name: &str) -> Event {
        loop {
            let e = self.next().await;
            if e.event == name {
                return e;
            }
        }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next_or_end(&mut self) -> Option<Event> {
        match tokio::time::timeout(DEADLINE, self.events.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("neither an event nor the end within {DEADLINE:?}"),
        }
    }
}

/// Parse an event's data as JSON.
pub fn data(e: &Event) -> Value {
    serde_json::from_str(&e.data)
        .unwrap_or_else(|err| panic!("event data is not JSON ({err}): {}", e.data))
}

/// Wait until `cond` holds, checking every few milliseconds; fail after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Run `f` with a deadline.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// What a browser test needs: Debian's chromium, node, and the Node driver
/// installed by `npm ci --prefix tests/browser` (as `.ci/run` does).
///
/// `None` (the test skips, saying why) when something is missing on a
/// developer machine; a panic naming the missing piece when `CI=true`.
pub fn browser_tools() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !std::path::Path::new(&chromium).exists() {
        Some(format!("{chromium} (apt-get install -y chromium)"))
    } else if !node_ok {
        Some("node (apt-get install -y nodejs npm)".to_owned())
    } else if !dir.join("node_modules/playwright-core").exists() {
        Some(format!(
            "playwright-core (npm ci --prefix {})",
            dir.display()
        ))
    } else {
        None
    };
    match missing {
        None => Some(dir),
        Some(what) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("browser test cannot run: missing {what}; .ci/run installs it")
        }
        Some(what) => {
            eprintln!("skipped: missing {what}");
            None
        }
    }
}

/// An SSE stream read as raw bytes, block by block, for byte-exact wire checks.
pub struct RawSse {
    body: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
    buf: String,
    pub status: u16,
    pub headers: HeaderMap,
}

impl RawSse {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Self {
        let mut req = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("connect deadline")
            .expect("connect");
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next block: everything up to and including the next blank line.
    pub async fn block(&mut self) -> String {
        self.next_block()
            .await
            .unwrap_or_else(|| panic!("stream ended; unread: {:?}", self.buf))
    }

    /// The next block, or `None` when the stream ends first.
    pub async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let rest = self.buf.split_off(i + 2);
                return Some(std::mem::replace(&mut self.buf, rest));
            }
            match tokio::time::timeout(DEADLINE, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("no SSE block within {DEADLINE:?}; unread: {:?}", self.buf),
            }
        }
    }

    /// The next block, checked against `pattern` with [`assert_wire`].
    pub async fn expect(&mut self, pattern: &str) -> String {
        let b = self.block().await;
        assert_wire(&b, pattern);
        b
    }
}

/// Assert `actual` equals `pattern` byte for byte, where `{ID}` stands for a
/// pollcast event id (`<epoch>:<seq>`, composite `a:1,-`, optional `:end`)
/// and `{TS}` for an ISO 8601 UTC timestamp (`2026-01-02T03:04:05.678Z`).
pub fn assert_wire(actual: &str, pattern: &str) {
    let fail = |why: &str| -> ! {
        panic!("wire mismatch ({why})\n  expected: {pattern:?}\n  actual:   {actual:?}")
    };
    let mut a = actual;
    let mut p = pattern;
    loop {
        let next = [p.find("{ID}"), p.find("{TS}")].into_iter().flatten().min();
        let Some(at) = next else {
            if a != p {
                fail("literal text differs");
            }
            return;
        };
        let (lit, rest) = p.split_at(at);
        let Some(after) = a.strip_prefix(lit) else {
            fail("literal text differs");
        };
        let (token, rest) = rest.split_at(4);
        let allowed = |c: char| match token {
            "{ID}" => c.is_ascii_hexdigit() || matches!(c, ':' | ',' | '-' | 'n'),
            _ => c.is_ascii_digit() || matches!(c, '-' | ':' | 'T' | '.' | 'Z'),
        };
        let len = after.find(|c: char| !allowed(c)).unwrap_or(after.len());
        let value = &after[..len];
        let ok = match token {
            "{ID}" => is_event_id(value),
            _ => is_iso8601(value),
        };
        if !ok {
            fail(&format!("{value:?} is not a valid {token}"));
        }
        a = &after[len..];
        p = rest;
    }
}

/// `<12 hex>:<digits>` parts joined by `,` (or `-`), optionally ending in `:end`.
pub fn is_event_id(id: &str) -> bool {
    let id = id.strip_suffix(":end").unwrap_or(id);
    !id.is_empty()
        && id.split(',').all(|part| {
            part == "-"
                || part.split_once(':').is_some_and(|(e, s)| {
                    e.len() == 12
                        && e.chars().all(|c| c.is_ascii_hexdigit())
                        && !s.is_empty()
                        && s.chars().all(|c| c.is_ascii_digit())
                })
        })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn is_iso8601(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && ts.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1)))
}

/// Load a shipped example config and point it at a test upstream on an
/// ephemeral port, with short intervals.
pub fn example(file: &str, upstream: &TestUpstream) -> Config {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let mut c = Config::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    c.upstream.url = upstream.url();
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    if c.admin.listen.is_some() {
        c.admin.listen = Some("127.0.0.1:0".parse().expect("addr"));
    }
    c.server.drain_timeout = Duration::from_secs(2);
    for f in &mut c.feeds {
        f.interval = Duration::from_millis(50);
        f.backoff_max = Duration::from_millis(200);
        f.linger = Duration::from_secs(5);
    }
    c
}

/// A URL of pollcast's operator endpoints (metrics, status, stats, refresh):
/// on the admin listener, where they are served by default.
pub fn admin_url(pc: &pollcast::Running, path: &str) -> String {
    let addr = pc.admin_addr.unwrap_or(pc.addr);
    format!("http://{addr}{path}")
}

/// The text of pollcast's `/_pollcast/metrics`, scraped over HTTP from the
/// admin listener (as Prometheus does).
pub async fn scrape_metrics(pc: &pollcast::Running) -> String {
    let r = within(
        "scrape metrics",
        reqwest::get(admin_url(pc, "/_pollcast/metrics")),
    )
    .await
    .expect("scrape");
    assert_eq!(r.status(), 200, "metrics answered");
    within("metrics body", r.text()).await.expect("body")
}

/// One series' value in a metrics text, e.g.
/// `pollcast_limit_refusals_total{limit="max_feeds"}`.
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}
