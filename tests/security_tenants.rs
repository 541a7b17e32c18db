//! Cross-tenant attacks on feeds with path parameters, tried on every
//! listener a client can reach: HTTP/1.1, h2c and TLS (HTTP/2 and HTTP/1.1
//! by ALPN). Issue 12, items 1 (the admission check goes to the filled-in
//! path), 2 (no parameter value leaves its segment; write-through compares
//! normalised paths), 6 (shared, bounded check answers) and 7 (HTTP/2 cookie
//! fields joined).
//!
//! Requests are sent with hyper's own clients: `reqwest` (the `url` crate)
//! would resolve `%2e%2e` before sending, which is exactly what must reach
//! pollcast untouched.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pollcast::config::{AuthMode, FeedConfig, Secret, TlsConfig};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const SERVICE: &str = "Bearer service";
const ALICE: &str = "Bearer alice";
const BOB: &str = "Bearer bob";

/// How a test client reaches pollcast.
#[derive(Clone, Copy, Debug)]
enum Via {
    Http1,
    H2c,
    TlsH2,
    TlsHttp1,
}

const ALL: [Via; 4] = [Via::Http1, Via::H2c, Via::TlsH2, Via::TlsHttp1];

/// A pollcast with the tenant feeds, plain or with TLS, and a way to reach it.
struct Target {
    pc: pollcast::Running,
    tls: Option<Vec<u8>>,
    _dir: tempfile::TempDir,
}

fn feed(name: &str, sse: &str, poll: &str) -> FeedConfig {
    let mut f = FeedConfig::new(name, poll);
    f.sse = Some(sse.into());
    f.interval = Duration::from_secs(3600);
    f.linger = Duration::from_millis(50);
    f.backoff_max = Duration::from_secs(3600);
    f
}

/// Feeds polled with pollcast's own credentials, one per path shape.
fn tenant_config(up: &TestUpstream) -> pollcast::Config {
    let mut cfg = config(up);
    // Default check path: the poll path, filled in.
    let mut jobs = feed(
        "jobs",
        "/sse/projects/{project}/jobs",
        "/api/projects/{project}/jobs",
    );
    jobs.auth = AuthMode::Check;
    jobs.credentials = Secret::new(SERVICE);
    jobs.query = Some(vec![]);
    // Explicit check path with the same placeholder.
    let mut board = feed(
        "board",
        "/sse/projects/{project}/board",
        "/api/projects/{project}/board",
    );
    board.auth = AuthMode::Check;
    board.check = Some("/api/projects/{project}/access".into());
    board.credentials = Secret::new(SERVICE);
    board.query = Some(vec![]);
    // A public feed with service credentials: traversal target.
    let mut posts = feed(
        "posts",
        "/sse/boards/{board}/posts",
        "/api/boards/{board}/posts",
    );
    posts.auth = AuthMode::None;
    posts.credentials = Secret::new(SERVICE);
    posts.query = Some(vec![]);
    // Forward mode: the subscriber's cookie is the feed's identity.
    let own = feed("own", "/sse/own", "/api/own");
    cfg.feeds = vec![jobs, board, posts, own];
    cfg
}

fn tenant_upstream(up: &TestUpstream) {
    up.set("/api/projects/1/jobs", json!([{"id": "p1-secret"}]));
    up.set("/api/projects/2/jobs", json!([{"id": "p2-secret"}]));
    up.guard("/api/projects/1/jobs", &[SERVICE, ALICE]);
    up.guard("/api/projects/2/jobs", &[SERVICE, BOB]);
    // An upstream that answers anything for an unknown path: the unfilled
    // pattern, where today's main sent the check, admits everyone.
    up.set("/api/projects/{project}/jobs", json!([]));
    up.set("/api/projects/{project}/access", json!([]));
    up.set("/api/projects/1/board", json!([{"id": "b1"}]));
    up.set("/api/projects/2/board", json!([{"id": "b2"}]));
    up.guard("/api/projects/1/access", &[ALICE]);
    up.guard("/api/projects/2/access", &[BOB]);
    up.set("/api/boards/7/posts", json!([{"id": "post-7"}]));
    up.set("/api/posts", json!([{"id": "every-post"}]));
    up.set("/api/own", json!([{"id": 1}]));
}

