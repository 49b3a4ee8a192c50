//! [`AuthorizingHandler`]: an authorization check before a [`BasicHandler`].

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use flext_constants::{ErrorCode, HandlerKind};
use flext_protocols::{Authorizer, Handler};
use flext_types::{FlextError, FlextResult, MetricValue};
use futures_util::FutureExt;

use crate::delegate::delegate_to_base;
use crate::guard::panic_message;
use crate::{BasicHandler, Identity};

/// A handler that asks its authorizer before processing. A denial ends the call with an
/// `AUTHORIZATION_DENIED` error; so does a check that fails for any other reason (its error
/// becomes the source) or panics — a broken check never lets a request through.
///
/// A denied request never reaches the processing step and leaves the handler's metrics and
/// state untouched; it is counted in [`AuthorizingHandler::denials`] instead.
///
/// ```
/// use flext_impl::AuthorizingHandler;
/// use flext_protocols::Handler;
/// use flext_constants::ErrorCode;
/// use serde_json::{json, Value};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admin_only = AuthorizingHandler::new("admin_authorizer", |data: &Value| data["user_role"] == "admin");
/// assert!(admin_only.handle(json!({"user_role": "admin"})).await.is_ok());
/// let err = admin_only.handle(json!({"user_role": "guest"})).await.unwrap_err();
/// assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
/// # }
/// ```
pub struct AuthorizingHandler<H: Handler = Identity<serde_json::Value>> {
    base: BasicHandler<H>,
    authorizer: Box<dyn Authorizer<H::Request>>,
    denials: AtomicU64,
}

impl<T: Send + Sync + 'static> AuthorizingHandler<Identity<T>> {
    /// A handler that authorizes each request with `check` and returns it unchanged.
    pub fn new(name: impl Into<String>, check: impl Authorizer<T> + 'static) -> Self {
        Self::from_base(
            BasicHandler::with_kind(name, HandlerKind::Authorizing, Identity::new()),
            check,
        )
    }
}

impl<H> AuthorizingHandler<H>
where
    H: Handler,
    H::Request: Sync,
{
    /// Authorizes with `check` before the processing step `inner`, under `inner`'s name.
    pub fn wrap(inner: H, check: impl Authorizer<H::Request> + 'static) -> Self {
        let name = inner.handler_name().to_owned();
        Self::from_base(
            BasicHandler::with_kind(name, HandlerKind::Authorizing, inner),
            check,
        )
    }

    fn from_base(base: BasicHandler<H>, check: impl Authorizer<H::Request> + 'static) -> Self {
        Self {
            base,
            authorizer: Box::new(check),
            denials: AtomicU64::new(0),
        }
    }

    /// Runs the check on `request`: `Ok(())` or an `AUTHORIZATION_DENIED` error.
    pub async fn authorize(&self, request: &H::Request) -> FlextResult<()> {
        let name = self.base.handler_name();
        match AssertUnwindSafe(self.authorizer.authorize(request))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if error.is(ErrorCode::AuthorizationDenied) => Err(error),
            Ok(Err(error)) => Err(FlextError::authorization_denied(format!(
                "Authorization check of '{name}' failed: {error}"
            ))
            .with_source(error)),
            Err(panic) => Err(FlextError::authorization_denied(format!(
                "Authorization check of '{name}' panicked: {}",
                panic_message(panic.as_ref())
            ))),
        }
    }

    /// Requests denied.
    pub fn denials(&self) -> u64 {
        self.denials.load(Relaxed)
    }

    /// The processing step.
    pub fn inner(&self) -> &H {
        self.base.inner()
    }
}

delegate_to_base! {
    impl<H> AuthorizingHandler<H> where { H::Request: Sync, }
    handle(&self, request) {
        if let Err(error) = self.authorize(&request).await {
            self.denials.fetch_add(1, Relaxed);
            return Err(error);
        }
        self.base.handle(request).await
    }
    extend_metrics(&self, set) {
        set.push(
            "authorization_denials",
            "Requests denied by the authorization check.",
            MetricValue::Counter(self.denials()),
        );
    }
}

impl<H: Handler + std::fmt::Debug> std::fmt::Debug for AuthorizingHandler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizingHandler")
            .field("base", &self.base)
            .field("denials", &self.denials.load(Relaxed))
            .finish()
    }
}
