//! Tower's errors as [`FlextError`]s: which layer failed, for which handler.

use std::error::Error as StdError;
use std::fmt;

use flext_constants::ErrorCode;
use flext_types::FlextError;
use serde_json::json;
use tower::BoxError;
use tower::buffer::error::{Closed, ServiceError};
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;

/// Turns the error of a tower service serving `handler` into a [`FlextError`].
///
/// A `FlextError` (the handler's own, carried through the layers) comes back as it is.
/// Tower's own errors get a code and a message naming the layer and the handler
/// ("{layer} layer of '{handler}': …"), with `{"layer": …, "handler": …}` as data:
///
/// | error | code | layer |
/// |---|---|---|
/// | `timeout::error::Elapsed` | `TIMEOUT` | `timeout` |
/// | `load_shed::error::Overloaded` | `RATE_LIMITED` | `load_shed` |
/// | `buffer::error::Closed` | `OPERATION_ERROR` | `buffer` |
/// | `buffer::error::ServiceError` | its source's, when that is a `FlextError`; else `OPERATION_ERROR` | `buffer` |
/// | anything else | `OPERATION_ERROR`: "service of '{handler}' failed: {error}", the error as source | `service` |
///
/// ```
/// use flext_constants::ErrorCode;
/// use flext_tower::tower_error;
/// use tower::load_shed::error::Overloaded;
///
/// let err = tower_error(Box::new(Overloaded::new()), "create_user");
/// assert_eq!(err.code(), ErrorCode::RateLimited);
/// assert_eq!(
///     err.message(),
///     "load_shed layer of 'create_user': service overloaded, request shed"
/// );
/// assert_eq!(err.data().unwrap()["layer"], "load_shed");
/// ```
pub fn tower_error(error: BoxError, handler: &str) -> FlextError {
    match error.downcast::<FlextError>() {
        Ok(flext) => *flext,
        Err(error) => match known(&*error, handler) {
            Some(mapped) => mapped,
            None => FlextError::new(
                ErrorCode::OperationError,
                format!("service of '{handler}' failed: {error}"),
            )
            .with_data(json!({ "layer": "service", "handler": handler }))
            .with_source(Unknown(error)),
        },
    }
}

/// The mapping of the errors tower's layers raise; `None` for any other error.
fn known(error: &(dyn StdError + 'static), handler: &str) -> Option<FlextError> {
    let (code, layer, what) = if error.is::<Elapsed>() {
        (
            ErrorCode::Timeout,
            "timeout",
            format_args!("request timed out"),
        )
    } else if error.is::<Overloaded>() {
        (
            ErrorCode::RateLimited,
            "load_shed",
            format_args!("service overloaded, request shed"),
        )
    } else if error.is::<Closed>() {
        (
            ErrorCode::OperationError,
            "buffer",
            format_args!("the buffer's worker is closed"),
        )
    } else if let Some(failed) = error.downcast_ref::<ServiceError>() {
        // The buffered service failed to become ready, and the buffer hands its error to
        // every caller: the service's own `FlextError` when it is one.
        if let Some(flext) = failed
            .source()
            .and_then(|source| source.downcast_ref::<FlextError>())
        {
            return Some(flext.clone());
        }
        return Some(layer_error(
            ErrorCode::OperationError,
            "buffer",
            handler,
            format_args!("the {failed}"),
        ));
    } else {
        return None;
    };
    Some(layer_error(code, layer, handler, what))
}

/// `"{layer} layer of '{handler}': {what}"`, with the layer and the handler as data.
fn layer_error(
    code: ErrorCode,
    layer: &str,
    handler: &str,
    what: fmt::Arguments<'_>,
) -> FlextError {
    FlextError::new(code, format!("{layer} layer of '{handler}': {what}"))
        .with_data(json!({ "layer": layer, "handler": handler }))
}

/// A tower error of no known type, kept as the source of the `FlextError` made of it
/// (`Box<dyn Error>` is not itself an `Error`).
struct Unknown(BoxError);

impl fmt::Debug for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for Unknown {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}
