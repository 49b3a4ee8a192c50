//! [`BasicHandler`]: a handler with metrics, state, configuration, a deadline and panic
//! capture around a processing step.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use flext_constants::HandlerKind;
use flext_protocols::{Handler, MetricsSource};
use flext_types::{FlextResult, HandlerConfig, MetricSet};

use crate::{FnHandler, HandlerCore, ManagedHandler, handler_fn};

/// A handler with built-in metrics, state, configuration per environment, a deadline and
/// panic capture, around a processing step `H`.
///
/// The step is any [`Handler`]: a closure ([`BasicHandler::from_fn`]), a type that implements
/// the abstract handler contract ([`BasicHandler::wrap`], the guide's
/// `OrderProcessingHandler`), or nothing at all ([`BasicHandler::new`] passes requests
/// through, as the guide's default `BasicHandler` does).
///
/// Configuration, metrics and state come from [`ManagedHandler`]; [`get_metrics`](Self::get_metrics)
/// is the guide's spelling of [`ManagedHandler::metrics`].
///
/// ```
/// use flext_impl::{BasicHandler, ManagedHandler};
/// use flext_protocols::Handler;
/// use flext_types::HandlerConfig;
/// use flext_constants::{Environment, HandlerState};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let handler = BasicHandler::new("user_service");
/// handler.configure(HandlerConfig::for_environment(Environment::Production))?;
///
/// let response = handler.handle(json!({"action": "create_user"})).await?;
/// assert_eq!(response["action"], "create_user");
///
/// let metrics = handler.metrics();
/// assert_eq!((metrics.requests_processed, metrics.successful_requests), (1, 1));
/// assert_eq!(handler.state(), HandlerState::Completed);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct BasicHandler<H = Identity<serde_json::Value>> {
    core: HandlerCore,
    inner: H,
}

impl<T: Send + 'static> BasicHandler<Identity<T>> {
    /// A handler that returns each request unchanged, with metrics and state.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_kind(name, HandlerKind::Basic, Identity::new())
    }
}

impl BasicHandler {
    /// The environment table's configuration for an environment given by name (the
    /// guide's `BasicHandler.create_environment_handler_config`); an unknown name is an
    /// `INVALID_ARGUMENT` error listing the valid ones.
    pub fn create_environment_handler_config(environment: &str) -> FlextResult<HandlerConfig> {
        HandlerConfig::for_environment_name(environment)
    }
}

impl<Req, Res, F, Fut> BasicHandler<FnHandler<F, Req, Res>>
where
    F: Fn(Req) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<Res>> + Send,
    Req: Send + 'static,
    Res: Send + 'static,
{
    /// A handler whose processing step is the async closure or function `f`.
    pub fn from_fn(name: impl Into<String>, f: F) -> Self {
        let name = name.into();
        Self::with_kind(name.clone(), HandlerKind::Basic, handler_fn(name, f))
    }
}

impl<H: Handler> BasicHandler<H> {
    /// Wraps a user handler, taking its name and its [`kind`](Handler::handler_kind)
    /// (`Custom` unless it says otherwise).
    pub fn wrap(inner: H) -> Self {
        let name = inner.handler_name().to_owned();
        let kind = inner.handler_kind();
        Self::with_kind(name, kind, inner)
    }
}

impl<H> BasicHandler<H> {
    /// Wraps `inner` under the given name and kind.
    pub fn with_kind(name: impl Into<String>, kind: HandlerKind, inner: H) -> Self {
        Self {
            core: HandlerCore::new(name, kind),
            inner,
        }
    }

    /// The processing step (for example to read the guide's order statistics).
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

impl<H: Handler> BasicHandler<H> {
    /// The guide's spelling of [`ManagedHandler::metrics`] (`handler.get_metrics()`): a
    /// snapshot of the handler's metrics.
    pub fn get_metrics(&self) -> flext_types::HandlerMetrics {
        self.metrics()
    }
}

impl<H: Handler> ManagedHandler for BasicHandler<H> {
    fn core(&self) -> &HandlerCore {
        &self.core
    }
}

#[async_trait]
impl<H: Handler> Handler for BasicHandler<H> {
    type Request = H::Request;
    type Response = H::Response;

    fn handler_name(&self) -> &str {
        self.core.name()
    }

    fn can_handle(&self, request: &Self::Request) -> bool {
        self.inner.can_handle(request)
    }

    fn handler_kind(&self) -> HandlerKind {
        self.core.kind()
    }

    async fn handle(&self, request: Self::Request) -> FlextResult<Self::Response> {
        self.core.run(self.inner.handle(request)).await
    }
}

impl<H: Handler> MetricsSource for BasicHandler<H> {
    fn metric_set(&self) -> MetricSet {
        self.core.metrics().to_metric_set()
    }
}

/// The processing step that returns each request unchanged.
pub struct Identity<T>(PhantomData<fn(T) -> T>);

impl<T> Identity<T> {
    /// The identity step.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Identity<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Identity<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity")
    }
}

#[async_trait]
impl<T: Send + 'static> Handler for Identity<T> {
    type Request = T;
    type Response = T;

    fn handler_name(&self) -> &str {
        "identity"
    }

    async fn handle(&self, request: T) -> FlextResult<T> {
        Ok(request)
    }
}
