//! [`HookMiddleware`] (the guide's `Patterns.Middleware`) and [`Layered`]: middleware
//! around any handler.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flext_impl::{catch_panic, catch_panic_sync};
use flext_protocols::{Handler, Middleware, Next, SharedMiddleware};
use flext_types::{FlextError, FlextResult};

type Hook<T> = Box<dyn Fn(T) -> FlextResult<T> + Send + Sync>;
type ErrorHook<Res> = Box<dyn Fn(FlextError) -> FlextResult<Res> + Send + Sync>;
type HookStack<Req, Res> = Vec<Arc<HookMiddleware<Req, Res>>>;

/// A middleware made of closures: `before_request` may transform or reject the request,
/// `after_response` the response, and `handle_error` sees an error from further in and may
/// replace it or recover with a response. A hook that panics fails the call with an
/// `OPERATION_ERROR`.
///
/// It is a [`Middleware`](flext_protocols::Middleware) like any other: it goes on a bus
/// (`Middleware<Dispatch, DispatchOutput>`) or around a handler with [`Layered`].
///
/// ```
/// use flext_patterns::{HookMiddleware, Layered};
/// use flext_impl::handler_fn;
/// use flext_protocols::Handler;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let trim = HookMiddleware::new("trim").before_request(|s: String| Ok(s.trim().to_owned()));
/// let shout = HookMiddleware::new("shout").after_response(|s: String| Ok(s.to_uppercase()));
/// let greet = Layered::new(handler_fn("greet", |name: String| async move { Ok(format!("hello {name}")) }))
///     .with(trim)
///     .with(shout);
/// assert_eq!(greet.handle("  ada ".into()).await?, "HELLO ADA");
/// # Ok(())
/// # }
/// ```
pub struct HookMiddleware<Req, Res> {
    name: String,
    before: Option<Hook<Req>>,
    after: Option<Hook<Res>>,
    on_error: Option<ErrorHook<Res>>,
}

impl<Req, Res> HookMiddleware<Req, Res> {
    /// A middleware named `name` with no hooks (it passes everything through).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            before: None,
            after: None,
            on_error: None,
        }
    }

    /// Transforms or rejects each request before the rest of the stack.
    #[must_use]
    pub fn before_request(
        mut self,
        hook: impl Fn(Req) -> FlextResult<Req> + Send + Sync + 'static,
    ) -> Self {
        self.before = Some(Box::new(hook));
        self
    }

    /// Transforms or rejects each successful response.
    #[must_use]
    pub fn after_response(
        mut self,
        hook: impl Fn(Res) -> FlextResult<Res> + Send + Sync + 'static,
    ) -> Self {
        self.after = Some(Box::new(hook));
        self
    }

    /// Sees each error from further in: returns it, another error, or a response.
    #[must_use]
    pub fn handle_error(
        mut self,
        hook: impl Fn(FlextError) -> FlextResult<Res> + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Box::new(hook));
        self
    }
}

impl<Req, Res> Middleware<Req, Res> for HookMiddleware<Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn before_request(&self, request: Req) -> FlextResult<Req> {
        match &self.before {
            Some(hook) => catch_panic_sync(|| hook(request)),
            None => Ok(request),
        }
    }

    fn after_response(&self, response: Res) -> FlextResult<Res> {
        match &self.after {
            Some(hook) => catch_panic_sync(|| hook(response)),
            None => Ok(response),
        }
    }

    fn handle_error(&self, error: FlextError) -> FlextResult<Res> {
        match &self.on_error {
            Some(hook) => catch_panic_sync(|| hook(error)),
            None => Err(error),
        }
    }
}

impl<Req, Res> fmt::Debug for HookMiddleware<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookMiddleware")
            .field("name", &self.name)
            .field("before_request", &self.before.is_some())
            .field("after_response", &self.after.is_some())
            .field("handle_error", &self.on_error.is_some())
            .finish()
    }
}

/// A handler with a stack of middleware around it; itself a handler.
///
/// Order: the first middleware added is outermost. A request passes the middleware in the
/// order added, then the handler; the response (or error) comes back through them in
/// reverse. A panic anywhere in the stack is an `OPERATION_ERROR`.
pub struct Layered<H: Handler> {
    handler: H,
    stack: Vec<SharedMiddleware<H::Request, H::Response>>,
    /// The same stack while every middleware in it is a [`HookMiddleware`]: such a stack
    /// runs as a flat loop, without a boxed future per middleware.
    hooks: Option<HookStack<H::Request, H::Response>>,
}

