//! Reading a config file: TOML parsing, then overrides and validation, with
//! every error located by file, line, column and key.

use super::*;

impl Config {
    /// Read, parse, apply environment overrides and validate a config file.
    pub(crate) fn load_with(path: &Path, checks: &Checks) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with(&text, path, checks)
    }

    /// Parse and validate config text; `path` is only used in error messages.
    pub(crate) fn from_toml_with(
        text: &str,
        path: &Path,
        checks: &Checks,
    ) -> Result<Self, ConfigError> {
        let vars = overrides::select(std::env::vars());
        Self::from_toml_env(text, path, checks, &vars)
    }

    /// [`Config::from_toml_with`] with the `POLLCAST_<SECTION>__<KEY>`
    /// variables given (see `overrides`), not read from the process.
    pub(crate) fn from_toml_env(
        text: &str,
        path: &Path,
        checks: &Checks,
        vars: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let parse_error = |e: toml::de::Error| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                key: key_at(text, line),
                message: e.message().trim().to_owned(),
            }
        };
        // The file alone first: its errors carry a line and a column.
        let from_file = toml::from_str::<Config>(text);
        let mut config = if vars.is_empty() {
            from_file.map_err(parse_error)?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
            overrides::merge(&mut table, vars)?;
            match toml::Value::Table(table).try_into::<Config>() {
                Ok(c) => c,
                // Only when the file alone was not valid either (merge pins
                // a variable's own failure on it): the file is at fault.
                Err(e) => {
                    return Err(match from_file {
                        Err(file_error) => parse_error(file_error),
                        Ok(_) => ConfigError::Env {
                            var: vars
                                .iter()
                                .map(|(k, _)| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            message: e.message().trim().to_owned(),
                        },
                    })
                }
            }
        };
        // The older names of six keys, unless the `__` form is set too.
        config.apply_env(|k| {
            let canonical = env::CANONICAL.iter().find(|(alias, _)| *alias == k)?.1;
            if vars.iter().any(|(v, _)| v == canonical) {
                return None;
            }
            std::env::var(k).ok()
        })?;
        let invalid = |p: Problem| {
            let (line, column) = locate(text, &p).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                key: p.key_path(),
                message: p.message,
            }
        };
        config
            .resolve_credentials(|k| std::env::var(k).ok())
            .map_err(invalid)?;
        if let Some(c) = &mut config.cluster {
            c.resolve_secret(|k| std::env::var(k).ok())
                .map_err(invalid)?;
        }
        config.validate_with(checks).map_err(invalid)?;
        if let Some(tls) = &mut config.server.tls {
            let dir = path.parent().unwrap_or(Path::new(""));
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
            // Load once now so a bad certificate fails the start (and --check)
            // with the key named, not the first handshake.
            (checks.tls)(tls)
                .map_err(|(key, m)| invalid(Problem::in_table("server.tls", key, m)))?;
        }
        Ok(config)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

/// The dotted key a line defines, e.g. `feeds[1].interval`, for parse errors.
fn key_at(text: &str, line: usize) -> String {
    let mut table = String::new();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    let mut key = String::new();
    for (n, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let c = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{c}]");
            *c += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
        if n + 1 == line {
            if let Some((k, _)) = t.split_once('=') {
                key = k.trim().trim_matches('"').to_owned();
            }
            break;
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// The line and column a validation problem refers to, found in the source
/// text: the key's own line, else its table's header line.
fn locate(text: &str, p: &Problem) -> Option<(usize, usize)> {
    let mut in_table = p.table.is_none();
    let mut seen = 0usize;
    let mut table_line = None;
    for (n, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            in_table = match &p.table {
                Some((name, Some(i))) if t.starts_with("[[") => {
                    let hit = t.trim_start_matches("[[").split("]]").next().map(str::trim)
                        == Some(name.as_str());
                    let want = hit && seen == *i;
                    if hit {
                        seen += 1;
                    }
                    want
                }
                Some((name, None)) => {
                    t.trim_start_matches('[').split(']').next().map(str::trim)
                        == Some(name.as_str())
                }
                _ => false,
            };
            if in_table {
                table_line = Some((n + 1, l.len() - l.trim_start().len() + 1));
            }
            continue;
        }
        if in_table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == p.key {
                    return Some((n + 1, l.len() - l.trim_start().len() + 1));
                }
            }
        }
    }
    table_line
}
