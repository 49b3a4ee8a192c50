//! Validators and authorizers: checks that run before a handler.

use async_trait::async_trait;
use flext_types::{FlextError, FlextResult};

/// The outcome of a check: `bool` or `FlextResult<()>`, so plain predicates and checks with
/// their own messages both qualify.
pub trait Verdict {
    /// `Ok(())` when the check passed; otherwise the check's own error, or `refusal()` when
    /// the check gave no reason (a `false`).
    fn into_result(self, refusal: impl FnOnce() -> FlextError) -> FlextResult<()>;
}

impl Verdict for bool {
    fn into_result(self, refusal: impl FnOnce() -> FlextError) -> FlextResult<()> {
        if self { Ok(()) } else { Err(refusal()) }
    }
}

impl Verdict for FlextResult<()> {
    fn into_result(self, _refusal: impl FnOnce() -> FlextError) -> FlextResult<()> {
        self
    }
}

/// A synchronous check of a request's shape and content.
///
/// Any `Fn(&T) -> bool` or `Fn(&T) -> FlextResult<()>` closure is a validator; a `false`
/// becomes a `VALIDATION_ERROR` "Validation failed".
///
/// ```
/// use flext_protocols::Validator;
/// use flext_types::{FlextError, FlextResult};
///
/// let has_at = |email: &String| email.contains('@');
/// let well_formed = |email: &String| -> FlextResult<()> {
///     if email.contains('.') { Ok(()) } else { Err(FlextError::validation("Invalid email format")) }
/// };
/// assert!(has_at.validate(&"a@b.c".to_string()).is_ok());
/// assert_eq!(well_formed.validate(&"a@b".to_string()).unwrap_err().to_string(), "Invalid email format");
/// ```
pub trait Validator<T: ?Sized>: Send + Sync {
    /// `Ok(())` when `value` is valid; otherwise an error saying why.
    fn validate(&self, value: &T) -> FlextResult<()>;
}

impl<T: ?Sized, F, R> Validator<T> for F
where
    F: Fn(&T) -> R + Send + Sync,
    R: Verdict,
{
    fn validate(&self, value: &T) -> FlextResult<()> {
        self(value).into_result(|| FlextError::validation("Validation failed"))
    }
}

/// A check of whether a request may proceed. It is async, so it may ask an external
/// service; sync `Fn(&T) -> bool` and `Fn(&T) -> FlextResult<()>` closures qualify.
///
/// A `false` becomes an `AUTHORIZATION_DENIED` "Authorization denied".
#[async_trait]
pub trait Authorizer<T: ?Sized + Sync>: Send + Sync {
    /// `Ok(())` when `request` is authorized; otherwise an error saying why.
    async fn authorize(&self, request: &T) -> FlextResult<()>;
}

#[async_trait]
impl<T: ?Sized + Sync, F, R> Authorizer<T> for F
where
    F: Fn(&T) -> R + Send + Sync,
    R: Verdict,
{
    async fn authorize(&self, request: &T) -> FlextResult<()> {
        self(request).into_result(|| FlextError::authorization_denied("Authorization denied"))
    }
}

/// A shared validator is a validator.
impl<T: ?Sized, V: Validator<T> + ?Sized> Validator<T> for std::sync::Arc<V> {
    fn validate(&self, value: &T) -> FlextResult<()> {
        (**self).validate(value)
    }
}

/// A shared authorizer is an authorizer.
#[async_trait]
impl<T: ?Sized + Sync, A: Authorizer<T> + ?Sized> Authorizer<T> for std::sync::Arc<A> {
    async fn authorize(&self, request: &T) -> FlextResult<()> {
        (**self).authorize(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_constants::ErrorCode;

    #[test]
    fn bool_validators_fail_with_validation_code() {
        let positive = |n: &i32| *n > 0;
        assert!(positive.validate(&1).is_ok());
        let err = positive.validate(&-1).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError);
        assert_eq!(err.to_string(), "Validation failed");
    }

    #[tokio::test]
    async fn closures_are_authorizers_and_keep_their_own_errors() {
        let admin_only = |role: &str| role == "admin";
        assert!(admin_only.authorize("admin").await.is_ok());
        let err = admin_only.authorize("user").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthorizationDenied);

        let explained = |role: &str| -> FlextResult<()> {
            if role == "admin" {
                Ok(())
            } else {
                Err(FlextError::authorization_denied(format!(
                    "Role {role} may not delete"
                )))
            }
        };
        assert_eq!(
            explained.authorize("user").await.unwrap_err().to_string(),
            "Role user may not delete"
        );
    }
}
