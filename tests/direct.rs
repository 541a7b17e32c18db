//! HTTP/1.1 event streams served without hyper (`src/direct.rs`), seen on the
//! wire by a raw TCP client: the framing, the end of a stream when the
//! client leaves, keep-alive hand-back to hyper after a finite answer (with
//! pipelined bytes kept), `Connection: close`, and requests left to hyper.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn started() -> (TestUpstream, pollcast::Running) {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    let mut cfg = config(&up);
    cfg.feeds[0].interval = Duration::from_secs(3600);
    let pc = pollcast::start(cfg).await.expect("start");
    (up, pc)
}

/// Read until `done(text so far)` holds or the peer closes.
async fn read_until(s: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut text = Vec::new();
    within("the expected bytes", async {
        let mut buf = [0u8; 4096];
        while !done(&String::from_utf8_lossy(&text)) {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn a_stream_is_chunked_and_ends_when_the_client_leaves() {
    let (_up, pc) = started().await;
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"GET /sse/jobs HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let text = read_until(&mut s, |t| t.contains("event: snapshot")).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let head = head.to_ascii_lowercase();
    for h in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "transfer-encoding: chunked",
        "date: ",
    ] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    assert!(!head.contains("content-length"), "{head}");
    // The first chunk is the retry hint, framed as `<hex size>\r\n...\r\n`.
    let (size, rest) = body.split_once("\r\n").expect("a chunk");
    let size = usize::from_str_radix(size, 16).expect("hex size");
    assert!(rest[..size].starts_with("retry: "), "{body}");
    assert_eq!(&rest[size..size + 2], "\r\n");
    wait_until("one subscriber", || pc.registry.subscribers() == 1).await;
    drop(s);
    wait_until("the subscriber released", || pc.registry.subscribers() == 0).await;
    pc.stop().await;
}

#[tokio::test]
async fn after_a_finite_answer_the_connection_goes_on_with_pipelined_requests() {
    let (up, pc) = started().await;
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    // A stream that already ended gets 204 here; the pass-through request
    // pipelined behind it must be answered on the same connection.
    s.write_all(
        b"GET /sse/jobs HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1:2:end\r\n\r\n\
          GET /api/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let text = read_until(&mut s, |t| t.contains("\"s\":\"a\"")).await;
    assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
    let second = text.split("HTTP/1.1 ").nth(2).expect("a second response");
    assert!(second.starts_with("200 OK"), "{text}");
    assert!(up.hits("/api/jobs") >= 1);
    pc.stop().await;
}

#[tokio::test]
async fn connection_close_is_honoured_after_a_finite_answer() {
    let (_up, pc) = started().await;
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(
        b"GET /sse/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nLast-Event-ID: 1:2:end\r\n\r\n",
    )
    .await
    .expect("write");
    let mut all = Vec::new();
    within("the answer and the close", s.read_to_end(&mut all))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 204 no content\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    pc.stop().await;
}

#[tokio::test]
async fn requests_it_does_not_understand_are_left_to_hyper() {
    let (_up, pc) = started().await;
    // A body on an SSE path: hyper reads it and the router answers 405.
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"POST /sse/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let text = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    // A head over the size limit: hyper's 431.
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    let big = format!(
        "GET /sse/jobs HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    s.write_all(big.as_bytes()).await.expect("write");
    let text = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // HTTP/1.0 has no chunked encoding: hyper streams it, close-delimited.
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"GET /sse/jobs HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let text = read_until(&mut s, |t| t.contains("event: snapshot")).await;
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(
        !text
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );
    pc.stop().await;
}

#[tokio::test]
async fn a_stream_ends_with_a_retry_hint_and_a_last_chunk_at_shutdown() {
    let (_up, pc) = started().await;
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"GET /sse/jobs HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut s, |t| t.contains("event: snapshot")).await;
    pc.shutdown();
    let mut rest = Vec::new();
    within("the end of the stream", s.read_to_end(&mut rest))
        .await
        .expect("read");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("retry: "), "{rest}");
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
    pc.wait().await;
}
