//! Middleware for the buses: deadline, validation and authorization of any dispatch.
//!
//! Every bus already opens a tracing span, times and counts each dispatch, validates
//! commands and queries themselves and catches panics; these middleware add cross-cutting
//! policy. Write your own by implementing
//! [`Middleware<Dispatch, DispatchOutput>`](flext_protocols::Middleware): its
//! `before_request`, `after_response` and `handle_error` hooks, or `call` around the rest.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_impl::{Deadline, DeadlineSubject, catch_panic};
use flext_protocols::{Authorizer, Middleware, Next, Validator};
use flext_types::{FlextError, FlextResult, HandlerConfig};

use crate::dispatch::{Dispatch, DispatchContext, DispatchOutput};

/// Ends any dispatch that runs past a deadline with a `TIMEOUT` error naming the message
/// type, the handler and the deadline, through the workspace's one [`Deadline`] (which says
/// what happens outside a tokio runtime or without its timer).
///
/// ```
/// use std::time::Duration;
/// use flext_cqrs::{CommandBus, TimeoutMiddleware};
///
/// let mut bus = CommandBus::new();
/// bus.add_middleware(TimeoutMiddleware::new(Duration::from_millis(250)));
/// ```
#[derive(Debug, Clone)]
pub struct TimeoutMiddleware {
    deadline: Deadline,
}

impl TimeoutMiddleware {
    /// A deadline of `deadline` for every dispatch.
    pub fn new(deadline: Duration) -> Self {
        Self {
            deadline: Deadline::new(deadline),
        }
    }

    /// The deadline a handler configuration gives (`timeout_ms`).
    pub fn from_config(config: &HandlerConfig) -> Self {
        Self::new(config.timeout())
    }

    /// The deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline.limit()
    }
}

#[async_trait]
impl Middleware<Dispatch, DispatchOutput> for TimeoutMiddleware {
    fn name(&self) -> &str {
        "timeout"
    }

    async fn call(
        &self,
        dispatch: Dispatch,
        next: Next<'_, Dispatch, DispatchOutput>,
    ) -> FlextResult<DispatchOutput> {
        let context = dispatch.context().clone();
        let subject = DeadlineSubject::Message {
            kind: context.kind().as_str(),
            message_type: context.message_type(),
            handler: context.handler_name(),
        };
        self.deadline.run(subject, next.run(dispatch)).await
    }
}

/// Rejects dispatches that a validator refuses, with a `VALIDATION_ERROR`, before they
/// reach the handler.
///
/// [`ValidationMiddleware::new`] sees every dispatch (its context and erased message);
/// [`ValidationMiddleware::for_message`] checks only messages of one type and lets the
/// others pass.
pub struct ValidationMiddleware {
    name: String,
    check: Box<dyn Validator<Dispatch>>,
}

impl ValidationMiddleware {
    /// Validates every dispatch with `validator`.
    pub fn new(name: impl Into<String>, validator: impl Validator<Dispatch> + 'static) -> Self {
        Self {
            name: name.into(),
            check: Box::new(validator),
        }
    }

    /// Validates the messages of type `M` with `validator`; other messages pass.
    ///
    /// ```
    /// use flext_cqrs::{CommandBus, ValidationMiddleware};
    ///
    /// struct Transfer { amount: i64 }
    ///
    /// let mut bus = CommandBus::new();
    /// bus.add_middleware(ValidationMiddleware::for_message("positive_amounts", |t: &Transfer| t.amount > 0));
    /// ```
    pub fn for_message<M: 'static>(
        name: impl Into<String>,
        validator: impl Validator<M> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            check: Box::new(move |dispatch: &Dispatch| -> FlextResult<()> {
                match dispatch.message::<M>() {
                    Some(message) => validator.validate(message),
                    None => Ok(()),
                }
            }),
        }
    }
}

impl Middleware<Dispatch, DispatchOutput> for ValidationMiddleware {
    fn name(&self) -> &str {
        &self.name
    }

    fn before_request(&self, dispatch: Dispatch) -> FlextResult<Dispatch> {
        match self.check.validate(&dispatch) {
            Ok(()) => Ok(dispatch),
            Err(error) if error.is(ErrorCode::ValidationError) => Err(error),
            Err(error) => Err(error.with_code(ErrorCode::ValidationError)),
        }
    }
}

impl fmt::Debug for ValidationMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationMiddleware")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Asks an authorizer about each dispatch's [context](DispatchContext) — who (the
/// metadata's headers) sends what (message type) to whom (handler) — before it reaches the
/// handler. A denial is an `AUTHORIZATION_DENIED` error; so is a check that fails for any
/// other reason or panics.
///
/// ```
/// use flext_cqrs::{AuthorizationMiddleware, CommandBus, DispatchContext};
///
/// let mut bus = CommandBus::new();
/// bus.add_middleware(AuthorizationMiddleware::new("admins_only", |ctx: &DispatchContext| {
///     ctx.metadata().headers.get("role").map(String::as_str) == Some("admin")
/// }));
/// ```
pub struct AuthorizationMiddleware {
    name: String,
    authorizer: Box<dyn Authorizer<DispatchContext>>,
}

impl AuthorizationMiddleware {
    /// Authorizes every dispatch with `authorizer`.
    pub fn new(
        name: impl Into<String>,
        authorizer: impl Authorizer<DispatchContext> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            authorizer: Box::new(authorizer),
        }
    }
}

#[async_trait]
impl Middleware<Dispatch, DispatchOutput> for AuthorizationMiddleware {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(
        &self,
        dispatch: Dispatch,
        next: Next<'_, Dispatch, DispatchOutput>,
    ) -> FlextResult<DispatchOutput> {
        let verdict = catch_panic(self.authorizer.authorize(dispatch.context())).await;
        match verdict {
            Ok(()) => next.run(dispatch).await,
            Err(error) if error.is(ErrorCode::AuthorizationDenied) => Err(error),
            Err(error) => Err(FlextError::authorization_denied(format!(
                "Authorization check '{}' failed for {} {}: {error}",
                self.name,
                dispatch.kind(),
                dispatch.message_type()
            ))
            .with_source(error)),
        }
    }
}

impl fmt::Debug for AuthorizationMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationMiddleware")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
