//! CORS for pollcast's own SSE paths: which browser origins may open a
//! stream, the preflight answer, and the headers on every SSE response.
//!
//! This module owns the `[cors]` rules only for responses pollcast makes
//! itself. It must never touch pass-through responses: the upstream owns
//! their CORS headers. A request from a refused origin is answered 403 before
//! any feed or upstream work happens, so a foreign page cannot make pollcast
//! poll with a visitor's cookies.

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::BoxBody;
use crate::config::CorsConfig;

/// How a request relates to the CORS rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin`, or the page is on pollcast's own origin: nothing to add.
    SameOrigin,
    /// A cross-origin request from an allowed origin; the value to send in
    /// `Access-Control-Allow-Origin`.
    Allowed(HeaderValue),
    /// A cross-origin request from any other origin.
    Refused,
}

/// The compiled `[cors]` table.
pub struct Cors {
    origins: Vec<String>,
    any: bool,
    credentials: bool,
    allowed_headers: Vec<String>,
    max_age: HeaderValue,
}

impl Cors {
    pub fn new(cfg: &CorsConfig) -> Self {
        Self {
            origins: cfg
                .allowed_origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            any: cfg.allowed_origins.iter().any(|o| o == "*"),
            credentials: cfg.allow_credentials,
            allowed_headers: cfg
                .allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            max_age: HeaderValue::from(cfg.max_age.as_secs()),
        }
    }

    /// Judge a request by its `Origin` (and `Host`, for same-origin pages).
    pub fn judge(&self, headers: &HeaderMap, authority: Option<&str>) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::SameOrigin;
        };
        let Ok(o) = origin.to_str() else {
            return Verdict::Refused;
        };
        let lower = o.to_ascii_lowercase();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(authority);
        // A page served by pollcast itself (through pass-through) is not
        // cross-origin, whatever the list says.
        if let (Some(host), Some((_, rest))) = (host, lower.split_once("://")) {
            if rest == host.to_ascii_lowercase() {
                return Verdict::SameOrigin;
            }
        }
        if self.origins.contains(&lower) {
            return Verdict::Allowed(origin.clone());
        }
        if self.any {
            return Verdict::Allowed(HeaderValue::from_static("*"));
        }
        Verdict::Refused
    }

    /// Whether this is a CORS preflight (`OPTIONS` with the request method named).
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight: 204 with the grant, or 403.
    pub fn preflight(&self, headers: &HeaderMap, authority: Option<&str>) -> Response<BoxBody> {
        let method_ok = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| m == "GET" || m == "HEAD");
        let requested: Vec<String> = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let headers_ok = requested.iter().all(|h| self.allowed_headers.contains(h));
        let verdict = self.judge(headers, authority);
        if verdict == Verdict::Refused || !method_ok || !headers_ok {
            let mut resp = crate::response::text(
                StatusCode::FORBIDDEN,
                "CORS preflight refused: origin, method or headers not allowed for this event stream\n",
            );
            resp.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
            return resp;
        }
        let mut resp = crate::response::text(StatusCode::NO_CONTENT, "");
        resp.headers_mut().remove(header::CONTENT_TYPE);
        self.decorate(&verdict, resp.headers_mut());
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD"),
        );
        if !requested.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&requested.join(", ")) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        resp
    }

    /// Add the CORS grant to a response pollcast makes for an SSE path.
    pub fn decorate(&self, verdict: &Verdict, h: &mut HeaderMap) {
        if !self.origins.is_empty() || self.any {
            // Caches must not serve one origin's answer to another.
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Verdict::Allowed(origin) = verdict {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            ..CorsConfig::default()
        })
    }

    fn with_origin(o: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).expect("hv"));
        h.insert(header::HOST, HeaderValue::from_str(host).expect("hv"));
        h
    }

    #[test]
    fn judges_listed_unlisted_same_origin_and_wildcard() {
        let c = cors(&["https://App.example.com"], true);
        let ok = with_origin("https://app.example.com", "pollcast:8080");
        assert!(
            matches!(c.judge(&ok, None), Verdict::Allowed(o) if o == "https://app.example.com")
        );
        let bad = with_origin("https://evil.example", "pollcast:8080");
        assert_eq!(c.judge(&bad, None), Verdict::Refused);
        let same = with_origin("http://pollcast:8080", "pollcast:8080");
        assert_eq!(c.judge(&same, None), Verdict::SameOrigin);
        assert_eq!(c.judge(&HeaderMap::new(), None), Verdict::SameOrigin);
        let null = with_origin("null", "pollcast:8080");
        assert_eq!(c.judge(&null, None), Verdict::Refused);

        let any = cors(&["*"], false);
        assert_eq!(
            any.judge(&bad, None),
            Verdict::Allowed(HeaderValue::from_static("*"))
        );
        let mut h = HeaderMap::new();
        any.decorate(&any.judge(&bad, None), &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn nothing_configured_refuses_cross_origin() {
        let c = cors(&[], false);
        let h = with_origin("https://app.example.com", "pollcast:8080");
        assert_eq!(c.judge(&h, None), Verdict::Refused);
    }
}
