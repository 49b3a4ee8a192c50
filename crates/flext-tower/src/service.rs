//! A flext handler as a tower service: [`HandlerService`], and [`HandlerServiceRef`] when
//! the handler is borrowed.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use flext_protocols::{HandleFuture, Handler};
use flext_types::FlextError;
use tower::Service;

/// A flext [`Handler`] served as a [`tower::Service`] of its request type.
///
/// It holds the handler behind an `Arc`, so clones are cheap and share the handler (tower's
/// `Buffer` and servers clone their service). It is always ready: a handler has no
/// readiness of its own, and the limits belong to the layers above it. Errors are the
/// handler's [`FlextError`]s, unchanged.
///
/// Each call is the handler's boxed future inside one more box that owns a clone of the
/// `Arc`, since a tower future cannot borrow its service. A stack that lives no longer
/// than the handler can borrow it instead ([`HandlerServiceRef`]) and save both.
///
/// ```
/// use flext_impl::handler_fn;
/// use flext_tower::HandlerExt;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let add_one = handler_fn("add_one", |x: u64| async move { Ok(x + 1) });
/// let service = ServiceBuilder::new()
///     .map_request(|x: u64| x * 10)
///     .service(add_one.into_service());
/// assert_eq!(service.oneshot(4).await, Ok(41));
/// # }
/// ```
pub struct HandlerService<H: ?Sized> {
    handler: Arc<H>,
}

impl<H> HandlerService<H> {
    /// Serves `handler`.
    pub fn new(handler: H) -> Self {
        Self::from_arc(Arc::new(handler))
    }
}

impl<H: ?Sized> HandlerService<H> {
    /// Serves a handler that is already shared, such as a
    /// [`BoxHandler`](flext_protocols::BoxHandler).
    pub fn from_arc(handler: Arc<H>) -> Self {
        Self { handler }
    }

    /// The handler served.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }
}

impl<H> Service<H::Request> for HandlerService<H>
where
    H: Handler + ?Sized + 'static,
{
    type Response = H::Response;
    type Error = FlextError;
    type Future = HandleFuture<'static, H::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), FlextError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: H::Request) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        Box::pin(async move { handler.handle(request).await })
    }
}

impl<H: ?Sized> Clone for HandlerService<H> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
        }
    }
}

impl<H: Handler + ?Sized> fmt::Debug for HandlerService<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerService")
            .field("handler", &self.handler.handler_name())
            .finish()
    }
}

/// A borrowed flext [`Handler`] served as a [`tower::Service`]: [`HandlerService`] for a
/// stack that lives no longer than the handler (a request scope, a test, a benchmark).
///
/// A call is the handler's own boxed future and nothing more: no `Arc` to clone and no
/// second box, since the future may borrow the handler. Always ready; errors are the
/// handler's [`FlextError`]s, unchanged. It is `Copy`.
///
/// ```
/// use flext_impl::handler_fn;
/// use flext_tower::HandlerExt;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let add_one = handler_fn("add_one", |x: u64| async move { Ok(x + 1) });
/// let mut service = ServiceBuilder::new()
///     .map_response(|x: u64| x * 2)
///     .service(add_one.as_service());
/// for x in 0..3 {
///     let ready = service.ready().await.unwrap();
///     assert_eq!(ready.call(x).await, Ok((x + 1) * 2));
/// }
/// # }
/// ```
pub struct HandlerServiceRef<'a, H: ?Sized> {
    handler: &'a H,
}

impl<'a, H: ?Sized> HandlerServiceRef<'a, H> {
    /// Serves the borrowed `handler`.
    pub fn new(handler: &'a H) -> Self {
        Self { handler }
    }

    /// The handler served.
    pub fn handler(&self) -> &'a H {
        self.handler
    }
}

impl<'a, H> Service<H::Request> for HandlerServiceRef<'a, H>
where
    H: Handler + ?Sized,
{
    type Response = H::Response;
    type Error = FlextError;
    type Future = HandleFuture<'a, H::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), FlextError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: H::Request) -> Self::Future {
        self.handler.handle(request)
    }
}

impl<H: ?Sized> Clone for HandlerServiceRef<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: ?Sized> Copy for HandlerServiceRef<'_, H> {}

impl<H: Handler + ?Sized> fmt::Debug for HandlerServiceRef<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerServiceRef")
            .field("handler", &self.handler.handler_name())
            .finish()
    }
}
