//! [`QueryBus`]: typed queries by type, and JSON queries by name.

use std::any::TypeId;
use std::future::Future;
use std::sync::Arc;

use flext_impl::{JsonHandler, handler_fn};
use flext_protocols::{Handler, MetricsSource, Middleware, Query};
use flext_types::{FlextError, FlextResult, MessageMetadata, MetricSet, MetricValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::dispatch::{Dispatch, DispatchOutput, Instrumentation, MessageKind};
use crate::metrics::{QueryBusMetrics, push_per_type};
use crate::routes::{Routes, Stack, Totals};

/// Executes queries: typed ones by their type ([`QueryBus::execute`]) and serde ones by a
/// registered name ([`QueryBus::execute_named`], the guide's
/// `query_bus.execute("GetUserProjection", user_id)`).
///
/// Not-found, validation, panic, middleware and metrics behaviour are those of the
/// [`CommandBus`](crate::CommandBus). A named query's argument and result cross as JSON: an
/// argument that does not decode into the handler's request type is a
/// `SERIALIZATION_ERROR` naming the query, and the handler is not called.
///
/// ```
/// use flext_cqrs::QueryBus;
/// use flext_impl::handler_fn;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let mut bus = QueryBus::new();
/// bus.register_named("GetUserName", handler_fn("user_names", |id: String| async move {
///     Ok(format!("name of {id}"))
/// }))?;
/// assert_eq!(bus.execute_named("GetUserName", "user_1").await?, json!("name of user_1"));
/// let name: String = bus.execute_named_as("GetUserName", "user_2").await?;
/// assert_eq!(name, "name of user_2");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct QueryBus {
    typed: Routes<TypeId>,
    named: Routes<String>,
    totals: Totals,
    middleware: Stack,
}

impl QueryBus {
    /// A bus with no handlers and no middleware.
    pub fn new() -> Self {
        Self {
            typed: Routes::new(MessageKind::Query),
            named: Routes::new(MessageKind::Query),
            totals: Totals::default(),
            middleware: Stack::default(),
        }
    }

