//! Validators and authorizers: checks that run before a handler.

use std::fmt;
use std::future::Future;

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
/// service; sync `Fn(&T) -> bool` and `Fn(&T) -> FlextResult<()>` closures qualify, and an
/// `async fn` or async closure qualifies through [`authorizer_fn`].
///
/// A `false` becomes an `AUTHORIZATION_DENIED` "Authorization denied".
#[async_trait]
pub trait Authorizer<T: ?Sized + Sync>: Send + Sync {
    /// `Ok(())` when `request` is authorized; otherwise an error saying why.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn authorize(&self, request: &T) -> FlextResult<()>
    /// ```
    async fn authorize(&self, request: &T) -> FlextResult<()>;
}

#[async_trait]
impl<T: ?Sized + Sync, F, R> Authorizer<T> for F
where
    F: Fn(&T) -> R + Send + Sync,
    R: Verdict,
{
    async fn authorize(&self, request: &T) -> FlextResult<()> {
        self(request).into_result(denied)
    }
}

/// An async check of a borrowed `&'a T`: what [`authorizer_fn`] accepts.
///
/// Every `Fn(&T) -> Fut` whose future is `Send`, may borrow the request and yields a
/// [`Verdict`] implements it for every `'a`: an `async fn(&T) -> bool` (or `-> FlextResult<()>`)
/// and an async closure `async |request: &T| …` that captures nothing. It is a trait of its
/// own because a bound `Fn(&T) -> Fut` cannot name a future that borrows the request, and
/// `AsyncFn` cannot ask for a `Send` future.
pub trait AsyncCheck<'a, T: ?Sized + 'a>: Send + Sync {
    /// The future of one check.
    type Future: Future<Output = Self::Verdict> + Send + 'a;
    /// What the check yields: `bool` or `FlextResult<()>`.
    type Verdict: Verdict;

