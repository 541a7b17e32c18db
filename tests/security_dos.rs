//! Denial of service and unsafe defaults (issue 12, items 3 to 5),
//! adversarially, over each listener a client can reach: HTTP/1.1, h2c and
//! TLS (ALPN h2). Feeds a client starts count against it; a feed nobody
//! waited for ends at once; feed memory has a budget; operator endpoints are
//! off the public listener under the shipped config; refresh floods are
//! coalesced; an HTTP/2 connection without a complete request is closed
//! after `header_read_timeout`.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The listeners a client reaches pollcast through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    H1,
    H2c,
    Tls,
}

const WIRES: [Wire; 3] = [Wire::H1, Wire::H2c, Wire::Tls];

const A: &str = "127.0.0.1";
const B: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A pollcast under test and what its TLS clients need.
struct Target {
    pc: pollcast::Running,
    wire: Wire,
    /// DER of the self-signed certificate (TLS only).
    der: Vec<u8>,
    _dir: tempfile::TempDir,
}

async fn start(wire: Wire, mut cfg: pollcast::Config) -> Target {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut der = Vec::new();
    if wire == Wire::Tls {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
        der = ck.cert.der().to_vec();
        cfg.server.tls = Some(pollcast::config::TlsConfig { cert, key });
    }
    let pc = pollcast::start(cfg).await.expect("start");
    Target {
        pc,
        wire,
        der,
        _dir: dir,
    }
}

/// A TCP connection to `addr` from the local address `from`.
async fn tcp_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(from, 0)).expect("bind");
    sock.connect(addr).await.expect("connect")
}

async fn tls(
    tcp: TcpStream,
    der: &[u8],
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(der.to_vec().into()).expect("root");
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let s = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn));
    s
}

/// A response and the connection it came on; dropping it closes the connection.
struct Answer {
    resp: Option<http::Response<Incoming>>,
    conn: JoinHandle<()>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Answer {
    fn status(&self) -> StatusCode {
        self.resp.as_ref().expect("response").status()
    }

    fn header(&self, name: &str) -> Option<String> {
        let v = self.resp.as_ref()?.headers().get(name)?;
        Some(v.to_str().ok()?.to_owned())
    }

    /// The body as an event stream (the connection stays open with it).
    fn events(&mut self) -> Sse {
        Sse::from_response(self.resp.take().expect("response"))
    }
}

async fn handshake<I>(wire: Wire, io: I) -> (Sender, JoinHandle<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if wire == Wire::H1 {
        let (s, c) = http1::handshake(TokioIo::new(io)).await.expect("h1");
        (Sender::H1(s), tokio::spawn(async move { drop(c.await) }))
    } else {
        let (s, c) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2");
        (Sender::H2(s), tokio::spawn(async move { drop(c.await) }))
    }
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// `method path` with `headers` on a new connection from `from`, over the
/// target's wire.
async fn ask(
    t: &Target,
    from: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let tcp = tcp_from(ip(from), t.pc.addr).await;
    let (sender, conn) = match t.wire {
        Wire::H1 => handshake(Wire::H1, tcp).await,
        Wire::H2c => handshake(Wire::H2c, tcp).await,
        Wire::Tls => handshake(Wire::Tls, tls(tcp, &t.der, b"h2").await).await,
    };
    let scheme = if t.wire == Wire::Tls { "https" } else { "http" };
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{scheme}://localhost:{}{path}", t.pc.addr.port()));
    if t.wire == Wire::H1 {
        req = req.header("host", format!("localhost:{}", t.pc.addr.port()));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).expect("request");
    let resp = match sender {
        Sender::H1(mut s) => within("response", s.send_request(req)).await,
        Sender::H2(mut s) => within("response", s.send_request(req)).await,
    }
    .expect("response");
    Answer {
        resp: Some(resp),
        conn,
    }
}

/// An SSE request for `/sse/jobs` with its own credentials (so its own feed).
async fn open(t: &Target, from: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    ask(
        t,
        from,
        Method::GET,
        "/sse/jobs",
        &[("authorization", &auth)],
    )
    .await
}

fn retry_after(a: &Answer) -> u64 {
    a.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After on a {}", a.status()))
}

// ------------------------------------------------------- item 3: feeds

#[tokio::test]
async fn a_client_opening_and_closing_random_token_streams_gets_429_while_another_is_served() {
    for wire in WIRES {
        let up = TestUpstream::start().await;
        up.set("/api/jobs", json!([{"id": 1}]));
        let mut cfg = config(&up);
        // Served feeds linger: closing a stream does not give its feed back.
        cfg.feeds[0].linger = Duration::from_secs(3600);
        cfg.limits.max_feeds_per_client = 3;
        let t = start(wire, cfg).await;
        for i in 0..3 {
            let mut a = open(&t, A, &format!("random-{i}")).await;
            assert_eq!(a.status(), 200, "{wire:?} feed {i}");
            assert_eq!(a.events().next().await.event, "snapshot");
        }
        wait_until("the streams closed", || t.pc.registry.subscribers() == 0).await;
        assert_eq!(
            t.pc.registry.live_feeds(),
            3,
            "{wire:?}: served feeds linger"
        );

        let refused = open(&t, A, "random-3").await;
        assert_eq!(refused.status(), 429, "{wire:?}");
        assert_eq!(retry_after(&refused), 10);
        // The same client may still join a feed that exists.
        let mut joined = open(&t, A, "random-0").await;
        assert_eq!(joined.status(), 200, "{wire:?}: joining is not starting");
        assert_eq!(joined.events().next().await.event, "snapshot");
        // Another client is not affected.
        let mut b = open(&t, B, "someone-else").await;
        assert_eq!(b.status(), 200, "{wire:?}");
        assert_eq!(b.events().next().await.event, "snapshot");
        assert_eq!(
            metric(
                &t.pc,
                "pollcast_limit_refusals_total{limit=\"max_feeds_per_client\"}"
            )
            .await,
            1.0
        );
        t.pc.stop().await;
    }
}

#[tokio::test]
async fn a_feed_whose_only_subscriber_left_before_its_first_good_poll_ends_at_once() {
    for wire in WIRES {
        let up = TestUpstream::start().await;
        // Every poll fails (as for a random token the API refuses).
        up.mode(Mode::Status(401));
        let mut cfg = config(&up);
        cfg.feeds[0].linger = Duration::from_secs(3600);
        cfg.feeds[0].backoff_max = Duration::from_secs(3600);
        cfg.limits.max_feeds_per_client = 1;
        let t = start(wire, cfg).await;
        let a = open(&t, A, "random").await;
        assert_eq!(a.status(), 200, "{wire:?}");
        up.wait_hits("/api/jobs", 1).await;
        assert_eq!(t.pc.registry.live_feeds(), 1);
        drop(a);
        // Not after the hour of linger, nor at the next (backed off) poll.
        wait_until("the feed ended", || t.pc.registry.live_feeds() == 0).await;
        wait_until("its client's count returned", || {
            t.pc.shared.limits().feeds_started_by(ip(A)) == 0
        })
        .await;
        let again = open(&t, A, "random-2").await;
        assert_eq!(again.status(), 200, "{wire:?}: the client's share is back");
        drop(again);
        wait_until("the second feed ended", || t.pc.registry.live_feeds() == 0).await;
        t.pc.stop().await;
    }
}

/// A list of `n` items of about 60 bytes each.
fn big(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"id": i, "name": "x".repeat(40)}))
            .collect(),
    )
}

