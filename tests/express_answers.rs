//! The express lane's upstream answers (`src/upstream/raw.rs`,
//! `src/upstream/pool.rs`, `src/direct`), against a scripted raw-TCP
//! upstream (`common::scripted`): framing (chunked with extensions and
//! trailers decoded and re-chunked without them, read-until-close
//! re-chunked, informational answers skipped), when an upstream connection
//! is reused or replaced (a pooled connection the upstream closed, with and
//! without reading the request first; bytes past the answer;
//! `Connection: close` and HTTP/1.0 answers; a client that leaves mid-body),
//! the 502 of a malformed answer head, the 504 of a silent upstream and an
//! answer body that breaks off.
//!
//! Nothing sleeps and hopes: every wait has a deadline ([`within`],
//! [`wait_until`]).

mod common;

use std::time::{Duration, Instant};

use common::scripted::*;
use common::{wait_until, within};
use tokio::io::AsyncWriteExt;

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
