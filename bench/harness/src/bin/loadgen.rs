//! The load generator: many SSE subscribers (or many direct pollers) from one
//! process, bound to one source address, recording every event's receive time.
//!
//! ```text
//! loadgen sse  --url http://127.0.0.1:8080/sse/jobs --conns 5000 --src 127.0.0.2 \
//!              --start-at <unix µs> --stop-at <unix µs> --out deliveries.txt
//! loadgen poll --url http://127.0.0.1:9001/api/jobs --conns 1000 --every 2s ... (same)
//! ```
//! It prints `ready <connected> <failed>` once every connection has its
//! response head, and at `--stop-at` writes, per delivery inside the window,
//! `<served_at> <changed_at> <received_at>` (µs since the Unix epoch; stamps
//! are read from the event data), then a summary line per process:
//! `# conns <ok> failed <n> min_events <a> max_events <b>`.
//!
//! HTTP/1.1 is spoken by hand (chunked decoding, SSE line parsing): the tool
//! must hold 19,000 connections in a few megabytes, not measure a client library.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pollcast_bench::{arg, now_us};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Events stamped in the last 3 s before `--stop-at` are not counted: they
/// may still be on their way when reading stops.
const GRACE_US: u64 = 3_000_000;

/// Connection attempts refused with a non-200 status and retried.
static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// Storm reconnects the server answered with a non-200 status (a limit).
static REFUSED: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone)]
struct Opts {
    server: SocketAddr,
    host: String,
    path: String,
    src: IpAddr,
    start_at: u64,
    stop_at: u64,
    every: Duration,
}

/// What all connections of this process collected.
#[derive(Default)]
struct Record {
    deliveries: Vec<(u64, u64, u64)>,
    per_conn: Vec<usize>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let url = arg(&args, "--url", "http://127.0.0.1:8080/sse/jobs");
    let rest = url.strip_prefix("http://").expect("http:// url");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let opts = Opts {
        server: authority.parse().expect("url authority must be ip:port"),
        host: authority.to_owned(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        src: arg(&args, "--src", "127.0.0.1").parse().expect("src"),
        start_at: arg(&args, "--start-at", "0").parse().expect("start-at"),
        stop_at: arg(&args, "--stop-at", "0").parse().expect("stop-at"),
        every: Duration::from_millis(arg(&args, "--every-ms", "2000").parse().expect("every")),
    };
    let conns: usize = arg(&args, "--conns", "100").parse().expect("conns");
    let out = arg(&args, "--out", "deliveries.txt");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let record = Arc::new(Mutex::new(Record::default()));
        let ready = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        // Connect at most this many at once, so listen backlogs are not flooded.
        let parallel: usize = arg(&args, "--parallel", "256").parse().expect("parallel");
        let gate = Arc::new(Semaphore::new(parallel));
        let mut tasks = Vec::with_capacity(conns);
        for i in 0..conns {
            let (o, rec, rdy, fl, gate) = (
                opts.clone(),
                record.clone(),
                ready.clone(),
                failed.clone(),
                gate.clone(),
            );
            let poll = mode == "poll";
            let storm = mode == "storm";
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.ok();
                let r = if poll {
                    poller(&o, i, permit, &rdy, &rec).await
                } else if storm {
                    stormer(&o, permit, &rdy, &rec).await
                } else {
                    subscriber(&o, permit, &rdy, &rec).await
                };
                if let Err(e) = r {
                    if fl.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connection failed: {e}");
                    }
                }
            }));
        }
        // Report readiness once every connection has its head or failed.
        let (rdy, fl) = (ready.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                let (r, f) = (rdy.load(Ordering::Relaxed), fl.load(Ordering::Relaxed));
                if r + f >= conns {
                    println!("ready {r} {f}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        // Every connection stops reading at `stop_at` and records what it got.
        let wait = opts.stop_at.saturating_sub(now_us()) + 3_000_000;
        let _ = tokio::time::timeout(Duration::from_micros(wait), async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
        let rec = record.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::with_capacity(rec.deliveries.len() * 48);
        for (s, c, r) in &rec.deliveries {
            text.push_str(&format!("{s} {c} {r}\n"));
        }
        let ok = ready.load(Ordering::Relaxed);
        let min = rec.per_conn.iter().min().copied().unwrap_or(0);
        let max = rec.per_conn.iter().max().copied().unwrap_or(0);
        text.push_str(&format!(
            "# conns {ok} failed {} min_events {min} max_events {max} reporting {} retries {} refused {}\n",
            failed.load(Ordering::Relaxed),
            rec.per_conn.len(),
            RETRIES.load(Ordering::Relaxed),
            REFUSED.load(Ordering::Relaxed)
        ));
        std::fs::write(&out, text).expect("write results");
        std::process::exit(0);
    });
}

async fn connect(o: &Opts) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    // The port is picked at connect time, by the whole 4-tuple: a bind to
    // port 0 otherwise searches this address's bound ports (~20 us each at
    // 5,000 held connections, strace -c), which made a reconnect storm cost
    // the client more kernel time than the server it measures.
    no_port_at_bind(&sock)?;
    sock.bind(SocketAddr::new(o.src, 0))?;
    let s = sock.connect(o.server).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux): bind the address now, the port at
