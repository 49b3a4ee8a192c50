//! Tower layers on a flext handler: [`TowerLayered`], [`layer`] and [`HandlerExt`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flext_constants::HandlerKind;
use flext_protocols::Handler;
use flext_types::FlextResult;
use tokio::sync::Mutex;
use tower::{BoxError, Layer, Service};

use crate::handler::call_locked;
use crate::service::{HandlerService, HandlerServiceRef};

/// A flext handler under a [`tower::Layer`] (a single layer, a `ServiceBuilder`'s stack or
/// a tuple of layers), which is a flext [`Handler`] again: it keeps the handler's name,
/// kind and `can_handle`.
///
/// The stack is one concrete type, `L::Service` over [`HandlerService<H>`]: no layer is
/// boxed or chosen at run time, so the compiler inlines it as it does a tower stack. Calls
/// run as in [`ServiceHandler`](crate::ServiceHandler): readiness and the call on one
/// stack instance under an async lock, the response outside it, tower's errors mapped to
/// [`FlextError`](flext_types::FlextError)s naming the layer and the handler.
///
/// ```
/// use flext_constants::ErrorCode;
/// use flext_impl::handler_fn;
/// use flext_protocols::Handler;
/// use flext_tower::HandlerExt;
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let slow = handler_fn("create_user", |ms: u64| async move {
///     tokio::time::sleep(Duration::from_millis(ms)).await;
///     Ok(ms)
/// });
/// let guarded = slow.layer(
///     ServiceBuilder::new()
///         .concurrency_limit(8)
///         .timeout(Duration::from_millis(100)),
/// );
/// assert_eq!(guarded.handler_name(), "create_user");
/// assert_eq!(guarded.handle(10).await, Ok(10));
///
/// let err = guarded.handle(500).await.unwrap_err();
/// assert_eq!(err.code(), ErrorCode::Timeout);
/// assert_eq!(err.message(), "timeout layer of 'create_user': request timed out");
/// # }
/// ```
pub struct TowerLayered<L, H>
where
    L: Layer<HandlerService<H>>,
{
    handler: Arc<H>,
    service: Mutex<L::Service>,
}

impl<L, H> TowerLayered<L, H>
where
    L: Layer<HandlerService<H>>,
{
    /// Wraps `handler` in `layer`.
    pub fn new(handler: H, layer: &L) -> Self {
        let handler = Arc::new(handler);
        let service = layer.layer(HandlerService::from_arc(Arc::clone(&handler)));
        Self {
            handler,
            service: Mutex::new(service),
        }
    }

    /// The handler inside the layers.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }
}

/// Wraps `handler` in the tower `layer`; the same as [`HandlerExt::layer`].
pub fn layer<L, H>(handler: H, layer: L) -> TowerLayered<L, H>
where
    L: Layer<HandlerService<H>>,
{
    TowerLayered::new(handler, &layer)
}

#[async_trait]
impl<L, H> Handler for TowerLayered<L, H>
where
    H: Handler + 'static,
    L: Layer<HandlerService<H>>,
    L::Service: Service<H::Request, Response = H::Response> + Send,
    <L::Service as Service<H::Request>>::Error: Into<BoxError>,
    <L::Service as Service<H::Request>>::Future: Send,
{
    type Request = H::Request;
    type Response = H::Response;

    fn handler_name(&self) -> &str {
        self.handler.handler_name()
    }

    fn can_handle(&self, request: &H::Request) -> bool {
        self.handler.can_handle(request)
    }

    fn handler_kind(&self) -> HandlerKind {
        self.handler.handler_kind()
    }

    async fn handle(&self, request: H::Request) -> FlextResult<H::Response> {
        call_locked(&self.service, request, self.handler.handler_name()).await
    }
}

impl<L, H> fmt::Debug for TowerLayered<L, H>
where
    L: Layer<HandlerService<H>>,
    H: Handler,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerLayered")
            .field("handler", &self.handler.handler_name())
            .finish_non_exhaustive()
    }
}

/// Tower on every flext handler: [`into_service`](HandlerExt::into_service) serves it as a
/// [`tower::Service`] (or [`as_service`](HandlerExt::as_service), borrowed),
/// [`layer`](HandlerExt::layer) wraps it in a [`tower::Layer`].
///
/// ```
/// use flext_impl::handler_fn;
/// use flext_protocols::Handler;
/// use flext_tower::HandlerExt;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let handler = handler_fn("add_one", |x: u64| async move { Ok(x + 1) })
///     .layer(ServiceBuilder::new().map_request(|x: u64| x * 2));
/// assert_eq!(handler.handle(20).await, Ok(41));
/// # }
/// ```
pub trait HandlerExt: Handler + Sized {
    /// This handler as a [`tower::Service`] of its request type.
    fn into_service(self) -> HandlerService<Self> {
        HandlerService::new(self)
    }

    /// This handler, borrowed, as a [`tower::Service`] of its request type: no `Arc` and
    /// one box less per call than [`into_service`](HandlerExt::into_service), for a stack
    /// that lives no longer than the handler.
    fn as_service(&self) -> HandlerServiceRef<'_, Self> {
        HandlerServiceRef::new(self)
    }

    /// This handler wrapped in the tower `layer`, as a flext handler again.
    fn layer<L>(self, layer: L) -> TowerLayered<L, Self>
    where
        L: Layer<HandlerService<Self>>,
    {
        TowerLayered::new(self, &layer)
    }
}

impl<H: Handler> HandlerExt for H {}
