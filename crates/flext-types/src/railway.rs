//! Railway-oriented helpers over plain [`FlextResult`]s.

use crate::{FlextError, FlextResult};

/// Extension methods for composing [`FlextResult`]s on the success and failure tracks.
///
/// ```
/// use flext_types::{FlextError, FlextResult, ResultExt};
///
/// let mut seen = Vec::new();
/// let r: FlextResult<u32> = Ok(7);
/// let r = r
///     .tap(|v| seen.push(*v))
///     .ensure(|v| *v > 10, |v| FlextError::validation(format!("{v} is too small")));
/// assert_eq!(seen, [7]);
/// assert_eq!(r.unwrap_err().to_string(), "7 is too small");
/// ```
pub trait ResultExt<T>: Sized {
    /// Calls `f` with the value on success; returns `self` unchanged.
    fn tap(self, f: impl FnOnce(&T)) -> Self;

    /// Calls `f` with the error on failure; returns `self` unchanged.
    fn tap_err(self, f: impl FnOnce(&FlextError)) -> Self;

    /// Turns a success whose value fails `predicate` into the error `error` builds.
    fn ensure(
        self,
        predicate: impl FnOnce(&T) -> bool,
        error: impl FnOnce(&T) -> FlextError,
    ) -> Self;

    /// Prefixes a failure's message with the context `f` returns (see
    /// [`FlextError::with_context`]); `f` runs only on failure.
    fn context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Self;
}

impl<T> ResultExt<T> for FlextResult<T> {
    fn tap(self, f: impl FnOnce(&T)) -> Self {
        if let Ok(v) = &self {
            f(v);
        }
        self
    }

    fn tap_err(self, f: impl FnOnce(&FlextError)) -> Self {
        if let Err(e) = &self {
            f(e);
        }
        self
    }

    fn ensure(
        self,
        predicate: impl FnOnce(&T) -> bool,
        error: impl FnOnce(&T) -> FlextError,
    ) -> Self {
        match self {
            Ok(v) if !predicate(&v) => Err(error(&v)),
            other => other,
        }
    }

    fn context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Self {
        self.map_err(|e| e.with_context(f()))
    }
}

/// Collects every success, or returns the first failure.
///
/// ```
/// use flext_types::{combine, FlextError};
///
/// assert_eq!(combine([Ok(1), Ok(2)]), Ok(vec![1, 2]));
/// let failed = combine([Ok(1), Err(FlextError::validation("bad")), Ok(3)]);
/// assert_eq!(failed.unwrap_err().to_string(), "bad");
/// ```
pub fn combine<T>(results: impl IntoIterator<Item = FlextResult<T>>) -> FlextResult<Vec<T>> {
    results.into_iter().collect()
}

/// Applies `f` to every item, collecting the successes; stops at the first failure.
///
/// ```
/// use flext_types::{traverse, FlextError};
///
/// let parsed = traverse(["1", "2", "x"], |s| {
///     s.parse::<i32>().map_err(|_| FlextError::validation(format!("not a number: {s}")))
/// });
/// assert_eq!(parsed.unwrap_err().to_string(), "not a number: x");
/// ```
pub fn traverse<I, U>(items: I, f: impl FnMut(I::Item) -> FlextResult<U>) -> FlextResult<Vec<U>>
where
    I: IntoIterator,
{
    items.into_iter().map(f).collect()
}

/// The first success; when every result failed, the last failure; when there were no
/// results, an `OPERATION_ERROR` saying so.
///
/// ```
/// use flext_types::{first_success, FlextError};
///
/// let r = first_success([Err(FlextError::not_found("primary")), Ok("replica")]);
/// assert_eq!(r, Ok("replica"));
/// let r: Result<(), _> = first_success([Err(FlextError::not_found("a")), Err(FlextError::timeout("b"))]);
/// assert_eq!(r.unwrap_err().to_string(), "b");
/// ```
pub fn first_success<T>(results: impl IntoIterator<Item = FlextResult<T>>) -> FlextResult<T> {
    let mut last = None;
    for result in results {
        match result {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| FlextError::operation("first_success: no results to choose from")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_constants::ErrorCode;

    #[test]
    fn tap_and_tap_err_only_see_their_track() {
        let mut oks = 0;
        let mut errs = 0;
        let _ = Ok::<_, FlextError>(1)
            .tap(|_| oks += 1)
            .tap_err(|_| errs += 1);
        let _ = Err::<i32, _>(FlextError::timeout("t"))
            .tap(|_| oks += 1)
            .tap_err(|_| errs += 1);
        assert_eq!((oks, errs), (1, 1));
    }

    #[test]
    fn ensure_passes_failures_through() {
        let r = Err::<i32, _>(FlextError::timeout("slow")).ensure(|_| false, |_| unreachable!());
        assert_eq!(r.unwrap_err().code(), ErrorCode::Timeout);
        assert_eq!(
            Ok(5).ensure(|v| *v == 5, |_| FlextError::validation("x")),
            Ok(5)
        );
    }

    #[test]
    fn context_only_runs_on_failure() {
        let mut calls = 0;
        let ok: FlextResult<i32> = Ok(1);
        let _ = ok.context(|| {
            calls += 1;
            "ctx"
        });
        assert_eq!(calls, 0);
        let err: FlextResult<i32> = Err(FlextError::storage("down"));
        assert_eq!(
            err.context(|| "loading user").unwrap_err().message(),
            "loading user: down"
        );
    }

    #[test]
    fn traverse_stops_at_first_failure() {
        let mut visited = Vec::new();
        let r = traverse([1, 2, 3, 4], |n| {
            visited.push(n);
            if n == 2 {
                Err(FlextError::validation("two"))
            } else {
                Ok(n * 10)
            }
        });
        assert_eq!(r.unwrap_err().to_string(), "two");
        assert_eq!(visited, [1, 2]);
    }

    #[test]
    fn first_success_of_nothing_is_an_error() {
        let r: FlextResult<i32> = first_success(std::iter::empty());
        assert_eq!(r.unwrap_err().code(), ErrorCode::OperationError);
    }
}
