//! Real SSE clients reading pollcast's streams: [`Sse`] parses events with
//! eventsource-stream (as a browser would), [`RawSse`] reads the raw blocks
//! for byte-exact wire checks ([`assert_wire`]).

use std::pin::Pin;

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use http_body_util::BodyExt;
use serde_json::Value;

use super::DEADLINE;

/// A real SSE client reading one pollcast stream.
pub struct Sse {
    events: Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>,
    pub status: u16,
    pub headers: HeaderMap,
}

impl Sse {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Self {
        Self::connect_using(&reqwest::Client::new(), url, headers).await
    }

    /// Connect with a client of the test's own (e.g. bound to another local address).
    pub async fn connect_using(
        client: &reqwest::Client,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Self {
        let mut req = client.get(url).header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("connect deadline")
            .expect("connect");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let events = resp
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        Self {
            events: Box::pin(events),
            status,
            headers,
        }
    }

    /// Read events from any response body (e.g. one from a hyper HTTP/2 client).
    pub fn from_response<B>(resp: http::Response<B>) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display + Send,
    {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let events = resp
            .into_body()
            .into_data_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        Self {
            events: Box::pin(events),
            status,
            headers,
        }
    }

    /// The next event, failing the test after [`DEADLINE`].
    pub async fn next(&mut self) -> Event {
        match tokio::time::timeout(DEADLINE, self.events.next()).await {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => panic!("SSE stream error: {e}"),
            Ok(None) => panic!("SSE stream ended"),
            Err(_) => panic!("no SSE event within {DEADLINE:?}"),
        }
    }

    /// The next event with this name, skipping others.
    pub async fn next_named(&mut self, name: &str) -> Event {
        loop {
            let e = self.next().await;
            if e.event == name {
                return e;
            }
        }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next_or_end(&mut self) -> Option<Event> {
        match tokio::time::timeout(DEADLINE, self.events.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("neither an event nor the end within {DEADLINE:?}"),
        }
    }
}

/// Parse an event's data as JSON.
pub fn data(e: &Event) -> Value {
    serde_json::from_str(&e.data)
        .unwrap_or_else(|err| panic!("event data is not JSON ({err}): {}", e.data))
}

/// An SSE stream read as raw bytes, block by block, for byte-exact wire checks.
pub struct RawSse {
    body: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
    buf: String,
    pub status: u16,
    pub headers: HeaderMap,
}

impl RawSse {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Self {
        let mut req = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("connect deadline")
            .expect("connect");
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next block: everything up to and including the next blank line.
    pub async fn block(&mut self) -> String {
        self.next_block()
            .await
            .unwrap_or_else(|| panic!("stream ended; unread: {:?}", self.buf))
    }

    /// The next block, or `None` when the stream ends first.
    pub async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let rest = self.buf.split_off(i + 2);
                return Some(std::mem::replace(&mut self.buf, rest));
            }
            match tokio::time::timeout(DEADLINE, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("no SSE block within {DEADLINE:?}; unread: {:?}", self.buf),
            }
        }
    }

    /// The next block, checked against `pattern` with [`assert_wire`].
    pub async fn expect(&mut self, pattern: &str) -> String {
        let b = self.block().await;
        assert_wire(&b, pattern);
        b
    }
}

/// Assert `actual` equals `pattern` byte for byte, where `{ID}` stands for a
/// pollcast event id (`<epoch>:<seq>`, composite `a:1,-`, optional `:end`)
/// and `{TS}` for an ISO 8601 UTC timestamp (`2026-01-02T03:04:05.678Z`).
pub fn assert_wire(actual: &str, pattern: &str) {
    let fail = |why: &str| -> ! {
        panic!("wire mismatch ({why})\n  expected: {pattern:?}\n  actual:   {actual:?}")
    };
    let mut a = actual;
    let mut p = pattern;
    loop {
        let next = [p.find("{ID}"), p.find("{TS}")].into_iter().flatten().min();
        let Some(at) = next else {
            if a != p {
                fail("literal text differs");
            }
            return;
        };
        let (lit, rest) = p.split_at(at);
        let Some(after) = a.strip_prefix(lit) else {
            fail("literal text differs");
        };
        let (token, rest) = rest.split_at(4);
        let allowed = |c: char| match token {
            "{ID}" => c.is_ascii_hexdigit() || matches!(c, ':' | ',' | '-' | 'n'),
            _ => c.is_ascii_digit() || matches!(c, '-' | ':' | 'T' | '.' | 'Z'),
        };
        let len = after.find(|c: char| !allowed(c)).unwrap_or(after.len());
        let value = &after[..len];
        let ok = match token {
            "{ID}" => is_event_id(value),
            _ => is_iso8601(value),
        };
        if !ok {
            fail(&format!("{value:?} is not a valid {token}"));
        }
        a = &after[len..];
        p = rest;
    }
}

/// `<12 hex>:<digits>` parts (`<12 hex>:<digits>.<digits>` for a feed that
/// counts the entries a client holds) joined by `,` (or `-`), optionally
/// ending in `:end`.
pub fn is_event_id(id: &str) -> bool {
    let id = id.strip_suffix(":end").unwrap_or(id);
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    !id.is_empty()
        && id.split(',').all(|part| {
            part == "-"
                || part.split_once(':').is_some_and(|(e, s)| {
                    e.len() == 12
                        && e.chars().all(|c| c.is_ascii_hexdigit())
                        && match s.split_once('.') {
                            Some((seq, held)) => digits(seq) && digits(held),
                            None => digits(s),
                        }
                })
        })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn is_iso8601(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && ts.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1)))
}
