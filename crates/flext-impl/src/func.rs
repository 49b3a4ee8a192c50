//! Closures and async functions as handlers.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use flext_protocols::Handler;
use flext_types::FlextResult;

/// A handler made of a named async closure or `async fn`; see [`handler_fn`].
pub struct FnHandler<F, Req, Res> {
    name: String,
    f: F,
    _types: PhantomData<fn(Req) -> Res>,
}

/// A handler made of a named synchronous closure or function; see [`sync_handler_fn`].
pub struct SyncFnHandler<F, Req, Res> {
    name: String,
    f: F,
    _types: PhantomData<fn(Req) -> Res>,
}

/// Makes a handler of an async closure or `async fn` taking the request and returning a
/// [`FlextResult`].
///
/// ```
/// use flext_impl::handler_fn;
/// use flext_protocols::Handler;
/// use flext_types::FlextResult;
///
/// async fn double(n: u32) -> FlextResult<u32> {
///     Ok(n * 2)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let doubler = handler_fn("doubler", double);
/// assert_eq!(doubler.handler_name(), "doubler");
/// assert_eq!(doubler.handle(21).await, Ok(42));
///
/// let greeter = handler_fn("greeter", |name: String| async move { Ok::<_, flext_types::FlextError>(format!("Hello, {name}")) });
/// assert_eq!(greeter.handle("Ada".into()).await.unwrap(), "Hello, Ada");
/// # }
/// ```
pub fn handler_fn<Req, Res, F, Fut>(name: impl Into<String>, f: F) -> FnHandler<F, Req, Res>
where
    F: Fn(Req) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<Res>> + Send,
    Req: Send + 'static,
    Res: Send + 'static,
{
    FnHandler {
        name: name.into(),
        f,
        _types: PhantomData,
    }
}

/// A handler made of a named async closure and the state it works on; see
/// [`handler_with`].
pub struct StateFnHandler<S, F, Req, Res> {
    name: String,
    state: S,
    f: F,
    _types: PhantomData<fn(Req) -> Res>,
}

/// Makes a handler of an async closure that takes the handler's `state` (a clone of it per
/// call: for an `Arc`, a reference count) and the request: shared state without an `Arc`
/// cloned outside and again inside the closure.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use flext_impl::handler_with;
/// use flext_protocols::Handler;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let total = Arc::new(AtomicU64::new(0));
/// let add = handler_with("add", total.clone(), |total: Arc<AtomicU64>, n: u64| async move {
///     Ok(total.fetch_add(n, Ordering::SeqCst) + n)
/// });
/// assert_eq!(add.handle(5).await, Ok(5));
/// assert_eq!(add.handle(2).await, Ok(7));
/// assert_eq!(total.load(Ordering::SeqCst), 7);
/// # }
/// ```
pub fn handler_with<S, Req, Res, F, Fut>(
    name: impl Into<String>,
    state: S,
    f: F,
) -> StateFnHandler<S, F, Req, Res>
where
    S: Clone + Send + Sync,
    F: Fn(S, Req) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<Res>> + Send,
    Req: Send + 'static,
    Res: Send + 'static,
{
    StateFnHandler {
        name: name.into(),
        state,
        f,
        _types: PhantomData,
    }
}

#[async_trait]
impl<S, F, Fut, Req, Res> Handler for StateFnHandler<S, F, Req, Res>
where
    S: Clone + Send + Sync,
    F: Fn(S, Req) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<Res>> + Send,
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Request = Req;
    type Response = Res;

    fn handler_name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, request: Req) -> FlextResult<Res> {
        (self.f)(self.state.clone(), request).await
    }
}

impl<S, F, Req, Res> fmt::Debug for StateFnHandler<S, F, Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateFnHandler")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Makes a handler of a synchronous closure or function taking the request and returning a
/// [`FlextResult`].
///
/// ```
/// use flext_impl::sync_handler_fn;
/// use flext_protocols::Handler;
/// use flext_types::{FlextError, FlextResult};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let parse = sync_handler_fn("parse", |s: String| -> FlextResult<i64> {
///     s.parse().map_err(|_| FlextError::validation(format!("not a number: {s}")))
/// });
/// assert_eq!(parse.handle("7".into()).await, Ok(7));
/// # }
/// ```
pub fn sync_handler_fn<Req, Res, F>(name: impl Into<String>, f: F) -> SyncFnHandler<F, Req, Res>
where
    F: Fn(Req) -> FlextResult<Res> + Send + Sync,
    Req: Send + 'static,
    Res: Send + 'static,
{
    SyncFnHandler {
        name: name.into(),
        f,
        _types: PhantomData,
    }
}

#[async_trait]
impl<F, Fut, Req, Res> Handler for FnHandler<F, Req, Res>
where
    F: Fn(Req) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<Res>> + Send,
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Request = Req;
    type Response = Res;

    fn handler_name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, request: Req) -> FlextResult<Res> {
        (self.f)(request).await
    }
}

#[async_trait]
impl<F, Req, Res> Handler for SyncFnHandler<F, Req, Res>
where
    F: Fn(Req) -> FlextResult<Res> + Send + Sync,
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Request = Req;
    type Response = Res;

    fn handler_name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, request: Req) -> FlextResult<Res> {
        (self.f)(request)
    }
}

impl<F, Req, Res> fmt::Debug for FnHandler<F, Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler")
            .field("name", &self.name)
            .finish()
    }
}

impl<F, Req, Res> fmt::Debug for SyncFnHandler<F, Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncFnHandler")
            .field("name", &self.name)
            .finish()
    }
}