/// connect.
fn no_port_at_bind(sock: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to an int of the
    // length given, as setsockopt(2) expects for this option.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Read until the end of the response head; returns (head, bytes after it).
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(String, Vec<u8>)> {
    loop {
        if let Some(i) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let rest = buf[i + 4..].to_vec();
            return Ok((head, rest));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The number after `key` in `data` (e.g. `"served_at":`).
fn stamp(data: &[u8], key: &[u8]) -> Option<u64> {
    let i = memchr::memmem::find(data, key)? + key.len();
    let digits = data[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&data[i..i + digits]).ok()?.parse().ok()
}

/// Incremental SSE parser over a (de-chunked) byte stream.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    /// The last `id:` field seen (what an EventSource sends as `Last-Event-ID`).
    last_id: Vec<u8>,
}

impl SseParser {
    /// Line-wise: whole lines are found with memchr and handled as slices,
    /// so the client costs little per byte (it shares a core with the other
    /// load processes, and must not be what the benchmark measures).
    fn feed(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
        while let Some(nl) = memchr::memchr(b'\n', bytes) {
            let (part, rest) = (&bytes[..nl], &bytes[nl + 1..]);
            bytes = rest;
            let joined;
            let mut line: &[u8] = if self.line.is_empty() {
                part
            } else {
                self.line.extend_from_slice(part);
                joined = std::mem::take(&mut self.line);
                &joined
            };
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    on_event(&self.event, &self.data);
                }
                self.event.clear();
                self.data.clear();
            } else if let Some(v) = line.strip_prefix(b"data:") {
                self.data
                    .extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
            } else if let Some(v) = line.strip_prefix(b"id:") {
                self.last_id.clear();
                self.last_id
                    .extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
            } else if let Some(v) = line.strip_prefix(b"event:") {
                self.event.clear();
                self.event
                    .extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
            }
        }
        self.line.extend_from_slice(bytes);
    }
}

#[derive(Default)]
struct Dechunk {
    /// Bytes left in the current chunk; `None` while reading a size line.
    left: Option<usize>,
    size_line: Vec<u8>,
    /// CRLF after a chunk still to skip.
    skip: usize,
}

impl Dechunk {
    fn feed(&mut self, mut bytes: &[u8], out: &mut impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            match self.left {
                Some(left) => {
                    let n = left.min(bytes.len());
                    out(&bytes[..n]);
                    bytes = &bytes[n..];
                    if n == left {
                        self.left = None;
                        self.skip = 2;
                    } else {
                        self.left = Some(left - n);
                    }
                }
                None => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        let line = String::from_utf8_lossy(&self.size_line);
                        let hex = line.trim().split(';').next().unwrap_or("0").to_owned();
                        self.size_line.clear();
                        let size = usize::from_str_radix(hex.trim(), 16).unwrap_or(0);
                        if size > 0 {
                            self.left = Some(size);
                        }
                    } else {
                        self.size_line.push(b);
                    }
                }
            }
        }
    }
}