impl Target {
    async fn start(up: &TestUpstream, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = tenant_config(up);
        let mut der = None;
        if tls {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, ck.cert.pem()).expect("write cert");
            std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
            cfg.server.tls = Some(TlsConfig { cert, key });
            der = Some(ck.cert.der().to_vec());
        }
        let pc = pollcast::start(cfg).await.expect("start");
        Self {
            pc,
            tls: der,
            _dir: dir,
        }
    }

    /// Send one request on a new connection, `via` the given protocol.
    async fn send(&self, via: Via, req: Request<Empty<Bytes>>) -> Response<Incoming> {
        let tcp = TcpStream::connect(self.pc.addr).await.expect("connect");
        match via {
            Via::Http1 => h1(tcp, req).await,
            Via::H2c => h2(tcp, req).await,
            Via::TlsH2 => h2(self.tls(tcp, b"h2").await, req).await,
            Via::TlsHttp1 => h1(self.tls(tcp, b"http/1.1").await, req).await,
        }
    }

    async fn tls(&self, tcp: TcpStream, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let der = self.tls.clone().expect("a TLS target");
        let mut roots = RootCertStore::empty();
        roots.add(der.into()).expect("root");
        let mut cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake")
    }

    fn addr(&self) -> SocketAddr {
        self.pc.addr
    }
}

async fn h1<I>(io: I, req: Request<Empty<Bytes>>) -> Response<Incoming>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    within("HTTP/1.1 response", sender.send_request(req))
        .await
        .expect("response")
}

async fn h2<I>(io: I, req: Request<Empty<Bytes>>) -> Response<Incoming>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    within("HTTP/2 response", sender.send_request(req))
        .await
        .expect("response")
}

/// A GET of `path` (sent as is, never normalised) with these headers; each
/// pair is appended, so a name given twice is sent as two fields.
fn get(t: &Target, via: Via, path: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let scheme = if t.tls.is_some() { "https" } else { "http" };
    let mut b = match via {
        // HTTP/2 carries the authority in the request target.
        Via::H2c | Via::TlsH2 => {
            Request::get(format!("{scheme}://localhost:{}{path}", t.addr().port()))
        }
        Via::Http1 | Via::TlsHttp1 => {
            Request::get(path).header("host", format!("localhost:{}", t.addr().port()))
        }
    };
    b = b.header("accept", "text/event-stream");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Empty::new()).expect("request")
}

async fn status(t: &Target, via: Via, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    t.send(via, get(t, via, path, headers)).await.status()
}

async fn stream(t: &Target, via: Via, path: &str, headers: &[(&str, &str)]) -> Sse {
    let resp = t.send(via, get(t, via, path, headers)).await;
    assert_eq!(resp.status(), 200, "{via:?} {path}");
    Sse::from_response(resp)
}

/// Both listeners (plain: HTTP/1.1 and h2c; TLS: h2 and HTTP/1.1 by ALPN).
async fn targets(up: &TestUpstream) -> (Target, Target) {
    (
        Target::start(up, false).await,
        Target::start(up, true).await,
    )
}

fn target<'a>(via: Via, plain: &'a Target, tls: &'a Target) -> &'a Target {
    match via {
        Via::Http1 | Via::H2c => plain,
        Via::TlsH2 | Via::TlsHttp1 => tls,
    }
}

