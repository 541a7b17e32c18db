//! Two poll bodies separated by a 0xff byte: extract, diff, render.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollcast::fuzzing::diff_input(data));
