//! Where each value of a configuration came from: its default, a line of
//! the file, or an environment variable (and, set by the binary, a flag),
//! for `--check` to show. It must never decide a value: it only looks at
//! the text and the variables that the loader used.

use toml::de::{DeTable, DeValue};

use super::*;

/// The origin of every key set anywhere but in the defaults.
#[derive(Debug, Default)]
pub struct Sources {
    /// (dotted key, origin), later entries win.
    set: Vec<(String, String)>,
}

impl Sources {
    /// The keys the file at `path` (content `text`) sets, then those the
    /// override variables `vars` (see `overrides::select`) and the alias
    /// variables `get` finds set.
    pub fn collect(
        text: &str,
        path: &Path,
        vars: &[(String, String)],
        get: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let mut s = Self::default();
        if let Ok(t) = DeTable::parse(text) {
            walk(t.get_ref(), "", text, &mut |key, line| {
                s.set(&key, format!("{}:{line}", path.display()));
            });
        }
        for (alias, canonical) in env::CANONICAL {
            if get(alias).is_some() && !vars.iter().any(|(v, _)| v == canonical) {
                let key = canonical[overrides::PREFIX.len()..]
                    .replace("__", ".")
                    .to_ascii_lowercase();
                s.set(&key, format!("env {alias}"));
            }
        }
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        for (var, _) in vars {
            if let Ok(path) = overrides::key_path(var, &table) {
                s.set(&overrides::dotted(&path), format!("env {var}"));
            }
        }
        s
    }

    /// Record that `key` (and everything below it) came from `origin`.
    pub fn set(&mut self, key: &str, origin: String) {
        self.set.push((key.to_owned(), origin));
    }

    /// Where `key` (dotted, `feeds[0].interval`) came from: the last
    /// origin recorded for it or for a table or array holding it.
    pub fn of(&self, key: &str) -> &str {
        let covers = |p: &str| {
            key == p
                || key
                    .strip_prefix(p)
                    .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
        };
        self.set
            .iter()
            .rev()
            .find(|(p, _)| covers(p))
            .map_or("default", |(_, o)| o.as_str())
    }
}

/// Every leaf key of a parsed file with its 1-based line; arrays of tables
/// by index (`feeds[1].poll`).
fn walk(t: &DeTable<'_>, prefix: &str, text: &str, out: &mut impl FnMut(String, usize)) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        match v.get_ref() {
            DeValue::Table(inner) => walk(inner, &key, text, out),
            DeValue::Array(items)
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|i| matches!(i.get_ref(), DeValue::Table(_))) =>
            {
                for (n, item) in items.iter().enumerate() {
                    if let DeValue::Table(inner) = item.get_ref() {
                        walk(inner, &format!("{key}[{n}]"), text, out);
                    }
                }
            }
            _ => {
                let at = k.span().start.min(text.len());
                out(key, text[..at].matches('\n').count() + 1);
            }
        }
    }
}

#[cfg(test)]
mod sources_tests {
    use super::*;

    #[test]
    fn each_key_is_traced_to_its_line_its_variable_or_its_default() {
        let text = "[upstream]\nurl = \"http://a:1\"\ntimeout = \"3s\"\n\n[[feeds]]\nname = \"a\"\npoll = \"/a\"\n[[feeds]]\nname = \"job-runs\"\npoll = \"/b\"\n[feeds.events]\nadded = { event = \"x\" }\n";
        let vars = vec![
            (
                "POLLCAST_FEEDS__JOB_RUNS__INTERVAL".to_owned(),
                "1s".to_owned(),
            ),
            ("POLLCAST_SSE__KEEPALIVE".to_owned(), "5s".to_owned()),
        ];
        let s = Sources::collect(text, Path::new("c.toml"), &vars, |k| {
            (k == "POLLCAST_LOG_LEVEL" || k == "POLLCAST_SSE__KEEPALIVE").then(|| "x".to_owned())
        });
        assert_eq!(s.of("upstream.url"), "c.toml:2");
        assert_eq!(s.of("upstream.timeout"), "c.toml:3");
        assert_eq!(s.of("feeds[1].poll"), "c.toml:10");
        assert_eq!(s.of("feeds[1].events.added.event"), "c.toml:12");
        assert_eq!(
            s.of("feeds[1].interval"),
            "env POLLCAST_FEEDS__JOB_RUNS__INTERVAL"
        );
        assert_eq!(s.of("feeds[0].interval"), "default");
        assert_eq!(s.of("sse.keepalive"), "env POLLCAST_SSE__KEEPALIVE");
        assert_eq!(s.of("log.level"), "env POLLCAST_LOG_LEVEL");
        assert_eq!(s.of("upstream.urls"), "default");
    }
}
