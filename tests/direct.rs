//! HTTP/1.1 answers served without hyper (`src/direct`), seen on the wire by
//! a raw TCP client: event streams (framing, the end of a stream when the
//! client leaves or at shutdown), passed-through `GET`s one after another on
//! a kept-alive connection (pipelined, sized and chunked, then hyper taking
//! over at a request with a body), `Connection: close`, the idle keep-alive
//! deadline, and requests left to hyper.

mod common;

use std::time::Duration;

use common::passthrough::pattern_at;
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

/// One response read off `s` (bytes already read in `buf`): status, the
/// head's lines, and the body undone from its framing.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    within("a whole response", async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = parsed.parse(buf).expect("a valid head") {
                let status = parsed.code.expect("status");
                let head = String::from_utf8_lossy(&buf[..len]).to_ascii_lowercase();
                let sized = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .expect("ascii")
                            .parse::<usize>()
                            .expect("a length")
                    });
                buf.drain(..len);
                let body = match sized {
                    Some(n) => {
                        fill(s, buf, n).await;
                        buf.drain(..n).collect()
                    }
                    None if head.contains("transfer-encoding: chunked") => dechunk(s, buf).await,
                    None => Vec::new(),
                };
                return (status, head, body);
            }
            read_more(s, buf).await;
        }
    })
    .await
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = s.read(&mut chunk).await.expect("read");
    assert!(
        n > 0,
        "closed mid-response; have {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) {
    while buf.len() < n {
        read_more(s, buf).await;
    }
}

/// A chunked body, to its last chunk.
async fn dechunk(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            read_more(s, buf).await;
        };
        let size = std::str::from_utf8(&buf[..line_end]).expect("ascii");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        buf.drain(..line_end + 2);
        fill(s, buf, size + 2).await;
        assert_eq!(&buf[size..size + 2], b"\r\n", "chunk {size} ends with CRLF");
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return body;
        }
    }
}

#[tokio::test]
async fn passed_through_gets_are_answered_in_order_on_one_connection_until_hyper_takes_over() {
    let (up, pc) = started().await;
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    // All at once: each answer must start where the last one ended.
    s.write_all(
        b"GET /pt/download?bytes=60000 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /pt/download?bytes=50000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /pt/nothing-here HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /api/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    let (status, head, body) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-length: 60000\r\n"), "{head}");
    assert_eq!(body, pattern_at(0, 60000), "the sized download");
    let (status, head, body) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(body, pattern_at(0, 50000), "the chunked download");
    let (status, _, body) = response(&mut s, &mut buf).await;
    assert_eq!(status, 404);
    assert_eq!(body, b"no such /pt/ route");
    let (status, _, body) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"s\":\"a\""));
    // A request with a body is hyper's; it serves the rest of the
    // connection, starting with that request.
    s.write_all(
        b"POST /pt/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /pt/download?bytes=10 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let (status, _, body) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("\"bytes\":3"),
        "{body:?}"
    );
    let (status, _, body) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200);
    assert_eq!(body, pattern_at(0, 10));
    assert!(buf.is_empty(), "nothing but the answers: {buf:?}");
    let seen: Vec<String> = up
        .pass
        .heads
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(
        seen,
        [
            "/pt/download",
            "/pt/download",
            "/pt/nothing-here",
            "/pt/upload",
            "/pt/download"
        ],
        "every request reached the upstream once, in order"
    );
    pc.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_closes_after_the_head_deadline() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    let mut cfg = config(&up);
    cfg.server.header_read_timeout = Duration::from_millis(300);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"GET /pt/download?bytes=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let (status, _, _) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200);
    let idle_since = std::time::Instant::now();
    let mut rest = Vec::new();
    within("the idle connection closed", s.read_to_end(&mut rest))
        .await
        .expect("a clean close");
    assert!(rest.is_empty(), "closed without a word: {rest:?}");
    // Timers never fire early: the connection had its whole deadline.
    assert!(idle_since.elapsed() >= Duration::from_millis(250));
    pc.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_closes_at_shutdown_without_waiting_for_the_drain() {
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    // Far beyond the test's deadline: only closing idle connections at
    // once lets shutdown finish in time.
    cfg.server.drain_timeout = Duration::from_secs(600);
    cfg.server.header_read_timeout = Duration::from_secs(600);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"GET /pt/download?bytes=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let (status, _, _) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200);
    within("shutdown", pc.stop()).await;
    let mut rest = Vec::new();
    within("the connection closed", s.read_to_end(&mut rest))
        .await
        .expect("a clean close");
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn a_custom_reason_phrase_passes_through() {
    // An upstream that answers every request with its own reason phrase.
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let raw_addr = raw.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = raw.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 299 Quite Fine\r\ncontent-length: 2\r\n\r\nok";
                        if c.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.upstream.url =
        pollcast::config::UpstreamUrl::parse(&format!("http://{raw_addr}")).expect("url");
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = TcpStream::connect(pc.addr).await.expect("connect");
    s.write_all(b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\nGET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    for _ in 0..2 {
        let (status, head, body) = response(&mut s, &mut buf).await;
        assert_eq!(status, 299);
        assert!(head.starts_with("http/1.1 299 quite fine\r\n"), "{head}");
        assert_eq!(body, b"ok");
    }
    pc.stop().await;
}
