//! Protocols on the client listener: HTTP/2 multiplexing (h2c and TLS),
//! HTTP/1.1 over TLS, certificate errors, and compression left as it is.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Enough streams to break a browser's six-connections-per-origin HTTP/1.1 limit.
const STREAMS: usize = 20;

fn get(uri: String) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .header("accept", "text/event-stream")
        .body(Empty::new())
        .expect("request")
}

/// Open `STREAMS` SSE streams over the one HTTP/2 connection `io`, check that
/// each gets its snapshot, change the upstream, and check that each gets the
/// `added` event.
async fn multiplex<I>(io: I, up: &TestUpstream, pc: &pollcast::Running, scheme: &str)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);

    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let mut sender = sender.clone();
        // Distinct queries make distinct feeds, so this is 20 real streams
        // fed by 20 poll loops, not one stream seen 20 times.
        let uri = format!("{scheme}://localhost:{}/sse/jobs?n={i}", pc.addr.port());
        let resp = within("response head", sender.send_request(get(uri)))
            .await
            .expect("send over the shared connection");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        streams.push(Sse::from_response(resp));
    }
    for (i, s) in streams.iter_mut().enumerate() {
        let e = s.next().await;
        assert_eq!(e.event, "snapshot", "stream {i}");
        assert_eq!(data(&e), json!({"items": [{"id": 1}]}), "stream {i}");
    }
    wait_until("every stream subscribed", || {
        pc.registry.subscribers() == STREAMS
    })
    .await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    for (i, s) in streams.iter_mut().enumerate() {
        let e = s.next().await;
        assert_eq!(e.event, "added", "stream {i}");
        assert_eq!(data(&e)["id"], json!(2), "stream {i}");
    }
}

#[tokio::test]
async fn twenty_sse_streams_share_one_h2c_connection() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let tcp = TcpStream::connect(pc.addr).await.expect("connect");
    multiplex(tcp, &up, &pc, "http").await;
    pc.stop().await;
}

/// A self-signed certificate for `localhost`, written to `dir` as PEM.
struct TestCert {
    der: Vec<u8>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn test_cert(dir: &Path) -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    TestCert {
        der: ck.cert.der().to_vec(),
        cert,
        key,
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &TestCert,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone().into()).expect("root");
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(alpn),
        "ALPN negotiated"
    );
    tls
}

#[tokio::test]
async fn tls_serves_twenty_streams_over_one_h2_connection_and_http1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = test_cert(dir.path());
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    cfg.server.tls = Some(pollcast::config::TlsConfig {
        cert: cert.cert.clone(),
        key: cert.key.clone(),
    });
    let pc = pollcast::start(cfg).await.expect("start");

    let h2 = tls_connect(pc.addr, &cert, b"h2").await;
    multiplex(h2, &up, &pc, "https").await;

    // HTTP/1.1 over TLS; the upstream hears that the client used https.
    let h1 = tls_connect(pc.addr, &cert, b"http/1.1").await;
    let (mut sender, conn) = http1::handshake(TokioIo::new(h1))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/echo/tls")
        .header("host", format!("localhost:{}", pc.addr.port()))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = within("HTTP/1.1 response", sender.send_request(req))
        .await
        .expect("response");
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    let body = within("body", resp.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    let seen: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    // A plain-text client is not served on a TLS listener.
    let r = reqwest::get(format!("http://{}/echo/plain", pc.addr)).await;
    assert!(r.is_err(), "plain HTTP must fail on a TLS listener");
    assert_eq!(up.hits("/echo/plain"), 0);
    pc.stop().await;
}

/// Whether a TLS handshake with `addr` succeeds for a client trusting only `der`.
async fn handshake_trusting(addr: std::net::SocketAddr, der: &[u8]) -> bool {
    let mut roots = RootCertStore::empty();
    roots.add(der.to_vec().into()).expect("root");
    let cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    within(
        "a TLS handshake",
        TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn a_reload_serves_a_rotated_certificate_and_keeps_it_when_the_files_break() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = test_cert(dir.path());
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.server.tls = Some(pollcast::config::TlsConfig {
        cert: old.cert.clone(),
        key: old.key.clone(),
    });
    let pc = pollcast::start(cfg.clone()).await.expect("start");
    assert!(handshake_trusting(pc.addr, &old.der).await);

    // Rotated in place (as cert-manager does), then a reload (SIGHUP).
    let new = test_cert(dir.path());
    assert_ne!(new.der, old.der);
    assert!(
        handshake_trusting(pc.addr, &old.der).await,
        "no reload yet: the old certificate is still served"
    );
    let mut current = cfg.clone();
    let outcome = pollcast::reload::apply(&pc, &mut current, cfg.clone(), None);
    assert_eq!(outcome.tls, Some(Ok(())));
    assert!(handshake_trusting(pc.addr, &new.der).await);
    assert!(!handshake_trusting(pc.addr, &old.der).await);

    // A broken file on reload: reported, and the certificate in use stays.
    std::fs::write(&new.cert, "not a certificate\n").expect("write");
    let outcome = pollcast::reload::apply(&pc, &mut current, cfg.clone(), None);
    let err = outcome
        .tls
        .expect("tls configured")
        .expect_err("a broken file");
    assert!(err.contains("cert.pem"), "{err}");
    assert!(handshake_trusting(pc.addr, &new.der).await);
    pc.stop().await;
}

fn config_with_tls(dir: &Path, cert: &str, key: &str) -> (std::path::PathBuf, String) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[server.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n"
    );
    let path = dir.join("pollcast.toml");
    std::fs::write(&path, &text).expect("write config");
    (path, text)
}

