//! A tower service as a flext handler: [`ServiceHandler`].

use std::fmt;
use std::marker::PhantomData;

use async_trait::async_trait;
use flext_constants::HandlerKind;
use flext_protocols::Handler;
use flext_types::FlextResult;
use tokio::sync::Mutex;
use tower::{BoxError, Service, ServiceExt};

use crate::error::tower_error;

/// A [`tower::Service`] served as a flext [`Handler`] named `name`, so a bus, a chain or a
/// registry can route to it.
///
/// Every call waits for the service to be ready, then calls it, on one service instance
/// behind an async lock. The lock is held from the readiness check to the call, not while
/// the response future runs, so the layers that decide at readiness keep their meaning: a
/// `RateLimit` makes the call past its budget wait for the next period, a
/// `ConcurrencyLimit` lets at most its limit of calls run at once, a `LoadShed` sheds the
/// calls its inner service is not ready for. Errors become [`FlextError`]s naming the
/// layer and the handler ([`tower_error`]); a `FlextError` from inside comes back as it
/// is.
///
/// [`FlextError`]: flext_types::FlextError
///
/// ```
/// use flext_constants::ErrorCode;
/// use flext_protocols::Handler;
/// use flext_tower::ServiceHandler;
/// use std::time::Duration;
/// use tower::{BoxError, ServiceBuilder, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let service = ServiceBuilder::new()
///     .timeout(Duration::from_secs(1))
///     .service(service_fn(|secs: u64| async move {
///         tokio::time::sleep(Duration::from_secs(secs)).await;
///         Ok::<_, BoxError>(secs * 2)
///     }));
/// let handler = ServiceHandler::new("double_later", service);
///
/// assert_eq!(handler.handle(0).await, Ok(0));
/// let late = handler.handle(5).await.unwrap_err();
/// assert_eq!(late.code(), ErrorCode::Timeout);
/// assert_eq!(late.message(), "timeout layer of 'double_later': request timed out");
/// # }
/// ```
///
/// `Req` is the request type the handler takes (a service may serve several); it is
/// usually inferred from where the handler goes.
pub struct ServiceHandler<S, Req> {
    name: String,
    kind: HandlerKind,
    service: Mutex<S>,
    // `fn(Req)`: the handler takes requests, it holds none (and is `Send + Sync` whatever
    // `Req` is).
    _request: PhantomData<fn(Req)>,
}

impl<S, Req> ServiceHandler<S, Req> {
    /// Serves `service` as the handler `name`, of kind [`HandlerKind::Custom`].
    pub fn new(name: impl Into<String>, service: S) -> Self {
        Self {
            name: name.into(),
            kind: HandlerKind::Custom,
            service: Mutex::new(service),
            _request: PhantomData,
        }
    }

    /// The same handler, shown to registries and health reports as `kind`.
    #[must_use]
    pub fn with_kind(mut self, kind: HandlerKind) -> Self {
        self.kind = kind;
        self
    }

    /// The service, once no call holds it.
    pub fn into_inner(self) -> S {
        self.service.into_inner()
    }
}

#[async_trait]
impl<S, Req> Handler for ServiceHandler<S, Req>
where
    S: Service<Req> + Send,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
{
    type Request = Req;
    type Response = S::Response;

    fn handler_name(&self) -> &str {
        &self.name
    }

    fn handler_kind(&self) -> HandlerKind {
        self.kind
    }

    async fn handle(&self, request: Req) -> FlextResult<S::Response> {
        call_locked(&self.service, request, &self.name).await
    }
}

impl<S, Req> fmt::Debug for ServiceHandler<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandler")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One call of the service behind `service`: readiness and the call under the lock, the
/// response outside it; errors mapped for `handler`.
pub(crate) async fn call_locked<S, Req>(
    service: &Mutex<S>,
    request: Req,
    handler: &str,
) -> FlextResult<S::Response>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    let response = {
        let mut service = service.lock().await;
        let ready = service
            .ready()
            .await
            .map_err(|e| tower_error(e.into(), handler))?;
        ready.call(request)
    };
    response.await.map_err(|e| tower_error(e.into(), handler))
}
