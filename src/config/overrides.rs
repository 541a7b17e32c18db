//! The one rule for environment overrides: `POLLCAST_<SECTION>__<KEY>`
//! (`__` between the levels of a dotted key, each level upper-cased), and
//! `POLLCAST_FEEDS__<NAME>__<KEY>` for the `[[feeds]]` entry named NAME.
//!
//! Overrides are merged into the parsed file *before* it becomes a typed
//! [`Config`], so every key can be overridden and a value is read exactly as
//! the file's value would be: first as a TOML value (`100`, `true`,
//! `["a", "b"]`, `{ event = "x" }`), and when that does not fit the key, as
//! the plain string (`2s`, `0.0.0.0:8080`, `/api/jobs`). An override that
//! does not fit is an error naming the variable. This module must never
//! read the environment itself: the caller hands the variables in.

use toml::{Table, Value};

use super::*;

/// The prefix of every override; `__` separates the levels of a key.
pub(crate) const PREFIX: &str = "POLLCAST_";
const SEP: &str = "__";

/// The override variables among `vars`, sorted by name (so a failure is
/// reported for the same variable every time).
pub fn select(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut v: Vec<_> = vars
        .into_iter()
        .filter(|(k, _)| k.strip_prefix(PREFIX).is_some_and(|r| r.contains(SEP)))
        .collect();
    v.sort();
    v
}

/// How a feed's name is written in a variable: upper case, and every
/// character that cannot be in a variable name (`-`, `.`, ...) as `_`.
pub(crate) fn env_name(feed: &str) -> String {
    feed.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The key path a variable names in `table`, e.g. `["feeds", "0",
/// "interval"]` (a feed by its index), or why it names none.
pub(crate) fn key_path(var: &str, table: &Table) -> Result<Vec<String>, String> {
    let rest = var.strip_prefix(PREFIX).unwrap_or(var);
    let parts: Vec<&str> = rest.split(SEP).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("an empty key between `__` separators".into());
    }
    let mut path: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    if path[0] == "feeds" {
        let feeds = table
            .get("feeds")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let names: Vec<&str> = feeds
            .iter()
            .filter_map(|f| f.get("name").and_then(Value::as_str))
            .collect();
        let hits: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| env_name(n) == parts[1])
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] if path.len() > 2 => path[1] = i.to_string(),
            [_] => return Err("names a feed but no key: add `__<KEY>`".into()),
            [] => {
                return Err(format!(
                    "no [[feeds]] entry is named {} (feeds are named in the file; here: {})",
                    parts[1],
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names
                            .iter()
                            .map(|n| env_name(n))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
            }
            _ => {
                return Err(format!(
                    "more than one [[feeds]] entry is named {}",
                    parts[1]
                ))
            }
        }
    }
    Ok(path)
}

