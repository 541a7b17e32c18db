//! A scripted raw-TCP upstream and a raw HTTP/1.1 client, for the express
//! lane's tests (`tests/express_answers.rs`, `tests/express_requests.rs`).
//!
//! The upstream records each request head it read, on which of its accepted
//! connections, and which connections pollcast closed; what each connection
//! answers, byte for byte, is the test's. The client reads answers off the
//! wire as they are framed, so framing, status lines and fields can be
//! checked exactly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pollcast::config::{Config, UpstreamUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::within;

// ---------------------------------------------------------------------------
// The scripted upstream
// ---------------------------------------------------------------------------

/// What the scripted upstream saw.
#[derive(Default)]
pub struct Log {
    /// TCP connections accepted; connection `n` is the `n`th accepted (from 0).
    pub accepted: usize,
    /// Every request head read, with its connection, in the order read.
    pub heads: Vec<(usize, String)>,
    /// Connections on which pollcast closed its side (or reset).
    pub closed: Vec<usize>,
}

/// A raw-TCP upstream on an ephemeral loopback port; what each connection
/// does is the test's `serve` function.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
}

impl Upstream {
    pub async fn start<F, Fut>(serve: F) -> Self
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

    pub fn accepted(&self) -> usize {
        self.log.lock().unwrap().accepted
    }

    /// The request heads read so far, with their connections.
    pub fn heads(&self) -> Vec<(usize, String)> {
        self.log.lock().unwrap().heads.clone()
    }

    /// The request targets read on each connection (index: connection).
    pub fn targets_by_conn(&self) -> Vec<Vec<String>> {
        let log = self.log.lock().unwrap();
        let mut by = vec![Vec::new(); log.accepted];
        for (conn, head) in &log.heads {
            by[*conn].push(target(head).to_owned());
        }
        by
    }

    pub fn closed(&self, conn: usize) -> bool {
        self.log.lock().unwrap().closed.contains(&conn)
    }
}

/// One accepted connection of the scripted upstream.
pub struct Peer {
    /// Its number, in the order accepted (from 0).
    pub conn: usize,
    pub io: TcpStream,
    pub buf: Vec<u8>,
    pub log: Arc<Mutex<Log>>,
}

impl Peer {
    /// The next request head (recorded), or `None` once pollcast closed
    /// the connection (recorded too).
    pub async fn head(&mut self) -> Option<String> {
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
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// Answer nothing more, but keep reading (and recording) until pollcast
    /// closes the connection: a request sent on it would be seen.
    pub async fn until_closed(mut self) {
        while self.head().await.is_some() {}
    }
}

/// Answer every request on the connection with `answer(target)`, for as
/// long as pollcast keeps it open.
pub async fn answering(mut peer: Peer, answer: impl Fn(&str) -> Vec<u8>) {
    while let Some(head) = peer.head().await {
        let bytes = answer(target(&head));
        peer.send(&bytes).await;
    }
}

/// A `Content-Length` answer: `status` is the status line after the version.
pub fn sized(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The request target of a head (`GET <target> HTTP/1.1`).
pub fn target(head: &str) -> &str {
    head.split(' ').nth(1).expect("a request line")
}

/// A message's head (its last field line's break included) and the rest.
pub fn split_head(text: &str) -> (&str, &str) {
    let end = text.find("\r\n\r\n").expect("a whole head");
    (&text[..end + 2], &text[end + 4..])
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `n` bytes of printable text that shows where a slip happened.
pub fn pattern(n: usize) -> String {
    (0..n)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect::<String>()
}

// ---------------------------------------------------------------------------
// pollcast and the raw client
// ---------------------------------------------------------------------------

/// pollcast in-process, without feeds (so nothing but the test's requests
/// reaches the upstream), passing everything through to `up`.
pub async fn pollcast_for(up: &Upstream, tweak: impl FnOnce(&mut Config)) -> pollcast::Running {
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
pub struct Client {
    pub s: TcpStream,
    /// Read but not yet taken as part of an answer.
    pub buf: Vec<u8>,
}

/// One answer as it came off the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The status line as sent, without its line break.
    pub status_line: String,
    /// The head as sent, blank line included.
    pub head: String,
    /// Fields, names lowercased, in order.
    pub fields: Vec<(String, String)>,
    /// The body, undone from its framing.
    pub body: Vec<u8>,
    /// Chunked: the trailer lines after the last chunk.
    pub trailers: Vec<String>,
}

impl Answer {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a text body")
    }
}

impl Client {
    pub async fn connect(pc: &pollcast::Running) -> Self {
        let s = TcpStream::connect(pc.addr).await.expect("connect");
        Self { s, buf: Vec::new() }
    }

    pub async fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).await.expect("write");
    }

    pub async fn get(&mut self, path: &str) {
        self.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: client.example\r\n\r\n"
        ))
        .await;
    }

    pub async fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.s.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "pollcast closed the connection mid-answer; have {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    pub async fn fill(&mut self, n: usize) {
        while self.buf.len() < n {
            self.read_more().await;
        }
    }

    pub async fn line(&mut self) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8(line[..i].to_vec()).expect("a text line");
            }
            self.read_more().await;
        }
    }

    /// The next whole answer.
    pub async fn answer(&mut self) -> Answer {
        within("a whole answer", self.answer_inner()).await
    }

    pub async fn answer_inner(&mut self) -> Answer {
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
    pub async fn rest(&mut self) -> Vec<u8> {
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
