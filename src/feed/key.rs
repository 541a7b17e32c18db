//! Feed identity: what makes two subscribers share one poll loop.
//!
//! A feed is (feed definition, normalised query string, forwarded credentials).
//! This module owns that rule, per `auth` mode: which query parameters a
//! client may send (the `query` allowlist), how a `token_param` becomes an
//! `Authorization: Bearer` header, and whether credentials are part of the
//! identity (`forward`) or not (`check`, `none`), with an HTTP/2 client's
//! several `Cookie` fields joined into one. It also owns the credential-free
//! printable form used in logs (secret-looking query and path parameter
//! values redacted). It must never print an `Authorization`, `Cookie` or
//! token value.

use std::borrow::Cow;
use std::fmt;

use http::{header, HeaderMap, HeaderValue};

pub use crate::config::OWN_PARAMS;
use crate::config::{AuthMode, FeedConfig};

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FeedKey {
    /// Index of the feed definition in the config.
    pub def: usize,
    /// Normalised query string forwarded to the upstream poll (no leading `?`).
    pub query: String,
    pub authorization: Option<HeaderValue>,
    pub cookie: Option<HeaderValue>,
    /// SSE path parameter values, in the pattern's order (empty without parameters).
    pub params: Vec<String>,
}

impl FeedKey {
    pub fn new(
        def: usize,
        query: String,
        authorization: Option<HeaderValue>,
        cookie: Option<HeaderValue>,
    ) -> Self {
        Self {
            def,
            query,
            authorization,
            cookie,
            params: Vec::new(),
        }
    }

    /// The same key for the path parameter values of one request.
    pub(crate) fn with_params(mut self, params: Vec<String>) -> Self {
        self.params = params;
        self
    }

    /// `jobs?status=running [credentials]`, never the credentials themselves.
    pub fn label(&self, name: &str) -> String {
        self.label_with(name, &[])
    }

    /// [`FeedKey::label`] for a feed of `def`: the value of a path parameter
    /// whose name looks like a secret (`{share_token}`) is `<redacted>`, as
    /// for query parameters.
    pub(crate) fn label_of(&self, def: &FeedConfig) -> String {
        let names = crate::route::Pattern::parse(&def.sse_path())
            .map(|p| p.params())
            .unwrap_or_default();
        self.label_with(&def.name, &names)
    }

    /// `names`: the parameter names in the order of `self.params`; a value
    /// without a name (a hand-built key) is redacted, to be safe.
    fn label_with(&self, name: &str, names: &[String]) -> String {
        let mut s = name.to_owned();
        if !self.params.is_empty() {
            s.push('(');
            for (i, v) in self.params.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                match names.get(i) {
                    Some(n) if !secret_like(n) => s.push_str(v),
                    _ => s.push_str("<redacted>"),
                }
            }
            s.push(')');
        }
        if !self.query.is_empty() {
            s.push('?');
            s.push_str(&self.printable_query());
        }
        if self.authorization.is_some() || self.cookie.is_some() {
            s.push_str(" [credentials]");
        }
        s
    }
}

impl FeedKey {
    /// The query with `<redacted>` for the value of any parameter whose name
    /// looks like a secret (`access_token=...` on a feed without `token_param`).
    pub(crate) fn printable_query(&self) -> String {
        let mut s = String::with_capacity(self.query.len());
        for pair in self.query.split('&').filter(|p| !p.is_empty()) {
            if !s.is_empty() {
                s.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) if secret_like(k) => {
                    s.push_str(k);
                    s.push_str("=<redacted>");
                }
                _ => s.push_str(pair),
            }
        }
        s
    }
}

