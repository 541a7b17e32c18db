//! A subscriber whose peer vanishes without a FIN or a RST (half-open: the
//! machine lost power, a NAT forgot the flow, a cable was pulled) is found by
//! the keepalives pollcast writes to it: they are never acknowledged, the
//! kernel gives up after `TCP_USER_TIMEOUT` (= `sse.write_timeout`), and the
//! connection, its subscriber and its feed claim are released.
//!
//! A real half-open peer needs a second network stack: the client's socket
//! lives in its own network namespace, joined to ours by a veth pair with a
//! private /30 from the benchmarking range 198.18.0.0/15 (RFC 2544). Setting
//! the namespace's end of the pair down makes the client vanish: its socket
//! stays open and ESTABLISHED (it sends nothing, not even a FIN), and nothing
//! pollcast sends reaches it any more. Needs root and iproute2's `ip`; without
//! them the test fails when `CI=true` and is skipped (saying why) otherwise.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// A network namespace joined to ours by a veth pair; removed on drop (also
/// when the test panics).
struct Netns {
    name: String,
    /// Our end of the pair (deleting it deletes both ends).
    host_if: String,
    /// The namespace's end.
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

const NS_PREFIX: &str = "pollcast-halfopen-";

impl Netns {
    /// A fresh namespace and veth pair, named after this process (and a
    /// counter) so that parallel runs never share one.
    fn create() -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        remove_stale_namespaces();
        let (pid, n) = (std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let name = format!("{NS_PREFIX}{pid}-{n}");
        // Interface names have at most 15 bytes.
        let host_if = format!("pho{:x}h{n}", pid);
        let ns_if = format!("pho{:x}n{n}", pid);
        let (host_ip, ns_ip) = free_subnet(pid, n)?;
        ip(&["netns", "add", &name])?;
        // From here on, drop cleans up whatever was made.
        let ns = Self {
            name,
            host_if,
            ns_if,
            host_ip,
            ns_ip,
        };
        let (h, s) = (format!("{host_ip}/30"), format!("{ns_ip}/30"));
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
            "netns",
            &ns.name,
        ])?;
        ip(&["addr", "add", &h, "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", &s, "dev", &ns.ns_if])?;
        ip(&["-n", &ns.name, "link", "set", &ns.ns_if, "up"])?;
        Ok(ns)
    }

    /// Where the namespace can be opened (for `setns`).
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// The client's machine vanishes: its link goes down, so nothing it
    /// could send (FIN, RST, ACK) leaves, and nothing reaches it.
    fn vanish(&self) {
        ip(&["-n", &self.name, "link", "set", &self.ns_if, "down"]).expect("link down");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A TCP connection to `addr` whose socket belongs to the namespace at
/// `path` (a socket keeps the namespace it was created in). Blocking.
fn connect_in(path: &str, addr: SocketAddr) -> StdTcpStream {
    let path = path.to_owned();
    // Only this short-lived thread enters the namespace.
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid namespace fd; setns changes only this thread.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        StdTcpStream::connect_timeout(&addr, DEADLINE).expect("connect from the namespace")
    })
    .join()
    .expect("namespace thread")
}

/// Namespaces of earlier runs that were killed before their drop ran.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// A /30 in 198.18.0.0/15 that no interface uses yet: (our address, the namespace's).
fn free_subnet(pid: u32, n: u32) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let used = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    let used = String::from_utf8_lossy(&used.stdout).into_owned();
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    for k in 0..1024 {
        let slot = (pid.wrapping_mul(31).wrapping_add(n * 7).wrapping_add(k)) % (1 << 15);
        let host = Ipv4Addr::from(base + slot * 4 + 1);
        if !used.contains(&format!(" {host}/")) {
            return Ok((host, Ipv4Addr::from(base + slot * 4 + 2)));
        }
    }
    Err("no free /30 in 198.18.0.0/15".into())
}

