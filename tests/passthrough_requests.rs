//! Requests through pass-through: bodies streamed to the upstream as they
//! arrive, `Expect: 100-continue`, trailers, an aborted upload, and the
//! `Host` / `X-Forwarded-*` / `Forwarded` rules with their config keys.

mod common;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::passthrough::{pattern_at, PassState};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn uploaded(up: &TestUpstream) -> u64 {
    up.pass.upload_bytes.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_request_body_reaches_the_upstream_as_it_is_sent_for_longer_than_the_timeout() {
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    // The upload below lasts several times this: the timeout is for the
    // upstream's answer, counted once the body has been sent.
    cfg.upstream.timeout = Duration::from_millis(200);
    let pc = pollcast::start(cfg).await.expect("start");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let send = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://{}/pt/upload", pc.addr))
            .body(body)
            .send(),
    );
    let mut sent = 0u64;
    for piece in 0..5u64 {
        if piece == 2 {
            // A slow client: the upload stalls for three times the timeout.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let chunk = pattern_at(sent, 1000);
        sent += chunk.len() as u64;
        tx.send(Ok(chunk)).await.expect("send piece");
        // The upstream has this piece before the next one even exists.
        wait_until(&format!("piece {piece} at the upstream"), || {
            uploaded(&up) == sent
        })
        .await;
    }
    drop(tx);
    let r = within("upload response", send)
        .await
        .expect("task")
        .expect("response");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["bytes"], 5000);
    assert_eq!(v["pattern"], true);
    pc.stop().await;
}

/// A stream over an mpsc receiver (tokio-stream is not a dependency).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

#[tokio::test]
async fn the_timeout_still_applies_once_the_body_is_sent() {
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.upstream.timeout = Duration::from_millis(200);
    let pc = pollcast::start(cfg).await.expect("start");
    let r = reqwest::Client::new()
        .post(format!("http://{}/pt/hold", pc.addr))
        .body(vec![7u8; 100_000])
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 504);
    assert_eq!(PassState::count(&up.pass.hold_started), 1);
    pc.stop().await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(
        b"POST /echo/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .expect("head");
    // A well-behaved client sends nothing more until it sees the 100.
    let mut got = read_until(&mut s, b"\r\n\r\n").await;
    let interim = String::from_utf8_lossy(&got).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    assert_eq!(up.hits("/echo/expect"), 0, "no body sent yet");

    s.write_all(b"hello world").await.expect("body");
    got.extend(read_until(&mut s, b"\"body\"").await);
    let text = String::from_utf8_lossy(&got);
    let fin = text.split_once("\r\n\r\n").map_or("", |(_, rest)| rest);
    assert!(fin.starts_with("HTTP/1.1 200"), "{text}");
    let seen = up.seen("/echo/expect");
    assert_eq!(seen[0].body, Bytes::from_static(b"hello world"));
    assert!(
        !seen[0].headers.contains_key("expect"),
        "pollcast's hop met the expectation; the upstream is not asked again"
    );
    pc.stop().await;
}

/// Read from `s` until what was read contains `marker`.
async fn read_until(s: &mut TcpStream, marker: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(marker.len()).any(|w| w == marker) {
        let n = within("read", s.read(&mut buf)).await.expect("read");
        assert!(
            n > 0,
            "connection closed; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn response_trailers_pass_over_http1_and_http2() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let url = format!("http://{}/pt/trailers", pc.addr);

    // HTTP/1.1: the client says it accepts trailers, as HTTP/1.1 requires.
    let tcp = TcpStream::connect(pc.addr).await.expect("connect");
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(&url)
        .header("host", pc.addr.to_string())
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let r = h1.send_request(req).await.expect("h1 response");
    assert_eq!(r.headers()["trailer"], "x-checksum");
    let got = within("h1 body", r.into_body().collect())
        .await
        .expect("body");
    let trailers = got.trailers().cloned().expect("h1 trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(got.to_bytes(), Bytes::from_static(b"hello"));
    assert_eq!(
        up.pass.head("/pt/trailers").expect("seen")["te"],
        "trailers",
        "TE: trailers is passed on so the upstream sends them"
    );

    // HTTP/2 (h2c prior knowledge).
    let tcp = TcpStream::connect(pc.addr).await.expect("connect");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(&url)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let r = h2.send_request(req).await.expect("h2 response");
    let got = within("h2 body", r.into_body().collect())
        .await
        .expect("body");
    let trailers = got.trailers().cloned().expect("h2 trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
    pc.stop().await;
}

#[tokio::test]
async fn a_client_that_aborts_its_upload_aborts_the_upstream_request() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"POST /pt/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .expect("head");
    s.write_all(&[0u8; 1000]).await.expect("some body");
    wait_until("part of the body at the upstream", || uploaded(&up) == 1000).await;
    drop(s);
    wait_until("upstream saw its request body abort", || {
        PassState::count(&up.pass.upload_aborted) == 1
    })
    .await;
    pc.stop().await;
}

/// What the upstream's `/echo` saw for one request sent with `headers`.
async fn echoed(pc: std::net::SocketAddr, headers: &[(&str, &str)]) -> Value {
    let mut req = reqwest::Client::new().get(format!("http://{pc}/echo/h"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("send");
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.expect("json")["headers"].clone()
}

#[tokio::test]
async fn host_and_forwarding_headers_by_default_replace_what_clients_claim() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let h = echoed(
        pc.addr,
        &[
            ("host", "app.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(h["host"], up.addr.to_string());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.example");
    for forged in ["x-forwarded-port", "x-real-ip", "forwarded"] {
        assert!(
            h.get(forged).is_none(),
            "{forged} from an untrusted peer: {h}"
        );
    }
    pc.stop().await;
}

#[tokio::test]
async fn trusted_proxies_preserve_host_and_forwarded_work_from_the_config_file() {
    let up = TestUpstream::start().await;
    let text = format!(
        // An ephemeral admin port: the default 9090 may be taken on the machine.
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"http://{}\"\n\
         preserve_host = true\nforwarded = true\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
        up.addr
    );
    let cfg = pollcast::Config::from_toml(&text, std::path::Path::new("t.toml")).expect("config");
    let pc = pollcast::start(cfg).await.expect("start");
    let h = echoed(
        pc.addr,
        &[
            ("host", "app.example:8443"),
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.7;proto=https"),
        ],
    )
    .await;
    assert_eq!(h["host"], "app.example:8443", "preserve_host");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.1.1.1, 127.0.0.1");
    assert_eq!(
        h["x-forwarded-proto"], "https",
        "kept from the trusted proxy"
    );
    assert_eq!(h["x-forwarded-host"], "app.example:8443");
    assert_eq!(
        h["forwarded"],
        "for=203.0.113.7;proto=https, for=127.0.0.1;host=\"app.example:8443\";proto=http"
    );
    pc.stop().await;
}
