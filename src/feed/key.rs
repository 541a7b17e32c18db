//! Feed identity: what makes two subscribers share one poll loop.
//!
//! A feed is (feed definition, normalised query string, forwarded credentials).
//! This module owns that rule and the credential-free printable form used in
//! logs. It must never print an `Authorization` or `Cookie` value.

use std::fmt;

use http::HeaderValue;

/// Query parameters that belong to pollcast and are never forwarded upstream.
pub const OWN_PARAMS: &[&str] = &["lastEventId"];

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FeedKey {
    /// Index of the feed definition in the config.
    pub def: usize,
    /// Normalised query string forwarded to the upstream poll (no leading `?`).
    pub query: String,
    pub authorization: Option<HeaderValue>,
    pub cookie: Option<HeaderValue>,
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
        }
    }

    /// `jobs?status=running [credentials]`, never the credentials themselves.
    pub fn label(&self, name: &str) -> String {
        let mut s = name.to_owned();
        if !self.query.is_empty() {
            s.push('?');
            s.push_str(&self.query);
        }
        if self.authorization.is_some() || self.cookie.is_some() {
            s.push_str(" [credentials]");
        }
        s
    }
}

impl fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedKey")
            .field("def", &self.def)
            .field("query", &self.query)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Split a request query into the upstream part (pollcast's own parameters
/// removed, parameters sorted by name with repeated names kept in order) and
/// the `lastEventId` parameter, if any.
pub fn split_query(query: Option<&str>) -> (String, Option<String>) {
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
}
