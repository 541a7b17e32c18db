//! The test upstream: a real HTTP server on an ephemeral loopback port whose
//! lists, statuses and faults the test changes, and which records every
//! request it sees (see [`TestUpstream`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use pollcast::config::UpstreamUrl;

use super::{passthrough, wait_until, within};

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
