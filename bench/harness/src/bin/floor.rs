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

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pollcast_bench::{arg, now_us};

const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";

fn duration(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("duration"))
    } else {
        Duration::from_secs_f64(s.trim_end_matches('s').parse().expect("duration"))
    }
}

/// Read the request head (a subscriber sends it at once), then answer.
fn admit(mut s: TcpStream, snapshot: &[u8]) -> Option<TcpStream> {
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
    s.write_all(HEAD).ok()?;
    if !snapshot.is_empty() {
        s.write_all(snapshot).ok()?;
    }
    Some(s)
}

/// Listen with the backlog pollcast has (tokio's 1024; std's is 128), so a burst of
/// connections is not dropped and retried a second later by the kernel.
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
            s.listen(1024)?.into_std()
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
    let listener = bind(&listen);
    let pad = "x".repeat(size.saturating_sub(80));
    let mut subs: Vec<TcpStream> = Vec::new();
    let mut next = Instant::now() + every;
    let mut seq = 0;
    while seq < count {
        // Between events: take whoever connected.
        loop {
            match listener.accept() {
                Ok((s, _)) => subs.extend(admit(s, &snapshot)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
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
        subs.retain_mut(|s| s.write_all(event.as_bytes()).is_ok());
        // How long the writing itself took: what the spread the clients see
        // owes to the server, as against to the clients' reading.
        eprintln!(
            "event {seq}: {} subscribers written in {} us",
            subs.len(),
            now_us().saturating_sub(t)
        );
        seq += 1;
    }
}
