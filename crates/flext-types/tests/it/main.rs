//! Integration tests of flext-types, one binary, by topic.

#[cfg(feature = "axum")]
mod axum;
