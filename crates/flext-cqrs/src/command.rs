//! [`CommandBus`]: one handler per command type.

use std::any::TypeId;
use std::future::Future;
use std::sync::Arc;

use flext_impl::handler_fn;
use flext_protocols::{Command, Handler, MetricsSource, Middleware};
use flext_types::{FlextResult, MessageMetadata, MetricSet, MetricValue};

use crate::dispatch::{Dispatch, DispatchOutput, Instrumentation, MessageKind};
use crate::metrics::{CommandBusMetrics, push_per_type};
use crate::routes::{Routes, Stack, Totals};

/// Sends each command to the one handler registered for its type and returns the
/// command's typed output.
///
/// - Exactly one handler per command type: registering a second is a `DUPLICATE` error
///   naming the type.
/// - A command is [validated](Command::validate) before dispatch; a rejection is a
///   `VALIDATION_ERROR` with the command's own message, and the handler is never called.
/// - No handler is a `WIRING_ERROR` "No handler registered for command: CreateUserCommand":
///   the program's fault, not the sender's (a web layer answers 500, where a handler's own
///   `NOT_FOUND`, "no such account", is a 404).
/// - A handler (or middleware) that panics gives an `OPERATION_ERROR`; the bus keeps
///   working.
///
/// Registration and middleware take `&mut self`: build the bus, then share it (for
/// example in an `Arc`); `send` takes `&self` and needs no lock.
///
/// Each `send` runs, outermost first: the command's own validation, the metrics timer (on
/// one dispatch in [`LATENCY_SAMPLE_EVERY`](crate::MessageTypeMetrics::LATENCY_SAMPLE_EVERY)
/// of each type, the first included; the counts are exact), a `flext.dispatch` tracing span
/// (kind, message type, handler, message, correlation and causation ids), the middleware in
/// the order added (the first added is outermost), then the handler. The route is looked up
/// when `send` is called, the rest happens when its future is polled.
///
/// ```
/// use flext_cqrs::CommandBus;
/// use flext_protocols::Command;
/// use flext_types::{FlextError, FlextResult};
///
/// struct CreateUser { name: String }
///
/// impl Command for CreateUser {
///     type Output = String;
///     fn validate(&self) -> FlextResult<()> {
///         if self.name.chars().count() < 2 {
///             return Err(FlextError::validation("Name must be at least 2 characters"));
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> FlextResult<()> {
/// let mut bus = CommandBus::new();
/// bus.register_fn(|cmd: CreateUser| async move { Ok(format!("created {}", cmd.name)) })?;
///
/// assert_eq!(bus.send(CreateUser { name: "Alice".into() }).await?, "created Alice");
/// let err = bus.send(CreateUser { name: "A".into() }).await.unwrap_err();
/// assert_eq!(err.to_string(), "Name must be at least 2 characters");
/// assert_eq!(bus.metrics().successful_commands, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CommandBus {
    routes: Routes<TypeId>,
    totals: Totals,
    middleware: Stack,
}

impl CommandBus {
    /// A bus with no handlers and no middleware.
    pub fn new() -> Self {
        Self {
            routes: Routes::new(MessageKind::Command),
            totals: Totals::default(),
            middleware: Stack::default(),
        }
    }

