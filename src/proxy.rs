//! Pass-through: every request pollcast does not own goes to the upstream
//! unchanged and its response comes back unchanged.
//!
//! This module owns the reverse-proxy rules: hop-by-hop headers (RFC 9110
//! 7.6.1) dropped both ways, `X-Forwarded-For/-Proto/-Host` added, bodies
//! streamed both ways without buffering, 502 when the upstream cannot be
//! reached and 504 when it does not answer in time. It must never read or
//! buffer a body.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

use crate::upstream::{Upstream, UpstreamError};
use crate::{text_response, BoxBody, BoxError};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Forward `req` from `client`, who reached pollcast over `scheme` (`http` or
/// `https`), to the upstream.
pub async fn forward<B>(
    upstream: &Upstream,
    req: Request<B>,
    client: SocketAddr,
    scheme: &'static str,
) -> Response<BoxBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = match upstream.url.join(path_and_query) {
        Ok(uri) => uri,
        Err(_) => return text_response(StatusCode::BAD_REQUEST, "invalid request target\n"),
    };
    // HTTP/2 clients send :authority instead of Host.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });

    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    add_forwarded(&mut parts.headers, client, host, scheme);
    parts.uri = uri;
    parts.version = Version::HTTP_11;

    let req = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
    match upstream.send(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
        }
        Err(e @ UpstreamError::Timeout(_)) => {
            tracing::warn!(error = %e, "pass-through timed out");
            text_response(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream did not answer in time\n",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "pass-through failed");
            text_response(StatusCode::BAD_GATEWAY, "upstream unreachable\n")
        }
    }
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn add_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    host: Option<HeaderValue>,
    scheme: &'static str,
) {
    let ip = client.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_append_to_an_existing_chain() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.9:1".parse().expect("addr"),
            Some(HeaderValue::from_static("example.org")),
            "https",
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-host"], "example.org");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
