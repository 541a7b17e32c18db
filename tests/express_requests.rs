//! The express lane's request side (`src/direct`, `src/proxy/express.rs`,
//! `src/proxy/lines.rs`), against a scripted raw-TCP upstream
//! (`common::scripted`): the request head the upstream gets (hop-by-hop
//! fields dropped, `X-Forwarded-*` and `Host` rewritten), that plain `GET`s
//! take the lane, pipelined requests answered in order, and the answer
//! head's reason phrase and `Date`.
//!
//! Nothing sleeps and hopes: every wait has a deadline.

mod common;

use std::time::{Duration, SystemTime};

use common::scripted::*;

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