    /// The bus with metrics and tracing set as `instrumentation` says (both on by default).
    #[must_use]
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.routes.instrumentation = instrumentation;
        self
    }

    /// What the bus records of each dispatch.
    pub fn instrumentation(&self) -> Instrumentation {
        self.routes.instrumentation
    }

    /// Registers the handler of command type `C` — any handler object, including a
    /// [`BasicHandler`](flext_impl::BasicHandler) or a closure wrapped by
    /// [`handler_fn`](flext_impl::handler_fn).
    pub fn register<C: Command>(
        &mut self,
        handler: impl Handler<Request = C, Response = C::Output> + 'static,
    ) -> FlextResult<()> {
        self.routes
            .insert(TypeId::of::<C>(), &C::command_name(), Arc::new(handler))
    }

    /// Registers an async closure or `async fn` as the handler of `C`, named after `C`.
    pub fn register_fn<C, F, Fut>(&mut self, f: F) -> FlextResult<()>
    where
        C: Command,
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<C::Output>> + Send + 'static,
    {
        self.register(handler_fn(C::command_name(), f))
    }

    /// Registers an async closure over `state` as the handler of `C`, named after `C`: each
    /// call gets a clone of `state` (for an `Arc`, a reference count), so shared state
    /// needs no clone inside the closure ([`handler_with`](flext_impl::handler_with)).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use flext_cqrs::CommandBus;
    /// use flext_protocols::Command;
    ///
    /// struct Deposit(u64);
    /// impl Command for Deposit { type Output = u64; }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> flext_types::FlextResult<()> {
    /// let balance = Arc::new(Mutex::new(0u64));
    /// let mut bus = CommandBus::new();
    /// bus.register_with(balance.clone(), |balance: Arc<Mutex<u64>>, Deposit(n)| async move {
    ///     let mut balance = balance.lock().expect("not poisoned");
    ///     *balance += n;
    ///     Ok(*balance)
    /// })?;
    /// assert_eq!(bus.send(Deposit(30)).await?, 30);
    /// assert_eq!(*balance.lock().expect("not poisoned"), 30);
    /// # Ok(())
    /// # }
    /// ```
    pub fn register_with<C, S, F, Fut>(&mut self, state: S, f: F) -> FlextResult<()>
    where
        C: Command,
        S: Clone + Send + Sync + 'static,
        F: Fn(S, C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<C::Output>> + Send + 'static,
    {
        self.register(flext_impl::handler_with(C::command_name(), state, f))
    }

    /// Removes the handler of `C`; `NOT_FOUND` if there is none (a lookup of a
    /// registration; a command sent without a handler is a `WIRING_ERROR`).
    pub fn unregister<C: Command>(&mut self) -> FlextResult<()> {
        self.routes
            .remove(&TypeId::of::<C>(), &C::command_name(), &self.totals)
    }

    /// Whether `C` has a handler.
    pub fn has_handler<C: Command>(&self) -> bool {
        self.routes.contains(&TypeId::of::<C>())
    }

    /// Adds a middleware inside those added before it.
    pub fn add_middleware(
        &mut self,
        middleware: impl Middleware<Dispatch, DispatchOutput> + 'static,
    ) {
        self.middleware.push(Arc::new(middleware));
    }

    /// Sends `command` to its handler and returns its output.
    pub fn send<C: Command>(
        &self,
        command: C,
    ) -> impl Future<Output = FlextResult<C::Output>> + Send + '_ {
        // Not an `async fn`: the caller awaits the route's future itself, one state
        // machine less on the hottest path.
        self.dispatch(command, None)
    }

    /// Sends `command` with the given metadata (for example to carry a correlation id
    /// into the tracing span and the middleware).
    pub async fn send_with<C: Command>(
        &self,
        command: C,
        metadata: MessageMetadata,
    ) -> FlextResult<C::Output> {
        self.dispatch(command, Some(&metadata)).await
    }

    fn dispatch<'a, C: Command>(
        &'a self,
        command: C,
        metadata: Option<&'a MessageMetadata>,
    ) -> impl Future<Output = FlextResult<C::Output>> + Send + 'a {
        self.routes.dispatch(
            // A constant, so the borrow outlives this call.
            &const { TypeId::of::<C>() },
            &self.totals,
            self.middleware.as_slice(),
            command,
            metadata,
            C::command_name,
            C::validate,
        )
    }

    /// A snapshot of the bus's metrics.
    pub fn metrics(&self) -> CommandBusMetrics {
        let (unrouted_successes, unrouted_failures) = self.totals.read();
        let (successes, failures) = self.routes.outcomes();
        let (successful, failed) = (successes + unrouted_successes, failures + unrouted_failures);
        CommandBusMetrics {
            commands_processed: successful + failed,
            successful_commands: successful,
            failed_commands: failed,
            registered_handlers: self.routes.len(),
            commands: self.routes.metrics(),
        }
    }
}

impl Default for CommandBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsSource for CommandBus {
    fn metric_set(&self) -> MetricSet {
        let m = self.metrics();
        let mut set = MetricSet::new("command_bus");
        set.push(
            "commands_processed",
            "Commands sent.",
            MetricValue::Counter(m.commands_processed),
        );
        set.push(
            "successful_commands",
            "Commands that succeeded.",
            MetricValue::Counter(m.successful_commands),
        );
        set.push(
            "failed_commands",
            "Commands that failed.",
            MetricValue::Counter(m.failed_commands),
        );
        set.push(
            "registered_handlers",
            "Command types with a handler.",
            MetricValue::Gauge(m.registered_handlers as f64),
        );
        push_per_type(&mut set, "command", &m.commands);
        set
    }
}
