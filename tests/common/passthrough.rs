//! The test upstream's `/pt/...` endpoints: what a real API does besides
//! JSON lists, for the pass-through tests. Each one records what it saw so a
//! test can wait on it.
//!
//! - `/pt/ws`: a WebSocket echo server (hyper upgrade + tungstenite). Text
//!   `close:<code>` makes it close with that code; `?refuse=1` answers 403.
//! - `/pt/sse`: an SSE stream of whatever the test publishes with
//!   [`PassState::publish`], ended by [`PassState::end_streams`].
//! - `/pt/hold`: never answers; records when it starts and when it is cancelled.
//! - `/pt/upload`: reads the body as it arrives (live byte count), checks it
//!   against [`pattern`] and answers `{"bytes":n,"pattern":ok}`.
//! - `/pt/download?bytes=N[&chunked=1]`: N bytes of [`pattern`], streamed.
//! - `/pt/broken?framing=length|chunked`: 100 of 1000 bytes, then the
//!   connection breaks.
//! - `/pt/trailers`: `hello` with trailer `x-checksum: abc123`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, pollcast::BoxError>;

/// What the `/pt/...` endpoints saw, and the SSE publisher.
pub struct PassState {
    sse: broadcast::Sender<Option<Bytes>>,
    pub sse_open: AtomicUsize,
    pub sse_dropped: AtomicUsize,
    pub hold_started: AtomicUsize,
    pub hold_cancelled: AtomicUsize,
    pub upload_bytes: AtomicU64,
    pub upload_aborted: AtomicUsize,
    pub ws_open: AtomicUsize,
    pub ws_ended: AtomicUsize,
    /// Close codes the WebSocket server received.
    pub ws_closes: Mutex<Vec<u16>>,
    /// Request headers of every `/pt/...` request, in arrival order.
    pub heads: Mutex<Vec<(String, HeaderMap)>>,
}

impl Default for PassState {
    fn default() -> Self {
        Self {
            sse: broadcast::channel(1024).0,
            sse_open: AtomicUsize::new(0),
            sse_dropped: AtomicUsize::new(0),
            hold_started: AtomicUsize::new(0),
            hold_cancelled: AtomicUsize::new(0),
            upload_bytes: AtomicU64::new(0),
            upload_aborted: AtomicUsize::new(0),
            ws_open: AtomicUsize::new(0),
            ws_ended: AtomicUsize::new(0),
            ws_closes: Mutex::new(Vec::new()),
            heads: Mutex::new(Vec::new()),
        }
    }
}

impl PassState {
    /// Send `bytes` on every open `/pt/sse` stream.
    pub fn publish(&self, bytes: impl Into<Bytes>) {
        let _ = self.sse.send(Some(bytes.into()));
    }

    /// End every open `/pt/sse` stream cleanly.
    pub fn end_streams(&self) {
        let _ = self.sse.send(None);
    }

    pub fn count(n: &AtomicUsize) -> usize {
        n.load(Ordering::SeqCst)
    }

    /// Headers of the last request to `path`.
    pub fn head(&self, path: &str) -> Option<HeaderMap> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
    }
}

/// Increments a counter when dropped: how a handler notices it was cancelled.
struct OnDrop<'a>(&'a AtomicUsize);
impl Drop for OnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<pollcast::BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

fn empty() -> Body {
    boxed(Empty::<Bytes>::new())
}

fn query<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    })
}

pub async fn handle(
    st: Arc<PassState>,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let path = req.uri().path().to_owned();
    st.heads
        .lock()
        .unwrap()
        .push((path.clone(), req.headers().clone()));
    let resp = match path.as_str() {
        "/pt/ws" => websocket(st, req),
        "/pt/sse" => sse(st),
        "/pt/hold" => {
            st.hold_started.fetch_add(1, Ordering::SeqCst);
            let _cancelled = OnDrop(&st.hold_cancelled);
            std::future::pending::<Response<Body>>().await
        }
        "/pt/upload" => upload(&st, req).await,
        "/pt/download" => {
            let bytes: u64 = query(&req, "bytes")
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            let mut r = Response::new(boxed(StreamBody::new(
                pattern_stream(bytes).map(|b| Ok::<_, Infallible>(Frame::data(b))),
            )));
            if query(&req, "chunked").is_none() {
                r.headers_mut()
                    .insert("content-length", HeaderValue::from(bytes));
            }
            r
        }
        "/pt/broken" => {
            // The head and the 100 bytes are flushed (the body is pending once
            // in between), then the body fails and hyper drops the connection.
            let body = futures_util::stream::unfold(0, |step| async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from(vec![b'x'; 100]))), 1)),
                    1 => {
                        tokio::task::yield_now().await;
                        Some((
                            Err(std::io::Error::other("upstream breaks off on purpose")),
                            2,
                        ))
                    }
                    _ => None,
                }
            });
            let mut r = Response::new(boxed(StreamBody::new(body)));
            if query(&req, "framing") == Some("length") {
                r.headers_mut()
                    .insert("content-length", HeaderValue::from_static("1000"));
            }
            r
        }
        "/pt/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"hello"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut r = Response::new(boxed(StreamBody::new(futures_util::stream::iter(frames))));
            r.headers_mut()
                .insert("trailer", HeaderValue::from_static("x-checksum"));
            r
        }
        _ => {
            let mut r = Response::new(boxed(Full::new(Bytes::from_static(b"no such /pt/ route"))));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(resp)
}

