//! The express lane (`src/direct`, `src/proxy/express.rs`,
//! `src/proxy/lines.rs`, `src/upstream/raw.rs`, `src/upstream/pool.rs`):
//! plain HTTP/1.1 `GET`s passed through on raw pooled upstream
//! connections, seen from both ends of the wire.
//!
//! The upstream here is a scripted raw-TCP server written in this file: each
//! test chooses what every connection answers, byte for byte, and the
//! upstream records each request head it read, on which of its accepted
//! connections, and which connections pollcast closed. The client is a raw
//! `TcpStream` where the exact wire matters (framing, status line, fields,
//! pipelining) and reqwest elsewhere.
//!
//! Covered: answer framing (chunked with extensions and trailers decoded and
//! re-chunked without them, read-until-close re-chunked, informational
//! answers skipped), when an upstream connection is reused or replaced (a
//! pooled connection the upstream closed, with and without reading the
//! request first; bytes past the answer; `Connection: close` and HTTP/1.0
//! answers; a client that leaves mid-body), the 502 of a malformed answer
//! head and the 504 of a silent upstream, an answer body that breaks off,
//! the request head the upstream gets (hop-by-hop fields dropped,
//! `X-Forwarded-*` and `Host` rewritten), pipelined requests answered in
//! order, and the answer head's reason phrase and `Date`.
//!
//! Nothing sleeps and hopes: every wait has a deadline ([`within`],
//! [`wait_until`]).

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{wait_until, within};
use pollcast::config::{Config, UpstreamUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// The scripted upstream
// ---------------------------------------------------------------------------

/// What the scripted upstream saw.
#[derive(Default)]
struct Log {
    /// TCP connections accepted; connection `n` is the `n`th accepted (from 0).
    accepted: usize,
    /// Every request head read, with its connection, in the order read.
    heads: Vec<(usize, String)>,
    /// Connections on which pollcast closed its side (or reset).
    closed: Vec<usize>,
}

/// A raw-TCP upstream on an ephemeral loopback port; what each connection
/// does is the test's `serve` function.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Upstream {
    async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let conn = {
                    let mut log = shared.lock().unwrap();
                    log.accepted += 1;
                    log.accepted - 1
                };
                tokio::spawn(serve(Peer {
                    conn,
                    io,
                    buf: Vec::new(),
                    log: shared.clone(),
                }));
            }
        });
        Self { addr, log }
    }

    fn accepted(&self) -> usize {
        self.log.lock().unwrap().accepted
    }

    /// The request heads read so far, with their connections.
    fn heads(&self) -> Vec<(usize, String)> {
        self.log.lock().unwrap().heads.clone()
    }

    /// The request targets read on each connection (index: connection).
    fn targets_by_conn(&self) -> Vec<Vec<String>> {
        let log = self.log.lock().unwrap();
        let mut by = vec![Vec::new(); log.accepted];
        for (conn, head) in &log.heads {
            by[*conn].push(target(head).to_owned());
        }
        by
    }

    fn closed(&self, conn: usize) -> bool {
        self.log.lock().unwrap().closed.contains(&conn)
    }
}

/// One accepted connection of the scripted upstream.
struct Peer {
    /// Its number, in the order accepted (from 0).
    conn: usize,
    io: TcpStream,
    buf: Vec<u8>,
    log: Arc<Mutex<Log>>,
}

impl Peer {
    /// The next request head (recorded), or `None` once pollcast closed
    /// the connection (recorded too).
    async fn head(&mut self) -> Option<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                let head = String::from_utf8(head).expect("a text head");
                self.log
                    .lock()
                    .unwrap()
                    .heads
                    .push((self.conn, head.clone()));
                return Some(head);
            }
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk).await {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => {
                    self.log.lock().unwrap().closed.push(self.conn);
                    return None;
                }
            }
        }
    }

    /// Write `bytes` (pollcast may have gone: errors are the test's to see
    /// on the client side).
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// Answer nothing more, but keep reading (and recording) until pollcast
    /// closes the connection: a request sent on it would be seen.
    async fn until_closed(mut self) {
        while self.head().await.is_some() {}
    }
}

/// Answer every request on the connection with `answer(target)`, for as
/// long as pollcast keeps it open.
async fn answering(mut peer: Peer, answer: impl Fn(&str) -> Vec<u8>) {
    while let Some(head) = peer.head().await {
        let bytes = answer(target(&head));
        peer.send(&bytes).await;
    }
}

