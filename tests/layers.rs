//! The module map in `src/lib.rs` holds: every `crate::<module>` path in the
//! code (unit tests left out) names a module on the same layer or a lower
//! one, and the modules import one another in no loop.
//!
//! The layers are the ones `src/lib.rs` draws; a module missing from this
//! table fails the test, so a new module gets a place on the map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `src/lib.rs`'s map, top layer first.
const LAYERS: &[(&str, &[&str])] = &[
    ("start-up", &["start", "reload", "validation"]),
    ("listener", &["server", "direct"]),
    ("routing", &["router"]),
    (
        "answers",
        &[
            "sse",
            "admin",
            "status",
            "stragglers",
            "auth",
            "cluster",
            "fuzzing",
        ],
    ),
    ("context", &["shared"]),
    ("feeds", &["feed", "access"]),
    ("services", &["metrics", "readiness", "proxy"]),
    (
        "policy, io",
        &[
            "upstream",
            "limits",
            "cors",
            "stats",
            "tls",
            "logging",
            "watch",
            "trace",
            "healthcheck",
            "check",
            "init",
        ],
    ),
    ("model", &["config", "idle", "response"]),
    (
        "leaves",
        &[
            "body", "wire", "template", "pointer", "route", "budget", "cidr", "stall", "preface",
        ],
    ),
];

/// Layer of a module: 0 is the bottom.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, mods)| mods.contains(&module))
        .map(|top| LAYERS.len() - 1 - top)
}

/// The code of a file without its `#[cfg(test)]` module and its comments.
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::x` and `use crate::{x, y}` names of top-level modules in `code`.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name = part.trim().split("::").next().unwrap_or("").trim();
                if modules.contains(name) {
                    out.insert(name.to_owned());
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if modules.contains(&name) {
            out.insert(name);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_run_down_the_layers_of_the_module_map_and_never_in_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub(crate) mod "))
        })
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    for m in &modules {
        assert!(
            layer_of(m).is_some(),
            "module `{m}` has no layer: give it a place in src/lib.rs's map and in this table"
        );
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a name");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        // The crate root and the binary sit on top; `tests.rs` files are
        // unit tests (`#[cfg(test)] mod tests;`), which may use anything.
        // `cli/` is the binary's own side, above the whole library.
        if module == "lib" || module == "main" || module == "cli" || file.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source");
        let mine = layer_of(&module).expect("checked above");
        for used in imports(&code(&text), &modules) {
            if used == module {
                continue;
            }
            let theirs = layer_of(&used).expect("checked above");
            if theirs > mine {
                upward.push(format!(
                    "{} ({}) imports `{used}` ({})",
                    rel.display(),
                    LAYERS[LAYERS.len() - 1 - mine].0,
                    LAYERS[LAYERS.len() - 1 - theirs].0
                ));
            }
            graph.entry(module.clone()).or_default().insert(used);
        }
    }
    assert!(
        upward.is_empty(),
        "imports up the layers:\n{}",
        upward.join("\n")
    );
    // No loop among modules: repeatedly drop modules that import nothing left.
    let mut left = graph.clone();
    loop {
        let sinks: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if sinks.is_empty() {
            break;
        }
        for s in sinks {
            left.remove(&s);
        }
    }
    assert!(
        left.is_empty(),
        "modules that import one another in a loop: {:?}",
        left.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_crate_root_only_declares_and_re_exports() {
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs"))
        .expect("lib.rs");
    for line in lib.lines().filter(|l| !l.starts_with("//")) {
        let l = line.trim();
        assert!(
            l.is_empty()
                || l.starts_with("pub mod ")
                || l.starts_with("pub(crate) mod ")
                || l.starts_with("pub use ")
                || l == "#[cfg(feature = \"fuzzing\")]",
            "src/lib.rs holds more than the map: {line}"
        );
    }
}
