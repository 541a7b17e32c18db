//! The rules across values that serde cannot judge alone, run once before
//! anything listens.

use super::*;

/// The checks validation needs from features above config (an event
/// contract compiles, `serve_polls` fits the other feeds, a certificate
/// loads), handed in by whoever loads the config so that config never
/// imports what it configures.
#[derive(Clone, Copy)]
pub struct Checks {
    /// A feed's event contract compiles: `Err((key, message))`.
    pub contract: fn(&FeedConfig) -> Result<(), (String, String)>,
    /// `serve_polls` on this feed fits the others and the admin prefix.
    pub serve_polls:
        fn(&FeedConfig, &[FeedConfig], &AdminConfig, &UpstreamConfig) -> Result<(), String>,
    /// `[server.tls]` files load: `Err((key, message))`.
    pub tls: fn(&TlsConfig) -> Result<(), (&'static str, String)>,
}

impl Config {
    /// Every rule that involves more than one value, or a value serde cannot judge.
    pub(crate) fn validate_with(&self, checks: &Checks) -> Result<(), Problem> {
        self.validate_security()?;
        let positive = |d: Duration| d >= Duration::from_millis(1);
        if !positive(self.upstream.timeout) {
            return Err(Problem::in_table(
                "upstream",
                "timeout",
                "must be at least 1ms".into(),
            ));
        }
        if self.upstream.max_body == 0 {
            return Err(Problem::in_table(
                "upstream",
                "max_body",
                "must be at least 1 byte".into(),
            ));
        }
        for p in &self.upstream.trusted_proxies {
            if let Some(net) = p.canonical_if_different() {
                return Err(Problem::in_table(
                    "upstream",
                    "trusted_proxies",
                    format!("`{p}` has host bits set; write `{net}` for the block or the address alone for one host"),
                ));
            }
        }
        if self.reload.debounce < Duration::from_millis(10) {
            return Err(Problem::in_table(
                "reload",
                "debounce",
                "must be at least 10ms".into(),
            ));
        }
        if self.sse.history == 0 {
            return Err(Problem::in_table(
                "sse",
                "history",
                "must be at least 1 event".into(),
            ));
        }
        if self.sse.write_timeout < Duration::from_millis(10) {
            return Err(Problem::in_table(
                "sse",
                "write_timeout",
                "must be at least 10ms".into(),
            ));
        }
        if !positive(self.sse.keepalive) {
            return Err(Problem::in_table(
                "sse",
                "keepalive",
                "must be at least 1ms".into(),
            ));
        }
        self.validate_admin()?;
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        let mut names = std::collections::HashSet::new();
        let mut paths = std::collections::HashMap::new();
        for (i, f) in self.feeds.iter().enumerate() {
            if f.name.is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(Problem::feed(
                    i,
                    "name",
                    format!(
                        "`{}` must be non-empty and use only letters, digits, `_`, `-` and `.`",
                        f.name
                    ),
                ));
            }
            if !names.insert(f.name.as_str()) {
                return Err(Problem::feed(
                    i,
                    "name",
                    format!("`{}` is used by an earlier feed", f.name),
                ));
            }
            let path = f.poll_path();
            if !path.starts_with('/') || f.poll.contains(['#', ' ']) {
                return Err(Problem::feed(
                    i,
                    "poll",
                    format!(
                        "`{}` must be a path starting with `/` (a fixed query allowed) without fragment",
                        f.poll
                    ),
                ));
            }
            if let Some(k) = form_urlencoded::parse(f.poll_query().as_bytes())
                .map(|(k, _)| k)
                .find(|k| {
                    k.is_empty()
                        || crate::config::OWN_PARAMS.contains(&k.as_ref())
                        || f.token_param.as_deref() == Some(k.as_ref())
                })
            {
                return Err(Problem::feed(
                    i,
                    "poll",
                    format!("the fixed query of `{}` cannot set `{k}`: an empty name, pollcast's own parameter or the token_param", f.poll),
                ));
            }
            let sse = f.sse_path();
            if !sse.starts_with('/') || sse.contains(['?', '#', ' ']) {
                return Err(Problem::feed(
                    i,
                    "sse",
                    format!("`{sse}` must be a path starting with `/` without query or fragment"),
                ));
            }
            if self.admin.owns(&sse) {
                return Err(Problem::feed(
                    i,
                    "sse",
                    format!(
                        "`{sse}` is inside pollcast's own prefix {} ([admin] prefix)",
                        self.admin.prefix
                    ),
                ));
            }
            // Feeds sharing an SSE path are followed together by one stream.
            if let Some(&j) = paths.get(&sse) {
                let other: &FeedConfig = &self.feeds[j];
                if f.terminal.is_some() || other.terminal.is_some() {
                    return Err(Problem::feed(
                        i,
                        "sse",
                        format!("`{sse}` is shared with feeds[{j}]; a feed with `terminal` ends its stream and needs a path of its own"),
                    ));
                }
                // One stream sends one connect event and one keepalive: feeds
                // sharing it must agree on them rather than have one ignored.
                for (key, mine, theirs) in [
                    ("events.connect", &f.events.connect, &other.events.connect),
                    (
                        "events.keepalive",
                        &f.events.keepalive,
                        &other.events.keepalive,
                    ),
                ] {
                    if mine != theirs {
                        return Err(Problem::feed(
                            i,
                            key,
                            format!(
                                "feeds `{}` and `{}` share the stream `{sse}`, which sends one `{}`: set the same value on both (or on neither)",
                                other.name,
                                f.name,
                                &key["events.".len()..],
                            ),
                        ));
                    }
                }
            } else {
                paths.insert(sse.clone(), i);
            }
            if let Err((key, message)) = (checks.contract)(f) {
                return Err(Problem::feed(i, &key, message));
            }
            if f.interval < Duration::from_millis(10) {
                return Err(Problem::feed(i, "interval", "must be at least 10ms".into()));
            }
            if f.serve_polls {
                (checks.serve_polls)(f, &self.feeds, &self.admin, &self.upstream)
                    .map_err(|m| Problem::feed(i, "serve_polls", m))?;
            }
            if f.backoff_max < f.interval {
                return Err(Problem::feed(
                    i,
                    "backoff_max",
                    format!(
                        "must be at least the interval ({})",
                        humantime::format_duration(f.interval)
                    ),
                ));
            }
            validate_cadence(i, f)?;
        }
        Ok(())
    }
}