/// A `Content-Length` answer: `status` is the status line after the version.
fn sized(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The request target of a head (`GET <target> HTTP/1.1`).
fn target(head: &str) -> &str {
    head.split(' ').nth(1).expect("a request line")
}

/// A message's head (its last field line's break included) and the rest.
fn split_head(text: &str) -> (&str, &str) {
    let end = text.find("\r\n\r\n").expect("a whole head");
    (&text[..end + 2], &text[end + 4..])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `n` bytes of printable text that shows where a slip happened.
fn pattern(n: usize) -> String {
    (0..n)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect::<String>()
}

// ---------------------------------------------------------------------------
// pollcast and the raw client
// ---------------------------------------------------------------------------

/// pollcast in-process, without feeds (so nothing but the test's requests
/// reaches the upstream), passing everything through to `up`.
async fn pollcast_for(up: &Upstream, tweak: impl FnOnce(&mut Config)) -> pollcast::Running {
    let url = UpstreamUrl::parse(&format!("http://{}", up.addr)).expect("url");
    let mut c = Config::new(url, Vec::new());
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.listen = Some("127.0.0.1:0".parse().expect("addr"));
    c.upstream.timeout = Duration::from_secs(5);
    c.server.drain_timeout = Duration::from_secs(2);
    tweak(&mut c);
    pollcast::start(c).await.expect("start")
}

/// A raw HTTP/1.1 client connection to pollcast.
struct Client {
    s: TcpStream,
    /// Read but not yet taken as part of an answer.
    buf: Vec<u8>,
}

/// One answer as it came off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The status line as sent, without its line break.
    status_line: String,
    /// The head as sent, blank line included.
    head: String,
    /// Fields, names lowercased, in order.
    fields: Vec<(String, String)>,
    /// The body, undone from its framing.
    body: Vec<u8>,
    /// Chunked: the trailer lines after the last chunk.
    trailers: Vec<String>,
}

impl Answer {
    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a text body")
    }
}

impl Client {
    async fn connect(pc: &pollcast::Running) -> Self {
        let s = TcpStream::connect(pc.addr).await.expect("connect");
        Self { s, buf: Vec::new() }
    }

