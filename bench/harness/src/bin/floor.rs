//! The floor of fan-out: the least an SSE server can do on one core. One
//! thread accepts subscribers and, once per `--every`, writes the same event
//! bytes to every subscriber socket in turn, and nothing else: no routing, no
//! history, no keepalives, no per-subscriber state beyond the socket.
//!
//! ```text
//! floor --listen 127.0.0.1:8084 --every 1s --size 1024 --count 20
//! ```
//! Each event carries `served_at` (when the floor began writing it, the
//! moment "the server has the event") and `changed_at`, as `synth` stamps
//! them, so `loadgen` measures it exactly as it measures pollcast. Any GET is
//! a subscription; the request head is read and ignored.
//!
//! `--snapshot BYTES` makes every new subscriber first receive one event of
//! that size (the floor of a reconnect storm: the same bytes each
//! reconnecting subscriber must get, written in turn).
//!
//! `--like-pollcast` sets each socket up as pollcast does (non-blocking,
//! TCP keepalive and `TCP_USER_TIMEOUT`, registered edge-triggered for read
//! and write in an epoll set that is drained between events) and writes each
//! event as pollcast writes to a parked subscriber: one `sendmsg` of three
//! slices (chunk-size line, event, CRLF) on a chunked response. It tells
//! what pollcast's socket set-up costs per write apart from its code. The
//! log line of each event then also counts the readiness events drained.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pollcast_bench::{arg, now_us};

const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
const HEAD_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

/// pollcast's set-up of an accepted socket (`stall::tune`, tokio's
/// registration), for `--like-pollcast`.
fn like_pollcast(s: &TcpStream, epoll: i32) -> Option<()> {
    use std::os::fd::AsRawFd;
    s.set_nonblocking(true).ok()?;
    let sock = socket2::SockRef::from(s);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    sock.set_tcp_keepalive(&keepalive).ok()?;
    sock.set_tcp_user_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let fd = s.as_raw_fd();
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: fd as u64,
    };
    // SAFETY: a valid epoll fd and socket fd, and a valid event.
    let r = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    (r == 0).then_some(())
}

/// Readiness events waiting in the epoll set, taken without blocking (what
/// tokio's driver does between tasks).
fn drain(epoll: i32, events: &mut [libc::epoll_event; 1024]) -> usize {
    let mut total = 0;
    loop {
        // SAFETY: the buffer holds 1024 events.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 1024, 0) };
        if n <= 0 {
            return total;
        }
        total += n as usize;
    }
}

/// One event as pollcast writes it to a parked subscriber: chunk-size line,
/// the shared bytes, CRLF, in one `sendmsg`; a short write drops the socket.
fn send_chunk(s: &TcpStream, event: &[u8]) -> bool {
    let line = format!("{:X}\r\n", event.len());
    let slices = [
        std::io::IoSlice::new(line.as_bytes()),
        std::io::IoSlice::new(event),
        std::io::IoSlice::new(b"\r\n"),
    ];
    let want = line.len() + event.len() + 2;
    matches!(socket2::SockRef::from(s).send_vectored(&slices), Ok(n) if n == want)
}

fn duration(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("duration"))
    } else {
        Duration::from_secs_f64(s.trim_end_matches('s').parse().expect("duration"))
    }
}

/// Read the request head (a subscriber sends it at once), then answer.
fn admit(mut s: TcpStream, snapshot: &[u8], chunked: bool) -> Option<TcpStream> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_nodelay(true).ok()?;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).ok()?;
        if n == 0 || got.len() > 16 * 1024 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(if chunked { HEAD_CHUNKED } else { HEAD })
        .ok()?;
    if !snapshot.is_empty() {
        if chunked {
            s.write_all(format!("{:X}\r\n", snapshot.len()).as_bytes())
                .ok()?;
        }
        s.write_all(snapshot).ok()?;
        if chunked {
            s.write_all(b"\r\n").ok()?;
        }
    }
    Some(s)
}

/// Listen with the backlog pollcast has (4,096, src/start.rs; std's is 128),
/// so a burst of connections is not dropped and retried a second later by
/// the kernel any more than pollcast's is.
fn bind(addr: &str) -> TcpListener {
    let addr: std::net::SocketAddr = addr.parse().expect("listen address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(4096)?.into_std()
        })
        .expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen", "127.0.0.1:8084");
    let every = duration(&arg(&args, "--every", "1s"));
    let size: usize = arg(&args, "--size", "1024").parse().expect("size");
    let count: u64 = arg(&args, "--count", "20").parse().expect("count");
    let snapshot_size: usize = arg(&args, "--snapshot", "0").parse().expect("snapshot");
    let snapshot = if snapshot_size == 0 {
        Vec::new()
    } else {
        let t = now_us();
        let pad = "x".repeat(snapshot_size.saturating_sub(100));
        format!(
            "event: snapshot\ndata: {{\"changed_at\":{t},\"served_at\":{t},\"pad\":\"{pad}\"}}\n\n"
        )
        .into_bytes()
    };
    let like = args.iter().any(|a| a == "--like-pollcast");
    // SAFETY: plain syscall.
    let epoll = if like {
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }
    } else {
        -1
    };
    let mut drained = 0;
    let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 1024];
    let listener = bind(&listen);
    let pad = "x".repeat(size.saturating_sub(80));
    let mut subs: Vec<TcpStream> = Vec::new();
    let mut next = Instant::now() + every;
    let mut seq = 0;
    while seq < count {
        // Between events: take whoever connected.
        loop {
            match listener.accept() {
                Ok((s, _)) => subs.extend(
                    admit(s, &snapshot, like)
                        .filter(|s| !like || like_pollcast(s, epoll).is_some()),
                ),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        if like {
            drained += drain(epoll, &mut ready);
        }
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        next += every;
        let t = now_us();
        let event = format!(
            "event: updated\nid: {seq}\ndata: {{\"item\":{{\"id\":{seq},\"changed_at\":{t},\"served_at\":{t},\"pad\":\"{pad}\"}}}}\n\n"
        );
        // The whole of fan-out: the same bytes to each socket in turn.
        if like {
            subs.retain(|s| send_chunk(s, event.as_bytes()));
        } else {
            subs.retain_mut(|s| s.write_all(event.as_bytes()).is_ok());
        }
        // How long the writing itself took: what the spread the clients see
        // owes to the server, as against to the clients' reading.
        eprintln!(
            "event {seq}: {} subscribers written in {} us; readiness events drained since the last: {drained}",
            subs.len(),
            now_us().saturating_sub(t)
        );
        drained = 0;
        seq += 1;
    }
}