/// Item 1: a user is admitted to a project's feed only when the upstream
/// admits them to that project, for the default and an explicit check path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_goes_to_the_filled_in_path_on_every_listener() {
    let up = TestUpstream::start().await;
    tenant_upstream(&up);
    let (plain, tls) = targets(&up).await;
    for via in ALL {
        let t = target(via, &plain, &tls);
        let auth = |who: &'static str| [("authorization", who)];
        let mut a = stream(t, via, "/sse/projects/1/jobs", &auth(ALICE)).await;
        assert_eq!(
            data(&a.next().await),
            json!({"items": [{"id": "p1-secret"}]}),
            "{via:?}"
        );
        drop(a);
        // Alice is not a member of project 2: refused with the upstream's 401.
        assert_eq!(
            status(t, via, "/sse/projects/2/jobs", &auth(ALICE)).await,
            401,
            "{via:?}"
        );
        assert_eq!(
            status(t, via, "/sse/projects/2/jobs", &auth(BOB)).await,
            200,
            "{via:?}"
        );
        // Explicit `check` path with the same placeholder.
        assert_eq!(
            status(t, via, "/sse/projects/1/board", &auth(ALICE)).await,
            200,
            "{via:?}"
        );
        assert_eq!(
            status(t, via, "/sse/projects/2/board", &auth(ALICE)).await,
            401,
            "{via:?}"
        );
        assert_eq!(
            status(t, via, "/sse/projects/1/board", &auth(BOB)).await,
            401,
            "{via:?}"
        );
    }
    // The checks went to filled-in paths with the subscriber's credentials;
    // the unfilled pattern was never asked.
    assert!(!up.seen_with("/api/projects/2/jobs", ALICE).is_empty());
    assert!(!up.seen_with("/api/projects/1/access", ALICE).is_empty());
    assert!(!up.seen_with("/api/projects/2/access", ALICE).is_empty());
    assert_eq!(up.hits("/api/projects/{project}"), 0);
    assert_eq!(up.hits("/api/projects/%7Bproject%7D"), 0);
    plain.pc.stop().await;
    tls.pc.stop().await;
}

/// Item 2: values that decode to a dot-segment or hold a separator or a
/// control character are refused before any poll, on every listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_shaped_path_parameters_are_refused_on_every_listener() {
    let up = TestUpstream::start().await;
    tenant_upstream(&up);
    let (plain, tls) = targets(&up).await;
    let bad = [
        "%2e%2e",
        "%2E%2e",
        ".%2E",
        "%2e.",
        "..",
        ".",
        "%252e%252e",
        "..;x",
        "a%2fb",
        "a%2Fb",
        "%2f",
        "a%5cb",
        "%5C",
        "a%00b",
        "%0a",
        "%252f",
    ];
    for via in ALL {
        let t = target(via, &plain, &tls);
        for v in bad {
            let path = format!("/sse/boards/{v}/posts");
            let resp = t.send(via, get(t, via, &path, &[])).await;
            assert_eq!(resp.status(), 400, "{via:?} {path}");
            let body = within("body", resp.into_body().collect())
                .await
                .expect("body")
                .to_bytes();
            assert!(
                String::from_utf8_lossy(&body).contains("path parameter"),
                "{via:?} {path}"
            );
        }
        // A plain value still works.
        let mut s = stream(t, via, "/sse/boards/7/posts", &[]).await;
        assert_eq!(data(&s.next().await), json!({"items": [{"id": "post-7"}]}));
    }
    // Nothing but the legitimate board was ever polled.
    assert_eq!(up.hits("/api/posts"), 0);
    for s in up.seen("/api/boards") {
        assert_eq!(s.path_and_query, "/api/boards/7/posts", "{s:?}");
    }
    plain.pc.stop().await;
    tls.pc.stop().await;
}

