//! One poll loop's side of the straggler cache: [`StragglerRecorder`] is
//! told each moment of a poll (about to poll, a good body, a 304, a
//! failure) and keeps the loop's entry in the cache current.
//!
//! It owns only its own entry: it writes it, confirms it, and withdraws it
//! when the poll fails, the feed ends or the loop drops it. It never awaits.

use super::*;

/// What one poll loop tells the cache: its latest good body, or that it has
/// none to give. Dropping it (the loop ended, however) withdraws the answer.
pub(crate) struct StragglerRecorder {
    /// `None` when the feed does not serve polls: every call does nothing.
    pub(super) on: Option<Arc<Stragglers>>,
    pub(super) identity: Identity,
    pub(super) owner: u64,
    pub(super) feed: Weak<Feed>,
    pub(super) name: Arc<str>,
    pub(super) timeout: Duration,
    pub(super) last: Option<Arc<Answer>>,
    pub(super) serving: bool,
    /// `Feed::refreshes` when the current poll began.
    pub(super) began: u64,
}

impl StragglerRecorder {
    /// A poll is about to be sent.
    pub(crate) fn polling(&mut self, feed: &Feed) {
        if self.on.is_some() {
            self.began = feed.refreshes();
        }
    }

    /// The poll returned this body with these headers, and it was a good
    /// list; the next poll follows within `next`.
    pub(crate) fn body(&mut self, body: Bytes, head: &HeaderMap, next: Duration) {
        let Some(st) = self.on.clone() else { return };
        let mut varies = Vec::new();
        for name in head
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
        {
            match name.as_str() {
                // The poll's answer is for pollcast's own User-Agent: no
                // client request is the same request.
                "*" | "user-agent" => {
                    tracing::debug!(feed = %self.name, vary = %name, "upstream varies on what no client shares with the poll; not serving polls");
                    self.last = None;
                    return self.withdraw();
                }
                // Matched by identity, by `Accept`, or any coding is fine (identity).
                "authorization" | "cookie" | "accept" | "accept-encoding" | "" => {}
                _ => {
                    if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                        varies.push(n);
                    }
                }
            }
        }
        let upstream_etag = head
            .get(header::ETAG)
            .filter(|v| v.as_bytes().starts_with(b"\"") || v.as_bytes().starts_with(b"W/\""));
        let etag = match (upstream_etag, &self.last) {
            (Some(e), _) => e.clone(),
            (None, Some(last)) if last.body == body => last.etag.clone(),
            (None, _) => strong_etag(&body),
        };
        let mut headers = HeaderMap::new();
        for name in KEPT {
            for v in head.get_all(&name) {
                headers.append(name.clone(), v.clone());
            }
        }
        // Without the upstream's own policy, clients revalidate every time
        // (a cheap 304): pollcast never makes a client keep older data than
        // polling the upstream would.
        let cc = head
            .get_all(header::CACHE_CONTROL)
            .iter()
            .cloned()
            .collect::<Vec<_>>();
        if cc.is_empty() {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        for v in cc {
            headers.append(header::CACHE_CONTROL, v);
        }
        headers.insert(header::ETAG, etag.clone());
        headers.insert(HEADER, HeaderValue::from_static("snapshot"));
        let last_modified = head
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        self.keep(&st, body, headers, etag, last_modified, varies, next);
    }

    /// Put this answer in force, fetched now, standing until the next poll
    /// (`next`) could have come back.
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &mut self,
        st: &Arc<Stragglers>,
        body: Bytes,
        headers: HeaderMap,
        etag: HeaderValue,
        last_modified: Option<SystemTime>,
        varies: Vec<HeaderName>,
        next: Duration,
    ) {
        let answer = Arc::new(Answer {
            body,
            headers,
            etag,
            last_modified,
            varies,
            fetched: Instant::now(),
            ttl: next.saturating_add(self.timeout),
            feed: self.feed.clone(),
            refreshes: self.began,
            owner: self.owner,
            name: self.name.clone(),
        });
        self.put(st, answer);
    }

    /// The upstream answered 304: the last body still stands, fetched now;
    /// the next poll follows within `next`.
    pub(crate) fn confirmed(&mut self, next: Duration) {
        let (Some(st), Some(last)) = (self.on.clone(), &self.last) else {
            return;
        };
        let (body, headers, etag) = (last.body.clone(), last.headers.clone(), last.etag.clone());
        let (last_modified, varies) = (last.last_modified, last.varies.clone());
        self.keep(&st, body, headers, etag, last_modified, varies, next);
    }

    fn put(&mut self, st: &Stragglers, answer: Arc<Answer>) {
        st.cache.insert(self.identity.clone(), answer.clone());
        self.last = Some(answer);
        if !self.serving {
            self.serving = true;
            st.serving.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Stop answering for this feed (its poll failed, it ended): requests
    /// pass through again. The last body is kept for a 304 that confirms it.
    pub(crate) fn withdraw(&mut self) {
        let Some(st) = &self.on else { return };
        if !self.serving {
            return;
        }
        self.serving = false;
        let owner = self.owner;
        // Only our own entry: another definition's feed may have written a
        // fresher answer to the same request.
        let _ = st
            .cache
            .entry_by_ref(&self.identity)
            .and_compute_with(|e| match e {
                Some(e) if e.value().owner == owner => Op::Remove,
                _ => Op::Nop,
            });
        st.serving.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StragglerSink for Arc<Stragglers> {
    fn straggler_recorder(
        &self,
        feed: &Arc<Feed>,
        poll: &str,
        headers: &HeaderMap,
    ) -> Box<dyn StragglerRecord> {
        Box::new(self.recorder_for(feed, poll, headers))
    }
}

impl StragglerRecord for StragglerRecorder {
    fn polling(&mut self, feed: &Feed) {
        StragglerRecorder::polling(self, feed);
    }
    fn body(&mut self, body: Bytes, head: &HeaderMap, next: Duration) {
        StragglerRecorder::body(self, body, head, next);
    }
    fn confirmed(&mut self, next: Duration) {
        StragglerRecorder::confirmed(self, next);
    }
    fn withdraw(&mut self) {
        StragglerRecorder::withdraw(self);
    }
}

impl Drop for StragglerRecorder {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// A strong `ETag` from the body bytes: XXH3-128, quoted.
fn strong_etag(body: &[u8]) -> HeaderValue {
    let h = xxhash_rust::xxh3::xxh3_128(body);
    // Hex digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{h:032x}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}
