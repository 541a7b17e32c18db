//! The SSE wire format (WHATWG HTML, "Server-sent events"): turning an event
//! name and a JSON document into bytes, once.
//!
//! This module owns framing: `id:`, `event:`, `data:` and `retry:` lines and the
//! blank line that ends an event. Data containing line breaks (`\n`, `\r\n` or a
//! lone `\r`) is split over several `data:` lines, which every conforming parser
//! joins back with `\n`; nothing a payload contains can end an event early. It
//! must never know what the events mean.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// An event without its `id:` line: `event: <name>\ndata: ...\n\n`.
///
/// Kept separate from the id so one encoded body (a snapshot, a status) can be
/// shared by subscribers that each need their own id in front of it.
pub fn body(name: &str, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + name.len() + 16);
    put_body(&mut b, name, data);
    b.freeze()
}

/// A whole event, `id:` line first.
pub fn event(id: &str, name: &str, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + name.len() + id.len() + 24);
    put_id(&mut b, id);
    put_body(&mut b, name, data);
    b.freeze()
}

/// Just `id: <id>\n`, to be followed by a shared [`body`].
pub(crate) fn id_line(id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(id.len() + 5);
    put_id(&mut b, id);
    b.freeze()
}

/// `retry: <ms>\n\n`: EventSource's reconnection delay.
pub fn retry(after: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", after.as_millis()))
}

/// A comment line, ignored by parsers; used as keepalive.
pub fn comment(text: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(text.len() + 3);
    b.put_slice(b":");
    for line in lines(text.as_bytes()) {
        b.put_slice(line);
    }
    b.put_slice(b"\n\n");
    b.freeze()
}

fn put_id(b: &mut BytesMut, id: &str) {
    b.put_slice(b"id: ");
    // An id with a line break or NUL would corrupt framing or be ignored by
    // EventSource; ids are produced by pollcast and never contain them.
    for &c in id.as_bytes() {
        if c != b'\n' && c != b'\r' && c != 0 {
            b.put_u8(c);
        }
    }
    b.put_u8(b'\n');
}

fn put_body(b: &mut BytesMut, name: &str, data: &[u8]) {
    if !name.is_empty() {
        b.put_slice(b"event: ");
        for line in lines(name.as_bytes()) {
            b.put_slice(line);
        }
        b.put_u8(b'\n');
    }
    for line in lines(data) {
        b.put_slice(b"data: ");
        b.put_slice(line);
        b.put_u8(b'\n');
    }
    b.put_u8(b'\n');
}

/// Split on `\r\n`, `\r` or `\n`, as an SSE parser does.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let d = rest?;
        match d.iter().position(|&c| c == b'\n' || c == b'\r') {
            None => {
                rest = None;
                Some(d)
            }
            Some(i) => {
                let skip = if d[i] == b'\r' && d.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = Some(&d[i + skip..]);
                Some(&d[..i])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_event() {
        assert_eq!(
            &event("a:1", "added", br#"{"id":1}"#)[..],
            b"id: a:1\nevent: added\ndata: {\"id\":1}\n\n"
        );
    }

    #[test]
    fn every_line_break_kind_becomes_a_data_line() {
        assert_eq!(
            &body("x", b"a\nb\r\nc\rd")[..],
            b"event: x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(&body("x", b"a\n")[..], b"event: x\ndata: a\ndata: \n\n");
    }

    #[test]
    fn unnamed_event_has_no_event_line() {
        assert_eq!(&body("", b"{}")[..], b"data: {}\n\n");
    }

    #[test]
    fn retry_comment_and_id() {
        assert_eq!(&retry(Duration::from_millis(2500))[..], b"retry: 2500\n\n");
        assert_eq!(&comment("keepalive")[..], b":keepalive\n\n");
        assert_eq!(&comment("a\nb")[..], b":ab\n\n");
        assert_eq!(&id_line("e:1\n")[..], b"id: e:1\n");
    }
}
