//! How projections and relays retry a failing event: [`Backoff`](flext_impl::Backoff) between tries,
//! [`ErrorClass`] to tell passing failures from the others, and [`DeadLetterPolicy`] for
//! what a dead letter does to its stream.

use flext_constants::ErrorCode;
use flext_types::FlextError;

/// How a failure of one event is retried (see [`ProjectionConfig`](crate::ProjectionConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// A passing failure of the world around the projection (a database down, a timeout,
    /// a rate limit): retried with backoff without using up an attempt, until
    /// `give_up_after` has passed since the event first failed.
    Transient,
    /// Retried with backoff, each try using up one of `max_attempts`.
    Counted,
    /// Not worth another try: dead-lettered at once.
    Permanent,
    /// Not the event's fault but the setup's (an [`EventRelay`](crate::EventRelay) whose
    /// subscribers of one event share a name, say): the runner stops with the error. The
    /// event is neither retried nor dead-lettered and the checkpoint stays before it, so
    /// the next run, once the setup is fixed, tries it again. A retry of a dead letter that
    /// meets such an error stops with it and leaves the letter as it was.
    Stop,
}

/// The error codes [`ErrorClass::of`] calls transient: `STORAGE_ERROR`, `TIMEOUT`,
/// `RATE_LIMITED` and `UNAVAILABLE`.
pub const TRANSIENT_BY_DEFAULT: [ErrorCode; 4] = [
    ErrorCode::StorageError,
    ErrorCode::Timeout,
    ErrorCode::RateLimited,
    ErrorCode::Unavailable,
];

impl ErrorClass {
    /// The default classification: [`TRANSIENT_BY_DEFAULT`] codes are
    /// [`Transient`](ErrorClass::Transient), every other error (a panic included) is
    /// [`Counted`](ErrorClass::Counted), except the errors a runner or relay of this crate
    /// raises to stop (a relay's subscribers sharing a name), which are
    /// [`Stop`](ErrorClass::Stop) whatever the classifier says.
    ///
    /// ```
    /// use flext_cqrs::ErrorClass;
    /// use flext_types::FlextError;
    ///
    /// assert_eq!(ErrorClass::of(&FlextError::storage("db down")), ErrorClass::Transient);
    /// assert_eq!(ErrorClass::of(&FlextError::validation("bad")), ErrorClass::Counted);
    /// ```
    pub fn of(error: &FlextError) -> Self {
        if stops_runner(error) {
            Self::Stop
        } else if TRANSIENT_BY_DEFAULT.contains(&error.code()) {
            Self::Transient
        } else {
            Self::Counted
        }
    }
}

/// What a dead letter does to the later events of its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterPolicy {
    /// Events of one stream are applied in order or not at all (Axon's sequenced dead-letter
    /// queue, the default): once an event of a stream is dead-lettered, each later event of
    /// that stream is recorded as a dead letter parked behind it, untried, until the
    /// sequence is retried or discarded. Other streams go on.
    #[default]
    Sequenced,
    /// A dead letter stands alone: later events of its stream are applied as usual.
    Skip,
}

/// The mark of an error that stops a runner ([`ErrorClass::Stop`]): the error's source,
/// holding the error as it was raised, so that the mark survives being passed on (a relay's
/// error reaches its runner through `Projection::apply`).
#[derive(Debug)]
struct StopsRunner(FlextError);

impl std::fmt::Display for StopsRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stops the runner: {}", self.0)
    }
}

impl std::error::Error for StopsRunner {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// `error`, marked to stop the runner that meets it, whatever its classifier says.
pub(crate) fn stopping(error: FlextError) -> FlextError {
    if stops_runner(&error) {
        return error;
    }
    let mut marked = FlextError::new(error.code(), error.message().to_owned());
    if let Some(data) = error.data() {
        marked = marked.with_data(data.clone());
    }
    marked.with_source(StopsRunner(error))
}

/// Whether `error` was marked by [`stopping`].
pub(crate) fn stops_runner(error: &FlextError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    // `FlextError` keeps its source in an `Arc`, which may be what `source` hands out.
    std::error::Error::source(error).is_some_and(|source| {
        source.is::<StopsRunner>()
            || source
                .downcast_ref::<Shared>()
                .is_some_and(|shared| shared.is::<StopsRunner>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_error_keeps_its_code_message_and_data_and_is_known_as_such() {
        let plain = FlextError::invalid_argument("two subscribers named 'a'")
            .with_data(serde_json::json!({ "subscriber": "a" }));
        assert!(!stops_runner(&plain));
        assert_eq!(ErrorClass::of(&plain), ErrorClass::Counted);
        let marked = stopping(plain.clone());
        assert!(stops_runner(&marked));
        assert!(stops_runner(&marked.clone()), "through a clone");
        assert!(stops_runner(&stopping(marked.clone())), "marked once");
        assert_eq!(ErrorClass::of(&marked), ErrorClass::Stop);
        assert_eq!(marked, plain, "same code, message and data");
        let mark = std::error::Error::source(&marked).expect("the mark is the source");
        assert_eq!(
            mark.to_string(),
            "stops the runner: two subscribers named 'a'"
        );
        assert_eq!(
            mark.source().map(ToString::to_string).as_deref(),
            Some("two subscribers named 'a'"),
            "the error as raised is under the mark"
        );
    }
}
