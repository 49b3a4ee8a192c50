//! What the tests share: a command, counting handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flext_protocols::{Command, Handler};
use flext_types::FlextResult;

/// A command whose handler sleeps `delay` and returns `value`.
#[derive(Debug)]
pub(crate) struct CreateUser {
    pub(crate) value: u64,
    pub(crate) delay: Duration,
}

impl CreateUser {
    pub(crate) fn now(value: u64) -> Self {
        Self {
            value,
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn taking(value: u64, delay: Duration) -> Self {
        Self { value, delay }
    }
}

impl Command for CreateUser {
    type Output = u64;
}

/// How many calls are running now, and the most that ever ran at once.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
}

impl InFlight {
    pub(crate) fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The `create_user` handler: counts itself in flight, sleeps the command's delay,
/// returns its value.
#[derive(Debug, Clone)]
pub(crate) struct CreateUserHandler {
    pub(crate) in_flight: Arc<InFlight>,
}

impl CreateUserHandler {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: Arc::default(),
        }
    }
}

#[flext_protocols::async_trait]
impl Handler for CreateUserHandler {
    type Request = CreateUser;
    type Response = u64;

    fn handler_name(&self) -> &str {
        "create_user"
    }

    async fn handle(&self, command: CreateUser) -> FlextResult<u64> {
        let _running = Running::start(&self.in_flight);
        tokio::time::sleep(command.delay).await;
        Ok(command.value)
    }
}

/// One call counted in flight until it ends or its future is dropped (a timeout drops it).
struct Running<'a>(&'a InFlight);

impl<'a> Running<'a> {
    fn start(in_flight: &'a InFlight) -> Self {
        in_flight.calls.fetch_add(1, Ordering::SeqCst);
        let now = in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        in_flight.most.fetch_max(now, Ordering::SeqCst);
        Self(in_flight)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}
