//! The header rules of `headers`, applied to header lines as they came off
//! the wire, for the express lane (`express`): the same hop-by-hop set, the
//! same `X-Forwarded-*`, `Forwarded` and `Host` rewriting, written straight
//! into the outgoing head instead of through a header map.
//!
//! This module owns that translation only, and its equivalence with
//! `headers` (the property test below compares the two on generated
//! heads). It must never accept a head the rules were not written for:
//! several `Host` or `Cookie` fields, or a field that is not valid HTTP,
//! are left to the general path (`None`).

use std::net::SocketAddr;

use super::headers::Forwarding;
use crate::upstream::lists;

/// A header field as it came off the wire.
pub type Line<'a> = httparse::Header<'a>;

/// The hop-by-hop names of `headers::HOP_BY_HOP` plus the two legacy ones.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// Whether `name` is hop-by-hop in a message whose `Connection` fields are
/// `connection`.
fn hop_by_hop(name: &str, connection: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection.iter().any(|v| lists(v, name.as_bytes()))
}

/// The values of every `Connection` field of `lines`.
fn connection_values<'a>(lines: &[Line<'a>]) -> Vec<&'a [u8]> {
    lines
        .iter()
        .filter(|l| l.name.eq_ignore_ascii_case("connection"))
        .map(|l| l.value)
        .collect()
}

fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether `value` is a valid field value as `http::HeaderValue` takes it
/// (visible ASCII, space, tab, obs-text): what hyper would have accepted.
fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

