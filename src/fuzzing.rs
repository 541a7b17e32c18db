//! Entry points for fuzzing: the functions the cargo-fuzz targets in `fuzz/`
//! call, and that `tests/fuzz_corpus.rs` runs over the checked-in corpus on
//! stable Rust, so every input a fuzzer ever kept stays a regression test.
//!
//! This module owns no behaviour: it drives the real code (extract, diff,
//! the default contract, config parsing) with arbitrary bytes and asserts
//! what must hold for any input. It must never be used by the server.

use std::path::Path;

use bytes::Bytes;

use crate::config::{Config, FeedConfig};
use crate::feed::{contract, diff, extract};
use crate::pointer::Pointer;

/// Two poll bodies, as a fuzzer's bytes: everything before the first `0xff`
/// is the old body, the rest the new one (a lone body is diffed against
/// itself). Both are extracted (body = the array, and `/items`), diffed, and
/// the changes rendered with the default contract: nothing may panic, and
/// every event payload must be valid JSON.
pub fn diff_input(data: &[u8]) {
    let (old, new) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let id = Pointer::parse("/id").unwrap_or_default();
    let def = FeedConfig::new("fuzz", "/fuzz");
    let Ok(compiled) = contract::Contract::compile(&def) else {
        return;
    };
    let render = contract::Render::new(compiled, "fuzz", &[]);
    for items in ["", "/items"] {
        let items = Pointer::parse(items).unwrap_or_default();
        let a = extract::extract(Bytes::copy_from_slice(old), &items, &id);
        let b = extract::extract(Bytes::copy_from_slice(new), &items, &id);
        let (Ok((a, _)), Ok((b, _))) = (a, b) else {
            continue;
        };
        let changes = diff::diff(&a, &b, &[]);
        if old == new {
            assert!(changes.is_empty(), "identical bodies produced changes");
        }
        let poll = contract::Poll {
            old: &a,
            new: &b,
            changes: &changes,
            appended: None,
            ignore: &[],
            timestamp: "null",
        };
        for (name, payload) in render.changes(&poll) {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&payload).is_ok(),
                "`{name}` payload is not JSON: {}",
                String::from_utf8_lossy(&payload)
            );
        }
        let (head, tail) = render.snapshot(&b);
        let _ = (head, tail);
    }
}

/// A config file's bytes: parsing and validation either succeed or fail with
/// an error that names the file (and so a line); never a panic.
pub fn config_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Config::from_toml(&text, Path::new("fuzz.toml")) {
        let msg = e.to_string();
        assert!(
            msg.contains("fuzz.toml") || msg.contains("environment variable"),
            "error without a location: {msg}"
        );
    }
}
