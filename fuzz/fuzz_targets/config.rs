//! A config file: parse and validate, errors located.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollcast::fuzzing::config_input(data));
