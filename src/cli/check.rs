//! `--check`: the effective configuration, printed as TOML with secrets redacted.
//!
//! This module owns what counts as a secret when configuration is shown to a
//! person (a terminal, a CI log, a support ticket). It must never change the
//! configuration that runs; it only renders a copy of it.
//!
//! Redaction is by shape, not by a list of today's fields, so keys added later
//! are covered too: a value is replaced when its key names a credential
//! (`password`, `secret`, `token`, `authorization`, `cookie`, `api_key`, or ends
//! in `_password`, `_secret`, `_token`, `_key`), and the password of any URL
//! with user info (`http://user:pass@host`) is replaced in every string.

use toml::Value;

use pollcast::config::{Config, Sources};

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

/// The effective configuration (defaults filled in, environment applied) as
/// TOML; with `sources`, followed by a comment block saying where each
/// value came from (default, file:line, env VAR, flag).
pub fn render(config: &Config, sources: Option<&Sources>) -> Result<String, toml::ser::Error> {
    let mut value = Value::try_from(config.effective())?;
    redact(&mut value);
    let mut out = toml::to_string_pretty(&value)?;
    if let Some(sources) = sources {
        let mut keys = Vec::new();
        leaves(&value, String::new(), &mut keys);
        let width = keys.iter().map(String::len).max().unwrap_or(0);
        out.push_str("\n# Where each value came from:\n");
        for k in keys {
            out.push_str(&format!("#   {k:<width$}  {}\n", sources.of(&k)));
        }
    }
    Ok(out)
}

/// Every leaf key of `value`, dotted, arrays of tables by index.
fn leaves(value: &Value, key: String, out: &mut Vec<String>) {
    let join = |k: &str| {
        if key.is_empty() {
            k.to_owned()
        } else {
            format!("{key}.{k}")
        }
    };
    match value {
        Value::Table(t) => t.iter().for_each(|(k, v)| leaves(v, join(k), out)),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_table) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{key}[{i}]"), out)),
        _ => out.push(key),
    }
}

/// Replace every secret in `value`, recursively.
pub fn redact(value: &mut Value) {
    match value {
        Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                if is_secret_key(k) {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some(clean) = redact_userinfo(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    matches!(
        k.as_str(),
        "password" | "secret" | "token" | "authorization" | "cookie" | "api_key" | "apikey"
    ) || ["_password", "_secret", "_token", "_key"]
        .iter()
        .any(|s| k.ends_with(s))
}

/// `scheme://user:pass@rest` -> `scheme://user:REDACTED@rest`, and
/// `scheme://user@rest` -> `scheme://REDACTED@rest` (a lone user name is often
/// a token); `None` when the string has no user info.
fn redact_userinfo(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let kept = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    Some(format!("{scheme}://{kept}{}", &rest[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys_and_url_passwords_are_redacted_anywhere() {
        let mut v: Value = toml::from_str(
            r#"
            url = "http://svc:hunter2@api:3000/v1"
            plain = "http://api:3000/x@y"
            [[feeds]]
            name = "jobs"
            token_param = "token"
            client_secret = "s1"
            [feeds.headers]
            Authorization = "Bearer abc"
            X-Api-Key = "k1"
            "#,
        )
        .expect("toml");
        redact(&mut v);
        let out = toml::to_string(&v).expect("ser");
        for secret in ["hunter2", "s1", "Bearer abc", "k1"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        assert!(out.contains("http://svc:REDACTED@api:3000/v1"), "{out}");
        // Names of things are not secrets.
        assert!(out.contains("token_param = \"token\""), "{out}");
        assert!(out.contains("http://api:3000/x@y"), "{out}");
    }
}