/// The dotted form of a key path: `feeds[0].interval`.
pub fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for (i, p) in path.iter().enumerate() {
        if i == 1 && path[0] == "feeds" {
            s.push_str(&format!("[{p}]"));
        } else {
            if i > 0 {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    s
}

/// Put `value` at `path` in `table`, creating tables on the way.
fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("no key")?;
    let mut cur = table;
    let mut walked = Vec::new();
    for (n, p) in parents.iter().enumerate() {
        walked.push(p.clone());
        let next = if n == 0 && p == "feeds" {
            // key_path made the next part an index of an existing entry.
            let i: usize = parents
                .get(1)
                .and_then(|i| i.parse().ok())
                .ok_or("no feed index")?;
            cur.get_mut("feeds")
                .and_then(Value::as_array_mut)
                .and_then(|a| a.get_mut(i))
        } else if n == 1 && parents[0] == "feeds" {
            continue;
        } else {
            Some(
                cur.entry(p.clone())
                    .or_insert_with(|| Value::Table(Table::new())),
            )
        };
        cur = match next {
            Some(Value::Table(t)) => t,
            _ => return Err(format!("`{}` is not a table", dotted(&walked))),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// The two readings of a variable's value: as TOML when it is a TOML value, and as a string.
fn readings(raw: &str) -> (Option<Value>, Value) {
    let typed = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    (typed, Value::String(raw.to_owned()))
}

/// Whether `table` makes a [`Config`], or would once a key it lacks is
/// added (a later variable may add it: `server.tls` needs `cert` and `key`).
fn fits(table: &Table) -> Result<(), String> {
    match Value::Table(table.clone()).try_into::<Config>() {
        Ok(_) => Ok(()),
        Err(e) if e.message().starts_with("missing field") => Ok(()),
        Err(e) => Err(e.message().trim().to_owned()),
    }
}

/// Merge `vars` (already [`select`]ed) into the parsed file `table`,
/// each variable in the first reading that fits. A variable that fits in
/// neither is the error; when the file itself does not fit, no variable
/// can be judged and each takes its first reading (the caller reports
/// the file). Returns each variable's key (dotted) for `--check`.
pub(crate) fn merge(
    table: &mut Table,
    vars: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let err = |var: &str, message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let judge = fits(table).is_ok();
    let mut applied = Vec::new();
    for (var, raw) in vars {
        let path = key_path(var, table).map_err(|m| err(var, m))?;
        let (typed, plain) = readings(raw);
        let mut chosen = None;
        let mut first_error = None;
        for candidate in typed.into_iter().chain([plain]) {
            let mut t = table.clone();
            set(&mut t, &path, candidate).map_err(|m| err(var, m))?;
            match if judge { fits(&t) } else { Ok(()) } {
                Ok(()) => {
                    chosen = Some(t);
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(t) = chosen else {
            return Err(err(
                var,
                format!(
                    "`{raw}` does not fit {}: {}",
                    dotted(&path),
                    first_error.unwrap_or_default()
                ),
            ));
        };
        *table = t;
        applied.push((dotted(&path), var.clone()));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).expect("toml")
    }

    const FILE: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[[feeds]]\nname = \"job-runs\"\npoll = \"/a\"\n[[feeds]]\nname = \"b\"\npoll = \"/b\"\n";

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        select(v.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn every_kind_of_value_lands_typed_at_its_key() {
        let mut t = table(FILE);
        let applied = merge(
            &mut t,
            &vars(&[
                ("POLLCAST_SSE__KEEPALIVE", "5s"),
                ("POLLCAST_LIMITS__MAX_SUBSCRIBERS", "100"),
                ("POLLCAST_UPSTREAM__FORWARDED", "true"),
                ("POLLCAST_CORS__ALLOWED_ORIGINS", r#"["https://a.example"]"#),
                ("POLLCAST_SERVER__TLS__CERT", "/tls/tls.crt"),
                ("POLLCAST_SERVER__TLS__KEY", "/tls/tls.key"),
                ("POLLCAST_FEEDS__JOB_RUNS__INTERVAL", "250ms"),
                ("POLLCAST_FEEDS__B__EVENTS__ADDED__EVENT", "b_added"),
                ("POLLCAST_ADMIN__PREFIX", "/ops"),
                ("POLLCAST_CONFIG", "ignored: no __"),
            ]),
        )
        .expect("merge");
        let c: Config = Value::Table(t).try_into().expect("config");
        assert_eq!(c.sse.keepalive, Duration::from_secs(5));
        assert_eq!(c.limits.max_subscribers, 100);
        assert!(c.upstream.forwarded);
        assert_eq!(c.cors.allowed_origins, ["https://a.example"]);
        let tls = c.server.tls.expect("tls");
        assert_eq!(tls.cert, PathBuf::from("/tls/tls.crt"));
        assert_eq!(c.feeds[0].interval, Duration::from_millis(250));
        assert_eq!(
            c.feeds[1]
                .events
                .added
                .as_ref()
                .and_then(|e| e.event.as_deref()),
            Some("b_added")
        );
        assert_eq!(c.admin.prefix, "/ops");
        assert!(applied.contains(&(
            "feeds[0].interval".to_owned(),
            "POLLCAST_FEEDS__JOB_RUNS__INTERVAL".to_owned()
        )));
        assert_eq!(applied.len(), 9);
    }

    #[test]
    fn a_value_that_does_not_fit_names_the_variable_and_the_key() {
        for (var, raw, part) in [
            ("POLLCAST_SSE__KEEPALIVE", "soon", "sse.keepalive"),
            (
                "POLLCAST_LIMITS__MAX_SUBSCRIBERS",
                "-1",
                "limits.max_subscribers",
            ),
            ("POLLCAST_SSE__KEEPALIVEE", "5s", "keepalivee"),
            ("POLLCAST_FEEDS__NOPE__INTERVAL", "5s", "JOB_RUNS, B"),
            ("POLLCAST_FEEDS__B", "5s", "no key"),
        ] {
            let e = merge(&mut table(FILE), &vars(&[(var, raw)]))
                .expect_err(var)
                .to_string();
            assert!(
                e.starts_with(&format!("environment variable {var}: ")),
                "{e}"
            );
            assert!(e.contains(part), "{part} not in {e}");
        }
    }

    #[test]
    fn a_variable_can_supply_what_the_file_lacks() {
        let mut t = table("[[feeds]]\nname = \"a\"\npoll = \"/a\"\n");
        merge(
            &mut t,
            &vars(&[("POLLCAST_UPSTREAM__URL", "http://api:3000")]),
        )
        .expect("merge");
        let c: Config = Value::Table(t).try_into().expect("config");
        assert!(
            c.upstream.url.to_string().contains("api:3000"),
            "{}",
            c.upstream.url
        );
    }
}