impl<H: Handler> Layered<H> {
    /// `handler` with no middleware yet.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            stack: Vec::new(),
            hooks: Some(Vec::new()),
        }
    }

    /// Adds `middleware` inside those added before it.
    #[must_use]
    pub fn with(mut self, middleware: impl Middleware<H::Request, H::Response> + 'static) -> Self {
        self.push(middleware);
        self
    }

    /// Adds `middleware` inside those added before it.
    pub fn push<M: Middleware<H::Request, H::Response> + 'static>(&mut self, middleware: M) {
        let shared = Arc::new(middleware);
        let any: Arc<dyn Any + Send + Sync> = shared.clone();
        match any.downcast::<HookMiddleware<H::Request, H::Response>>() {
            Ok(hook) => {
                if let Some(hooks) = &mut self.hooks {
                    hooks.push(hook);
                }
            }
            Err(_) => self.hooks = None,
        }
        self.stack.push(shared);
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.handler
    }

    /// The middleware's names, outermost first.
    pub fn middleware_names(&self) -> Vec<&str> {
        self.stack.iter().map(|m| m.name()).collect()
    }
}

#[async_trait]
impl<H: Handler> Handler for Layered<H> {
    type Request = H::Request;
    type Response = H::Response;

    fn handler_name(&self) -> &str {
        self.handler.handler_name()
    }

    fn can_handle(&self, request: &Self::Request) -> bool {
        self.handler.can_handle(request)
    }

    fn handler_kind(&self) -> flext_constants::HandlerKind {
        self.handler.handler_kind()
    }

    async fn handle(&self, request: Self::Request) -> FlextResult<Self::Response> {
        let Some(hooks) = &self.hooks else {
            return catch_panic(Next::new(&self.handler, &self.stack).run(request)).await;
        };
        // A stack of hook middleware runs as `Next` would, flat: `before_request` of each in
        // order until one rejects, the handler if none did, then back out through the ones
        // entered, in reverse: `after_response` on success, `handle_error` on failure. One
        // panic guard around each pass rather than one per hook: a hook that panics is
        // still an `OPERATION_ERROR` that the hooks outside it see, and the guard is paid
        // once per pass.
        let (entered, result) = match before_pass(hooks, request) {
            Ok(request) => (hooks.len(), catch_panic(self.handler.handle(request)).await),
            Err((depth, error)) => (depth, Err(error)),
        };
        after_pass(&hooks[..entered], result)
    }
}

/// The `before_request` hooks of `hooks` in order, inside one panic guard: the request they
/// let through, or the error of the first that rejected it (or panicked) with its depth
/// (the number of hooks entered before it).
fn before_pass<Req, Res>(
    hooks: &[Arc<HookMiddleware<Req, Res>>],
    request: Req,
) -> Result<Req, (usize, FlextError)> {
    let mut depth = 0;
    let passed = catch_panic_sync(|| {
        let mut request = request;
        for hook in hooks {
            if let Some(before) = &hook.before {
                request = before(request)?;
            }
            depth += 1;
        }
        Ok(request)
    });
    passed.map_err(|error| (depth, error))
}

/// The `after_response` (on success) or `handle_error` (on failure) hooks of `hooks`,
/// innermost (last) first, inside one panic guard; a panic becomes the error the hooks
/// outside the panicking one see, under a guard of their own.
fn after_pass<Req, Res>(
    hooks: &[Arc<HookMiddleware<Req, Res>>],
    mut result: FlextResult<Res>,
) -> FlextResult<Res> {
    let mut remaining = hooks.len();
    while remaining > 0 {
        let passed = catch_panic_sync(|| Ok(unwind(hooks, &mut remaining, result)));
        match passed {
            Ok(result) => return result,
            // A hook panicked: the hooks outside it see the panic as an error.
            Err(panic) => result = Err(panic),
        }
    }
    result
}

/// The hooks of `hooks[..*remaining]`, innermost first, on `result`; `remaining` counts
/// down before each hook runs, so after a panic it says which hooks are left. A response
/// travels as itself while the hooks succeed, not as a `FlextResult` moved through each
/// (a quarter of the pass's instructions on a stack of 4, callgrind).
fn unwind<Req, Res>(
    hooks: &[Arc<HookMiddleware<Req, Res>>],
    remaining: &mut usize,
    result: FlextResult<Res>,
) -> FlextResult<Res> {
    let mut error = match result {
        Ok(mut response) => loop {
            if *remaining == 0 {
                return Ok(response);
            }
            *remaining -= 1;
            if let Some(after) = &hooks[*remaining].after {
                match after(response) {
                    Ok(next) => response = next,
                    Err(error) => break error,
                }
            }
        },
        Err(error) => error,
    };
    while *remaining > 0 {
        *remaining -= 1;
        let hook = &hooks[*remaining];
        let recovered = match &hook.on_error {
            Some(on_error) => on_error(error),
            None => Err(error),
        };
        match recovered {
            // Recovered: the hooks outside it see a response.
            Ok(response) => return unwind(hooks, remaining, Ok(response)),
            Err(next) => error = next,
        }
    }
    Err(error)
}

impl<H: Handler> fmt::Debug for Layered<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered")
            .field("handler", &self.handler.handler_name())
            .field("middleware", &self.middleware_names())
            .finish()
    }
}
