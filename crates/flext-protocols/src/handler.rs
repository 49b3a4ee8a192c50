//! The handler contract.

use std::sync::Arc;

use async_trait::async_trait;
use flext_types::FlextResult;

/// An async handler of one request type.
///
/// Handlers are object-safe, so any handler can be stored as a [`BoxHandler`] and shared
/// between tasks. `handle` takes `&self`: a handler with state keeps it behind atomics or
/// locks of its own, and must not hold a lock across an `.await`.
///
/// A handler should return errors, not panic; the concrete handlers of `flext-impl` still
/// catch a panic and turn it into an `OPERATION_ERROR`.
#[async_trait]
pub trait Handler: Send + Sync {
    /// The request this handler accepts.
    type Request: Send + 'static;
    /// What a successful call returns.
    type Response: Send + 'static;

    /// The handler's name, unique within a registry or chain.
    fn handler_name(&self) -> &str;

    /// Whether this handler accepts `request`; chains in first-match mode skip a handler
    /// that does not. Accepts everything unless overridden.
    fn can_handle(&self, request: &Self::Request) -> bool {
        let _ = request;
        true
    }

    /// Handles one request.
    async fn handle(&self, request: Self::Request) -> FlextResult<Self::Response>;
}

/// A shared, type-erased handler of `Req` returning `Res`.
pub type BoxHandler<Req, Res> = Arc<dyn Handler<Request = Req, Response = Res>>;

#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    type Request = H::Request;
    type Response = H::Response;

    fn handler_name(&self) -> &str {
        (**self).handler_name()
    }

    fn can_handle(&self, request: &Self::Request) -> bool {
        (**self).can_handle(request)
    }

    async fn handle(&self, request: Self::Request) -> FlextResult<Self::Response> {
        (**self).handle(request).await
    }
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Box<H> {
    type Request = H::Request;
    type Response = H::Response;

    fn handler_name(&self) -> &str {
        (**self).handler_name()
    }

    fn can_handle(&self, request: &Self::Request) -> bool {
        (**self).can_handle(request)
    }

    async fn handle(&self, request: Self::Request) -> FlextResult<Self::Response> {
        (**self).handle(request).await
    }
}