/// Item 2: a write through pollcast refreshes the feeds whose path the write
/// touches once resolved per RFC 3986, not those its raw text starts with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_compares_normalised_paths() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.set("/api/track", json!([{"id": 1}]));
    up.set("/api/jobs/%2e%2e/track", json!({"ok": true}));
    up.set("/api/jobs/7", json!({"ok": true}));
    let mut cfg = config(&up);
    cfg.feeds = vec![
        feed("jobs", "/sse/jobs", "/api/jobs"),
        feed("track", "/sse/track", "/api/track"),
    ];
    let pc = pollcast::start(cfg).await.expect("start");
    let base = format!("http://{}", pc.addr);
    let mut jobs = Sse::connect(&format!("{base}/sse/jobs")).await;
    let mut track = Sse::connect(&format!("{base}/sse/track")).await;
    assert_eq!(jobs.next().await.event, "snapshot");
    assert_eq!(track.next().await.event, "snapshot");
    assert_eq!((up.hits("/api/jobs"), up.hits("/api/track")), (1, 1));

    let post = |path: &'static str| {
        let addr = pc.addr;
        async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .expect("request");
            h1(tcp, req).await.status()
        }
    };
    // `/api/jobs/%2e%2e/track` is `/api/track` to an upstream that resolves
    // dot-segments: the track feed polls, the jobs feed does not.
    assert_eq!(post("/api/jobs/%2e%2e/track").await, 200);
    up.wait_hits("/api/track", 2).await;
    up.set("/api/track", json!([{"id": 1}, {"id": 2}]));
    // A write under the jobs path refreshes it (and only it).
    assert_eq!(post("/api/jobs/7").await, 200);
    let jobs_polls = || {
        up.seen("/api/jobs")
            .into_iter()
            .filter(|s| s.method == "GET" && s.path_and_query == "/api/jobs")
            .count()
    };
    wait_until("the jobs feed refreshed", || jobs_polls() >= 2).await;
    assert_eq!(jobs_polls(), 2, "one poll at start, one for /api/jobs/7");
    // The registry agrees, path by path.
    assert_eq!(
        pc.registry
            .refresher()
            .refresh_path("/api/jobs/%2E%2E/track"),
        1
    );
    assert_eq!(pc.registry.refresher().refresh_path("/api/jobs/..%2F"), 1);
    assert_eq!(pc.registry.refresher().refresh_path("/api/jobs/%2e%2e"), 0);
    assert_eq!(pc.registry.refresher().refresh_path("/api/%6Aobs/%2e/7"), 1);
    drop((jobs, track));
    pc.stop().await;
}

/// Item 7: an HTTP/2 client's several `Cookie` fields are one cookie for
/// the feed's identity, its polls and the admission check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_fields_are_joined_for_keying_polling_and_checking() {
    let up = TestUpstream::start().await;
    tenant_upstream(&up);
    up.set("/api/projects/3/jobs", json!([{"id": "p3"}]));
    let (plain, tls) = targets(&up).await;
    for via in [Via::H2c, Via::TlsH2] {
        let t = target(via, &plain, &tls);
        let split = [("cookie", "theme=dark"), ("cookie", "sid=42")];
        let mut a = stream(t, via, "/sse/own", &split).await;
        assert_eq!(a.next().await.event, "snapshot");
        // The same cookies in one field: the same feed.
        let mut b = stream(t, via, "/sse/own", &[("cookie", "theme=dark; sid=42")]).await;
        assert_eq!(b.next().await.event, "snapshot");
        assert_eq!(t.pc.registry.def_usage()[3].0, 1, "{via:?}: one feed");
        // Only the first field: another identity.
        let mut c = stream(t, via, "/sse/own", &[("cookie", "theme=dark")]).await;
        assert_eq!(c.next().await.event, "snapshot");
        assert_eq!(t.pc.registry.def_usage()[3].0, 2, "{via:?}: two feeds");
        drop((a, b, c));
        // The admission check hears both cookies, in one field.
        let mut s = stream(
            t,
            via,
            "/sse/projects/3/jobs",
            &[("cookie", "theme=dark"), ("cookie", "sid=43")],
        )
        .await;
        assert_eq!(s.next().await.event, "snapshot");
    }
    let polls = up.seen("/api/own");
    assert!(!polls.is_empty());
    for p in &polls {
        let cookies: Vec<_> = p.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies.len(), 1, "{p:?}");
        assert!(
            cookies[0] == "theme=dark; sid=42" || cookies[0] == "theme=dark",
            "{p:?}"
        );
    }
    let checks = up.seen("/api/projects/3/jobs");
    assert!(checks.iter().any(|c| c
        .headers
        .get("cookie")
        .is_some_and(|v| v == "theme=dark; sid=43")));
    for c in &checks {
        assert!(c.headers.get_all("cookie").iter().count() <= 1, "{c:?}");
    }
    plain.pc.stop().await;
    tls.pc.stop().await;
}

// ------------------------------------------------------- item 6: shared checks