#[tokio::test]
async fn a_hundred_random_token_feeds_on_a_large_list_stay_within_the_memory_budget() {
    const CAP: u64 = 1024 * 1024;
    for wire in WIRES {
        let up = TestUpstream::start().await;
        // ~120 KB: each feed retains about 370 KB of the 1 MiB budget.
        up.set("/api/jobs", big(2000));
        let mut cfg = config(&up);
        cfg.limits.max_feeds_per_client = 0;
        cfg.limits.max_feed_memory = CAP;
        let t = start(wire, cfg).await;
        let budget = t.pc.shared.limits().budget().clone();
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..100 {
            let mut a = open(&t, A, &format!("random-{i}")).await;
            match a.status().as_u16() {
                200 => {
                    let mut s = a.events();
                    assert_eq!(s.next().await.event, "snapshot", "{wire:?} feed {i}");
                    held.push((a, s));
                }
                503 => {
                    assert!(retry_after(&a) >= 1);
                    refused += 1;
                }
                other => panic!("{wire:?} feed {i}: {other}"),
            }
            assert!(budget.used() <= CAP, "{wire:?}: {} > {CAP}", budget.used());
        }
        assert_eq!(held.len(), 2, "{wire:?}: what fits 1 MiB");
        let charged = metric(&t.pc, "pollcast_feed_memory_bytes").await;
        assert!(charged > 0.0 && charged <= CAP as f64, "{charged}");
        assert_eq!(refused, 98);
        assert_eq!(
            metric(
                &t.pc,
                "pollcast_limit_refusals_total{limit=\"max_feed_memory\"}"
            )
            .await,
            98.0
        );

        // The list grows past what the budget allows: the feeds report it
        // as a failure and keep their list; no item looks removed.
        up.set("/api/jobs", big(4000));
        for (_, s) in &mut held {
            let e = s.next().await;
            assert_eq!(e.event, "stale", "{wire:?}: {e:?}");
            assert!(e.data.contains("max_feed_memory"), "{}", e.data);
        }
        assert!(budget.used() <= CAP);
        // Back within the budget: the feeds recover and follow the list.
        up.set("/api/jobs", big(2001));
        for (_, s) in &mut held {
            assert_eq!(s.next().await.event, "recovered", "{wire:?}");
            let e = s.next().await;
            assert_eq!(e.event, "added", "{wire:?}");
            assert_eq!(data(&e)["id"], 2000);
        }
        drop(held);
        t.pc.stop().await;
    }
}

