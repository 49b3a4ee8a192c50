//! The error model: [`FlextError`] and [`FlextResult`].

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use flext_constants::{ErrorCode, UnknownVariant, WireEnum};
use serde::{Deserialize, Serialize};

/// The result type of every fallible flext operation.
pub type FlextResult<T> = Result<T, FlextError>;

/// A failure with a [code](ErrorCode), a message, optional structured data and an optional
/// source error.
///
/// `Display` prints the message alone, so the text a user wrote (for example "Invalid email
/// format") reaches the caller unchanged; the code is available from [`FlextError::code`].
/// Errors are cheap to clone (the source is shared), so metrics and reports can keep them.
///
/// ```
/// use flext_types::{ErrorCode, FlextError};
///
/// let err = FlextError::not_found("No account acc-7");
/// assert_eq!(err.code(), ErrorCode::NotFound);
/// assert_eq!(err.code().as_str(), "FLEXT_1004");
/// assert_eq!(err.to_string(), "No account acc-7");
///
/// let err = FlextError::wiring("No handler registered for command: CreateUserCommand");
/// assert_eq!(err.code(), ErrorCode::WiringError);
/// assert_eq!(err.code().as_str(), "FLEXT_1007");
/// ```
#[derive(Clone, thiserror::Error)]
#[error("{message}")]
pub struct FlextError {
    code: ErrorCode,
    message: Cow<'static, str>,
    data: Option<Box<serde_json::Value>>,
    #[source]
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl FlextError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
            source: None,
        }
    }

    /// A request failed validation (`VALIDATION_ERROR`, `FLEXT_3001`).
    pub fn validation(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    /// A request was not authorized (`AUTHORIZATION_DENIED`, `FLEXT_4001`).
    pub fn authorization_denied(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::AuthorizationDenied, message)
    }

    /// Something looked up does not exist (`NOT_FOUND`, `FLEXT_1004`): no such account, no
    /// handler registered under the name asked for. A message no handler takes is a
    /// [`wiring`](FlextError::wiring) fault instead.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// The application's composition cannot carry a message (`WIRING_ERROR`, `FLEXT_1007`):
    /// no handler registered for it, a handler or middleware of another message or
    /// response type on its route, no link of a chain accepting it, a worker that does not
    /// serve it. The program's fault, never the sender's: an HTTP answer is a 500.
    pub fn wiring(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::WiringError, message)
    }

    /// A business rule was broken (`BUSINESS_RULE_VIOLATION`, `FLEXT_1001`).
    pub fn business_rule(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BusinessRuleViolation, message)
    }

    /// Something registered already exists (`DUPLICATE`, `FLEXT_1005`).
    pub fn duplicate(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Duplicate, message)
    }

    /// An argument was malformed (`INVALID_ARGUMENT`).
    pub fn invalid_argument(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// An operation failed (`OPERATION_ERROR`).
    pub fn operation(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::OperationError, message)
    }

    /// A call ran past its deadline (`TIMEOUT`).
    pub fn timeout(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }

    /// A store could not read or write (`STORAGE_ERROR`).
    pub fn storage(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::StorageError, message)
    }

    /// A payload could not be encoded or decoded (`SERIALIZATION_ERROR`).
    pub fn serialization(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::SerializationError, message)
    }

    /// A broker or remote service could not be reached (`UNAVAILABLE`).
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// The error's code.
    pub const fn code(&self) -> ErrorCode {
        self.code
    }

    /// Whether the error has the given code.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code
    }

    /// The error's message, as `Display` prints it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The structured data attached with [`FlextError::with_data`], if any.
    pub fn data(&self) -> Option<&serde_json::Value> {
        self.data.as_deref()
    }

    /// Attaches structured data (for example the expected and actual versions of a
    /// concurrency conflict).
    #[must_use]
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(Box::new(data));
        self
    }

    /// Attaches the error that caused this one; [`std::error::Error::source`] returns it.
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Prefixes the message with `context` (`"{context}: {message}"`), keeping the code, data
    /// and source.
    #[must_use]
    pub fn with_context(mut self, context: impl fmt::Display) -> Self {
        self.message = Cow::Owned(format!("{context}: {}", self.message));
        self
    }

    /// The same error with another code, keeping message, data and source.
    #[must_use]
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }
}

