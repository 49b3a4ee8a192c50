//! NATS errors as `FlextError`s.

use flext_types::FlextError;

/// `context` and the client's error as an `UNAVAILABLE` error (the broker did not do what
/// was asked: not connected, no answer, refused), with the client's error as its source.
pub(crate) fn nats_error<E>(context: String, error: E) -> FlextError
where
    E: std::error::Error + Send + Sync + 'static,
{
    FlextError::unavailable(format!("{context}: {error}")).with_source(error)
}