    /// The bus with metrics and tracing set as `instrumentation` says (both on by default).
    #[must_use]
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.typed.instrumentation = instrumentation;
        self.named.instrumentation = instrumentation;
        self
    }

    /// What the bus records of each dispatch.
    pub fn instrumentation(&self) -> Instrumentation {
        self.typed.instrumentation
    }

    /// Registers the handler of query type `Q`; a second one is a `DUPLICATE` error.
    pub fn register<Q: Query>(
        &mut self,
        handler: impl Handler<Request = Q, Response = Q::Output> + 'static,
    ) -> FlextResult<()> {
        self.typed
            .insert(TypeId::of::<Q>(), &Q::query_name(), Arc::new(handler))
    }

    /// Registers an async closure or `async fn` as the handler of `Q`, named after `Q`.
    pub fn register_fn<Q, F, Fut>(&mut self, f: F) -> FlextResult<()>
    where
        Q: Query,
        F: Fn(Q) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<Q::Output>> + Send + 'static,
    {
        self.register(handler_fn(Q::query_name(), f))
    }

    /// Registers an async closure over `state` as the handler of `Q`, named after `Q`; each
    /// call gets a clone of `state` (see [`CommandBus::register_with`](crate::CommandBus::register_with)).
    pub fn register_with<Q, S, F, Fut>(&mut self, state: S, f: F) -> FlextResult<()>
    where
        Q: Query,
        S: Clone + Send + Sync + 'static,
        F: Fn(S, Q) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<Q::Output>> + Send + 'static,
    {
        self.register(flext_impl::handler_with(Q::query_name(), state, f))
    }

    /// Removes the handler of `Q`; `NOT_FOUND` if there is none.
    pub fn unregister<Q: Query>(&mut self) -> FlextResult<()> {
        self.typed
            .remove(&TypeId::of::<Q>(), &Q::query_name(), &self.totals)
    }

    /// Registers a serde handler under `name`. Its request decodes from the JSON argument
    /// of [`QueryBus::execute_named`] and its response encodes to the JSON result. An empty
    /// name is an `INVALID_ARGUMENT` error; a name taken is a `DUPLICATE` error.
    pub fn register_named<H>(&mut self, name: &str, handler: H) -> FlextResult<()>
    where
        H: Handler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        if name.trim().is_empty() {
            return Err(FlextError::invalid_argument("Query name cannot be empty"));
        }
        self.named
            .insert(name.to_owned(), name, Arc::new(JsonHandler::new(handler)))
    }

    /// Removes the handler registered under `name`; `NOT_FOUND` if there is none.
    pub fn unregister_named(&mut self, name: &str) -> FlextResult<()> {
        self.named.remove(name, name, &self.totals)
    }

    /// Whether `Q` has a handler.
    pub fn has_handler<Q: Query>(&self) -> bool {
        self.typed.contains(&TypeId::of::<Q>())
    }

    /// Whether a handler is registered under `name`.
    pub fn has_named(&self, name: &str) -> bool {
        self.named.contains(name)
    }

    /// Adds a middleware inside those added before it.
    pub fn add_middleware(
        &mut self,
        middleware: impl Middleware<Dispatch, DispatchOutput> + 'static,
    ) {
        self.middleware.push(Arc::new(middleware));
    }

    /// Executes `query` and returns its typed result.
    pub async fn execute<Q: Query>(&self, query: Q) -> FlextResult<Q::Output> {
        self.dispatch(query, None).await
    }

    /// Executes `query` with the given metadata.
    pub async fn execute_with<Q: Query>(
        &self,
        query: Q,
        metadata: MessageMetadata,
    ) -> FlextResult<Q::Output> {
        self.dispatch(query, Some(&metadata)).await
    }

    async fn dispatch<Q: Query>(
        &self,
        query: Q,
        metadata: Option<&MessageMetadata>,
    ) -> FlextResult<Q::Output> {
        self.typed
            .dispatch(
                &TypeId::of::<Q>(),
                &self.totals,
                self.middleware.as_slice(),
                query,
                metadata,
                Q::query_name,
                Q::validate,
            )
            .await
    }

    /// Executes the query registered under `name` with `argument` (anything serde can
    /// encode) and returns its JSON result.
    pub async fn execute_named(&self, name: &str, argument: impl Serialize) -> FlextResult<Value> {
        let argument = serde_json::to_value(argument).map_err(|e| {
            FlextError::serialization(format!(
                "The argument of query '{name}' does not serialize: {e}"
            ))
            .with_source(e)
        });
        let argument = match argument {
            Ok(argument) => argument,
            Err(error) => {
                self.totals.record(false);
                return Err(error);
            }
        };
        self.named
            .dispatch(
                name,
                &self.totals,
                self.middleware.as_slice(),
                argument,
                None,
                || name.to_owned(),
                |_| Ok(()),
            )
            .await
    }

    /// Like [`QueryBus::execute_named`], decoding the result as a `T`; a result that does not
    /// decode is a `SERIALIZATION_ERROR` naming the query.
    pub async fn execute_named_as<T: DeserializeOwned>(
        &self,
        name: &str,
        argument: impl Serialize,
    ) -> FlextResult<T> {
        let value = self.execute_named(name, argument).await?;
        serde_json::from_value(value).map_err(|e| {
            FlextError::serialization(format!("The result of query '{name}' does not decode: {e}"))
                .with_source(e)
        })
    }

    /// A snapshot of the bus's metrics.
    pub fn metrics(&self) -> QueryBusMetrics {
        let (unrouted_successes, unrouted_failures) = self.totals.read();
        let (typed_successes, typed_failures) = self.typed.outcomes();
        let (named_successes, named_failures) = self.named.outcomes();
        let successful = unrouted_successes + typed_successes + named_successes;
        let failed = unrouted_failures + typed_failures + named_failures;
        let mut queries = self.typed.metrics();
        queries.extend(self.named.metrics());
        QueryBusMetrics {
            queries_processed: successful + failed,
            successful_queries: successful,
            failed_queries: failed,
            registered_handlers: self.typed.len() + self.named.len(),
            queries,
        }
    }
}

impl Default for QueryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsSource for QueryBus {
    fn metric_set(&self) -> MetricSet {
        let m = self.metrics();
        let mut set = MetricSet::new("query_bus");
        set.push(
            "queries_processed",
            "Queries executed.",
            MetricValue::Counter(m.queries_processed),
        );
        set.push(
            "successful_queries",
            "Queries that succeeded.",
            MetricValue::Counter(m.successful_queries),
        );
        set.push(
            "failed_queries",
            "Queries that failed.",
            MetricValue::Counter(m.failed_queries),
        );
        set.push(
            "registered_handlers",
            "Query types and names with a handler.",
            MetricValue::Gauge(m.registered_handlers as f64),
        );
        push_per_type(&mut set, "query", &m.queries);
        set
    }
}
