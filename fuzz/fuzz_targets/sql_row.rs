//! Fuzz target: see `flext_testing::fuzz::sql_row`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flext_testing::fuzz::sql_row(data));
