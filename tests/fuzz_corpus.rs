//! The fuzz corpus as a regression test on stable Rust: every input in
//! `fuzz/corpus/<target>/` goes through the same function the cargo-fuzz
//! target calls (`pollcast::fuzzing`), so whatever a fuzzer found and kept
//! is checked by `cargo test` forever.

use std::path::Path;

fn run_corpus(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| f(&data));
        assert!(outcome.is_ok(), "{} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}

#[test]
fn diff_corpus() {
    run_corpus("diff", pollcast::fuzzing::diff_input);
}

#[test]
fn config_corpus() {
    run_corpus("config", pollcast::fuzzing::config_input);
}
