//! [`ValidatingHandler`]: validators before a [`BasicHandler`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use flext_constants::{ErrorCode, HandlerKind};
use flext_protocols::{Handler, Validator};
use flext_types::{FlextError, FlextResult, MetricValue};

use crate::delegate::delegate_to_base;
use crate::guard::panic_message;
use crate::{BasicHandler, Identity};

/// A handler that runs its validators before processing; the first rejection ends the call
/// with a `VALIDATION_ERROR` carrying the validator's own message.
///
/// A rejected request never reaches the processing step and leaves the handler's metrics and
/// state untouched; it is counted in [`ValidatingHandler::rejections`] instead. A validator
/// that panics rejects the request ("Validator panicked: …").
///
/// ```
/// use flext_impl::{ManagedHandler, ValidatingHandler};
/// use flext_protocols::Handler;
/// use flext_types::{FlextError, FlextResult};
/// use serde_json::{json, Value};
///
/// fn email_validator(data: &Value) -> FlextResult<()> {
///     let email = data["email"].as_str().unwrap_or("");
///     if !email.contains('@') || !email.contains('.') {
///         return Err(FlextError::validation("Invalid email format"));
///     }
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let handler = ValidatingHandler::new("user_validator", email_validator);
/// assert!(handler.handle(json!({"email": "valid@example.com"})).await.is_ok());
/// let err = handler.handle(json!({"email": "nope"})).await.unwrap_err();
/// assert_eq!(err.to_string(), "Invalid email format");
/// assert_eq!(handler.metrics().requests_processed, 1);
/// assert_eq!(handler.rejections(), 1);
/// # }
/// ```
pub struct ValidatingHandler<H: Handler = Identity<serde_json::Value>> {
    base: BasicHandler<H>,
    validators: Vec<Box<dyn Validator<H::Request>>>,
    rejections: AtomicU64,
}

impl<T: Send + 'static> ValidatingHandler<Identity<T>> {
    /// A handler that validates each request with `validator` and returns it unchanged.
    pub fn new(name: impl Into<String>, validator: impl Validator<T> + 'static) -> Self {
        Self::from_base(
            BasicHandler::with_kind(name, HandlerKind::Validating, Identity::new()),
            validator,
        )
    }
}

impl<H: Handler> ValidatingHandler<H> {
    /// Validates with `validator` before the processing step `inner`, under `inner`'s name.
    pub fn wrap(inner: H, validator: impl Validator<H::Request> + 'static) -> Self {
        let name = inner.handler_name().to_owned();
        Self::from_base(
            BasicHandler::with_kind(name, HandlerKind::Validating, inner),
            validator,
        )
    }

    fn from_base(base: BasicHandler<H>, validator: impl Validator<H::Request> + 'static) -> Self {
        Self {
            base,
            validators: vec![Box::new(validator)],
            rejections: AtomicU64::new(0),
        }
    }

    /// Adds a validator; validators run in the order added.
    pub fn add_validator(&mut self, validator: impl Validator<H::Request> + 'static) -> &mut Self {
        self.validators.push(Box::new(validator));
        self
    }

    /// The handler with one more validator.
    #[must_use]
    pub fn with_validator(mut self, validator: impl Validator<H::Request> + 'static) -> Self {
        self.add_validator(validator);
        self
    }

    /// Runs every validator on `request`; the first rejection is returned as a
    /// `VALIDATION_ERROR`.
    pub fn validate(&self, request: &H::Request) -> FlextResult<()> {
        for validator in &self.validators {
            match catch_unwind(AssertUnwindSafe(|| validator.validate(request))) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(as_validation(error)),
                Err(panic) => {
                    return Err(FlextError::validation(format!(
                        "Validator panicked: {}",
                        panic_message(panic.as_ref())
                    )));
                }
            }
        }
        Ok(())
    }

    /// Requests rejected by a validator.
    pub fn rejections(&self) -> u64 {
        self.rejections.load(Relaxed)
    }

    /// The processing step.
    pub fn inner(&self) -> &H {
        self.base.inner()
    }
}

fn as_validation(error: FlextError) -> FlextError {
    if error.is(ErrorCode::ValidationError) {
        error
    } else {
        error.with_code(ErrorCode::ValidationError)
    }
}

delegate_to_base! {
    impl<H> ValidatingHandler<H> where {}
    handle(&self, request) {
        if let Err(error) = self.validate(&request) {
            self.rejections.fetch_add(1, Relaxed);
            return Err(error);
        }
        self.base.handle(request).await
    }
    extend_metrics(&self, set) {
        set.push(
            "validation_rejections",
            "Requests rejected by a validator.",
            MetricValue::Counter(self.rejections()),
        );
    }
}

impl<H: Handler + std::fmt::Debug> std::fmt::Debug for ValidatingHandler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatingHandler")
            .field("base", &self.base)
            .field("validators", &self.validators.len())
            .field("rejections", &self.rejections())
            .finish()
    }
}