async fn subscriber(
    o: &Opts,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ready: &AtomicUsize,
    record: &Mutex<Record>,
) -> std::io::Result<()> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        o.path, o.host
    );
    // A server refusing during a connection burst (e.g. a 502) is retried a
    // few times, as an EventSource behind a reconnecting wrapper would; the
    // retries are counted.
    let mut attempt = 0;
    let (mut s, head, rest) = loop {
        let mut s = connect(o).await?;
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let (head, rest) = read_head(&mut s, &mut buf).await?;
        if head.starts_with("http/1.1 200") {
            break (s, head, rest);
        }
        attempt += 1;
        RETRIES.fetch_add(1, Ordering::Relaxed);
        if attempt >= 10 {
            return Err(std::io::Error::other(format!(
                "status: {}",
                head.lines().next().unwrap_or("")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    };
    ready.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let chunked = head.contains("transfer-encoding: chunked");
    let mut parser = SseParser::default();
    let mut dechunk = Dechunk::default();
    let mut mine: Vec<(u64, u64, u64)> = Vec::new();
    let (start, stop) = (o.start_at, o.stop_at);
    let mut on_event = |name: &[u8], data: &[u8]| {
        if name == b"snapshot" {
            return;
        }
        let recv = now_us();
        if let (Some(served), Some(changed)) = (
            stamp(data, b"\"served_at\":"),
            stamp(data, b"\"changed_at\":"),
        ) {
            if served >= start && served < stop - GRACE_US {
                mine.push((served, changed, recv));
            }
        }
    };
    let mut feed = |bytes: &[u8], parser: &mut SseParser, dechunk: &mut Dechunk| {
        if chunked {
            dechunk.feed(bytes, &mut |b| parser.feed(b, &mut on_event));
        } else {
            parser.feed(bytes, &mut on_event);
        }
    };
    feed(&rest, &mut parser, &mut dechunk);
    // One read takes a whole event; one deadline per connection, not a
    // timer per read.
    let mut chunk = vec![0u8; 8192];
    let deadline = tokio::time::sleep(Duration::from_micros(o.stop_at.saturating_sub(now_us())));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            r = s.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => feed(&chunk[..n], &mut parser, &mut dechunk),
            },
        }
    }
    let mut r = record.lock().unwrap_or_else(|e| e.into_inner());
    r.per_conn.push(mine.len());
    r.deliveries.extend(mine);
    Ok(())
}