// ---------------------------------------------- item 4: operator endpoints

#[tokio::test]
async fn under_the_shipped_config_operator_endpoints_are_not_on_the_public_listener() {
    let shipped = pollcast::Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config.toml"
    )))
    .expect("config.toml");
    assert_eq!(
        shipped.admin.listen,
        Some("127.0.0.1:9090".parse().expect("addr")),
        "loopback by default"
    );
    for wire in WIRES {
        let up = TestUpstream::start().await;
        up.set("/api/jobs", json!([{"id": 1}]));
        // The shipped file on ephemeral ports (its admin listener included).
        let t = start(wire, example("config.toml", &up)).await;
        let admin = t.pc.admin_addr.expect("an admin listener by default");
        assert!(admin.ip().is_loopback());
        for (method, path) in [
            (Method::GET, "/_pollcast/metrics"),
            (Method::GET, "/_pollcast/status"),
            (Method::GET, "/_pollcast/status/events"),
            (Method::GET, "/_pollcast/stats"),
            (Method::POST, "/_pollcast/refresh/jobs"),
        ] {
            let a = ask(&t, A, method.clone(), path, &[]).await;
            assert_eq!(
                a.status(),
                404,
                "{wire:?} {method} {path} on the public listener"
            );
            let r = reqwest::Client::new()
                .request(method.clone(), format!("http://{admin}{path}"))
                .send();
            let s = within("admin", r).await.expect("admin").status();
            assert!(s.is_success(), "{method} {path} on the admin listener: {s}");
        }
        // Probes stay where the kubelet may be pointed.
        let a = ask(&t, A, Method::GET, "/_pollcast/healthz", &[]).await;
        assert_eq!(a.status(), 200, "{wire:?}");
        let a = ask(&t, A, Method::GET, "/_pollcast/readyz", &[]).await;
        assert_ne!(a.status(), 404, "{wire:?}");
        assert_eq!(up.hits("/_pollcast"), 0, "never passed through");
        t.pc.stop().await;
    }
}

#[tokio::test]
async fn ten_thousand_refresh_requests_make_a_bounded_number_of_upstream_polls() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    cfg.feeds[0].interval = Duration::from_secs(1);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&format!("http://{}/sse/jobs", pc.addr)).await;
    assert_eq!(s.next().await.event, "snapshot");
    let before = up.hits("/api/jobs");
    let url = admin_url(&pc, "/_pollcast/refresh/jobs");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let workers: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..500 {
                    let r = http.post(&url).send().await.expect("refresh");
                    assert_eq!(r.status(), 202);
                }
            })
        })
        .collect();
    for w in workers {
        within("the refresh flood", w).await.expect("worker");
    }
    let took = started.elapsed();
    let polls = up.hits("/api/jobs") - before;
    // At most one refresh poll per second (min(interval, 1s)) and one
    // interval poll per second, plus the ones in flight at either end.
    let seconds = took.as_secs_f64().ceil() as usize;
    assert!(
        polls <= 2 * seconds + 3,
        "{polls} polls for 10,000 refreshes in {took:?}"
    );
    // Coalesced, not dropped: a change right after the flood still arrives
    // through the refresh, well before a poll loop of an hour would.
    let cfg = {
        let mut c = config(&up);
        c.feeds[0].interval = Duration::from_secs(3600);
        c
    };
    pc.stop().await;
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&format!("http://{}/sse/jobs", pc.addr)).await;
    assert_eq!(s.next().await.event, "snapshot");
    let url = admin_url(&pc, "/_pollcast/refresh/jobs");
    for i in 2..5 {
        up.set(
            "/api/jobs",
            Value::Array((1..=i).map(|id| json!({"id": id})).collect()),
        );
        let r = http.post(&url).send().await.expect("refresh");
        assert_eq!(r.status(), 202);
        let e = s.next().await;
        assert_eq!(
            (e.event.as_str(), data(&e)["id"].clone()),
            ("added", json!(i))
        );
    }
    pc.stop().await;
}