fn shared_check_config(up: &TestUpstream, recheck: Duration) -> pollcast::Config {
    let mut cfg = config(up);
    let f = &mut cfg.feeds[0];
    f.poll = "/api/shared".into();
    f.auth = AuthMode::Check;
    f.check = Some("/api/me".into());
    f.recheck = recheck;
    f.interval = Duration::from_secs(3600);
    f.credentials = Secret::new(SERVICE);
    f.query = Some(vec![]);
    cfg
}

fn metric(pc: &pollcast::Running, line: &str) -> u64 {
    let text = pc.shared.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

/// N subscribers with the same credentials cost one check; other
/// credentials get their own; the metrics count both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_with_the_same_credentials_share_one_check() {
    const N: usize = 12;
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1}]));
    up.guard("/api/me", &[ALICE, BOB]);
    // A long recheck: answers are shared for MAX_SHARE (5s), far longer than
    // these admissions take.
    let pc = pollcast::start(shared_check_config(&up, Duration::from_secs(3600)))
        .await
        .expect("start");
    let url = format!("http://{}/sse/jobs", pc.addr);
    let subs = futures_util::future::join_all(
        (0..N).map(|_| Sse::connect_with(&url, &[("authorization", ALICE)])),
    )
    .await;
    assert!(subs.iter().all(|s| s.status == 200));
    assert_eq!(
        up.seen_with("/api/me", ALICE).len(),
        1,
        "one check for {N} tabs"
    );
    let bob = Sse::connect_with(&url, &[("authorization", BOB)]).await;
    assert_eq!(bob.status, 200);
    assert_eq!(up.seen_with("/api/me", BOB).len(), 1);
    let eve = Sse::connect_with(&url, &[("authorization", "Bearer eve")]).await;
    assert_eq!(eve.status, 401);
    assert_eq!(
        metric(
            &pc,
            "pollcast_auth_checks_total{feed=\"jobs\",outcome=\"admit\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &pc,
            "pollcast_auth_checks_total{feed=\"jobs\",outcome=\"deny\"}"
        ),
        1
    );
    assert_eq!(
        metric(&pc, "pollcast_auth_checks_shared_total{feed=\"jobs\"}"),
        N as u64 - 1
    );
    drop((subs, bob));
    pc.stop().await;
}

/// Sharing never delays a revocation beyond one recheck period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_is_cut_within_one_recheck_despite_sharing() {
    let recheck = Duration::from_millis(800);
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1}]));
    up.guard("/api/me", &[ALICE, BOB]);
    let pc = pollcast::start(shared_check_config(&up, recheck))
        .await
        .expect("start");
    let url = format!("http://{}/sse/jobs", pc.addr);
    let mut alice = Vec::new();
    for _ in 0..3 {
        let mut s = Sse::connect_with(&url, &[("authorization", ALICE)]).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.next().await.event, "snapshot");
        alice.push(s);
    }
    let mut bob = Sse::connect_with(&url, &[("authorization", BOB)]).await;
    assert_eq!(bob.next().await.event, "snapshot");
    // Let some rechecks be shared first.
    let before = up.seen_with("/api/me", ALICE).len();
    wait_until("alice rechecked", || {
        up.seen_with("/api/me", ALICE).len() >= before + 2
    })
    .await;
    let revoked = Instant::now();
    up.revoke("/api/me", ALICE);
    for s in &mut alice {
        while within("alice cut off", s.next_or_end()).await.is_some() {}
    }
    let took = revoked.elapsed();
    // Within one recheck of the revocation; the margin covers the check's
    // round trip and scheduling on a busy machine, not a second period.
    assert!(
        took < recheck + Duration::from_millis(350),
        "cut {took:?} after the revocation (recheck {recheck:?})"
    );
    assert!(metric(&pc, "pollcast_auth_checks_shared_total{feed=\"jobs\"}") > 0);
    // Bob is still admitted.
    up.set("/api/shared", json!([{"id": 1}, {"id": 2}]));
    pc.registry.refresher().refresh_path("/api/shared");
    assert_eq!(bob.next().await.event, "added");
    pc.stop().await;
}
