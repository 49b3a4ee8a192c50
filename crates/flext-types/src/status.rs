//! The HTTP status of each error code: [`http_status`], with or without the `axum` feature.

use flext_constants::ErrorCode;

use crate::FlextError;

/// The HTTP status a web layer answers an error of `code` with.
///
/// | code | status | why |
/// |---|---|---|
/// | `INVALID_ARGUMENT` | 400 Bad Request | the request is malformed |
/// | `VALIDATION_ERROR` | 422 Unprocessable Content | well-formed, but it breaks the rules; axum answers a JSON body that does not fit its type with 422 too |
/// | `AUTHORIZATION_DENIED` | 403 Forbidden | |
/// | `NOT_FOUND` | 404 Not Found | no such thing (an account, a name) |
/// | `DUPLICATE` | 409 Conflict | it exists already |
/// | `CONCURRENCY_CONFLICT` | 409 Conflict | another write came first; the client may read again and retry |
/// | `BUSINESS_RULE_VIOLATION` | 422 Unprocessable Content | understood, refused by the domain (insufficient funds) |
/// | `RATE_LIMITED` | 429 Too Many Requests | a rate limiter or bulkhead refused it |
/// | `CIRCUIT_OPEN` | 503 Service Unavailable | a dependency is failing; try later |
/// | `UNAVAILABLE` | 503 Service Unavailable | a broker or a worker is not reachable |
/// | `TIMEOUT` | 504 Gateway Timeout | the work did not finish by its deadline |
/// | `WIRING_ERROR` | 500 Internal Server Error | no handler for the message: the program's fault |
/// | `OPERATION_ERROR` | 500 Internal Server Error | a handler failed or panicked |
/// | `STORAGE_ERROR` | 500 Internal Server Error | a store could not read or write |
/// | `SERIALIZATION_ERROR` | 500 Internal Server Error | see below |
///
/// `SERIALIZATION_ERROR` is a 500: a request body that does not decode never reaches a
/// handler as a `FlextError` (the extractor rejects it first: axum answers 400 for bad JSON
/// and 422 for JSON of the wrong shape, and the `axum` feature's `Flext` wrapper keeps
/// those statuses), so one that a handler returns comes from the service's own data (a
/// stored event, a snapshot, another process's answer) failing to decode: the server's
/// fault. A handler that decodes client input itself maps its error to
/// `INVALID_ARGUMENT` or `VALIDATION_ERROR`.
///
/// A code added later and not yet in the table is a 500.
///
/// ```
/// use flext_types::{ErrorCode, FlextError, http_status};
///
/// assert_eq!(http_status(ErrorCode::NotFound), 404);
/// assert_eq!(http_status(ErrorCode::WiringError), 500);
/// assert_eq!(FlextError::validation("Amount must be positive").http_status(), 422);
/// ```
pub const fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::InvalidArgument => 400,
        ErrorCode::AuthorizationDenied => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::Duplicate | ErrorCode::ConcurrencyConflict => 409,
        ErrorCode::ValidationError | ErrorCode::BusinessRuleViolation => 422,
        ErrorCode::RateLimited => 429,
        ErrorCode::CircuitOpen | ErrorCode::Unavailable => 503,
        ErrorCode::Timeout => 504,
        ErrorCode::WiringError
        | ErrorCode::OperationError
        | ErrorCode::StorageError
        | ErrorCode::SerializationError => 500,
        // `ErrorCode` is non-exhaustive: a code this table does not know yet is the server's.
        _ => 500,
    }
}

impl FlextError {
    /// The HTTP status of the error's code ([`http_status`]).
    pub const fn http_status(&self) -> u16 {
        http_status(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_constants::WireEnum;

    /// The table, written out once more: a code added without a row here fails the test.
    const EXPECTED: [(ErrorCode, u16); 15] = [
        (ErrorCode::BusinessRuleViolation, 422),
        (ErrorCode::OperationError, 500),
        (ErrorCode::InvalidArgument, 400),
        (ErrorCode::NotFound, 404),
        (ErrorCode::Duplicate, 409),
        (ErrorCode::ConcurrencyConflict, 409),
        (ErrorCode::WiringError, 500),
        (ErrorCode::Timeout, 504),
        (ErrorCode::StorageError, 500),
        (ErrorCode::SerializationError, 500),
        (ErrorCode::CircuitOpen, 503),
        (ErrorCode::RateLimited, 429),
        (ErrorCode::Unavailable, 503),
        (ErrorCode::ValidationError, 422),
        (ErrorCode::AuthorizationDenied, 403),
    ];

    #[test]
    fn every_code_has_its_documented_status() {
        for code in ErrorCode::ALL {
            let expected = EXPECTED
                .iter()
                .find(|(c, _)| c == code)
                .map(|(_, status)| *status);
            assert_eq!(
                Some(http_status(*code)),
                expected,
                "{} has no row in the status table, or another status",
                code.name()
            );
        }
        assert_eq!(EXPECTED.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn a_wiring_fault_is_the_servers_and_a_missing_thing_the_clients() {
        assert_eq!(FlextError::wiring("No handler").http_status(), 500);
        assert_eq!(FlextError::not_found("No account").http_status(), 404);
    }
}
