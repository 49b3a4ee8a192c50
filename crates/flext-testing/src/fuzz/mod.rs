//! The bodies of the fuzz targets: one function per decoder of outside input, fed raw
//! bytes, asserting what must hold beyond "no panic".
//!
//! The libFuzzer targets in `fuzz/fuzz_targets/` call these functions, and this crate's
//! test `fuzz_corpus` replays every file of `fuzz/corpus/<target>/` through them, so a
//! short run of each target is part of `cargo test` without libFuzzer. Each function
//! panics (a crash, to the fuzzer) when a decoder breaks its contract:
//!
//! - a value that decodes encodes again and decodes to the same value;
//! - an input that does not decode is a [`FlextError`](flext_types::FlextError) with the
//!   code the decoder documents, whose message names what was being decoded;
//! - nothing panics across the API (a decoder's own panic reaches the fuzzer as a crash).
//!
//! Structured inputs (a row, a stored event) are split into fields at newlines, the last
//! field taking the rest, so the committed corpus files read as text.
//!
//! | target | decoder |
//! |---|---|
//! | [`config_patch`] | `HandlerConfig` patches (`ConfigSource` for JSON), environment names, whole configurations as JSON |
//! | [`event_envelope`] | `JsonPayload::from_text`, `EventMetadata` JSON, `Upcasters::decode` and `Envelope::decode` |
//! | [`named_query`] | `QueryBus::execute_named` arguments through `JsonHandler` |
//! | [`sql_row`] | `RawEvent::decode`, `RawSnapshot::decode`, `decode_dead_letters` (the SQL stores' row decoding) |
//! | `sqlite_row` | [`stored_row`]: a row of a real SQLite store overwritten with any values and read back |
//!
//! [`TARGETS`] lists the targets that need nothing but bytes; [`STORE_TARGETS`] those that
//! need a store, whose corpus the store's own tests replay (through [`stored_row`]).

mod config;
mod events;
mod query;
mod rows;
mod store;

pub use config::config_patch;
pub use events::event_envelope;
pub use query::named_query;
pub use rows::sql_row;
pub use store::{Cell, ROW_COLUMNS, stored_row};

/// The body of a fuzz target: it takes the fuzzer's bytes and panics on a broken contract.
pub type Target = fn(&[u8]);

/// Every target by the name of its directory under `fuzz/corpus/` and of its file under
/// `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("config_patch", config_patch),
    ("event_envelope", event_envelope),
    ("named_query", named_query),
    ("sql_row", sql_row),
];

/// The targets that run on a real store, by name; their bodies are [`stored_row`] and the
/// store's SQL, in the store's crate tests and in `fuzz/fuzz_targets/<name>.rs`.
pub const STORE_TARGETS: &[&str] = &["sqlite_row"];

/// `data` split at newlines into `N` fields, the last taking the rest (newlines included);
/// missing fields are empty.
fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for (index, field) in out.iter_mut().enumerate() {
        if index + 1 == N {
            *field = rest;
            break;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => {
                *field = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *field = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out
}

/// `bytes` as text, invalid UTF-8 replaced (the decoders under test take `&str`).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `value` holds a floating-point number anywhere: serde_json's default parser may
/// read a float back one unit in the last place off, so round trips are compared only
/// without them.
fn has_float(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(items) => items.iter().any(has_float),
        serde_json::Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::fields;

    #[test]
    fn fields_split_at_newlines_and_the_last_takes_the_rest() {
        let [a, b, c] = fields::<3>(b"one\ntwo\nthree\nfour");
        assert_eq!((a, b, c), (&b"one"[..], &b"two"[..], &b"three\nfour"[..]));
        let [a, b, c] = fields::<3>(b"only");
        assert_eq!((a, b, c), (&b"only"[..], &b""[..], &b""[..]));
    }
}