#[test]
fn certificate_problems_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = test_cert(dir.path());
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").expect("write");
    // A second, unrelated key: valid PEM, wrong for the certificate.
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(dir.path().join("other.pem"), other.serialize_pem()).expect("write");

    // Relative paths are resolved against the config file's directory.
    let (path, text) = config_with_tls(dir.path(), "cert.pem", "key.pem");
    let c = pollcast::Config::from_toml(&text, &path).expect("valid TLS config");
    let tls = c.server.tls.expect("tls");
    assert_eq!(tls.cert, good.cert);
    assert_eq!(tls.key, good.key);

    let cases = [
        (
            "missing.pem",
            "key.pem",
            5,
            "server.tls.cert",
            "missing.pem",
        ),
        (
            "garbage.pem",
            "key.pem",
            5,
            "server.tls.cert",
            "CERTIFICATE",
        ),
        (
            "cert.pem",
            "missing.pem",
            6,
            "server.tls.key",
            "missing.pem",
        ),
        (
            "cert.pem",
            "garbage.pem",
            6,
            "server.tls.key",
            "private key",
        ),
        ("cert.pem", "other.pem", 6, "server.tls.key", "other.pem"),
    ];
    for (cert, key, line, name, detail) in cases {
        let (path, text) = config_with_tls(dir.path(), cert, key);
        let e = pollcast::Config::from_toml(&text, &path)
            .expect_err(&format!("{cert} + {key} must be rejected"))
            .to_string();
        let located = format!("{}:{line}:1: {name}: ", path.display());
        assert!(e.starts_with(&located), "{cert} + {key}: {e}");
        assert!(e.contains(detail), "{cert} + {key}: {e}");
    }
}

/// `{"items":[{"id":1,"name":"compressed"}]}` compressed with `gzip -n`.
const GZIPPED: &[u8] = &[
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0x56, 0xca, 0x2c, 0x49, 0xcd,
    0x2d, 0x56, 0xb2, 0x8a, 0xae, 0x56, 0xca, 0x4c, 0x51, 0xb2, 0x32, 0xd4, 0x51, 0xca, 0x4b, 0xcc,
    0x4d, 0x55, 0xb2, 0x52, 0x4a, 0xce, 0xcf, 0x2d, 0x28, 0x4a, 0x2d, 0x2e, 0x4e, 0x4d, 0x51, 0xaa,
    0x8d, 0xad, 0x05, 0x00, 0x1e, 0x8f, 0xb7, 0xc6, 0x28, 0x00, 0x00, 0x00,
];

#[tokio::test]
async fn pass_through_keeps_compression_and_sse_is_not_compressed() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.set_raw(
        "/api/archive",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("vary", "accept-encoding"),
        ],
        Bytes::from_static(GZIPPED),
    );
    let pc = pollcast::start(config(&up)).await.expect("start");

    // reqwest is built without decompression: these are the bytes on the wire.
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/archive", pc.addr))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "accept-encoding");
    assert_eq!(
        r.headers()["content-length"],
        GZIPPED.len().to_string().as_str()
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), GZIPPED);
    let seen = up.seen("/api/archive");
    assert_eq!(
        seen[0].headers["accept-encoding"], "gzip",
        "the client's Accept-Encoding reaches the upstream"
    );

    let mut s = Sse::connect_with(
        &format!("http://{}/sse/jobs", pc.addr),
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(s.status, 200);
    assert!(
        !s.headers.contains_key("content-encoding"),
        "SSE must not be compressed: {:?}",
        s.headers
    );
    // Still readable as plain text/event-stream.
    assert_eq!(s.next().await.event, "snapshot");
    pc.stop().await;
}