/// The namespace, or `None` (after saying why) when this machine cannot
/// make one outside CI.
fn netns_or_skip() -> Option<Netns> {
    match Netns::create() {
        Ok(ns) => Some(ns),
        Err(e) => {
            let why = format!(
                "half-open test needs root and iproute2 (`ip netns`, veth): {e}. \
                 .ci/run installs iproute2; run the tests as root"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            // Straight to stderr: libtest would swallow eprintln! of a passing test.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

/// `TCP_ESTABLISHED` in Linux's include/net/tcp_states.h (not in the libc crate).
const TCP_ESTABLISHED: u8 = 1;

/// The kernel's view of a socket's TCP state.
fn tcp_state(s: &StdTcpStream) -> u8 {
    // SAFETY: tcp_info is plain data; getsockopt fills at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_state
}

fn list(version: usize) -> Value {
    json!([{"id": 1, "version": version}, {"id": 2}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_without_fin_is_detected_by_keepalives_and_released() {
    let Some(ns) = netns_or_skip() else { return };
    const KEEPALIVE: Duration = Duration::from_millis(250);
    const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

    let up = TestUpstream::start().await;
    up.set("/api/jobs?f=quiet", list(0));
    up.set("/api/jobs?f=busy", list(0));
    let mut cfg = config(&up);
    // Our end of the veth pair: reachable from the namespace, and from this
    // process over the loopback device (a local address), nowhere else.
    cfg.server.listen = SocketAddr::from((ns.host_ip, 0));
    cfg.sse.keepalive = KEEPALIVE;
    cfg.sse.write_timeout = WRITE_TIMEOUT;
    let pc = pollcast::start(cfg).await.expect("start");
    let base = format!("http://{}", pc.addr);

    // Two normal subscribers (our namespace, over loopback): one on the
    // quiet feed the vanishing client follows, one on a busy feed.
    let mut neighbour = Sse::connect(&format!("{base}/sse/jobs?f=quiet")).await;
    assert_eq!(neighbour.next().await.event, "snapshot");
    let mut busy = Sse::connect(&format!("{base}/sse/jobs?f=busy")).await;
    assert_eq!(busy.next().await.event, "snapshot");

    // The client in the namespace: an HTTP/1.1 SSE request over its socket.
    let sock = tokio::task::spawn_blocking({
        let (path, addr) = (ns.path(), pc.addr);
        move || connect_in(&path, addr)
    })
    .await
    .expect("connect");
    let probe = sock.try_clone().expect("dup");
    sock.set_nonblocking(true).expect("nonblocking");
    let io = tokio::net::TcpStream::from_std(sock).expect("tokio socket");
    assert_eq!(
        io.local_addr().expect("local addr").ip(),
        ns.ns_ip,
        "the client's socket is the namespace's"
    );
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    let client_conn = tokio::spawn(conn);
    let req = http::Request::get("/sse/jobs?f=quiet")
        .header("host", pc.addr.to_string())
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = within("the namespace client's response", send.send_request(req))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let mut vanishing = Sse::from_response(resp);
    let snap = vanishing.next().await;
    assert_eq!(snap.event, "snapshot");
    assert_eq!(data(&snap)["items"], list(0));
    wait_until("three subscribers", || pc.registry.subscribers() == 3).await;

    // It vanishes. From now on the quiet feed sends it nothing but a
    // keepalive every KEEPALIVE; no event, so no write ever blocks: only
    // unacknowledged data can reveal that it is gone.
    ns.vanish();
    let gone = Instant::now();
    let mut round = 0;
    within("the half-open subscriber is detected and released", async {
        while pc.registry.subscribers() > 2 {
            // Meanwhile the busy feed's subscriber gets every change.
            round += 1;
            up.set("/api/jobs?f=busy", list(round));
            let e = busy.next().await;
            assert_eq!(e.event, "updated");
            assert_eq!(data(&e)["item"]["version"], round);
        }
    })
    .await;
    let detected = gone.elapsed();
    eprintln!("half-open subscriber released {detected:?} after it vanished ({round} busy rounds meanwhile)");
    // Not an immediate local error: the kernel waited for acknowledgements
    // for the whole TCP_USER_TIMEOUT.
    assert!(
        detected >= WRITE_TIMEOUT,
        "released after {detected:?}, before the write timeout"
    );
    let stats = pc.shared.stats();
    assert_eq!(
        stats.write_timeouts, 1,
        "closed because writes failed: {stats:?}"
    );
    assert_eq!(stats.subscribers, 2, "{stats:?}");
    let metrics = pc.shared.metrics_text();
    assert!(
        metrics.contains("\npollcast_connections_write_timeout_total 1\n"),
        "{metrics}"
    );

    // It really was half-open: the client never saw pollcast close (no FIN,
    // no RST reached it) and still believes the connection is up.
    assert_eq!(tcp_state(&probe), TCP_ESTABLISHED);
    assert!(
        !client_conn.is_finished(),
        "the client saw its connection end"
    );

    // The quiet feed lives on for the neighbour, who was never cut although
    // it, too, only got keepalives all that time.
    up.set("/api/jobs?f=quiet", list(1));
    let e = neighbour.next().await;
    assert_eq!(e.event, "updated");
    assert_eq!(data(&e)["item"]["version"], 1);

    drop((neighbour, busy, vanishing, send, probe));
    client_conn.abort();
    wait_until("nothing left", || {
        pc.registry.subscribers() == 0
            && pc.registry.live_feeds() == 0
            && pc.registry.live_pollers() == 0
    })
    .await;
    pc.stop().await;
}