// ------------------------------------------- item 5: HTTP/2 head deadline

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame: 24-bit length, type, flags, 31-bit stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The h2 preface, an empty SETTINGS, and a HEADERS frame for `GET /`
/// (HPACK static entries) with END_STREAM but without END_HEADERS: the
/// server waits for a CONTINUATION that never comes.
fn partial_h2_request() -> Vec<u8> {
    let mut b = H2_PREFACE.to_vec();
    b.extend(frame(0x4, 0, 0, &[]));
    b.extend(frame(0x1, 0x1, 1, &[0x82, 0x86, 0x84]));
    b
}

/// Write `bytes`, then read (and discard) until the server closes; the time
/// that took, or `None` after `limit`.
async fn closed_after<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    bytes: &[u8],
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    io.write_all(bytes).await.expect("write");
    io.flush().await.expect("flush");
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test]
async fn an_unfinished_request_head_is_cut_at_the_header_timeout_on_every_listener() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    for wire in WIRES {
        let up = TestUpstream::start().await;
        let mut cfg = config(&up);
        cfg.server.header_read_timeout = TIMEOUT;
        let t = start(wire, cfg).await;
        let tcp = TcpStream::connect(t.pc.addr).await.expect("connect");
        let limit = Duration::from_secs(5);
        let took = match wire {
            Wire::H1 => closed_after(tcp, b"GET / HTTP/1.1\r\nHost: x\r\n", limit).await,
            Wire::H2c => closed_after(tcp, &partial_h2_request(), limit).await,
            Wire::Tls => {
                let s = tls(tcp, &t.der, b"h2").await;
                closed_after(s, &partial_h2_request(), limit).await
            }
        };
        let took = took.unwrap_or_else(|| panic!("{wire:?}: still open after {limit:?}"));
        assert!(
            took >= TIMEOUT - Duration::from_millis(50),
            "{wire:?}: {took:?}"
        );
        t.pc.stop().await;
    }
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_and_a_busy_one_is_not() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    for wire in [Wire::H2c, Wire::Tls] {
        let up = TestUpstream::start().await;
        up.set("/api/jobs", json!([{"id": 1}]));
        let mut cfg = config(&up);
        cfg.server.header_read_timeout = TIMEOUT;
        let t = start(wire, cfg).await;
        let tcp = TcpStream::connect(t.pc.addr).await.expect("connect");
        let (sender, conn) = match wire {
            Wire::Tls => handshake(wire, tls(tcp, &t.der, b"h2").await).await,
            _ => handshake(wire, tcp).await,
        };
        let Sender::H2(mut sender) = sender else {
            unreachable!()
        };
        let scheme = if wire == Wire::Tls { "https" } else { "http" };
        let base = format!("{scheme}://localhost:{}", t.pc.addr.port());
        // An open SSE stream keeps the connection: it outlives the timeout
        // many times over (the upstream changes after a while).
        let req = Request::get(format!("{base}/sse/jobs"))
            .body(Empty::new())
            .expect("req");
        let resp = within("sse", sender.send_request(req)).await.expect("sse");
        let mut s = Sse::from_response(resp);
        assert_eq!(s.next().await.event, "snapshot");
        tokio::time::sleep(TIMEOUT * 4).await;
        up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
        assert_eq!(s.next().await.event, "added", "{wire:?}: still served");
        drop(s);
        // Once nothing is in progress, the connection is closed.
        let started = Instant::now();
        within("the idle connection closed", conn).await.ok();
        assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(50));
        t.pc.stop().await;
    }
}

#[tokio::test]
async fn refresh_served_on_the_main_listener_is_coalesced_there_too() {
    for wire in WIRES {
        let up = TestUpstream::start().await;
        up.set("/api/jobs", json!([{"id": 1}]));
        let mut cfg = config(&up);
        // The operator's explicit choice: every endpoint on one listener.
        cfg.admin.listen = None;
        cfg.feeds[0].interval = Duration::from_secs(1);
        let t = start(wire, cfg).await;
        assert_eq!(t.pc.admin_addr, None);
        let mut sub = ask(&t, A, Method::GET, "/sse/jobs", &[]).await;
        let mut s = sub.events();
        assert_eq!(s.next().await.event, "snapshot");
        let before = up.hits("/api/jobs");
        let started = Instant::now();
        for _ in 0..200 {
            let r = ask(&t, A, Method::POST, "/_pollcast/refresh/jobs", &[]).await;
            assert_eq!(r.status(), 202, "{wire:?}");
        }
        let took = started.elapsed();
        let polls = up.hits("/api/jobs") - before;
        let seconds = took.as_secs_f64().ceil() as usize;
        assert!(
            polls <= 2 * seconds + 3,
            "{wire:?}: {polls} polls for 200 refreshes in {took:?}"
        );
        drop((s, sub));
        t.pc.stop().await;
    }
}
