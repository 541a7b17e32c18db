//! The synthetic side of the benchmark: an upstream list API whose items change
//! at a controlled rate, a GRIP origin for Pushpin, and a publisher for Nchan
//! and Pushpin.
//!
//! Every change carries two stamps (microseconds since the Unix epoch):
//! `changed_at`, when the item changed, and `served_at`, when a poll first
//! returned it (for pollcast: "the server has the event") or when it was
//! published (Nchan, Pushpin). Load generators subtract them from receive times.
//!
//! ```text
//! synth upstream --listen 127.0.0.1:9001 --items 20 --item-size 1024 --change-every 1s
//! synth grip     --listen 127.0.0.1:9002
//! synth publish  --kind nchan|pushpin --url URL --every 1s --size 1024 --count 20
//! ```
//! The upstream answers `GET /stats` with its request, byte and 304 counters,
//! honours `If-None-Match`, and serves the list at every other path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pollcast_bench::{arg, now_us};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn duration(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("duration"))
    } else if let Some(secs) = s.strip_suffix('s') {
        Duration::from_secs_f64(secs.parse().expect("duration"))
    } else {
        panic!("duration like 500ms or 2s: {s}")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("upstream") => rt.block_on(upstream(&args)),
        Some("grip") => rt.block_on(grip(&args)),
        Some("publish") => rt.block_on(publish(&args)),
        _ => {
            eprintln!("usage: synth upstream|grip|publish [options]");
            std::process::exit(2)
        }
    }
}

struct Item {
    version: u64,
    changed_at: u64,
    served_at: Option<u64>,
}

struct State {
    items: Vec<Item>,
    pad: String,
    body: Bytes,
    etag: String,
    generation: u64,
    dirty: bool,
    requests: u64,
    bytes: u64,
    not_modified: u64,
    log_polls: bool,
}

impl State {
    fn render(&mut self) {
        let now = now_us();
        let mut s = String::with_capacity(self.items.len() * (self.pad.len() + 100) + 16);
        s.push('[');
        for (i, it) in self.items.iter_mut().enumerate() {
            let served = *it.served_at.get_or_insert(now);
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                r#"{{"id":{i},"version":{},"changed_at":{},"served_at":{served},"pad":"{}"}}"#,
                it.version, it.changed_at, self.pad
            ));
        }
        s.push(']');
        self.body = Bytes::from(s);
        self.generation += 1;
        self.etag = format!("\"g{}\"", self.generation);
        self.dirty = false;
    }
}

async fn upstream(args: &[String]) {
    let listen: SocketAddr = arg(args, "--listen", "127.0.0.1:9001")
        .parse()
        .expect("addr");
    let n: usize = arg(args, "--items", "20").parse().expect("items");
    let size: usize = arg(args, "--item-size", "1024").parse().expect("size");
    let every = duration(&arg(args, "--change-every", "1s"));
    let t0 = now_us();
    let mut st = State {
        items: (0..n)
            .map(|_| Item {
                version: 0,
                changed_at: t0,
                served_at: Some(t0),
            })
            .collect(),
        pad: "x".repeat(size.saturating_sub(90)),
        body: Bytes::new(),
        etag: String::new(),
        generation: 0,
        dirty: true,
        requests: 0,
        bytes: 0,
        not_modified: 0,
        log_polls: std::env::var_os("SYNTH_LOG_POLLS").is_some(),
    };
    st.render();
    let state = Arc::new(Mutex::new(st));
    let ticker = state.clone();
    tokio::spawn(async move {
        // Changes at jittered times (uniform in 0.5..1.5 x `every`), so they
        // never fall into step with a poller's interval.
        let mut rng = now_us() | 1;
        let mut k = 0usize;
        loop {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let f = 0.5 + (rng % 1000) as f64 / 1000.0;
            tokio::time::sleep(every.mul_f64(f)).await;
            let mut st = ticker.lock().unwrap_or_else(|e| e.into_inner());
            let len = st.items.len();
            let it = &mut st.items[k % len];
            it.version += 1;
            it.changed_at = now_us();
            it.served_at = None;
            st.dirty = true;
            k += 1;
        }
    });
    let listener = TcpListener::bind(listen).await.expect("bind");
    println!("listening {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(state: &Mutex<State>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    if req.uri().path() == "/stats" {
        let s = format!(
            r#"{{"requests":{},"bytes":{},"not_modified":{}}}"#,
            st.requests, st.bytes, st.not_modified
        );
        return Response::new(Full::new(Bytes::from(s)));
    }
    // Pass-through targets: a small answer and a 1 MiB one.
    match req.uri().path() {
        "/small" => return Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}\n"))),
        "/big" => return Response::new(Full::new(Bytes::from_static(&[b'x'; 1 << 20]))),
        _ => {}
    }
    // A write through pollcast (write-through scenario): the item named by
    // the last path segment changes now, as an API would apply it.
    if req.method() == hyper::Method::POST {
        let len = st.items.len().max(1);
        let k = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
            % len;
        if let Some(it) = st.items.get_mut(k) {
            it.version += 1;
            it.changed_at = now_us();
            it.served_at = None;
            st.dirty = true;
        }
        return Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}\n")));
    }
    st.requests += 1;
    if st.log_polls {
        // Diagnosis (SYNTH_LOG_POLLS=1): when each list poll arrived.
        eprintln!("poll {} {}", now_us(), req.uri());
    }
    if st.dirty {
        st.render();
    }
    let etag = st.etag.clone();
    let fresh = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if fresh {
        st.not_modified += 1;
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = hyper::StatusCode::NOT_MODIFIED;
        r.headers_mut().insert("etag", etag.parse().expect("etag"));
        return r;
    }
    st.bytes += st.body.len() as u64;
    let mut r = Response::new(Full::new(st.body.clone()));
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().expect("ct"));
    h.insert("etag", etag.parse().expect("etag"));
    r
}

