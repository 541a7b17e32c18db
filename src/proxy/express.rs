//! The express lane: a plain HTTP/1.1 `GET` passed through as bytes.
//!
//! Most pass-through traffic is small `GET`s on kept-alive connections. On
//! the general path each one is parsed into a header map, rewritten, written
//! out by hyper's client, its answer parsed into a second map and written
//! again by the server: per request, more user time than the kernel spends
//! moving the bytes. On this lane the request head the client sent is
//! rewritten line by line into the upstream's (`lines`: the same rules as
//! `headers`), sent on a raw upstream connection by the client's own task
//! (`upstream::raw`), and the answer's head is rewritten line by line into
//! the client's; the body streams as on the general path.
//!
//! This module owns that rewriting of both heads and the lane's failure
//! answers (the same 502 and 504 as the general path). It must never take
//! a request the general path would treat differently: `direct` offers it
//! only plain `GET`s on pass-through paths (no body, upgrade, expectation
//! or trailers), the router only while traces are off and no feed serves
//! polls, and a head whose fields the rules were not written for
//! (`lines::write_lines` says `None`) goes the general way.

use std::net::SocketAddr;

use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::headers::Forwarding;
use super::lines::{self, Line};
use crate::body::{BoxBody, BoxError};
use crate::upstream::{Answer, RawError, Upstream};

/// The lane; one per `Proxy`, shared by every connection.
#[derive(Clone)]
pub struct Express {
    upstream: Upstream,
    forwarding: Forwarding,
}

/// The client's answer head as far as the upstream's answer decides it:
/// its status line and fields, without framing and without the blank line.
pub struct Answered {
    pub status: StatusCode,
    pub head: Vec<u8>,
    /// The answer carries its own `Date`.
    pub date: bool,
}

impl Express {
    pub(super) fn new(upstream: Upstream, forwarding: Forwarding) -> Self {
        Self {
            upstream,
            forwarding,
        }
    }

    /// The upstream's request head for `GET target` with the client's
    /// `lines`, from `peer` over `scheme`. `None`: not for this lane.
    pub fn request_head(
        &self,
        target: &str,
        lines: &[Line<'_>],
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Option<Vec<u8>> {
        let mut head = Vec::with_capacity(128 + target.len() + 40 * lines.len());
        head.extend_from_slice(b"GET ");
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        self.forwarding.write_lines(
            lines,
            peer,
            scheme,
            self.upstream.host().as_bytes(),
            &mut head,
        )?;
        head.extend_from_slice(b"\r\n");
        Some(head)
    }

    /// Send `head` and read the answer's head: the client's head and the
    /// body, or the answer pollcast gives itself when the upstream gave
    /// none (502, 504).
    pub async fn send(
        &self,
        head: &[u8],
        client: SocketAddr,
    ) -> Result<(Answered, BoxBody), Response<BoxBody>> {
        match self.upstream.send_get(head, &mut answered).await {
            Ok((answered, body)) => {
                // As on the general path: a body that breaks off breaks the
                // client's answer off too.
                let body = body.map_err(move |e| {
                    tracing::warn!(error = %e, %client, "upstream response broke off; breaking off the client's too");
                    BoxError::from(e)
                });
                Ok((answered, body.boxed_unsync()))
            }
            Err(e) => Err(super::failed(e)),
        }
    }
}

/// The client's head of an upstream answer: the upstream's status line
/// (its reason phrase kept, as hyper keeps it) and its fields less the
/// hop-by-hop and framing ones.
fn answered(answer: &Answer<'_, '_, '_>) -> Result<Answered, RawError> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(answer.status.as_str().as_bytes());
    head.push(b' ');
    let reason = answer
        .parsed
        .reason
        .or(answer.status.canonical_reason())
        .unwrap_or("Unknown");
    head.extend_from_slice(reason.as_bytes());
    head.extend_from_slice(b"\r\n");
    let date = lines::write_answer_lines(answer.parsed.headers, &mut head);
    Ok(Answered {
        status: answer.status,
        head,
        date,
    })
}
