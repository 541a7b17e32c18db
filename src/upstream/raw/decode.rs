//! The framing of an upstream answer's body: how it ends, and the chunked
//! decoder that takes its data out of what was read.
//!
//! This module owns RFC 9112's body framing on the reading side only. It must
//! never read a socket (its caller does) nor keep trailers: a request that
//! wants them is hyper's.

use std::io;

use bytes::{Bytes, BytesMut};

/// The longest chunk-size or trailer line taken.
const MAX_LINE: usize = 4096;

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// At the upstream's close (the connection is not reused).
    Close,
    /// Read to its end.
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// At the line break after a chunk's data.
    DataEnd,
    /// In the trailer section, after the last chunk (trailers are dropped:
    /// a request wanting them is hyper's).
    Trailers,
}

/// Take the next piece of body data out of `buf` by `framing`, advancing
/// it; `None` when `buf` holds none yet (or only framing, consumed).
pub(crate) fn decode(framing: &mut Framing, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    loop {
        match framing {
            Framing::Done | Framing::Length(0) => return Ok(None),
            Framing::Length(n) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = (*n).min(buf.len() as u64) as usize;
                *n -= take as u64;
                return Ok(Some(buf.split_to(take).freeze()));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(buf.split().freeze()));
            }
            Framing::Chunked(Chunk::Data(n)) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = (*n).min(buf.len() as u64) as usize;
                *n -= take as u64;
                if *n == 0 {
                    *framing = Framing::Chunked(Chunk::DataEnd);
                }
                return Ok(Some(buf.split_to(take).freeze()));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                if !line.is_empty() {
                    return Err(invalid("chunk data longer than its size"));
                }
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                let size = chunk_size(&line)?;
                *framing = if size == 0 {
                    Framing::Chunked(Chunk::Trailers)
                } else {
                    Framing::Chunked(Chunk::Data(size))
                };
            }
            Framing::Chunked(Chunk::Trailers) => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                if line.is_empty() {
                    *framing = Framing::Done;
                    return Ok(None);
                }
            }
        }
    }
}

/// One line out of `buf` without its line break; `None` while incomplete.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_LINE {
            return Err(invalid("chunk line too long"));
        }
        return Ok(None);
    };
    let mut line = buf.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line))
}

/// The size of a chunk-size line (`1a;ext=1`).
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    if digits == 0 || digits > 15 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return Err(invalid("invalid chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| invalid("invalid chunk size"))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> io::Result<(Vec<u8>, Framing, usize)> {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = decode(&mut framing, &mut buf)? {
                out.extend_from_slice(&data);
            }
        }
        Ok((out, framing, buf.len()))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads_split() {
        let wire = b"5;name=v\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            let (out, framing, left) =
                decoded(Framing::Chunked(Chunk::Size), wire, step).expect("valid");
            assert_eq!(out, b"hello, world", "step {step}");
            assert_eq!(framing, Framing::Done, "step {step}");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX\r\n",
            b"\r\n",
            b"12345678901234567\r\n",
        ] {
            assert!(
                decoded(Framing::Chunked(Chunk::Size), wire, wire.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn a_length_stops_at_its_end_and_leaves_the_rest() {
        let (out, framing, left) = decoded(Framing::Length(5), b"helloEXTRA", 3).expect("valid");
        assert_eq!(out, b"hello");
        assert_eq!(framing, Framing::Length(0));
        assert_eq!(left, 5);
    }
}
