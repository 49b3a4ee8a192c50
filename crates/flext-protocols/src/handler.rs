//! The handler contract.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use flext_constants::HandlerKind;
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

    /// What kind of handler this is, as registries and health reports show it: a command
    /// or query handler, a chain, a pipeline… `Custom` unless overridden. A wrapper that
    /// keeps a handler's metrics (`BasicHandler::wrap`, a registry's `register_handler`)
    /// takes the kind of the handler it wraps.
    fn handler_kind(&self) -> HandlerKind {
        HandlerKind::Custom
    }

    /// Handles one request.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn handle(&self, request: Self::Request) -> FlextResult<Self::Response>
    /// ```
    async fn handle(&self, request: Self::Request) -> FlextResult<Self::Response>;
}

/// A shared, type-erased handler of `Req` returning `Res`.
pub type BoxHandler<Req, Res> = Arc<dyn Handler<Request = Req, Response = Res>>;

/// The future a handler's `handle` returns, boxed (what `async-trait` generates).
pub type HandleFuture<'a, T> = Pin<Box<dyn Future<Output = FlextResult<T>> + Send + 'a>>;

/// Implements [`Handler`] for a smart pointer by delegating to the pointee. `handle` hands
/// back the pointee's boxed future as it is, so a shared handler costs no extra allocation.
macro_rules! delegate_handler {
    ($pointer:ident) => {
        impl<H: Handler + ?Sized> Handler for $pointer<H> {
            type Request = H::Request;
            type Response = H::Response;

            fn handler_name(&self) -> &str {
                (**self).handler_name()
            }

            fn can_handle(&self, request: &Self::Request) -> bool {
                (**self).can_handle(request)
            }

            fn handler_kind(&self) -> HandlerKind {
                (**self).handler_kind()
            }

            fn handle<'life0, 'async_trait>(
                &'life0 self,
                request: Self::Request,
            ) -> HandleFuture<'async_trait, Self::Response>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                (**self).handle(request)
            }
        }
    };
}

delegate_handler!(Arc);
delegate_handler!(Box);
