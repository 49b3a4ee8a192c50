//! Fuzz target: see `flext_testing::fuzz::config_patch`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flext_testing::fuzz::config_patch(data));
