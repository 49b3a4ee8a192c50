//! Fuzz target: see `flext_testing::fuzz::event_envelope`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flext_testing::fuzz::event_envelope(data));