/// The adaptive interval's rules: `interval_min <= interval <= interval_max <= backoff_max`.
fn validate_cadence(i: usize, f: &FeedConfig) -> Result<(), Problem> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if let Some(min) = f.interval_min {
        if min < Duration::from_millis(10) {
            return Err(Problem::feed(
                i,
                "interval_min",
                "must be at least 10ms".into(),
            ));
        }
        if min > f.interval {
            return Err(Problem::feed(
                i,
                "interval_min",
                format!(
                    "must be at most the interval ({}), which is where the cadence starts",
                    show(f.interval)
                ),
            ));
        }
    }
    if let Some(max) = f.interval_max {
        if max < f.interval {
            return Err(Problem::feed(
                i,
                "interval_max",
                format!(
                    "must be at least the interval ({}), which is where the cadence starts",
                    show(f.interval)
                ),
            ));
        }
        if f.backoff_max < max {
            return Err(Problem::feed(
                i,
                "backoff_max",
                format!(
                    "must be at least interval_max ({}): backoff_max caps the delays after failures, which start from the current delay",
                    show(max)
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    fn validate_admin(&self) -> Result<(), Problem> {
        let a = &self.admin;
        let p = &a.prefix;
        if p.len() < 2
            || !p.starts_with('/')
            || p.ends_with('/')
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-.~".contains(c))
        {
            return Err(Problem::in_table(
                "admin",
                "prefix",
                format!("`{p}` must be a path like /_pollcast: starting with `/`, not `/` alone, no trailing `/`, only letters, digits and `/_-.~`"),
            ));
        }
        if let Some(listen) = a.listen {
            if listen == self.server.listen && listen.port() != 0 {
                return Err(Problem::in_table(
                    "admin",
                    "listen",
                    format!("{listen} is already [server] listen; use another port, or \"\" to serve admin endpoints on the main listener"),
                ));
            }
        }
        if let Some(probe) = &a.ready_probe {
            if !probe.starts_with('/') || probe.contains(['#', ' ']) {
                return Err(Problem::in_table(
                    "admin",
                    "ready_probe",
                    format!("`{probe}` must be an upstream path starting with `/`"),
                ));
            }
        }
        Ok(())
    }

    /// The configuration as it is used, defaults filled in, for `--check`.
    pub fn effective(&self) -> Config {
        let mut c = self.clone();
        for f in &mut c.feeds {
            f.sse = Some(f.sse_path());
        }
        c
    }
}

impl Config {
    /// The rules of the security keys: `[server]` request limits, `[limits]`,
    /// `[cors]` and each feed's `auth`, `token_param`, `query` and `check*`.
    fn validate_security(&self) -> Result<(), Problem> {
        if self.server.max_header_size < MIN_HEADER_SIZE
            || self.server.max_header_size > u32::MAX as usize
        {
            return Err(Problem::in_table(
                "server",
                "max_header_size",
                format!("must be between {MIN_HEADER_SIZE} and {} bytes", u32::MAX),
            ));
        }
        if self.server.header_read_timeout < Duration::from_millis(1) {
            return Err(Problem::in_table(
                "server",
                "header_read_timeout",
                "must be at least 1ms".into(),
            ));
        }
        if self.limits.retry_after < Duration::from_secs(1) {
            return Err(Problem::in_table(
                "limits",
                "retry_after",
                "must be at least 1s (Retry-After counts whole seconds)".into(),
            ));
        }
        for o in &self.cors.allowed_origins {
            if o == "*" {
                if self.cors.allow_credentials {
                    return Err(Problem::in_table(
                        "cors",
                        "allow_credentials",
                        "cannot be true while allowed_origins contains \"*\": list the origins that may send credentials".into(),
                    ));
                }
                continue;
            }
            if !valid_origin(o) {
                return Err(Problem::in_table(
                    "cors",
                    "allowed_origins",
                    format!("`{o}` is not an origin like https://app.example.com (scheme, host, optional port; no path)"),
                ));
            }
        }
        for h in &self.cors.allowed_headers {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(Problem::in_table(
                    "cors",
                    "allowed_headers",
                    format!("`{h}` is not a header name"),
                ));
            }
        }
        for (i, f) in self.feeds.iter().enumerate() {
            let param_ok = |p: &str| {
                !p.is_empty()
                    && !p.contains(['&', '=', '#', '+', '%', ' '])
                    && !OWN_PARAMS.contains(&p)
            };
            if let Some(t) = &f.token_param {
                if !param_ok(t) {
                    return Err(Problem::feed(
                        i,
                        "token_param",
                        format!(
                            "`{t}` must be a plain parameter name, not one of pollcast's own ({})",
                            OWN_PARAMS.join(", ")
                        ),
                    ));
                }
                if f.auth == AuthMode::None {
                    return Err(Problem::feed(
                        i,
                        "token_param",
                        "a feed with auth = \"none\" ignores credentials; remove token_param or choose another auth mode".into(),
                    ));
                }
            }
            for q in f.query.iter().flatten() {
                if !param_ok(q) || f.token_param.as_deref() == Some(q.as_str()) {
                    return Err(Problem::feed(
                        i,
                        "query",
                        format!("`{q}` must be a plain parameter name, not pollcast's own nor the token_param"),
                    ));
                }
            }
            if f.auth != AuthMode::Check && f.check.is_some() {
                return Err(Problem::feed(
                    i,
                    "check",
                    "is only used with auth = \"check\"".into(),
                ));
            }
            if let Some(c) = &f.check {
                if !c.starts_with('/') || c.contains(['#', ' ']) {
                    return Err(Problem::feed(
                        i,
                        "check",
                        format!("`{c}` must be an upstream path starting with `/`"),
                    ));
                }
                check_placeholders(f, c).map_err(|m| Problem::feed(i, "check", m))?;
            }
            // Polls made with pollcast's own credentials carry only the
            // parameters the operator named: a client must not choose what
            // the service account asks the upstream for.
            let service = f.credentials_env.is_some() || f.credentials.is_some();
            if f.auth != AuthMode::Forward && service && f.query.is_none() {
                return Err(Problem::feed(
                    i,
                    "query",
                    "is required on a feed that polls with service credentials (credentials_env) and auth = \"check\" or \"none\": without it every query parameter a client sends reaches a request made with those credentials; list the parameters clients may send (`query = []` for none)".into(),
                ));
            }
            if f.recheck < Duration::from_millis(10) {
                return Err(Problem::feed(i, "recheck", "must be at least 10ms".into()));
            }
            if f.auth == AuthMode::Forward && f.credentials_env.is_some() {
                return Err(Problem::feed(
                    i,
                    "credentials_env",
                    "auth = \"forward\" polls with each subscriber's own credentials; credentials_env needs auth = \"check\" or \"none\"".into(),
                ));
            }
        }
        Ok(())
    }
}

/// An explicit `check` path may use the SSE path's `{param}` placeholders
/// (filled in per subscriber, like the poll path), and no others.
fn check_placeholders(f: &FeedConfig, check: &str) -> Result<(), String> {
    let pattern = crate::route::Pattern::parse(check)?;
    let sse = crate::route::Pattern::parse(&f.sse_path())?;
    let known = sse.params();
    match pattern.params().into_iter().find(|p| !known.contains(p)) {
        Some(p) => Err(format!(
            "`{{{p}}}` is not a parameter of the SSE path `{}`",
            f.sse_path()
        )),
        None => Ok(()),
    }
}

/// `scheme://host[:port]`, nothing else: the form browsers send in `Origin`.
fn valid_origin(o: &str) -> bool {
    let Ok(uri) = o.parse::<Uri>() else {
        return false;
    };
    uri.scheme().is_some()
        && uri.authority().is_some()
        && !o.ends_with('/')
        && uri
            .path_and_query()
            .map_or(true, |pq| pq.as_str() == "/" || pq.as_str().is_empty())
}
