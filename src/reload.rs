//! Config reload (SIGHUP, or a change `crate::watch` saw): which parts of a new configuration take effect
//! in a running pollcast, and the log lines that say what happened.
//!
//! This module owns the reload policy. Applied live: `[[feeds]]` (added,
//! removed and changed definitions, see `feed::registry::Registry::reload`)
//! and `[log] level`. Everything else (listeners, TLS, upstream, `[sse]`,
//! `[admin]`, limits, `[log] format`, ...) is bound to sockets, clients or
//! tasks made at startup: a change there is reported as needing a restart
//! and the running value stays. It must never apply a config that did not
//! validate: the caller only hands over a loaded [`Config`], and a file that
//! fails to load is rejected before this module is reached.

use crate::config::Config;
use crate::feed::registry::Reloaded;
use crate::logging::LogHandle;
use crate::start::Running;

/// What one reload did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub feeds: Reloaded,
    /// With `[server.tls]`: whether the certificate and key files were read
    /// again and are used from the next handshake on (`Err`: the old ones stay).
    pub tls: Option<Result<(), String>>,
    /// Top-level keys (`server`, `log.format`, ...) whose change needs a restart.
    pub needs_restart: Vec<String>,
}

/// The top-level tables (and `log.format`) that differ, apart from what a
/// reload applies. Compared through serde, so tables added later are covered.
pub(crate) fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let strip = |c: &Config| {
        let mut v = serde_json::to_value(c).unwrap_or_default();
        if let Some(t) = v.as_object_mut() {
            t.remove("feeds");
            if let Some(log) = t.get_mut("log").and_then(|l| l.as_object_mut()) {
                log.remove("level");
            }
        }
        v
    };
    let (a, b) = (strip(old), strip(new));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            if k == "log" {
                "log.format".to_owned()
            } else {
                k.clone()
            }
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Put `new` in force in `running`; `current` is the config in force and
/// becomes it (apart from what needs a restart).
pub fn apply(
    running: &Running,
    current: &mut Config,
    new: Config,
    log: Option<&LogHandle>,
) -> Outcome {
    let needs_restart = needs_restart(current, &new);
    for f in &new.feeds {
        running.shared.metrics.declare_feed(&f.name);
        if f.serve_polls {
            running.shared.metrics.declare_stragglers(&f.name);
        }
    }
    let feeds = running.registry.reload(&new.feeds);
    if let Some(log) = log {
        if new.log.level != current.log.level {
            log.set_level(new.log.level);
        }
    }
    current.feeds = new.feeds;
    current.log.level = new.log.level;
    tracing::info!(
        added = ?feeds.added,
        removed = ?feeds.removed,
        changed = ?feeds.changed,
        unchanged = feeds.unchanged.len(),
        ended_subscribers = feeds.ended_subscribers,
        log_level = current.log.level.as_str(),
        "config reloaded"
    );
    if !needs_restart.is_empty() {
        tracing::warn!(
            keys = ?needs_restart,
            "config reload: these settings changed but only take effect after a restart; the running values stay"
        );
    }
    // The same files, read again: a rotated certificate is served from the
    // next handshake on (changed paths need a restart, reported above).
    let tls = running.tls.as_ref().map(|live| match live.reload() {
        Ok(()) => {
            tracing::info!("TLS certificate and key reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, key = e.key, "TLS reload failed: the certificate in use stays");
            Err(e.to_string())
        }
    });
    Outcome {
        feeds,
        tls,
        needs_restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FeedConfig, LogFormat, LogLevel, UpstreamUrl};

    #[test]
    fn only_what_a_reload_cannot_apply_is_reported() {
        let url = UpstreamUrl::parse("http://127.0.0.1:3000").expect("url");
        let old = Config::new(url, vec![FeedConfig::new("a", "/a")]);
        let mut new = old.clone();
        new.feeds.push(FeedConfig::new("b", "/b"));
        new.log.level = LogLevel::Debug;
        assert!(needs_restart(&old, &new).is_empty());
        new.log.format = LogFormat::Json;
        new.server.listen = "127.0.0.1:9".parse().expect("addr");
        new.sse.history = 7;
        assert_eq!(needs_restart(&old, &new), ["log.format", "server", "sse"]);
    }
}