    /// Starts the check of `value`.
    fn check(&self, value: &'a T) -> Self::Future;
}

impl<'a, T, F, Fut> AsyncCheck<'a, T> for F
where
    T: ?Sized + 'a,
    F: Fn(&'a T) -> Fut + Send + Sync,
    Fut: Future + Send + 'a,
    Fut::Output: Verdict,
{
    type Future = Fut;
    type Verdict = Fut::Output;

    fn check(&self, value: &'a T) -> Fut {
        self(value)
    }
}

/// An async check of a borrowed `&'a T` given borrowed state `&'a S`: what
/// [`authorizer_with`] accepts (`async fn(&S, &T) -> bool`, `async |state: &S, request: &T| …`).
pub trait AsyncCheckWith<'a, S: 'a, T: ?Sized + 'a>: Send + Sync {
    /// The future of one check.
    type Future: Future<Output = Self::Verdict> + Send + 'a;
    /// What the check yields: `bool` or `FlextResult<()>`.
    type Verdict: Verdict;

    /// Starts the check of `value` with `state`.
    fn check(&self, state: &'a S, value: &'a T) -> Self::Future;
}

impl<'a, S, T, F, Fut> AsyncCheckWith<'a, S, T> for F
where
    S: 'a,
    T: ?Sized + 'a,
    F: Fn(&'a S, &'a T) -> Fut + Send + Sync,
    Fut: Future + Send + 'a,
    Fut::Output: Verdict,
{
    type Future = Fut;
    type Verdict = Fut::Output;

    fn check(&self, state: &'a S, value: &'a T) -> Fut {
        self(state, value)
    }
}

/// An authorizer made of an `async fn` or async closure; see [`authorizer_fn`].
#[derive(Clone, Copy)]
pub struct AuthorizerFn<F> {
    check: F,
}

/// An authorizer made of an `async fn` or async closure and the state it reads; see
/// [`authorizer_with`].
#[derive(Clone, Copy)]
pub struct AuthorizerWith<S, F> {
    state: S,
    check: F,
}

/// Makes an authorizer of an `async fn` or async closure that borrows the request and
/// yields `bool` or `FlextResult<()>`, so the check may await an external service.
///
/// Sync closures are authorizers as they are; an async one goes through this adapter, since
/// one blanket impl cannot take both (a future could in principle be a [`Verdict`] too).
/// As with sync checks, a `false` becomes an `AUTHORIZATION_DENIED` "Authorization denied".
///
/// An async closure that captures state is not an `Fn` (its future borrows the closure):
/// hand the state to [`authorizer_with`] instead.
///
/// ```
/// use flext_protocols::{Authorizer, authorizer_fn};
/// use flext_types::{FlextError, FlextResult};
///
/// async fn is_admin(role: &str) -> bool {
///     role == "admin" // an `.await` on a directory service would go here
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let by_fn = authorizer_fn(is_admin);
/// assert!(by_fn.authorize("admin").await.is_ok());
/// assert_eq!(by_fn.authorize("guest").await.unwrap_err().to_string(), "Authorization denied");
///
/// let by_closure = authorizer_fn(async |role: &str| -> FlextResult<()> {
///     if role == "admin" { Ok(()) } else { Err(FlextError::authorization_denied(format!("{role} may not delete"))) }
/// });
/// assert_eq!(by_closure.authorize("guest").await.unwrap_err().to_string(), "guest may not delete");
/// # }
/// ```
pub fn authorizer_fn<T, F>(check: F) -> AuthorizerFn<F>
where
    T: ?Sized + Sync,
    F: for<'a> AsyncCheck<'a, T>,
{
    AuthorizerFn { check }
}

/// Makes an authorizer of an `async fn` or async closure that reads `state` (a directory
/// client, a permission table) and the request, both borrowed for the check.
///
/// ```
/// use std::collections::HashSet;
/// use flext_protocols::{Authorizer, authorizer_with};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admins: HashSet<String> = ["alice".to_owned()].into();
/// let check = authorizer_with(admins, async |admins: &HashSet<String>, user: &String| admins.contains(user));
/// assert!(check.authorize(&"alice".to_owned()).await.is_ok());
/// assert!(check.authorize(&"bob".to_owned()).await.is_err());
/// # }
/// ```
pub fn authorizer_with<S, T, F>(state: S, check: F) -> AuthorizerWith<S, F>
where
    S: Send + Sync,
    T: ?Sized + Sync,
    F: for<'a> AsyncCheckWith<'a, S, T>,
{
    AuthorizerWith { state, check }
}

fn denied() -> FlextError {
    FlextError::authorization_denied("Authorization denied")
}

#[async_trait]
impl<T, F> Authorizer<T> for AuthorizerFn<F>
where
    T: ?Sized + Sync,
    F: for<'a> AsyncCheck<'a, T>,
{
    async fn authorize(&self, request: &T) -> FlextResult<()> {
        self.check.check(request).await.into_result(denied)
    }
}

#[async_trait]
impl<T, S, F> Authorizer<T> for AuthorizerWith<S, F>
where
    T: ?Sized + Sync,
    S: Send + Sync,
    F: for<'a> AsyncCheckWith<'a, S, T>,
{
    async fn authorize(&self, request: &T) -> FlextResult<()> {
        self.check
            .check(&self.state, request)
            .await
            .into_result(denied)
    }
}

impl<F> fmt::Debug for AuthorizerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizerFn").finish_non_exhaustive()
    }
}

impl<S: fmt::Debug, F> fmt::Debug for AuthorizerWith<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizerWith")
            .field("state", &self.state)
            .finish_non_exhaustive()
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

    #[tokio::test]
    async fn async_checks_are_authorizers_through_the_adapters() {
        async fn is_admin(role: &str) -> bool {
            role == "admin"
        }
        let by_fn = authorizer_fn(is_admin);
        assert!(by_fn.authorize("admin").await.is_ok());
        let err = by_fn.authorize("guest").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
        assert_eq!(err.to_string(), "Authorization denied");
        assert_eq!(format!("{by_fn:?}"), "AuthorizerFn { .. }");

        let with_state = authorizer_with(vec!["alice"], async |admins: &Vec<&str>, user: &str| {
            admins.contains(&user)
        });
        assert!(with_state.authorize("alice").await.is_ok());
        let err = with_state.authorize("bob").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
        assert_eq!(err.to_string(), "Authorization denied");
        assert_eq!(
            format!("{with_state:?}"),
            r#"AuthorizerWith { state: ["alice"], .. }"#
        );

        let shared: std::sync::Arc<dyn Authorizer<str>> = std::sync::Arc::new(with_state);
        assert!(shared.authorize("alice").await.is_ok());
        assert!(shared.authorize("bob").await.is_err());
    }
}
