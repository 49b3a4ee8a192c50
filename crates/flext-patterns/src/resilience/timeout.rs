//! [`Timeout`]: a deadline on any call.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use flext_impl::{Deadline, DeadlineSubject, ManagedHandler};
use flext_protocols::{Handler, Middleware, Next};
use flext_types::{FlextResult, HandlerConfig};

/// Ends a call that runs past its deadline with a `TIMEOUT` error, through the workspace's
/// one [`Deadline`]: outside a tokio runtime a call runs without one, and in a runtime
/// without timers it fails with an `OPERATION_ERROR` before it starts.
///
/// [`Timeout::from_config`] takes the deadline of a handler configuration (milliseconds);
/// [`Timeout::wrap`] puts a deadline on a managed handler and, when it passes, records the
/// call as a failure and leaves the handler in state `timeout`.
///
/// ```
/// use std::time::Duration;
/// use flext_patterns::Timeout;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let timeout = Timeout::new(Duration::from_millis(50));
/// let err = timeout.run(async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, flext_types::FlextError>(())
/// }).await.unwrap_err();
/// assert_eq!(err.to_string(), "Call timed out after 50 ms");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    deadline: Deadline,
}

impl Timeout {
    /// A deadline of `deadline`.
    pub fn new(deadline: Duration) -> Self {
        Self {
            deadline: Deadline::new(deadline),
        }
    }

    /// The deadline of a handler configuration.
    pub fn from_config(config: &HandlerConfig) -> Self {
        Self::new(config.timeout())
    }

    /// The deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline.limit()
    }

    /// Runs `call`, or fails with `TIMEOUT` when the deadline passes first.
    pub async fn run<T>(&self, call: impl Future<Output = FlextResult<T>>) -> FlextResult<T> {
        self.deadline.run(DeadlineSubject::Call, call).await
    }

    /// `handler` under this deadline.
    pub fn wrap<H: Handler + ManagedHandler>(self, handler: H) -> TimeoutHandler<H> {
        TimeoutHandler {
            timeout: self,
            handler,
        }
    }
}

#[async_trait]
impl<Req, Res> Middleware<Req, Res> for Timeout
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    fn name(&self) -> &str {
        "timeout"
    }

    async fn call(&self, request: Req, next: Next<'_, Req, Res>) -> FlextResult<Res> {
        self.run(next.run(request)).await
    }
}

/// A managed handler under a [`Timeout`]: a call past the deadline is a `TIMEOUT` error
/// naming the handler, counts once as a failure in its metrics and leaves it in state
/// `timeout` (through [`Deadline::run_on`]: the handler's core records it when the call
/// runs through [`HandlerCore::run`](flext_impl::HandlerCore::run), the wrapper otherwise).
#[derive(Debug)]
pub struct TimeoutHandler<H> {
    timeout: Timeout,
    handler: H,
}

impl<H> TimeoutHandler<H> {
    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.handler
    }
}

#[async_trait]
impl<H: Handler + ManagedHandler> Handler for TimeoutHandler<H> {
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
        let handler = &self.handler;
        self.timeout
            .deadline
            .run_on(handler.core(), handler.handle(request))
            .await
    }
}
