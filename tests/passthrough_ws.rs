//! WebSocket (and any `Connection: Upgrade`) through pass-through: a real
//! WebSocket client library talks to a real WebSocket echo upstream through
//! pollcast.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::passthrough::PassState;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr, path: &str) -> (Ws, http::Response<Option<Vec<u8>>>) {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", "chat".parse().expect("hv"));
    within("websocket handshake", connect_async(req))
        .await
        .expect("handshake through pollcast")
}

/// The next data or control message, failing on end, error or deadline.
async fn next(ws: &mut Ws) -> Message {
    match within("websocket message", ws.next()).await {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("websocket error: {e}"),
        None => panic!("websocket ended"),
    }
}

#[tokio::test]
async fn text_binary_ping_and_one_mib_frames_echo_through_pollcast() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let (mut ws, resp) = connect(pc.addr, "/pt/ws").await;
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "chat",
        "the upstream's subprotocol choice reaches the client"
    );
    let seen = up.pass.head("/pt/ws").expect("upstream saw the handshake");
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["sec-websocket-protocol"], "chat");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");

    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("hello"));

    let bin = Bytes::from((0..=255u8).cycle().take(4096).collect::<Vec<u8>>());
    ws.send(Message::Binary(bin.clone())).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::Binary(bin));

    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("ping");
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(Bytes::from_static(b"are you there"))
    );

    let big_text = "a".repeat(1 << 20);
    ws.send(Message::text(big_text.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::text(big_text));
    let big_bin = Bytes::from(
        (0..(1usize << 20))
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    );
    ws.send(Message::Binary(big_bin.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::Binary(big_bin));

    // The client closes with its own code: the upstream sees it and echoes it.
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "client done".into(),
    })))
    .await
    .expect("close");
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4000),
        other => panic!("expected the close echo, got {other:?}"),
    }
    assert!(
        within("end after close", ws.next()).await.is_none(),
        "the stream ends after the close handshake"
    );
    assert_eq!(*up.pass.ws_closes.lock().unwrap(), vec![4000]);
    // Both halves of the tunnel are gone once the close handshake is done.
    wait_until("upstream websocket task ended", || {
        PassState::count(&up.pass.ws_ended) == 1
    })
    .await;
    pc.stop().await;
}

#[tokio::test]
async fn an_upstream_close_code_reaches_the_client() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let (mut ws, _) = connect(pc.addr, "/pt/ws").await;
    ws.send(Message::text("close:4002")).await.expect("send");
    match next(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4002);
            assert_eq!(f.reason.as_str(), "server says bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Let tungstenite complete the close handshake.
    assert!(within("end after close", ws.next()).await.is_none());
    pc.stop().await;
}

#[tokio::test]
async fn many_websockets_at_once_each_get_their_own_echo() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let clients = (0..20).map(|i| async move {
        let (mut ws, _) = connect(pc.addr, "/pt/ws").await;
        for j in 0..10 {
            let text = format!("client {i} message {j}");
            ws.send(Message::text(text.clone())).await.expect("send");
            assert_eq!(next(&mut ws).await, Message::text(text));
        }
        ws.close(None).await.expect("close");
    });
    futures_util::future::join_all(clients).await;
    wait_until("all 20 upstream websockets ended", || {
        PassState::count(&up.pass.ws_ended) == 20
    })
    .await;
    pc.stop().await;
}

#[tokio::test]
async fn a_refused_upgrade_passes_the_upstreams_answer_through() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let err = within(
        "refused handshake",
        connect_async(format!("ws://{}/pt/ws?refuse=1", pc.addr)),
    )
    .await
    .expect_err("the upstream refuses");
    match err {
        WsError::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected the upstream's 403, got {other}"),
    }
    assert_eq!(PassState::count(&up.pass.ws_open), 0);
    pc.stop().await;
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_after_the_drain() {
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.server.drain_timeout = Duration::from_millis(300);
    let pc = pollcast::start(cfg).await.expect("start");
    let (mut ws, _) = connect(pc.addr, "/pt/ws").await;
    ws.send(Message::text("before")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("before"));
    within("stop with an open tunnel", pc.stop()).await;
    // The tunnel is gone: the client sees its connection end, not a hang.
    match within("client sees the end", ws.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => panic!("expected the connection to end, got {m:?}"),
    }
    wait_until("upstream side closed too", || {
        PassState::count(&up.pass.ws_ended) == 1
    })
    .await;
}

#[tokio::test]
async fn h2c_upgrade_is_not_forwarded_and_connect_is_refused() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");

    // An h2c upgrade is served as a plain HTTP/1.1 request.
    let mut s = tokio::net::TcpStream::connect(pc.addr)
        .await
        .expect("connect");
    s.write_all(
        b"GET /echo/h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = within("h2c answer", s.read(&mut buf)).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = up.seen("/echo/h2c");
    assert!(!seen[0].headers.contains_key("upgrade"));
    assert!(!seen[0].headers.contains_key("http2-settings"));

    let mut s = tokio::net::TcpStream::connect(pc.addr)
        .await
        .expect("connect");
    s.write_all(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
        .await
        .expect("write");
    let n = within("CONNECT answer", s.read(&mut buf))
        .await
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(up.hits("/"), 1, "only the h2c request reached the upstream");
    pc.stop().await;
}

#[tokio::test]
async fn websockets_work_over_pollcasts_tls_listener() {
    use std::sync::Arc;
    use tokio_rustls::rustls::crypto::ring;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.server.tls = Some(pollcast::config::TlsConfig { cert, key });
    let pc = pollcast::start(cfg).await.expect("start");

    let mut roots = RootCertStore::empty();
    roots.add(ck.cert.der().clone()).expect("root");
    let mut tls_cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Browsers open WebSockets over HTTP/1.1.
    tls_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(pc.addr)
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_cfg))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let url = format!("wss://localhost:{}/pt/ws", pc.addr.port());
    let (mut ws, resp) = within("wss handshake", tokio_tungstenite::client_async(url, tls))
        .await
        .expect("handshake through pollcast's TLS listener");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("over tls")).await.expect("send");
    match within("echo", ws.next()).await {
        Some(Ok(m)) => assert_eq!(m, Message::text("over tls")),
        other => panic!("expected the echo, got {other:?}"),
    }
    let seen = up.pass.head("/pt/ws").expect("upstream saw the handshake");
    assert_eq!(seen["x-forwarded-proto"], "https");
    ws.close(None).await.expect("close");
    pc.stop().await;
}