/// A GRIP origin: every request is held open as an event stream on channel `bench`.
async fn grip(args: &[String]) {
    let listen: SocketAddr = arg(args, "--listen", "127.0.0.1:9002")
        .parse()
        .expect("addr");
    let listener = TcpListener::bind(listen).await.expect("bind");
    println!("listening {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<Incoming>| async {
                let mut r = Response::new(Full::new(Bytes::from_static(b":ok\n\n")));
                let h = r.headers_mut();
                h.insert("content-type", "text/event-stream".parse().expect("ct"));
                h.insert("grip-hold", "stream".parse().expect("gh"));
                h.insert("grip-channel", "bench".parse().expect("gc"));
                Ok::<_, Infallible>(r)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Publish `count` events of about `size` bytes to Nchan or Pushpin, one per
/// `every`; or (`--kind write`) POST `count` writes to an API through pollcast.
async fn publish(args: &[String]) {
    let kind = arg(args, "--kind", "nchan");
    let url = arg(args, "--url", "http://127.0.0.1:8081/pub");
    let every = duration(&arg(args, "--every", "1s"));
    let size: usize = arg(args, "--size", "1024").parse().expect("size");
    let count: usize = arg(args, "--count", "20").parse().expect("count");
    let rest = url.strip_prefix("http://").expect("http:// url");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let pad = "x".repeat(size.saturating_sub(80));
    let mut tick = tokio::time::interval(every);
    for seq in 0..count {
        tick.tick().await;
        let t = now_us();
        let data =
            format!(r#"{{"item":{{"id":{seq},"changed_at":{t},"served_at":{t},"pad":"{pad}"}}}}"#);
        let body = if kind == "write" {
            // A write to the upstream through pollcast: the upstream stamps it.
            "{}".to_owned()
        } else if kind == "pushpin" {
            let content = format!("event: updated\nid: {seq}\ndata: {data}\n\n")
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!(
                r#"{{"items":[{{"channel":"bench","formats":{{"http-stream":{{"content":"{content}"}}}}}}]}}"#
            )
        } else {
            data
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        match TcpStream::connect(authority).await {
            Ok(mut s) => {
                let _ = s.write_all(req.as_bytes()).await;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                if !sink.starts_with(b"HTTP/1.1 2") {
                    eprintln!(
                        "publish {seq}: {}",
                        String::from_utf8_lossy(&sink[..sink.len().min(200)])
                    );
                }
            }
            Err(e) => eprintln!("publish {seq}: {e}"),
        }
    }
}
