//! The header rules of pass-through: which headers are hop-by-hop, which
//! `Host` the upstream sees, and how `X-Forwarded-*` and RFC 7239 `Forwarded`
//! are written depending on whether the peer is a trusted proxy.
//!
//! This module owns header rewriting only. It must never touch bodies,
//! connections or upgrades (that is `proxy` and `proxy::tunnel`).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::cidr::Cidr;
use crate::config::UpstreamConfig;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// plus the two meant for a forward proxy. `Trailer` is deliberately absent:
/// it describes the message and hyper only sends declared trailer fields.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

// Names made once: a `&str` name is parsed and validated on every use,
// and these are used on every pass-through request.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

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
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
}

/// The request's cookies as one `Cookie` value: HTTP/2 clients may send one
/// field per cookie (RFC 9113 §8.2.3), joined here with `"; "` as that
/// section requires before the value leaves HTTP/2. `None` without cookies.
/// The result is marked sensitive when any field was.
pub fn joined_cookie(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut fields = headers.get_all(header::COOKIE).iter();
    let first = fields.next()?;
    let rest: Vec<&HeaderValue> = fields.collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    let mut bytes = first.as_bytes().to_vec();
    let mut sensitive = first.is_sensitive();
    for v in rest {
        bytes.extend_from_slice(b"; ");
        bytes.extend_from_slice(v.as_bytes());
        sensitive |= v.is_sensitive();
    }
    // Joined valid field values are a valid field value.
    let mut v = HeaderValue::from_bytes(&bytes).ok()?;
    v.set_sensitive(sensitive);
    Some(v)
}

/// Whether a comma-separated header (`Connection`, `TE`, ...) lists `token`.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(token))
        })
}

/// How pass-through presents the client to the upstream.
#[derive(Debug, Clone)]
pub struct Forwarding {
    pub(super) preserve_host: bool,
    trusted: Vec<Cidr>,
    pub(super) forwarded: bool,
}

impl Forwarding {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        Self {
            preserve_host: cfg.preserve_host,
            trusted: cfg.trusted_proxies.clone(),
            forwarded: cfg.forwarded,
        }
    }

    pub(super) fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// Rewrite the (already hop-by-hop-stripped) request headers for the upstream.
    ///
    /// `host` is what the client asked for (`Host` or HTTP/2 `:authority`),
    /// `scheme` how it reached pollcast (`http` or `https`).
    /// From an untrusted peer every incoming forwarding header is dropped first,
    /// so no client can forge its address; from a trusted proxy the chain is
    /// kept and this hop appended.
    pub fn apply(
        &self,
        headers: &mut HeaderMap,
        peer: SocketAddr,
        host: Option<&HeaderValue>,
        scheme: &'static str,
    ) {
        // An HTTP/2 client's several cookie fields reach an HTTP/1.1
        // upstream as the one field HTTP/1.1 allows.
        if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
            if let Some(v) = joined_cookie(headers) {
                headers.insert(header::COOKIE, v);
            }
        }
        let ip = peer.ip().to_canonical();
        let trusted = self.trusts(ip);
        if !trusted {
            let forged: Vec<HeaderName> = headers
                .keys()
                .filter(|k| k.as_str().starts_with("x-forwarded-"))
                .cloned()
                .collect();
            for k in forged {
                headers.remove(k);
            }
            headers.remove(header::FORWARDED);
            headers.remove(&X_REAL_IP);
        }

        // Formatted on the stack: this runs on every pass-through request.
        let mut text = [0u8; 64];
        let xff = join_with(headers, &X_FORWARDED_FOR, ip_text(ip, &mut text));
        headers.insert(&X_FORWARDED_FOR, xff);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
        }
        if let Some(host) = host {
            if !headers.contains_key(&X_FORWARDED_HOST) {
                headers.insert(&X_FORWARDED_HOST, host.clone());
            }
        }
        if self.forwarded {
            let element = forwarded_element(ip, host, scheme);
            let v = join_with(headers, &header::FORWARDED, &element);
            headers.insert(header::FORWARDED, v);
        }

        headers.remove(header::HOST);
        if self.preserve_host {
            if let Some(host) = host {
                headers.insert(header::HOST, host.clone());
            }
        }
        // Without a Host here the upstream client writes the upstream's own.
    }
}

/// `ip` as text in `buf` (an IPv6 address takes at most 45 bytes).
pub(super) fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    let mut w = &mut buf[..];
    if write!(w, "{ip}").is_err() {
        return "unknown";
    }
    let len = 64 - w.len();
    std::str::from_utf8(&buf[..len]).unwrap_or("unknown")
}