fn sse(st: Arc<PassState>) -> Response<Body> {
    let rx = st.sse.subscribe();
    st.sse_open.fetch_add(1, Ordering::SeqCst);
    struct Open {
        rx: broadcast::Receiver<Option<Bytes>>,
        st: Arc<PassState>,
    }
    impl Drop for Open {
        fn drop(&mut self) {
            self.st.sse_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
    let events = futures_util::stream::unfold(Open { rx, st }, |mut open| async move {
        loop {
            match open.rx.recv().await {
                Ok(Some(b)) => return Some((Ok::<_, Infallible>(Frame::data(b)), open)),
                Ok(None) | Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
            }
        }
    });
    let mut r = Response::new(boxed(StreamBody::new(events)));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

async fn upload(st: &PassState, req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut check = PatternCheck::default();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    check.feed(d);
                    st.upload_bytes.fetch_add(d.len() as u64, Ordering::SeqCst);
                }
            }
            Err(_) => {
                st.upload_aborted.fetch_add(1, Ordering::SeqCst);
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return r;
            }
        }
    }
    let desc = serde_json::json!({"bytes": check.pos, "pattern": check.ok});
    Response::new(boxed(Full::new(Bytes::from(desc.to_string()))))
}

fn websocket(st: Arc<PassState>, mut req: Request<Incoming>) -> Response<Body> {
    let status = |s: StatusCode| {
        let mut r = Response::new(empty());
        *r.status_mut() = s;
        r
    };
    if query(&req, "refuse").is_some() {
        return status(StatusCode::FORBIDDEN);
    }
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return status(StatusCode::BAD_REQUEST);
    };
    let accept = derive_accept_key(key.as_bytes());
    let offers_chat = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "chat"));
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        st.ws_open.fetch_add(1, Ordering::SeqCst);
        let _ended = OnDrop(&st.ws_ended);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => match t.as_str().strip_prefix("close:") {
                    Some(code) => {
                        let code: u16 = code.parse().unwrap_or(1000);
                        Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: "server says bye".into(),
                        }))
                    }
                    None => Message::Text(t),
                },
                Message::Binary(b) => Message::Binary(b),
                Message::Close(frame) => {
                    st.ws_closes
                        .lock()
                        .unwrap()
                        .push(frame.map_or(1005, |f| u16::from(f.code)));
                    // tungstenite answers the close itself; keep reading to the end.
                    continue;
                }
                // Pings are answered by tungstenite; pongs need nothing.
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut r = status(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("accept key is a header value"),
    );
    if offers_chat {
        h.insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
    }
    r
}

/// Period of the byte pattern: prime, so it never lines up with chunk sizes.
const PERIOD: usize = 251;
/// Size of the chunks [`pattern_stream`] yields.
pub const CHUNK: usize = 64 * 1024;

/// `PERIOD + CHUNK` bytes where byte `i` is `i % PERIOD`: any run of the
/// pattern up to `CHUNK` long is a slice of it, so making and checking
/// gigabytes of it costs no allocation and one memcmp per chunk.
fn block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| {
        Bytes::from(
            (0..PERIOD + CHUNK)
                .map(|i| (i % PERIOD) as u8)
                .collect::<Vec<u8>>(),
        )
    })
}

/// The pattern bytes `[from, from + len)`, `len <= CHUNK`.
pub fn pattern_at(from: u64, len: usize) -> Bytes {
    let start = (from % PERIOD as u64) as usize;
    block().slice(start..start + len)
}

/// `total` bytes of the pattern in `CHUNK`-sized pieces, made as they are read.
pub fn pattern_stream(total: u64) -> impl Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(0u64, move |pos| async move {
        if pos >= total {
            return None;
        }
        let len = (total - pos).min(CHUNK as u64) as usize;
        Some((pattern_at(pos, len), pos + len as u64))
    })
}

/// Checks that bytes received in any chunking are the pattern from offset 0.
#[derive(Debug)]
pub struct PatternCheck {
    pub pos: u64,
    pub ok: bool,
}

impl Default for PatternCheck {
    fn default() -> Self {
        Self { pos: 0, ok: true }
    }
}

impl PatternCheck {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            if data[..n] != pattern_at(self.pos, n)[..] {
                self.ok = false;
            }
            self.pos += n as u64;
            data = &data[n..];
        }
    }
}