impl Forwarding {
    /// Append the header lines the upstream gets for a request with
    /// `lines` from `peer` over `scheme`, as `headers` would rewrite them
    /// (hop-by-hop fields dropped, `X-Forwarded-*`, `Forwarded`, `Host`),
    /// with `upstream_host` as the `Host` unless it is preserved.
    /// `None`: not a head for this lane (nothing useful written).
    pub fn write_lines(
        &self,
        lines: &[Line<'_>],
        peer: SocketAddr,
        scheme: &'static str,
        upstream_host: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let connection = connection_values(lines);
        let ip = peer.ip().to_canonical();
        let trusted = self.trusts(ip);
        let mut host: Option<&[u8]> = None;
        let mut cookies = 0;
        let (mut has_proto, mut has_fwd_host) = (false, false);
        for l in lines {
            if !valid_value(l.value) {
                return None;
            }
            let name = l.name;
            if name.eq_ignore_ascii_case("host") {
                if host.replace(l.value).is_some() {
                    return None;
                }
                continue;
            }
            if name.eq_ignore_ascii_case("cookie") {
                cookies += 1;
                if cookies > 1 {
                    return None;
                }
            }
            if hop_by_hop(name, &connection) {
                continue;
            }
            if trusted {
                has_proto |= name.eq_ignore_ascii_case("x-forwarded-proto");
                has_fwd_host |= name.eq_ignore_ascii_case("x-forwarded-host");
            }
        }
        // Read before the hop-by-hop fields go, as `proxy` reads it.

        let mut xff: Vec<&[u8]> = Vec::new();
        let mut forwarded: Vec<&[u8]> = Vec::new();
        for l in lines {
            let name = l.name;
            if name.eq_ignore_ascii_case("host") || hop_by_hop(name, &connection) {
                continue;
            }
            let forged = name.len() >= 12
                && name.as_bytes()[..12].eq_ignore_ascii_case(b"x-forwarded-")
                || name.eq_ignore_ascii_case("forwarded")
                || name.eq_ignore_ascii_case("x-real-ip");
            if forged && !trusted {
                continue;
            }
            if name.eq_ignore_ascii_case("x-forwarded-for") {
                xff.push(l.value);
                continue;
            }
            if self.forwarded && name.eq_ignore_ascii_case("forwarded") {
                forwarded.push(l.value);
                continue;
            }
            push_line(out, name.as_bytes(), l.value);
        }

        let mut text = [0u8; 64];
        let ip_str = super::headers::ip_text(ip, &mut text);
        out.extend_from_slice(b"x-forwarded-for: ");
        join_into(out, &xff);
        out.extend_from_slice(ip_str.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !has_proto {
            push_line(out, b"x-forwarded-proto", scheme.as_bytes());
        }
        if let (Some(host), false) = (host, has_fwd_host) {
            push_line(out, b"x-forwarded-host", host);
        }
        if self.forwarded {
            let host_value = host.and_then(|h| http::HeaderValue::from_bytes(h).ok());
            let element = super::headers::forwarded_element(ip, host_value.as_ref(), scheme);
            out.extend_from_slice(b"forwarded: ");
            join_into(out, &forwarded);
            out.extend_from_slice(element.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match host {
            Some(host) if self.preserve_host => push_line(out, b"host", host),
            _ => push_line(out, b"host", upstream_host),
        }
        Some(())
    }
}

/// The values of a list field, trimmed, the empty ones left out, each
/// followed by `, ` (as `headers::join_with` joins them).
fn join_into(out: &mut Vec<u8>, values: &[&[u8]]) {
    for v in values {
        // `join_with` reads values as text; obs-text values are left out.
        if !v.is_ascii() {
            continue;
        }
        let v = v.trim_ascii();
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

/// Append the header lines the client gets for an answer with `lines`:
/// hop-by-hop fields dropped, and the framing fields too (the writer states
/// its own framing). Returns whether the answer has a `Date`.
pub fn write_answer_lines(lines: &[Line<'_>], out: &mut Vec<u8>) -> bool {
    let connection = connection_values(lines);
    let mut date = false;
    for l in lines {
        if hop_by_hop(l.name, &connection) || l.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        date |= l.name.eq_ignore_ascii_case("date");
        push_line(out, l.name.as_bytes(), l.value);
    }
    date
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use http::header::{self, HeaderMap, HeaderName, HeaderValue};
    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        "host",
        "Host",
        "cookie",
        "connection",
        "Connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "x-forwarded-for",
        "X-Forwarded-For",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "accept",
        "x-custom",
        "trailer",
        "authorization",
    ];
    const VALUES: &[&str] = &[
        "a",
        "close",
        "x-custom",
        "keep-alive, x-forwarded-for",
        " spaced , x-custom ",
        "",
        "10.0.0.1",
        "10.0.0.1, 10.0.0.2",
        "for=1.2.3.4",
        "example.org:8080",
        "https",
        "host",
    ];

    /// The general path: a header map through `strip_hop_by_hop`,
    /// `Forwarding::apply` and the pool's default `Host`.
    fn by_map(
        fwd: &Forwarding,
        fields: &[(&str, &str)],
        peer: SocketAddr,
        upstream_host: &str,
    ) -> Vec<(String, Vec<String>)> {
        let mut map = HeaderMap::new();
        for (n, v) in fields {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let host = map.get(header::HOST).cloned();
        super::super::headers::strip_hop_by_hop(&mut map);
        fwd.apply(&mut map, peer, host.as_ref(), "http");
        map.entry(header::HOST)
            .or_insert(HeaderValue::from_str(upstream_host).expect("host"));
        canonical(
            map.iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().expect("text").to_owned())),
        )
    }

    fn by_lines(
        fwd: &Forwarding,
        fields: &[(&str, &str)],
        peer: SocketAddr,
        upstream_host: &str,
    ) -> Option<Vec<(String, Vec<String>)>> {
        let lines: Vec<Line<'_>> = fields
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        let mut out = Vec::new();
        fwd.write_lines(&lines, peer, "http", upstream_host.as_bytes(), &mut out)?;
        let text = String::from_utf8(out).expect("text");
        Some(canonical(text.lines().map(|l| {
            let (n, v) = l.split_once(": ").unwrap_or((l.trim_end_matches(':'), ""));
            (n.to_ascii_lowercase(), v.to_owned())
        })))
    }

    /// Names with their values in order, names sorted: what a header map
    /// makes of the lines (the order of different names does not matter).
    fn canonical(it: impl Iterator<Item = (String, String)>) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (n, v) in it {
            match out.iter_mut().find(|(m, _)| *m == n) {
                Some((_, vs)) => vs.push(v),
                None => out.push((n, vec![v])),
            }
        }
        out.sort();
        out
    }

    fn forwarding(trusted: bool, forwarded: bool, preserve_host: bool) -> Forwarding {
        let url = crate::config::UpstreamUrl::parse("http://up:81").expect("url");
        let mut cfg = UpstreamConfig::new(url);
        cfg.forwarded = forwarded;
        cfg.preserve_host = preserve_host;
        if trusted {
            cfg.trusted_proxies = vec![
                crate::cidr::Cidr::parse("127.0.0.0/8").expect("cidr"),
                crate::cidr::Cidr::parse("::1/128").expect("cidr"),
            ];
        }
        Forwarding::new(&cfg)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_lines_get_the_rules_of_the_header_map(
            fields in proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..8),
            trusted in any::<bool>(),
            forwarded in any::<bool>(),
            preserve_host in any::<bool>(),
            v6 in any::<bool>(),
        ) {
            let fields: Vec<(&str, &str)> = fields.iter().map(|&(n, v)| (NAMES[n], VALUES[v])).collect();
            let fwd = forwarding(trusted, forwarded, preserve_host);
            let peer: SocketAddr = if v6 { "[::1]:4000" } else { "127.0.0.1:4000" }.parse().expect("addr");
            let hosts = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case("host")).count();
            let cookies = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case("cookie")).count();
            match by_lines(&fwd, &fields, peer, "up:81") {
                Some(lines) => prop_assert_eq!(lines, by_map(&fwd, &fields, peer, "up:81")),
                None => prop_assert!(hosts > 1 || cookies > 1, "refused {:?}", fields),
            }
        }
    }

    #[test]
    fn answers_lose_hop_by_hop_and_framing_fields() {
        let lines = [
            httparse::Header {
                name: "Content-Type",
                value: b"text/plain",
            },
            httparse::Header {
                name: "Connection",
                value: b"keep-alive, x-hop",
            },
            httparse::Header {
                name: "x-hop",
                value: b"1",
            },
            httparse::Header {
                name: "Keep-Alive",
                value: b"timeout=5",
            },
            httparse::Header {
                name: "Transfer-Encoding",
                value: b"chunked",
            },
            httparse::Header {
                name: "Content-Length",
                value: b"5",
            },
            httparse::Header {
                name: "Trailer",
                value: b"x-t",
            },
            httparse::Header {
                name: "Date",
                value: b"Mon, 30 Nov 2026 20:00:00 GMT",
            },
        ];
        let mut out = Vec::new();
        assert!(write_answer_lines(&lines, &mut out));
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "Content-Type: text/plain\r\nTrailer: x-t\r\nDate: Mon, 30 Nov 2026 20:00:00 GMT\r\n"
        );
    }
}
