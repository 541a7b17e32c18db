//! The JSON Schema of config.toml (docs/config.schema.json): generated from
//! the config types and committed, so it must be current; every config the
//! project ships must satisfy it; it must refuse what the loader refuses
//! for its shape (unknown keys, wrong types, durations that do not parse);
//! editors must be pointed at it (`#:schema` directives, .taplo.toml).

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed() -> Value {
    let text = std::fs::read_to_string(root().join("docs/config.schema.json"))
        .expect("docs/config.schema.json");
    serde_json::from_str(&text).expect("the committed schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&committed()).expect("a valid JSON Schema")
}

fn toml_to_json(text: &str, what: &str) -> Value {
    let v: toml::Value = toml::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    serde_json::to_value(v).expect("TOML as JSON")
}

/// The schema's complaints about `text`, one line each.
fn problems(v: &jsonschema::Validator, text: &str, what: &str) -> Vec<String> {
    let instance = toml_to_json(text, what);
    v.iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

/// Every config the project ships: config.toml, examples/**/*.toml, and the
/// `*.toml` entries of ConfigMaps under deploy/.
fn shipped_configs() -> Vec<(String, String)> {
    let mut configs = Vec::new();
    let mut tomls = vec![root().join("config.toml")];
    files_under(&root().join("examples"), "toml", &mut tomls);
    files_under(&root().join("deploy"), "toml", &mut tomls);
    for p in tomls {
        let text = std::fs::read_to_string(&p).expect("read");
        configs.push((p.display().to_string(), text));
    }
    let mut yamls = Vec::new();
    files_under(&root().join("deploy"), "yaml", &mut yamls);
    for p in yamls {
        let text = std::fs::read_to_string(&p).expect("read");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let Ok(v) = <serde_json::Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            if v["kind"] != "ConfigMap" {
                continue;
            }
            let Some(data) = v["data"].as_object() else {
                continue;
            };
            for (name, body) in data {
                if let (true, Some(body)) = (name.ends_with(".toml"), body.as_str()) {
                    configs.push((format!("{} data.{name}", p.display()), body.to_owned()));
                }
            }
        }
    }
    configs
}

#[test]
fn the_committed_schema_is_what_the_config_types_generate() {
    assert!(
        committed() == pollcast::config::schema::schema(),
        "docs/config.schema.json is stale: run `cargo run -- --print-schema > docs/config.schema.json` and commit it"
    );
}

#[test]
fn every_shipped_config_satisfies_the_schema() {
    let v = validator();
    let configs = shipped_configs();
    assert!(
        configs.len() >= 8,
        "config.toml, six examples and the ConfigMap: {:?}",
        configs.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (name, text) in configs {
        let p = problems(&v, &text, &name);
        assert!(
            p.is_empty(),
            "{name} does not satisfy the schema:\n{}",
            p.join("\n")
        );
    }
}

#[test]
fn the_schema_refuses_what_the_loader_refuses_for_its_shape() {
    let v = validator();
    let good = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[[feeds]]\nname = \"jobs\"\npoll = \"/api/jobs\"\n";
    assert_eq!(problems(&v, good, "good"), Vec::<String>::new());
    for (bad, why) in [
        ("[sse]\nkeepalivee = \"1s\"\n", "an unknown key in a table"),
        ("colour = \"blue\"\n", "an unknown top-level key"),
        ("[reload]\nwatch = \"yes\"\n", "a string for a bool"),
        (
            "[sse]\nkeepalive = \"soon\"\n",
            "a duration that does not parse",
        ),
        ("[sse]\nkeepalive = 5\n", "a number for a duration"),
        ("[log]\nlevel = \"loud\"\n", "a level that is not one"),
        ("[limits]\nmax_subscribers = -1\n", "a negative count"),
    ] {
        let text = format!("{good}{bad}");
        assert!(
            !problems(&v, &text, why).is_empty(),
            "{why} passed the schema"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).expect("write");
        assert!(
            pollcast::config::Config::load(&path).is_err(),
            "{why}: the loader accepts it, the schema should too"
        );
    }
    // Unknown keys inside a feed and its event contract too.
    let feed_typo = good.replace("poll = ", "pol = \"/x\"\npoll = ");
    assert!(!problems(&v, &feed_typo, "feed typo").is_empty());
    let event_typo = format!("{good}[feeds.events]\nadded = {{ evnt = \"x\" }}\n");
    assert!(!problems(&v, &event_typo, "event typo").is_empty());
    // Durations the loader reads are accepted.
    for d in ["2s", "500ms", "1m 30s", "1h", "250 ms"] {
        let text = format!("{good}[sse]\nkeepalive = \"{d}\"\n");
        assert_eq!(problems(&v, &text, d), Vec::<String>::new(), "{d}");
    }
}

#[test]
fn editors_are_pointed_at_the_schema() {
    let mut files = vec![root().join("config.toml")];
    files_under(&root().join("examples"), "toml", &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let first = text.lines().next().unwrap_or_default();
        let target = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{} does not start with a #:schema directive", f.display()));
        let resolved = f.parent().expect("dir").join(target.trim());
        assert_eq!(
            std::fs::canonicalize(&resolved).ok(),
            std::fs::canonicalize(root().join("docs/config.schema.json")).ok(),
            "{}: #:schema {target} is not docs/config.schema.json",
            f.display()
        );
    }
    let taplo = std::fs::read_to_string(root().join(".taplo.toml")).expect(".taplo.toml");
    let taplo: toml::Value = toml::from_str(&taplo).expect("TOML");
    let rules = taplo["rule"].as_array().expect("[[rule]]");
    assert!(
        rules.iter().any(|r| {
            r.get("schema")
                .and_then(|s| s.get("path"))
                .and_then(toml::Value::as_str)
                == Some("./docs/config.schema.json")
        }),
        ".taplo.toml has no rule with the schema: {taplo:?}"
    );
}

#[test]
fn the_shipped_config_shows_every_key_the_schema_knows() {
    let text = std::fs::read_to_string(root().join("config.toml")).expect("config.toml");
    let schema = committed();
    let mut keys = Vec::new();
    let tables = std::iter::once(&schema).chain(
        schema["definitions"]
            .as_object()
            .expect("definitions")
            .values(),
    );
    for t in tables {
        if let Some(props) = t["properties"].as_object() {
            keys.extend(props.keys().cloned());
        }
    }
    // Written as `key = ...` (perhaps commented out, perhaps inside an
    // inline table), as a dotted `key.x = ...` or as a `[key]`/`[table.key]` header.
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| {
            !(text.contains(&format!("{k} ="))
                || text.contains(&format!("{k}."))
                || text.contains(&format!(".{k}]"))
                || text.contains(&format!("[{k}]")))
        })
        .collect();
    assert!(missing.is_empty(), "config.toml does not show {missing:?}");
}
