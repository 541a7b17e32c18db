//! Shared test harness: a real HTTP upstream whose data the test changes,
//! pollcast started in-process on an ephemeral port, and a real SSE client
//! (reqwest + eventsource-stream) to read what pollcast sends.
//!
//! Everything waits on events or conditions with a generous deadline; nothing
//! sleeps and hopes.

#![allow(dead_code)]

use std::collections::HashMap;
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
}

/// A real HTTP upstream on an ephemeral loopback port.
///
/// - `GET <path>` of a list set with [`TestUpstream::set`] answers with that
///   list (per path and query when set that way, or for the path alone).
///   When the request has an `Authorization` header, `{{token}}` in string
///   values of the list is replaced by it, so per-user data is easy to make.
/// - `/echo...` answers with a JSON description of the request (method, path,
///   headers, body), status from `?status=`, and header `x-echo: yes`.
/// - Everything else: 404.
#[derive(Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl TestUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), peer, req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state }
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

    pub fn mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
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

async fn handle(
    st: Arc<Mutex<State>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
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
        let list = s.lists.get(&pq).or_else(|| s.lists.get(&path)).cloned();
        let raw = s.raw.get(&path).cloned();
        (s.mode.clone().unwrap_or(Mode::Ok), list, raw)
    };
    if let Some(raw) = raw {
        let mut r = Response::new(Full::new(raw.body));
        for (k, v) in raw.headers {
            r.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        return Ok(r);
    }
    let reply = |status: u16, ct: &str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
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
    }
    let mut text = list.to_string();
    if let Some(auth) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        text = text.replace("{{token}}", auth);
    }
    Ok(reply(200, "application/json", Bytes::from(text)))
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
