//! One plain-HTTP GET for `init`: the OpenAPI document at a URL, or a
//! probed list endpoint.
//!
//! This module owns that request. It must never send anything but GET (a
//! probe of someone's API must not change it) and never follow redirects.
//! https is not supported: pollcast speaks plain http to the API beside it.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The whole exchange, body included, must finish within this.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest body read (the same as `[upstream] max_body`'s default).
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not an http:// URL (https is not supported: download the document and pass the file)")]
    Url(String),
    #[error("GET {0}: {1}")]
    Http(String, String),
    #[error("GET {0}: no complete answer within {1:?}")]
    Timeout(String, Duration),
    #[error("GET {0}: the body is larger than {1} bytes")]
    TooLarge(String, usize),
}

/// A response: status, `Content-Type` and body.
pub(crate) struct Fetched {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

/// `GET url`.
pub(crate) async fn get(url: &str) -> Result<Fetched, FetchError> {
    let uri: Uri = url.parse().map_err(|_| FetchError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(FetchError::Url(url.to_owned()));
    }
    match tokio::time::timeout(TIMEOUT, exchange(url, uri)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout(url.to_owned(), TIMEOUT)),
    }
}

async fn exchange(url: &str, uri: Uri) -> Result<Fetched, FetchError> {
    let failed = |e: &dyn std::fmt::Display| FetchError::Http(url.to_owned(), e.to_string());
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::get(uri)
        .header(
            header::ACCEPT,
            "application/json, application/yaml;q=0.9, */*;q=0.5",
        )
        .header(header::USER_AGENT, "pollcast-init")
        .body(Empty::new())
        .map_err(|e| failed(&e))?;
    let resp = client.request(req).await.map_err(|e| {
        // The legacy client's Display is terse; its sources say why.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(&format!(": {s}"));
            source = s.source();
        }
        FetchError::Http(url.to_owned(), why)
    })?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge(url.to_owned(), MAX_BODY)
            } else {
                failed(&e)
            }
        })?
        .to_bytes();
    Ok(Fetched {
        status,
        content_type,
        body,
    })
}
