//! Panic capture for user code: a panic becomes an `OPERATION_ERROR`, never an unwind
//! across the API.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

pub(crate) use flext_types::panic_message;
use flext_types::{FlextError, FlextResult};
use futures_util::FutureExt;

/// Runs `call` to completion; if it panics, returns an `OPERATION_ERROR` "Handler execution
/// failed: {panic message}" instead of unwinding into the caller.
///
/// Use it wherever user code runs: handlers, subscribers, chain links, pipeline stages.
///
/// ```
/// use flext_impl::catch_panic;
/// use flext_constants::ErrorCode;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ok = catch_panic(async { Ok::<_, flext_types::FlextError>(1) }).await;
/// assert_eq!(ok, Ok(1));
/// let err = catch_panic(async { panic!("bad state") }).await.map(|()| ()).unwrap_err();
/// assert_eq!(err.code(), ErrorCode::OperationError);
/// assert_eq!(err.to_string(), "Handler execution failed: bad state");
/// # }
/// ```
pub fn catch_panic<T, F>(call: F) -> impl Future<Output = FlextResult<T>>
where
    F: Future<Output = FlextResult<T>>,
{
    // A plain combinator rather than an `async fn`: no extra state machine on hot paths.
    AssertUnwindSafe(call)
        .catch_unwind()
        .map(|outcome| outcome.unwrap_or_else(|panic| Err(panic_error(panic.as_ref()))))
}

/// The `OPERATION_ERROR` a panic with `payload` becomes.
pub(crate) fn panic_error(payload: &(dyn Any + Send)) -> FlextError {
    FlextError::operation(format!(
        "Handler execution failed: {}",
        panic_message(payload)
    ))
}

/// Runs the synchronous `call`; if it panics, returns the same `OPERATION_ERROR` as
/// [`catch_panic`].
///
/// ```
/// use flext_impl::catch_panic_sync;
///
/// let err = catch_panic_sync(|| -> flext_types::FlextResult<()> { panic!("broken rule") }).unwrap_err();
/// assert_eq!(err.to_string(), "Handler execution failed: broken rule");
/// ```
pub fn catch_panic_sync<T>(call: impl FnOnce() -> FlextResult<T>) -> FlextResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|panic| Err(panic_error(panic.as_ref())))
}