impl fmt::Debug for FlextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FlextError");
        s.field(
            "code",
            &format_args!("{} ({})", self.code.name(), self.code.as_str()),
        )
        .field("message", &self.message);
        if let Some(data) = &self.data {
            s.field("data", data);
        }
        if let Some(source) = &self.source {
            s.field("source", source);
        }
        s.finish()
    }
}

/// Two errors are equal when code, message and data are equal; sources are not compared.
impl PartialEq for FlextError {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message && self.data == other.data
    }
}

impl From<UnknownVariant> for FlextError {
    fn from(err: UnknownVariant) -> Self {
        Self::invalid_argument(err.to_string()).with_source(err)
    }
}

impl From<serde_json::Error> for FlextError {
    fn from(err: serde_json::Error) -> Self {
        Self::serialization(format!("JSON error: {err}")).with_source(err)
    }
}

/// The serialized shape of a [`FlextError`]: its code (wire string and name), message and
/// data. The source is not serialized; its text is kept in `source` when present.
#[derive(Serialize, Deserialize)]
struct WireError {
    code: String,
    #[serde(default)]
    name: Option<String>,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

impl Serialize for FlextError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireError {
            code: self.code.as_str().to_owned(),
            name: Some(self.code.name().to_owned()),
            message: self.message.to_string(),
            data: self.data.as_deref().cloned(),
            source: self.source.as_ref().map(|s| s.to_string()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FlextError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireError::deserialize(deserializer)?;
        let code = ErrorCode::parse_wire(&wire.code).map_err(serde::de::Error::custom)?;
        let mut err = FlextError::new(code, wire.message);
        if let Some(data) = wire.data {
            err = err.with_data(data);
        }
        if let Some(source) = wire.source {
            err = err.with_source(RemoteSource(source));
        }
        Ok(err)
    }
}

/// The text of a source error that crossed a serialization boundary.
#[derive(Debug)]
struct RemoteSource(String);

impl fmt::Display for RemoteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for RemoteSource {}

/// The text of a panic payload (`panic!("…")` gives a `&str` or a `String`), for the
/// errors that code catching a panic returns in its place.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
/// assert_eq!(flext_types::panic_message(payload.as_ref()), "boom 7");
/// ```
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn display_is_the_message_and_debug_names_the_code() {
        let err = FlextError::validation("Invalid email format");
        assert_eq!(err.to_string(), "Invalid email format");
        let debug = format!("{err:?}");
        assert!(debug.contains("VALIDATION_ERROR (FLEXT_3001)"), "{debug}");
    }

    #[test]
    fn context_keeps_code_data_and_source() {
        let io = std::io::Error::other("disk full");
        let err = FlextError::storage("append failed")
            .with_source(io)
            .with_data(json!({"stream": "user-1"}))
            .with_context("Handler 'writer' failed");
        assert_eq!(err.message(), "Handler 'writer' failed: append failed");
        assert_eq!(err.code(), ErrorCode::StorageError);
        assert_eq!(err.data(), Some(&json!({"stream": "user-1"})));
        assert_eq!(err.source().unwrap().to_string(), "disk full");
    }

    #[test]
    fn serde_round_trip_keeps_code_message_data() {
        let err = FlextError::new(
            ErrorCode::ConcurrencyConflict,
            "Expected version 3, found 4",
        )
        .with_data(json!({"expected": 3, "actual": 4}));
        let value = serde_json::to_value(&err).unwrap();
        assert_eq!(value["code"], "FLEXT_1006");
        assert_eq!(value["name"], "CONCURRENCY_CONFLICT");
        let back: FlextError = serde_json::from_value(value).unwrap();
        assert_eq!(back, err);
    }

    #[test]
    fn deserializing_an_unknown_code_is_an_error_not_a_panic() {
        let res: Result<FlextError, _> =
            serde_json::from_value(json!({"code": "FLEXT_9999", "message": "x"}));
        let msg = res.unwrap_err().to_string();
        assert!(msg.contains("FLEXT_9999"), "{msg}");
    }

    #[test]
    fn unknown_variant_becomes_invalid_argument() {
        let err: FlextError = "VERBOSE"
            .parse::<flext_constants::LogLevel>()
            .unwrap_err()
            .into();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.message().starts_with("Invalid log_level: VERBOSE"));
    }

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<FlextError>() <= 64);
    }
}
