//! The ceiling of a tokio pass-through, for bench/profiles/README.md ("The
//! express lane"): the least a tokio program can do to pass a small `GET`
//! through on this machine. One current-thread runtime; per client
//! connection one upstream connection, the request head parsed with
//! `httparse` and written on with `X-Forwarded-For`, the answer's head and
//! `Content-Length` body copied back in one write. No header rules, no log,
//! no metrics, no timeouts, `Content-Length` answers only: a measuring
//! stick, not a proxy.
//!
//!   rawproxy [ignored arguments]   listens on 127.0.0.1:8080, forwards to 127.0.0.1:9001
//!
//! (`bench/cpu_per_request.sh` passes `--config FILE`, which is ignored.)
use std::io::{Error, ErrorKind, Result};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:8080").await?;
        loop {
            let (client, peer) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = serve(client, peer).await;
            });
        }
    })
}

fn bad(what: &'static str) -> Error {
    Error::new(ErrorKind::InvalidData, what)
}

fn head_end(b: &[u8]) -> Option<usize> {
    memchr::memmem::find(b, b"\r\n\r\n").map(|i| i + 4)
}

/// Read into `buf` until it holds a whole head; `None` at EOF.
async fn read_head(io: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>> {
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(Some(end));
        }
        let mut tmp = [0u8; 8192];
        let n = io.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive")
}

async fn serve(mut client: TcpStream, peer: SocketAddr) -> Result<()> {
    client.set_nodelay(true)?;
    let mut upstream: Option<TcpStream> = None;
    let (mut cbuf, mut ubuf) = (Vec::with_capacity(4096), Vec::with_capacity(8192));
    let (mut req, mut out) = (Vec::with_capacity(1024), Vec::with_capacity(8192));
    loop {
        let Some(end) = read_head(&mut client, &mut cbuf).await? else {
            return Ok(());
        };
        req.clear();
        {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut hs);
            r.parse(&cbuf[..end]).map_err(|_| bad("request head"))?;
            req.extend_from_slice(r.method.ok_or(bad("method"))?.as_bytes());
            req.push(b' ');
            req.extend_from_slice(r.path.ok_or(bad("target"))?.as_bytes());
            req.extend_from_slice(b" HTTP/1.1\r\n");
            for h in r.headers.iter().filter(|h| !hop_by_hop(h.name)) {
                req.extend_from_slice(h.name.as_bytes());
                req.extend_from_slice(b": ");
                req.extend_from_slice(h.value);
                req.extend_from_slice(b"\r\n");
            }
            req.extend_from_slice(format!("X-Forwarded-For: {}\r\n\r\n", peer.ip()).as_bytes());
        }
        cbuf.drain(..end);
        let up = match &mut upstream {
            Some(up) => up,
            None => {
                let up = TcpStream::connect("127.0.0.1:9001").await?;
                up.set_nodelay(true)?;
                upstream.insert(up)
            }
        };
        up.write_all(&req).await?;
        ubuf.clear();
        let Some(end) = read_head(up, &mut ubuf).await? else {
            return Ok(());
        };
        out.clear();
        let mut len = 0usize;
        {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            r.parse(&ubuf[..end]).map_err(|_| bad("answer head"))?;
            let code = r.code.ok_or(bad("status"))?;
            out.extend_from_slice(
                format!("HTTP/1.1 {code} {}\r\n", r.reason.unwrap_or("")).as_bytes(),
            );
            for h in r.headers.iter().filter(|h| !hop_by_hop(h.name)) {
                if h.name.eq_ignore_ascii_case("content-length") {
                    len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or(bad("content-length"))?;
                }
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        while ubuf.len() < end + len {
            let mut tmp = [0u8; 8192];
            let n = up.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            ubuf.extend_from_slice(&tmp[..n]);
        }
        out.extend_from_slice(&ubuf[end..end + len]);
        client.write_all(&out).await?;
    }
}