/// Open an event stream (with `Last-Event-ID` when resuming): the stream,
/// whether it is chunked, and the bytes read past the head.
async fn open(o: &Opts, last_id: Option<&[u8]>) -> std::io::Result<(TcpStream, bool, Vec<u8>)> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        o.path, o.host
    )
    .into_bytes();
    if let Some(id) = last_id.filter(|id| !id.is_empty()) {
        req.extend_from_slice(b"Last-Event-ID: ");
        req.extend_from_slice(id);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let mut s = connect(o).await?;
    s.write_all(&req).await?;
    let mut buf = Vec::new();
    let (head, rest) = read_head(&mut s, &mut buf).await?;
    if !head.starts_with("http/1.1 200") {
        return Err(std::io::Error::other(format!(
            "status: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok((s, head.contains("transfer-encoding: chunked"), rest))
}

/// Read from `s` until `parser` has seen `events` more events; `false` when
/// the stream ended first.
async fn read_events(
    s: &mut TcpStream,
    chunked: bool,
    first: &[u8],
    parser: &mut SseParser,
    dechunk: &mut Dechunk,
    events: usize,
) -> bool {
    fn feed(bytes: &[u8], chunked: bool, parser: &mut SseParser, dechunk: &mut Dechunk) -> usize {
        let mut seen = 0;
        let mut on_event = |_: &[u8], _: &[u8]| seen += 1;
        if chunked {
            dechunk.feed(bytes, &mut |b| parser.feed(b, &mut on_event));
        } else {
            parser.feed(bytes, &mut on_event);
        }
        seen
    }
    let mut seen = feed(first, chunked, parser, dechunk);
    let mut chunk = vec![0u8; 65536];
    while seen < events {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen += feed(&chunk[..n], chunked, parser, dechunk),
        }
    }
    true
}

/// The reconnect storm: subscribe and take the first event (the state);
/// then, when the server drops the stream (it was restarted), reconnect at
/// once with `Last-Event-ID` and time until the state arrives again. Records
/// `<dropped_at> 0 <state_again_at>` per subscriber.
async fn stormer(
    o: &Opts,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ready: &AtomicUsize,
    record: &Mutex<Record>,
) -> std::io::Result<()> {
    let (mut s, chunked, rest) = open(o, None).await?;
    let mut parser = SseParser::default();
    let mut dechunk = Dechunk::default();
    if !read_events(&mut s, chunked, &rest, &mut parser, &mut dechunk, 1).await {
        return Err(std::io::Error::other("closed before the first event"));
    }
    ready.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    // Whatever else comes, until the server goes away.
    let _ = read_events(&mut s, chunked, &[], &mut parser, &mut dechunk, usize::MAX).await;
    let dropped = now_us();
    drop(s);
    let id = parser.last_id.clone();
    let (mut s, chunked, rest) = loop {
        match open(o, Some(&id)).await {
            Ok(x) => break x,
            Err(e) if now_us() < o.stop_at => {
                if e.to_string().starts_with("status:") {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                }
                RETRIES.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut parser = SseParser::default();
    let mut dechunk = Dechunk::default();
    if read_events(&mut s, chunked, &rest, &mut parser, &mut dechunk, 1).await {
        let mut r = record.lock().unwrap_or_else(|e| e.into_inner());
        r.per_conn.push(1);
        r.deliveries.push((dropped, 0, now_us()));
    }
    Ok(())
}

/// A client polling the list directly every `every` over one keep-alive
/// connection; a delivery is the first poll that shows a newer `changed_at`.
async fn poller(
    o: &Opts,
    i: usize,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ready: &AtomicUsize,
    record: &Mutex<Record>,
) -> std::io::Result<()> {
    let mut s = connect(o).await?;
    // The gate limits connection bursts, not the polls that follow.
    drop(permit);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
        o.path, o.host
    );
    let mut seen_max = 0u64;
    let mut mine = Vec::new();
    let mut first = true;
    // Spread the clients over the interval, as independent browsers would be.
    let phase = o.every.as_micros() as u64 * (i as u64 % 997) / 997;
    tokio::time::sleep(Duration::from_micros(phase)).await;
    let mut tick = tokio::time::interval(o.every);
    let mut buf = Vec::with_capacity(32 * 1024);
    while now_us() < o.stop_at {
        let remaining = Duration::from_micros(o.stop_at.saturating_sub(now_us()));
        if tokio::time::timeout(remaining, tick.tick()).await.is_err() {
            break;
        }
        s.write_all(req.as_bytes()).await?;
        buf.clear();
        let (head, mut body) = read_head(&mut s, &mut buf).await?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while body.len() < len {
            let mut chunk = [0u8; 16384];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed mid-body"));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let recv = now_us();
        if first {
            ready.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        // Every change newer than the last poll's is seen now.
        let key = b"\"changed_at\":";
        let mut at = 0;
        let mut newest = seen_max;
        while let Some(i) = memchr::memmem::find(&body[at..], key) {
            at += i + key.len();
            let Some(c) = stamp(&body[at - key.len()..], key) else {
                break;
            };
            if c > seen_max {
                if seen_max != 0 && c >= o.start_at && c < o.stop_at - GRACE_US {
                    mine.push((c, c, recv));
                }
                newest = newest.max(c);
            }
        }
        seen_max = newest;
    }
    let mut r = record.lock().unwrap_or_else(|e| e.into_inner());
    r.per_conn.push(mine.len());
    r.deliveries.extend(mine);
    Ok(())
}
