//! The flext error codes.

use crate::wire::wire_enum;

wire_enum! {
    /// What kind of failure a `FlextError` reports, with its flext code string.
    ///
    /// The families: `FLEXT_1xxx` business, operation and wiring errors, `FLEXT_2xxx` infrastructure
    /// and resilience errors, `FLEXT_3xxx` validation, `FLEXT_4xxx` security. The strings are
    /// stable wire values; [`ErrorCode::name`] gives the upper-case constant name.
    ///
    /// Non-exhaustive: later versions may add codes, so a `match` outside this crate needs
    /// a wildcard arm.
    #[non_exhaustive]
    ErrorCode, field = "error code" {
        /// A business rule was broken (for example a chain grew past its limit).
        BusinessRuleViolation => "FLEXT_1001",
        /// An operation failed, including a handler that panicked.
        OperationError => "FLEXT_1002",
        /// An argument was malformed (an empty name, a bad configuration value).
        InvalidArgument => "FLEXT_1003",
        /// Something looked up does not exist: the answer to a lookup by a key the caller
        /// gives (an account, a registered name, a subscription id), which may well be the
        /// client's mistake. A message no handler takes is a [`WiringError`](Self::WiringError).
        NotFound => "FLEXT_1004",
        /// Something registered already exists.
        Duplicate => "FLEXT_1005",
        /// An optimistic-concurrency check failed (expected and actual versions differ).
        ConcurrencyConflict => "FLEXT_1006",
        /// The application's composition cannot carry a message: no handler is registered
        /// for it, the handler on its route takes another message or response type, a
        /// middleware swapped its type, no link of a chain accepts it, a worker reached
        /// for it does not serve it. A fault of the program or its deployment, never of
        /// the message's sender (unlike [`NotFound`](Self::NotFound), the answer to a
        /// lookup that may be the caller's mistake).
        WiringError => "FLEXT_1007",
        /// A call ran past its deadline.
        Timeout => "FLEXT_2001",
        /// A store could not read or write.
        StorageError => "FLEXT_2002",
        /// A payload could not be encoded or decoded.
        SerializationError => "FLEXT_2003",
        /// A circuit breaker is open and rejected the call.
        CircuitOpen => "FLEXT_2004",
        /// A rate limiter or bulkhead rejected the call.
        RateLimited => "FLEXT_2005",
        /// A broker or a remote service could not be reached (a connection down, no
        /// answer to a request that was never taken).
        Unavailable => "FLEXT_2006",
        /// A request failed validation.
        ValidationError => "FLEXT_3001",
        /// A request was not authorized.
        AuthorizationDenied => "FLEXT_4001",
    }
}

impl ErrorCode {
    /// The upper-case constant name of the code, as the flext guide spells it
    /// (`VALIDATION_ERROR`, `NOT_FOUND`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BusinessRuleViolation => "BUSINESS_RULE_VIOLATION",
            Self::OperationError => "OPERATION_ERROR",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::Duplicate => "DUPLICATE",
            Self::ConcurrencyConflict => "CONCURRENCY_CONFLICT",
            Self::WiringError => "WIRING_ERROR",
            Self::Timeout => "TIMEOUT",
            Self::StorageError => "STORAGE_ERROR",
            Self::SerializationError => "SERIALIZATION_ERROR",
            Self::CircuitOpen => "CIRCUIT_OPEN",
            Self::RateLimited => "RATE_LIMITED",
            Self::Unavailable => "UNAVAILABLE",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::AuthorizationDenied => "AUTHORIZATION_DENIED",
        }
    }

    /// The code's position in [`WireEnum::ALL`](crate::WireEnum::ALL), for tables indexed by
    /// code (for example per-code error counters).
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;
    use crate::WireEnum;
    use std::collections::HashSet;

    #[test]
    fn design_codes_keep_their_flext_strings() {
        assert_eq!(ErrorCode::ValidationError.as_str(), "FLEXT_3001");
        assert_eq!(ErrorCode::AuthorizationDenied.as_str(), "FLEXT_4001");
        assert_eq!(ErrorCode::NotFound.as_str(), "FLEXT_1004");
        assert_eq!(ErrorCode::BusinessRuleViolation.as_str(), "FLEXT_1001");
        assert_eq!(ErrorCode::Duplicate.as_str(), "FLEXT_1005");
    }

    #[test]
    fn wiring_faults_have_a_code_of_their_own() {
        assert_eq!(ErrorCode::WiringError.as_str(), "FLEXT_1007");
        assert_eq!(ErrorCode::WiringError.name(), "WIRING_ERROR");
        assert_eq!(
            "FLEXT_1007".parse::<ErrorCode>(),
            Ok(ErrorCode::WiringError)
        );
        assert_ne!(ErrorCode::WiringError, ErrorCode::NotFound);
    }

    #[test]
    fn codes_and_names_are_unique_and_indexed_in_order() {
        let strings: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let names: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(strings.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
        }
    }
}