/// All values of a list header joined with `, `, then `last` appended.
fn join_with(headers: &HeaderMap, name: &HeaderName, last: &str) -> HeaderValue {
    if !headers.contains_key(name) {
        // The common case: this hop is the first; no joining to do.
        return HeaderValue::from_str(last).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    }
    let mut joined = String::new();
    for v in headers.get_all(name) {
        if let Ok(v) = v.to_str() {
            let v = v.trim();
            if !v.is_empty() {
                joined.push_str(v);
                joined.push_str(", ");
            }
        }
    }
    joined.push_str(last);
    // Every part came from a valid header value or from us, so this cannot fail;
    // if it somehow did, this hop alone is still correct.
    HeaderValue::from_str(&joined).unwrap_or_else(|_| {
        HeaderValue::from_str(last).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    })
}

/// This hop's `Forwarded` element (RFC 7239 section 4).
pub(super) fn forwarded_element(ip: IpAddr, host: Option<&HeaderValue>, scheme: &str) -> String {
    let mut e = match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    if let Some(host) = host {
        e.push_str(";host=");
        quote(host.as_bytes(), &mut e);
    }
    e.push_str(";proto=");
    e.push_str(scheme);
    e
}

/// An RFC 9110 quoted-string (a host with a port contains `:`, not a token char).
fn quote(raw: &[u8], out: &mut String) {
    out.push('"');
    for &b in raw {
        // Header values are visible ASCII or obs-text; keep ASCII, drop the rest
        // rather than emit a value the upstream cannot parse.
        if b == b'"' || b == b'\\' {
            out.push('\\');
            out.push(b as char);
        } else if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamUrl;

    fn forwarding(edit: impl FnOnce(&mut UpstreamConfig)) -> Forwarding {
        let mut cfg = UpstreamConfig::new(UpstreamUrl::parse("http://up:1").expect("url"));
        edit(&mut cfg);
        Forwarding::new(&cfg)
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn incoming() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.example:8443"));
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("app.example"));
        h.insert("x-forwarded-port", HeaderValue::from_static("443"));
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.9"));
        h.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=203.0.113.9;proto=https"),
        );
        h
    }

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
        h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("x-kept"));
        assert!(h.contains_key(header::TRAILER), "Trailer is end-to-end");
    }

    #[test]
    fn cookie_fields_are_joined_in_order() {
        let mut h = HeaderMap::new();
        assert_eq!(joined_cookie(&h), None);
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        assert_eq!(joined_cookie(&h).expect("one"), "a=1");
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("sid=3"));
        assert_eq!(joined_cookie(&h).expect("three"), "a=1; b=2; sid=3");
        forwarding(|_| {}).apply(&mut h, peer("10.0.0.1:1"), None, "http");
        let sent: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(sent, ["a=1; b=2; sid=3"]);
    }

    #[test]
    fn tokens_are_matched_case_insensitively_in_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::TE, HeaderValue::from_static("gzip;q=0.5, trailers"));
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(has_token(&h, header::TE, "trailers"));
        assert!(!has_token(&h, header::CONNECTION, "close"));
    }

    #[test]
    fn untrusted_peers_cannot_forge_forwarding_headers() {
        let f = forwarding(|_| {});
        let mut h = incoming();
        let host = h.get(header::HOST).cloned();
        f.apply(&mut h, peer("198.51.100.4:5000"), host.as_ref(), "http");
        assert_eq!(h["x-forwarded-for"], "198.51.100.4");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example:8443");
        assert!(!h.contains_key("x-forwarded-port"));
        assert!(!h.contains_key("x-real-ip"));
        assert!(
            !h.contains_key(header::FORWARDED),
            "forwarded = false adds none and drops the forged one"
        );
        assert!(
            !h.contains_key(header::HOST),
            "the upstream's Host by default"
        );
    }

    #[test]
    fn trusted_proxies_are_appended_to() {
        let f = forwarding(|c| {
            c.trusted_proxies = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
            c.forwarded = true;
        });
        let mut h = incoming();
        let host = h.get(header::HOST).cloned();
        f.apply(&mut h, peer("10.0.0.3:5000"), host.as_ref(), "http");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.2, 10.0.0.3");
        assert_eq!(h["x-forwarded-proto"], "https", "the first proxy's view");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(
            h[header::FORWARDED],
            "for=203.0.113.9;proto=https, for=10.0.0.3;host=\"app.example:8443\";proto=http"
        );
    }

    #[test]
    fn forwarded_quotes_ipv6_and_is_fresh_for_untrusted_peers() {
        let f = forwarding(|c| c.forwarded = true);
        let mut h = incoming();
        f.apply(&mut h, peer("[2001:db8::1]:5000"), None, "https");
        assert_eq!(h[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }

    #[test]
    fn preserve_host_sends_the_clients_host() {
        let f = forwarding(|c| c.preserve_host = true);
        let mut h = incoming();
        let host = h.get(header::HOST).cloned();
        f.apply(&mut h, peer("127.0.0.1:1"), host.as_ref(), "http");
        assert_eq!(h[header::HOST], "app.example:8443");
    }
}