/// Whether a query parameter name suggests its value is a credential.
fn secret_like(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "pass",
        "auth",
        "session",
        "sig",
        "key",
        "jwt",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

impl fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedKey")
            .field("def", &self.def)
            .field("query", &self.printable_query())
            .field("params", &self.params.len())
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A subscriber's own credentials: its `Authorization` (or the token moved
/// out of the query) and `Cookie`. Printed only as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub authorization: Option<HeaderValue>,
    pub cookie: Option<HeaderValue>,
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.authorization.is_none() && self.cookie.is_none()
    }

    /// Add these credentials to an upstream request's headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.authorization {
            headers.insert(header::AUTHORIZATION, v.clone());
        }
        if let Some(v) = &self.cookie {
            headers.insert(header::COOKIE, v.clone());
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What an SSE request asks for, once its query and headers are judged.
#[derive(Debug)]
pub struct Identified {
    pub key: FeedKey,
    /// The `lastEventId` query parameter (EventSource polyfills send it).
    pub last_event_id: Option<String>,
    /// The subscriber's own credentials, whatever the mode: `check` mode
    /// sends them to the admission request.
    pub credentials: Credentials,
}

/// Why an SSE request cannot be turned into a feed; each is a 400.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("query parameter `{0}` is not accepted by this feed (accepted: {1})")]
    NotAllowed(String, String),
    #[error("the token was sent both in the Authorization header and in the `{0}` parameter; send it once")]
    TwoTokens(String),
    #[error("the `{0}` parameter is given more than once or cannot be a token")]
    BadToken(String),
}

