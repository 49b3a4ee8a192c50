//! Fuzz target: see `flext_testing::fuzz::named_query`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flext_testing::fuzz::named_query(data));