    async fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).await.expect("write");
    }

    async fn get(&mut self, path: &str) {
        self.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: client.example\r\n\r\n"
        ))
        .await;
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.s.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "pollcast closed the connection mid-answer; have {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn fill(&mut self, n: usize) {
        while self.buf.len() < n {
            self.read_more().await;
        }
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8(line[..i].to_vec()).expect("a text line");
            }
            self.read_more().await;
        }
    }

    /// The next whole answer.
    async fn answer(&mut self) -> Answer {
        within("a whole answer", self.answer_inner()).await
    }

    async fn answer_inner(&mut self) -> Answer {
        let (status, head, fields) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).expect("a valid head")
            {
                let fields = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8(h.value.to_vec()).expect("a text value"),
                        )
                    })
                    .collect::<Vec<_>>();
                let status = parsed.code.expect("a status");
                let head = String::from_utf8(self.buf.drain(..len).collect()).expect("text");
                break (status, head, fields);
            }
            self.read_more().await;
        };
        let status_line = head.split("\r\n").next().unwrap_or_default().to_owned();
        let mut answer = Answer {
            status,
            status_line,
            head,
            fields,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        let chunked = answer
            .all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = answer
            .all("content-length")
            .first()
            .map(|v| v.parse::<usize>().expect("a length"));
        if (100..200).contains(&status) || status == 204 || status == 304 {
        } else if chunked {
            // Strictly pollcast's own framing: a bare hex size per chunk.
            loop {
                let size = self.line().await;
                let size = usize::from_str_radix(&size, 16)
                    .unwrap_or_else(|_| panic!("a bare hex chunk size, not {size:?}"));
                if size == 0 {
                    loop {
                        let line = self.line().await;
                        if line.is_empty() {
                            break;
                        }
                        answer.trailers.push(line);
                    }
                    break;
                }
                self.fill(size + 2).await;
                assert_eq!(&self.buf[size..size + 2], b"\r\n", "chunk data ends");
                answer.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
        } else if let Some(n) = length {
            self.fill(n).await;
            answer.body = self.buf.drain(..n).collect();
        } else {
            answer.body = self.rest().await;
        }
        answer
    }

    /// Everything until pollcast closes the connection (a reset counts as a
    /// close): what was left unread plus what came after.
    async fn rest(&mut self) -> Vec<u8> {
        within("pollcast closes the connection", async {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match self.s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        std::mem::take(&mut self.buf)
    }
}

// ---------------------------------------------------------------------------
// Answer framing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn chunked_upstream_answers_are_decoded_and_rechunked_without_trailers() {
    let big = pattern(70_000);
    let pieces: Vec<String> = vec![
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
        "5;name=value\r\nhello\r\n".into(),
        "7;a=1;b=\"x;y\"\r\n, world\r\n".into(),
        format!("{:x}\r\n{big}\r\n", big.len()),
        "0\r\nX-Checksum: abc123\r\nX-Other: 1\r\n\r\n".into(),
    ];
    let up = Upstream::start(move |mut peer| {
        let pieces = pieces.clone();
        async move {
            // Written piece by piece: the decoder meets the framing split
            // wherever the reads split it.
            while peer.head().await.is_some() {
                for p in &pieces {
                    peer.send(p.as_bytes()).await;
                }
            }
        }
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;
    let expected = format!("hello, world{big}");

    let mut client = Client::connect(&pc).await;
    for round in 0..2 {
        client.get(&format!("/chunked?round={round}")).await;
        let a = client.answer().await;
        assert_eq!(a.status, 200, "{}", a.head);
        assert_eq!(a.all("transfer-encoding"), ["chunked"], "{}", a.head);
        assert!(a.all("content-length").is_empty(), "{}", a.head);
        assert!(
            a.text() == expected,
            "round {round}: the body is the decoded chunks ({} bytes, want {})",
            a.body.len(),
            expected.len()
        );
        // The last chunk is followed by the blank line at once: no trailer
        // line reaches the client (it did not ask for trailers).
        assert!(a.trailers.is_empty(), "trailers passed: {:?}", a.trailers);
        assert!(!a.head.to_ascii_lowercase().contains("x-checksum"));
    }
    // Nothing but the two answers came.
    assert!(client.buf.is_empty(), "{:?}", client.buf);
    // Read to its end, trailers and all, the answer left its upstream
    // connection reusable: both requests went on one.
    assert_eq!(
        up.targets_by_conn(),
        [["/chunked?round=0", "/chunked?round=1"]]
    );
    drop(client);
    pc.stop().await;
}

#[tokio::test]
async fn an_answer_read_until_close_reaches_the_client_whole_and_its_connection_is_not_reused() {
    let big = pattern(100_000);
    let body = big.clone();
    let up = Upstream::start(move |mut peer| {
        let body = body.clone();
        async move {
            if peer.conn > 0 {
                return answering(peer, |t| sized("200 OK", t)).await;
            }
            if peer.head().await.is_none() {
                return;
            }
            // No Content-Length, no Transfer-Encoding: the body runs until
            // the upstream closes (its write side only, so a request sent on
            // this connection afterwards would still be read and seen).
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                .await;
            for part in body.as_bytes().chunks(30_000) {
                peer.send(part).await;
            }
            let _ = peer.io.shutdown().await;
            peer.until_closed().await;
        }
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;

    let mut client = Client::connect(&pc).await;
    client.get("/until-close").await;
    let a = client.answer().await;
    assert_eq!(a.status, 200, "{}", a.head);
    // pollcast frames it for the client itself: chunked, and the client's
    // connection lives on.
    assert_eq!(a.all("transfer-encoding"), ["chunked"], "{}", a.head);
    assert!(a.all("content-length").is_empty(), "{}", a.head);
    assert_eq!(a.body.len(), big.len(), "the whole body");
    assert!(a.text() == big, "the body byte for byte");

    client.get("/next").await;
    let a = client.answer().await;
    assert_eq!((a.status, a.text().as_str()), (200, "/next"), "{}", a.head);

    // The first connection ended with its answer: the next request went on
    // a new one, and pollcast closed the old one.
    assert_eq!(up.targets_by_conn(), [vec!["/until-close"], vec!["/next"]]);
    wait_until("pollcast closes the read-until-close connection", || {
        up.closed(0)
    })
    .await;
    assert_eq!(up.targets_by_conn()[0], ["/until-close"]);
    drop(client);
    pc.stop().await;
}

#[tokio::test]
async fn informational_answers_are_skipped() {
    let up = Upstream::start(|mut peer| async move {
        while let Some(head) = peer.head().await {
            let hints = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
            let final_answer = String::from_utf8(sized("200 OK", "final")).expect("text");
            match target(&head) {
                // Two informational answers and the final one in one write.
                "/together" => {
                    let all = format!("{hints}HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n{final_answer}");
                    peer.send(all.as_bytes()).await;
                }
                // The informational answer alone, then the final one.
                _ => {
                    peer.send(hints.as_bytes()).await;
                    peer.send(final_answer.as_bytes()).await;
                }
            }
        }
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;

    let mut client = Client::connect(&pc).await;
    for path in ["/together", "/apart", "/together"] {
        client.get(path).await;
        let a = client.answer().await;
        assert_eq!(a.status_line, "HTTP/1.1 200 OK", "{path}: {}", a.head);
        assert_eq!(a.text(), "final", "{path}");
        let head = a.head.to_ascii_lowercase();
        assert!(
            !head.contains("103") && !head.contains("early hints") && !head.contains("link:"),
            "{path}: nothing of the 103 reaches the client: {head}"
        );
    }
    assert!(client.buf.is_empty(), "{:?}", client.buf);
    // Nothing of the 1xx answers was left over for the next exchange.
    assert_eq!(up.accepted(), 1, "{:?}", up.targets_by_conn());
    drop(client);
    pc.stop().await;
}

#[tokio::test]
async fn an_upstream_that_sends_more_than_it_was_asked_loses_its_connection() {
    let up = Upstream::start(|mut peer| async move {
        if peer.conn > 0 {
            return answering(peer, |t| sized("200 OK", t)).await;
        }
        if peer.head().await.is_none() {
            return;
        }
        // The answer, then what looks like a second answer nobody asked
        // for: taken as the next request's answer, it would desync the lane.
        let mut bytes = sized("200 OK", "hello");
        bytes.extend_from_slice(&sized("200 OK", "unasked"));
        peer.send(&bytes).await;
        // Answers whatever else comes here, so reuse would be seen.
        answering(peer, |_| sized("200 OK", "from the first connection")).await;
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;

    let mut client = Client::connect(&pc).await;
    client.get("/first").await;
    let a = client.answer().await;
    assert_eq!(a.status, 200, "{}", a.head);
    assert_eq!(a.all("content-length"), ["5"], "{}", a.head);
    assert_eq!(a.text(), "hello");

    client.get("/second").await;
    let a = client.answer().await;
    assert_eq!(
        (a.status, a.text().as_str()),
        (200, "/second"),
        "{}",
        a.head
    );

    assert_eq!(up.targets_by_conn(), [vec!["/first"], vec!["/second"]]);
    wait_until("pollcast closes the connection that said too much", || {
        up.closed(0)
    })
    .await;
    drop(client);
    pc.stop().await;
}

#[tokio::test]
async fn answers_that_end_their_connection_are_not_reused() {
    // Every connection answers everything and stays open: reuse is seen.
    let up = Upstream::start(|peer| {
        answering(peer, |t| match t {
            "/close" => {
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose".to_vec()
            }
            "/old" => b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold".to_vec(),
            _ => sized("200 OK", "keep"),
        })
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;

    let mut client = Client::connect(&pc).await;
    for (path, body) in [
        ("/keep", "keep"),
        ("/keep", "keep"),
        ("/close", "close"),
        ("/keep", "keep"),
        ("/old", "old"),
        ("/keep", "keep"),
    ] {
        client.get(path).await;
        let a = client.answer().await;
        assert_eq!(a.status_line, "HTTP/1.1 200 OK", "{path}: {}", a.head);
        assert_eq!(a.text(), body, "{path}");
        // The upstream's `Connection: close` is its own hop's: the client's
        // connection stays open.
        assert!(a.all("connection").is_empty(), "{path}: {}", a.head);
    }
    assert_eq!(
        up.targets_by_conn(),
        [
            vec!["/keep", "/keep", "/close"],
            vec!["/keep", "/old"],
            vec!["/keep"],
        ],
        "kept-alive answers reuse the connection; `Connection: close` and HTTP/1.0 end it"
    );
    wait_until("pollcast closes both ended connections", || {
        up.closed(0) && up.closed(1)
    })
    .await;
    drop(client);
    pc.stop().await;
}

// ---------------------------------------------------------------------------
// Pooled connections the upstream closed
// ---------------------------------------------------------------------------

/// `n` sequential GETs from one reqwest client, each of which must be a 200
/// with its own path as the body.
async fn sequential_gets(pc: &pollcast::Running, n: usize) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let path = format!("/r{i}");
        let r = within(
            "an answer",
            client.get(format!("http://{}{path}", pc.addr)).send(),
        )
        .await
        .expect("a response");
        let status = r.status();
        let text = within("the body", r.text()).await.expect("a body");
        assert_eq!(
            (status.as_u16(), text.as_str()),
            (200, path.as_str()),
            "request {i}"
        );
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_failing_the_request() {
    // Each connection answers one request with keep-alive framing (so
    // pollcast pools it) and closes at once.
    let up = Upstream::start(|mut peer| async move {
        if let Some(head) = peer.head().await {
            let answer = sized("200 OK", target(&head));
            peer.send(&answer).await;
        }
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;
    sequential_gets(&pc, 20).await;
    assert_eq!(up.accepted(), 20, "one connection per request");
    assert_eq!(
        up.heads().len(),
        20,
        "each request reached the upstream once"
    );
    pc.stop().await;
}

#[tokio::test]
async fn a_pooled_connection_closed_on_receiving_the_request_gets_it_again_on_a_new_one() {
    // The race the retry is for: the pooled connection looks alive when it
    // is taken, the request is written, and the upstream (its keep-alive
    // timeout just run out) closes it without a word.
    let up = Upstream::start(|mut peer| async move {
        if let Some(head) = peer.head().await {
            let answer = sized("200 OK", target(&head));
            peer.send(&answer).await;
        }
        // The second request is read, then the connection closed.
        let _ = peer.head().await;
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;
    sequential_gets(&pc, 20).await;
    // Request i went on connection i - 1 (which closed) and again on
    // connection i (which answered it).
    let mut expected: Vec<Vec<String>> = (0..20)
        .map(|i| vec![format!("/r{i}"), format!("/r{}", i + 1)])
        .collect();
    expected[19].pop();
    assert_eq!(up.targets_by_conn(), expected);
    pc.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_body_drops_the_upstream_connection() {
    let up = Upstream::start(|mut peer| async move {
        if peer.head().await.is_none() {
            return;
        }
        // A megabyte announced, a kilobyte sent, the rest never.
        let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
        bytes.extend_from_slice(pattern(1000).as_bytes());
        peer.send(&bytes).await;
        peer.until_closed().await;
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;
    let mut client = Client::connect(&pc).await;
    client.get("/big").await;
    within("the head and the first kilobyte", async {
        while client.buf.len() < 1000 || find(&client.buf, b"\r\n\r\n").is_none() {
            client.read_more().await;
        }
    })
    .await;
    drop(client);
    // Not read to its end, the connection cannot take another request.
    wait_until("pollcast closes the upstream connection", || up.closed(0)).await;
    assert_eq!(up.targets_by_conn(), [["/big"]]);
    pc.stop().await;
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_malformed_or_conflicting_answer_head_is_a_502() {
    const BAD: [(&str, &str); 5] = [
        (
            "/two-lengths",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        ("/garbage", "NOT HTTP AT ALL\r\n\r\n"),
        (
            "/bad-length",
            "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello",
        ),
        (
            "/switched",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ),
        // Closed inside the head.
        ("/cut-head", "HTTP/1.1 200 OK\r\nContent-Le"),
    ];
    let up = Upstream::start(|mut peer| async move {
        while let Some(head) = peer.head().await {
            let t = target(&head).to_owned();
            match BAD.iter().find(|(path, _)| *path == t) {
                Some((path, bytes)) => {
                    peer.send(bytes.as_bytes()).await;
                    if *path == "/cut-head" {
                        return;
                    }
                }
                None => peer.send(&sized("200 OK", "fine")).await,
            }
        }
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;

    let mut client = Client::connect(&pc).await;
    for (path, _) in BAD {
        client.get(path).await;
        let a = client.answer().await;
        assert_eq!(a.status, 502, "{path}: {}", a.head);
        assert_eq!(a.text(), "upstream unreachable\n", "{path}");
    }
    // The lane (and the client's connection) go on.
    client.get("/fine").await;
    let a = client.answer().await;
    assert_eq!((a.status, a.text().as_str()), (200, "fine"), "{}", a.head);
    // No connection that gave a bad answer took another request.
    let by_conn = up.targets_by_conn();
    assert_eq!(by_conn.len(), BAD.len() + 1, "{by_conn:?}");
    assert!(by_conn.iter().all(|t| t.len() == 1), "{by_conn:?}");
    drop(client);
    pc.stop().await;
}

/// RFC 9112 6.3: `Content-Length = 1*DIGIT`; a response with any other
/// value has invalid framing, and a proxy answers 502. hyper's client
/// refuses a signed value (it avoids `u64::from_str` for that reason);
/// `+5` would frame the body where a stricter hop sees none.
#[tokio::test]
async fn a_content_length_that_is_not_all_digits_is_a_502() {
    let up = Upstream::start(|peer| {
        answering(peer, |_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello".to_vec()
        })
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;
    let mut client = Client::connect(&pc).await;
    client.get("/signed-length").await;
    let a = client.answer().await;
    assert_eq!(
        (a.status, a.text().as_str()),
        (502, "upstream unreachable\n"),
        "{}",
        a.head
    );
    drop(client);
    pc.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_while_the_upstream_thinks_drops_the_exchange() {
    let up = Upstream::start(|mut peer| async move {
        if peer.head().await.is_some() {
            peer.until_closed().await;
        }
    })
    .await;
    // Far beyond the test's deadline: only the client leaving ends the
    // exchange in time.
    let pc = pollcast_for(&up, |c| c.upstream.timeout = Duration::from_secs(600)).await;
    let mut client = Client::connect(&pc).await;
    client.get("/thinking").await;
    wait_until("the request reaches the upstream", || up.heads().len() == 1).await;
    drop(client);
    wait_until("pollcast closes the upstream connection", || up.closed(0)).await;
    assert_eq!(up.targets_by_conn(), [["/thinking"]]);
    pc.stop().await;
}

#[tokio::test]
async fn an_answer_body_that_breaks_off_breaks_the_clients_answer_off() {
    let up = Upstream::start(|mut peer| async move {
        let Some(head) = peer.head().await else {
            return;
        };
        match target(&head) {
            // 100 announced, 10 sent, closed.
            "/short" => {
                peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    .await;
            }
            // A chunk, then an invalid chunk size; kept open.
            "/bad-chunk" => {
                peer.send(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n",
                )
                .await;
                peer.until_closed().await;
            }
            // A chunk, then closed without the last chunk.
            _ => {
                peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    .await;
            }
        }
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;

    // Sized: the client gets its Content-Length, fewer bytes, and the close.
    let mut client = Client::connect(&pc).await;
    client.get("/short").await;
    let wire = client.rest().await;
    let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
    let (head, body) = split_head(&text);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 100\r\n"), "{head}");
    assert!(
        body.len() < 100 && "0123456789".starts_with(body),
        "short of its length: {body:?}"
    );

    // Chunked: the client's answer ends without its last chunk.
    for path in ["/bad-chunk", "/chunked-cut"] {
        let mut client = Client::connect(&pc).await;
        client.get(path).await;
        let wire = client.rest().await;
        let text = String::from_utf8_lossy(&wire).into_owned();
        let (head, body) = split_head(&text);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked\r\n"),
            "{path}: {head}"
        );
        assert!(
            !body.contains("0\r\n\r\n") && !body.contains("xx"),
            "{path}: broken off, without the last chunk: {body:?}"
        );
    }
    pc.stop().await;
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_a_504() {
    let up = Upstream::start(|mut peer| async move {
        if peer.conn > 0 {
            return answering(peer, |t| sized("200 OK", t)).await;
        }
        // Reads the request, answers never (and sees whatever else comes).
        if peer.head().await.is_some() {
            peer.until_closed().await;
        }
    })
    .await;
    let pc = pollcast_for(&up, |c| c.upstream.timeout = Duration::from_millis(300)).await;

    let mut client = Client::connect(&pc).await;
    let asked = Instant::now();
    client.get("/silent").await;
    let a = client.answer().await;
    let took = asked.elapsed();
    assert_eq!(a.status, 504, "{}", a.head);
    assert_eq!(a.text(), "upstream did not answer in time\n");
    assert!(
        took >= Duration::from_millis(280),
        "504 after only {took:?}"
    );
    // The exchange is dropped with its connection (a late answer must never
    // be taken for the next request's).
    wait_until("pollcast closes the silent connection", || up.closed(0)).await;
    client.get("/after").await;
    let a = client.answer().await;
    assert_eq!((a.status, a.text().as_str()), (200, "/after"), "{}", a.head);
    assert_eq!(up.targets_by_conn(), [vec!["/silent"], vec!["/after"]]);
    drop(client);
    pc.stop().await;
}

// ---------------------------------------------------------------------------
// Heads
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_upstream_sees_the_rewritten_head() {
    let up = Upstream::start(|peer| answering(peer, |_| sized("200 OK", "ok"))).await;
    let pc = pollcast_for(&up, |_| {}).await;
    let mut client = Client::connect(&pc).await;
    client
        .send(
            "GET /path?q=1 HTTP/1.1\r\n\
             Host: public.example:8443\r\n\
             Connection: keep-alive, x-secret\r\n\
             X-Secret: 1\r\n\
             Keep-Alive: timeout=5\r\n\
             Proxy-Authorization: x\r\n\
             Proxy-Connection: keep-alive\r\n\
             X-Forwarded-For: 6.6.6.6\r\n\
             X-Forwarded-Host: evil.example\r\n\
             X-Forwarded-Proto: https\r\n\
             Forwarded: for=6.6.6.6\r\n\
             X-Real-IP: 6.6.6.6\r\n\
             Accept: text/plain\r\n\
             User-Agent: express-test\r\n\
             X-Kept: yes\r\n\
             \r\n",
        )
        .await;
    let a = client.answer().await;
    assert_eq!((a.status, a.text().as_str()), (200, "ok"), "{}", a.head);

    let heads = up.heads();
    assert_eq!(heads.len(), 1, "exactly one request: {heads:?}");
    let head = &heads[0].1;
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("GET /path?q=1 HTTP/1.1"), "{head}");
    let mut fields: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a field line");
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    fields.sort();
    let mut expected: Vec<(String, String)> = [
        ("accept", "text/plain".to_owned()),
        ("host", up.addr.to_string()),
        ("user-agent", "express-test".to_owned()),
        ("x-forwarded-for", "127.0.0.1".to_owned()),
        ("x-forwarded-host", "public.example:8443".to_owned()),
        ("x-forwarded-proto", "http".to_owned()),
        ("x-kept", "yes".to_owned()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    expected.sort();
    // Hop-by-hop fields (and the one `Connection` names) are gone; the
    // loopback client is no trusted proxy (none is by default), so its
    // forwarding fields are replaced; the upstream gets its own `Host`.
    assert_eq!(fields, expected, "{head}");
    drop(client);
    pc.stop().await;
}

#[tokio::test]
async fn plain_gets_take_the_express_lane() {
    // The lane moves field lines as they are, names in the case sent; the
    // general path goes through header maps, which lowercase them. So the
    // case the upstream sees tells which way a request went, and the
    // control (a request the lane does not take) shows the tell works.
    let up = Upstream::start(|peer| {
        answering(peer, |_| {
            b"HTTP/1.1 200 OK\r\nX-Upstream-Said: so\r\nContent-Length: 2\r\n\r\nok".to_vec()
        })
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;
    let mut client = Client::connect(&pc).await;
    client
        .send("GET /plain HTTP/1.1\r\nHost: client.example\r\nX-Client-Said: so\r\n\r\n")
        .await;
    let a = client.answer().await;
    assert_eq!(a.text(), "ok");
    assert!(
        a.head.contains("\r\nX-Upstream-Said: so\r\n"),
        "the answer's field as the upstream wrote it: {}",
        a.head
    );
    // `TE` makes it the general path's.
    client
        .send(
            "GET /general HTTP/1.1\r\nHost: client.example\r\nTE: trailers\r\nX-Client-Said: so\r\n\r\n",
        )
        .await;
    let a = client.answer().await;
    assert_eq!(a.text(), "ok");
    assert!(a.head.contains("\r\nx-upstream-said: so\r\n"), "{}", a.head);

    let heads = up.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].1.starts_with("GET /plain HTTP/1.1\r\n"));
    assert!(
        heads[0].1.contains("\r\nX-Client-Said: so\r\n"),
        "the express lane passes the line as sent: {}",
        heads[0].1
    );
    assert!(heads[1].1.starts_with("GET /general HTTP/1.1\r\n"));
    assert!(
        heads[1].1.contains("\r\nx-client-said: so\r\n"),
        "the general path lowercases: {}",
        heads[1].1
    );
    drop(client);
    pc.stop().await;
}

#[tokio::test]
async fn pipelined_gets_are_answered_in_order() {
    let big = "one".repeat(10_000);
    let first = big.clone();
    let up = Upstream::start(move |mut peer| {
        let first = first.clone();
        async move {
            while let Some(head) = peer.head().await {
                match target(&head) {
                    "/one" => {
                        // Late, so answers that raced would come out of order.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let mut bytes =
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                        for part in first.as_bytes().chunks(4096) {
                            bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                            bytes.extend_from_slice(part);
                            bytes.extend_from_slice(b"\r\n");
                        }
                        bytes.extend_from_slice(b"0\r\n\r\n");
                        peer.send(&bytes).await;
                    }
                    "/two" => peer.send(&sized("200 OK", "two")).await,
                    t => peer.send(&sized("200 OK", t)).await,
                }
            }
        }
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;

    let mut client = Client::connect(&pc).await;
    // One write; the last request asks to close after its answer.
    client
        .send(
            "GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /two HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
    let one = client.answer().await;
    let two = client.answer().await;
    let three = client.answer().await;
    assert_eq!(one.status, 200, "{}", one.head);
    assert!(one.text() == big, "the first answer is the first request's");
    assert_eq!(two.text(), "two", "{}", two.head);
    assert_eq!(three.text(), "/three", "{}", three.head);
    // Only the last answer says the connection closes, and it does.
    assert!(one.all("connection").is_empty(), "{}", one.head);
    assert!(two.all("connection").is_empty(), "{}", two.head);
    assert_eq!(three.all("connection"), ["close"], "{}", three.head);
    let after = client.rest().await;
    assert!(after.is_empty(), "nothing after the last answer: {after:?}");
    let targets: Vec<String> = up
        .heads()
        .iter()
        .map(|(_, h)| target(h).to_owned())
        .collect();
    assert_eq!(targets, ["/one", "/two", "/three"]);
    pc.stop().await;
}

#[tokio::test]
async fn the_answer_head_keeps_the_upstreams_reason_and_gets_a_date() {
    const DATE: &str = "Tue, 02 Jan 2024 03:04:05 GMT";
    let up = Upstream::start(|peer| {
        answering(peer, |t| match t {
            "/fine" => b"HTTP/1.1 200 Fine Indeed\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/dated" => format!("HTTP/1.1 200 OK\r\nDate: {DATE}\r\nContent-Length: 2\r\n\r\nok")
                .into_bytes(),
            _ => format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\nContent-Length: 2\r\n\r\nok")
                .into_bytes(),
        })
    })
    .await;
    let pc = pollcast_for(&up, |_| {}).await;
    let mut client = Client::connect(&pc).await;

    client.get("/fine").await;
    let a = client.answer().await;
    assert_eq!(a.status_line, "HTTP/1.1 200 Fine Indeed", "{}", a.head);
    assert_eq!(a.text(), "ok");
    let dates = a.all("date");
    assert_eq!(dates.len(), 1, "one Date of pollcast's own: {}", a.head);
    let when = httpdate::parse_http_date(dates[0]).expect("an HTTP date");
    let skew = SystemTime::now()
        .duration_since(when)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(60),
        "a Date of now: {}",
        dates[0]
    );

    for path in ["/dated", "/dated-lowercase"] {
        client.get(path).await;
        let a = client.answer().await;
        assert_eq!(a.status_line, "HTTP/1.1 200 OK", "{path}: {}", a.head);
        assert_eq!(
            a.all("date"),
            [DATE],
            "{path}: the upstream's Date alone: {}",
            a.head
        );
    }
    drop(client);
    pc.stop().await;
}