/// Turn an SSE request's query and headers into its feed identity, applying
/// the definition's `query` allowlist, `token_param` and `auth` mode.
pub fn identify(
    def: usize,
    cfg: &FeedConfig,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Identified, KeyError> {
    let mut last_event_id = None;
    let mut token: Option<String> = None;
    // The fixed query of `poll` comes first and wins: a client's parameter
    // of the same name is dropped, so no client widens what the config fixed.
    let fixed: Vec<(String, String)> = form_urlencoded::parse(cfg.poll_query().as_bytes())
        .into_owned()
        .collect();
    let mut pairs: Vec<(String, String)> = fixed.clone();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if fixed.iter().any(|(f, _)| *f == k) {
            continue;
        } else if k == "lastEventId" {
            last_event_id = Some(v.into_owned());
        } else if cfg.token_param.as_deref() == Some(k.as_ref()) {
            if token.is_some() {
                return Err(KeyError::BadToken(k.into_owned()));
            }
            token = Some(v.into_owned());
        } else if OWN_PARAMS.contains(&k.as_ref()) {
            continue;
        } else if cfg
            .query
            .as_ref()
            .is_some_and(|allowed| !allowed.iter().any(|a| *a == k))
        {
            let accepted = match cfg.query.as_deref() {
                Some([]) | None => "none".to_owned(),
                Some(list) => list.join(", "),
            };
            return Err(KeyError::NotAllowed(printable(&k), accepted));
        } else {
            pairs.push((k.into_owned(), v.into_owned()));
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();

    let sensitive = |v: &HeaderValue| {
        let mut v = v.clone();
        v.set_sensitive(true);
        v
    };
    let mut credentials = Credentials {
        authorization: headers.get(header::AUTHORIZATION).map(sensitive),
        // Several HTTP/2 cookie fields are one cookie header for keying,
        // checking and polling alike.
        cookie: crate::proxy::joined_cookie(headers).map(|v| sensitive(&v)),
    };
    // An empty token means "no token", as a logged-out page would send it.
    if let (Some(name), Some(token)) = (&cfg.token_param, token.filter(|t| !t.is_empty())) {
        if credentials.authorization.is_some() {
            return Err(KeyError::TwoTokens(name.clone()));
        }
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| KeyError::BadToken(name.clone()))?;
        v.set_sensitive(true);
        credentials.authorization = Some(v);
    }
    let key = match cfg.auth {
        AuthMode::Forward => FeedKey::new(
            def,
            query,
            credentials.authorization.clone(),
            credentials.cookie.clone(),
        ),
        AuthMode::Check | AuthMode::None => FeedKey::new(def, query, None, None),
    };
    Ok(Identified {
        key,
        last_event_id,
        credentials,
    })
}

/// A client-chosen name, safe to echo in an error: at most 64 characters,
/// control characters replaced.
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Split a request query into the upstream part (pollcast's own parameters
/// removed, parameters sorted by name with repeated names kept in order) and
/// the `lastEventId` parameter, if any.
#[cfg(test)]
pub(crate) fn split_query(query: Option<&str>) -> (String, Option<String>) {
    let mut last_event_id = None;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "lastEventId" {
            last_event_id = Some(v.into_owned());
        } else if !OWN_PARAMS.contains(&k.as_ref()) {
            pairs.push((k.into_owned(), v.into_owned()));
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    (query, last_event_id)
}

/// A query string as a feed's identity holds it: parameters sorted by name
/// (repeated names keep their order) and re-encoded, none removed. A client
/// request whose query normalises to a feed's `query` sends the upstream the
/// same parameters as that feed's polls.
pub(crate) fn normalize_query(query: &str) -> String {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        form_urlencoded::parse(query.as_bytes()).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_params_are_stripped_and_order_is_normalised() {
        let (q, id) = split_query(Some("status=running&lastEventId=abc%3A3&a=1&tag=x&tag=y"));
        assert_eq!(q, "a=1&status=running&tag=x&tag=y");
        assert_eq!(id.as_deref(), Some("abc:3"));
        assert_eq!(
            split_query(Some("b=2&a=1")).0,
            split_query(Some("a=1&b=2")).0
        );
        assert_eq!(split_query(None), (String::new(), None));
    }

    #[test]
    fn normalized_queries_equal_feed_identities() {
        let h = HeaderMap::new();
        let d = def(AuthMode::Forward, None, None);
        let id = identify(0, &d, Some("status=a%20b&lim=1&tag=y&tag=x"), &h).expect("ok");
        assert_eq!(
            normalize_query("tag=y&status=a+b&tag=x&lim=1"),
            id.key.query
        );
        // Nothing is removed: pollcast's own parameters make another request.
        assert_eq!(normalize_query("lastEventId=1"), "lastEventId=1");
    }

    #[test]
    fn label_and_debug_never_show_credentials() {
        let k = FeedKey::new(
            0,
            "a=1".into(),
            Some(HeaderValue::from_static("Bearer secret")),
            Some(HeaderValue::from_static("sid=secret")),
        );
        assert_eq!(k.label("jobs"), "jobs?a=1 [credentials]");
        assert!(!format!("{k:?}").contains("secret"));
    }

    #[test]
    fn secret_looking_parameters_are_redacted_in_labels() {
        let k = FeedKey::new(
            0,
            "access_token=abc&status=x&X-Api-Key=k1".into(),
            None,
            None,
        );
        assert_eq!(
            k.label("jobs"),
            "jobs?access_token=<redacted>&status=x&X-Api-Key=<redacted>"
        );
        assert!(!format!("{k:?}").contains("abc"));
        assert_eq!(
            FeedKey::new(0, String::new(), None, None).label("jobs"),
            "jobs"
        );
    }

    #[test]
    fn secret_looking_path_parameters_are_redacted_in_labels() {
        let mut d = FeedConfig::new("share", "/api/share/{share_token}/items/{item}");
        d.sse = Some("/sse/share/{share_token}/{item}".into());
        let k = FeedKey::new(0, String::new(), None, None)
            .with_params(vec!["s3cr3t".into(), "42".into()]);
        assert_eq!(k.label_of(&d), "share(<redacted>,42)");
        assert!(!format!("{k:?}").contains("s3cr3t"));
        // Without names, nothing is shown.
        assert_eq!(k.label("share"), "share(<redacted>,<redacted>)");
    }

    fn def(auth: AuthMode, token: Option<&str>, query: Option<&[&str]>) -> FeedConfig {
        let mut d = FeedConfig::new("jobs", "/api/jobs");
        d.auth = auth;
        d.token_param = token.map(str::to_owned);
        d.query = query.map(|q| q.iter().map(|s| s.to_string()).collect());
        d
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn identity_per_auth_mode() {
        let h = headers(&[("authorization", "Bearer a"), ("cookie", "sid=1")]);
        let fwd =
            identify(0, &def(AuthMode::Forward, None, None), Some("b=1&a=2"), &h).expect("ok");
        assert_eq!(fwd.key.query, "a=2&b=1");
        assert!(fwd.key.authorization.is_some() && fwd.key.cookie.is_some());
        for mode in [AuthMode::Check, AuthMode::None] {
            let id = identify(0, &def(mode, None, None), None, &h).expect("ok");
            assert_eq!(id.key.authorization, None, "{mode:?}");
            assert_eq!(id.key.cookie, None, "{mode:?}");
            // The subscriber's own credentials are kept for the check request.
            assert!(id.credentials.authorization.is_some());
        }
    }

    #[test]
    fn several_cookie_fields_are_one_credential() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
        h.append(header::COOKIE, HeaderValue::from_static("sid=2"));
        let id = identify(0, &def(AuthMode::Forward, None, None), None, &h).expect("ok");
        assert_eq!(id.key.cookie.expect("cookie"), "theme=dark; sid=2");
        let check = identify(0, &def(AuthMode::Check, None, None), None, &h).expect("ok");
        let c = check.credentials.cookie.expect("cookie");
        assert_eq!(c, "theme=dark; sid=2");
        assert!(c.is_sensitive());
    }

    #[test]
    fn token_param_becomes_a_sensitive_bearer_and_leaves_the_query() {
        let d = def(AuthMode::Forward, Some("token"), Some(&["status"]));
        let id = identify(
            0,
            &d,
            Some("token=t%2B1&status=x&lastEventId=e:1"),
            &HeaderMap::new(),
        )
        .expect("ok");
        assert_eq!(id.key.query, "status=x");
        assert_eq!(id.last_event_id.as_deref(), Some("e:1"));
        let auth = id.key.authorization.expect("bearer");
        assert_eq!(auth, "Bearer t+1");
        assert!(auth.is_sensitive());
        assert!(!format!("{:?}", id.credentials).contains("t+1"));
        // An empty token is no token.
        let id = identify(0, &d, Some("token="), &HeaderMap::new()).expect("ok");
        assert!(id.key.authorization.is_none());
        assert_eq!(
            identify(
                0,
                &d,
                Some("token=a"),
                &headers(&[("authorization", "Bearer b")])
            )
            .err(),
            Some(KeyError::TwoTokens("token".into()))
        );
        assert_eq!(
            identify(0, &d, Some("token=a%0Ab"), &HeaderMap::new()).err(),
            Some(KeyError::BadToken("token".into()))
        );
    }

    #[test]
    fn the_fixed_query_of_poll_is_merged_and_wins() {
        let mut d = def(AuthMode::Forward, None, Some(&["limit"]));
        d.poll = "/api/imports?state=active&kind=a&kind=b".into();
        let h = HeaderMap::new();
        let id = identify(0, &d, Some("state=done&limit=5&kind=c"), &h).expect("ok");
        assert_eq!(id.key.query, "kind=a&kind=b&limit=5&state=active");
        // The same effective query is the same feed.
        let other = identify(0, &d, Some("limit=5"), &h).expect("ok");
        assert_eq!(other.key, id.key);
        assert_eq!(
            identify(0, &d, None, &h).expect("ok").key.query,
            "kind=a&kind=b&state=active"
        );
    }

    #[test]
    fn the_allowlist_names_the_refused_parameter_printably() {
        let d = def(AuthMode::Forward, None, Some(&["status", "limit"]));
        assert_eq!(
            identify(0, &d, Some("status=1&ev%0Ail=2"), &HeaderMap::new()).err(),
            Some(KeyError::NotAllowed("ev?il".into(), "status, limit".into()))
        );
        let none = def(AuthMode::Forward, None, Some(&[]));
        assert_eq!(
            identify(0, &none, Some("x=1"), &HeaderMap::new()).err(),
            Some(KeyError::NotAllowed("x".into(), "none".into()))
        );
    }
}
