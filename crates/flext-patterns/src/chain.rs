//! [`HandlerChain`]: handlers in sequence, or the first that accepts.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::handler::MAX_CHAIN_HANDLERS;
use flext_impl::{MetricsRecorder, Timer, catch_panic, catch_panic_sync, handler_fn};
use flext_protocols::{BoxHandler, Handler, MetricsSource};
use flext_types::{FlextError, FlextResult, LatencySummary, MetricSet, MetricValue};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How a [`HandlerChain`] uses its handlers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainMode {
    /// Every handler in order, each one's output the next one's input; the first failure
    /// stops the chain (the default).
    #[default]
    Sequential,
    /// Only the first handler whose `can_handle` accepts the request (chain of
    /// responsibility).
    FirstMatch,
}

/// Handlers in a row (at most [`MAX_CHAIN_HANDLERS`]), used one after another or the first
/// that accepts, with metrics for the chain and for each handler.
///
/// In [sequential](ChainMode::Sequential) mode a failing handler stops the chain with an
/// error that keeps the handler's code, names the handler in its message ("Handler
/// 'authorizer' failed: …") and its data (`chain`, `handler`, `position`), and carries the
/// handler's own error as its source. A panicking handler fails the same way, with an
/// `OPERATION_ERROR`. In [first-match](ChainMode::FirstMatch) mode a handler whose
/// `can_handle` panics fails the chain the same way (counted as that handler's failure), and
/// no later handler is tried. A chain is itself a [`Handler`], so chains nest and go on buses.
///
/// Handlers are added and removed through `&mut self`: build the chain, then share it.
///
/// ```
/// use flext_patterns::HandlerChain;
/// use serde_json::{json, Value};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let mut chain = HandlerChain::new("enrich");
/// chain.add_fn("stamp", |mut v: Value| async move { v["stamped"] = json!(true); Ok(v) })?;
/// chain.add_fn("count", |mut v: Value| async move { v["count"] = json!(1); Ok(v) })?;
/// let out = chain.handle(json!({})).await?;
/// assert_eq!(out, json!({"stamped": true, "count": 1}));
/// assert_eq!(chain.metrics().successful_requests, 1);
/// # Ok(())
/// # }
/// ```
pub struct HandlerChain<T> {
    name: String,
    mode: ChainMode,
    links: Vec<Link<T>>,
    successes: AtomicU64,
    failures: AtomicU64,
}

struct Link<T> {
    handler: BoxHandler<T, T>,
    recorder: MetricsRecorder,
}

/// A chain's metrics: totals and each handler's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainMetrics {
    /// The chain's name.
    pub chain_name: String,
    /// The chain's mode.
    pub mode: ChainMode,
    /// Requests the chain handled.
    pub total_requests: u64,
    /// Requests that went through successfully.
    pub successful_requests: u64,
    /// Requests that failed.
    pub failed_requests: u64,
    /// Each handler's metrics, in chain order.
    pub handlers: Vec<LinkMetrics>,
}

/// One handler's metrics within a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkMetrics {
    /// The handler's name.
    pub name: String,
    /// Times it ran.
    pub executions: u64,
    /// Times it failed (or panicked).
    pub failures: u64,
    /// Its mean time per run.
    #[serde(
        with = "flext_types::serde_helpers::millis",
        rename = "average_time_ms"
    )]
    pub average_time: Duration,
    /// Its latency distribution.
    pub latency: LatencySummary,
}

impl<T: Send + 'static> HandlerChain<T> {
    /// An empty sequential chain.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            mode: ChainMode::Sequential,
            links: Vec::new(),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// An empty first-match chain.
    pub fn first_match(name: impl Into<String>) -> Self {
        Self::new(name).with_mode(ChainMode::FirstMatch)
    }

    /// The same chain in another mode.
    #[must_use]
    pub fn with_mode(mut self, mode: ChainMode) -> Self {
        self.mode = mode;
        self
    }

    /// The chain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chain's mode.
    pub fn mode(&self) -> ChainMode {
        self.mode
    }

    /// Appends a handler. The 51st is a `BUSINESS_RULE_VIOLATION` "Chain exceeds maximum
    /// handlers limit: 50"; a name already in the chain is a `DUPLICATE`.
    pub fn add_handler(
        &mut self,
        handler: impl Handler<Request = T, Response = T> + 'static,
    ) -> FlextResult<()> {
        if self.links.len() >= MAX_CHAIN_HANDLERS {
            return Err(FlextError::business_rule(format!(
                "Chain exceeds maximum handlers limit: {MAX_CHAIN_HANDLERS}"
            )));
        }
        if self
            .links
            .iter()
            .any(|l| l.handler.handler_name() == handler.handler_name())
        {
            return Err(FlextError::duplicate(format!(
                "Chain '{}' already has a handler named '{}'",
                self.name,
                handler.handler_name()
            )));
        }
        self.links.push(Link {
            handler: Arc::new(handler),
            recorder: MetricsRecorder::new(),
        });
        Ok(())
    }

    /// Appends an async closure or `async fn` as a handler named `name`.
    pub fn add_fn<F, Fut>(&mut self, name: impl Into<String>, f: F) -> FlextResult<()>
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<T>> + Send + 'static,
    {
        self.add_handler(handler_fn(name, f))
    }

    /// Removes the handler named `name`; `NOT_FOUND` if there is none.
    pub fn remove_handler(&mut self, name: &str) -> FlextResult<()> {
        let index = self
            .links
            .iter()
            .position(|l| l.handler.handler_name() == name)
            .ok_or_else(|| {
                FlextError::not_found(format!(
                    "Chain '{}' has no handler named '{name}'",
                    self.name
                ))
            })?;
        self.links.remove(index);
        Ok(())
    }

    /// The handlers' names, in order.
    pub fn handler_names(&self) -> Vec<&str> {
        self.links
            .iter()
            .map(|l| l.handler.handler_name())
            .collect()
    }

    /// How many handlers the chain holds.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the chain holds no handlers.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Runs `request` through the chain.
    ///
    /// An empty sequential chain returns the request; an empty or unmatched first-match
    /// chain is a `WIRING_ERROR` "No handler in chain could process the request" (the chain
    /// has no handler for it: a chain that meets requests none of its links should take
    /// ends with a catch-all link answering them). Removing a handler by a name the chain
    /// does not hold is a `NOT_FOUND`.
    pub async fn handle(&self, request: T) -> FlextResult<T> {
        let result = match self.mode {
            ChainMode::Sequential => self.run_sequential(request).await,
            ChainMode::FirstMatch => self.run_first_match(request).await,
        };
        let counter = if result.is_ok() {
            &self.successes
        } else {
            &self.failures
        };
        counter.fetch_add(1, Relaxed);
        result
    }

    async fn run_sequential(&self, mut request: T) -> FlextResult<T> {
        for (position, link) in self.links.iter().enumerate() {
            request = self.run_link(position, link, request).await?;
        }
        Ok(request)
    }

    async fn run_first_match(&self, request: T) -> FlextResult<T> {
        for (position, link) in self.links.iter().enumerate() {
            match catch_panic_sync(|| Ok(link.handler.can_handle(&request))) {
                Ok(false) => {}
                Ok(true) => return self.run_link(position, link, request).await,
                Err(panic) => {
                    // The user's predicate panicked: the handler's failure, and the chain's.
                    link.recorder.record_outcome(false);
                    return Err(self.link_error(position, link, panic));
                }
            }
        }
        Err(
            FlextError::wiring("No handler in chain could process the request")
                .with_data(json!({"chain": self.name})),
        )
    }

    async fn run_link(&self, position: usize, link: &Link<T>, request: T) -> FlextResult<T> {
        let timer = Timer::start();
        let result = catch_panic(link.handler.handle(request)).await;
        link.recorder.record(timer.elapsed(), result.is_ok());
        result.map_err(|error| self.link_error(position, link, error))
    }

    /// The chain's error for the handler at `position` failing with `error`: its code,
    /// "Handler 'name' failed: …", the chain, handler and position as data.
    fn link_error(&self, position: usize, link: &Link<T>, error: FlextError) -> FlextError {
        let name = link.handler.handler_name();
        FlextError::new(
            error.code(),
            format!("Handler '{name}' failed: {}", error.message()),
        )
        .with_data(json!({"chain": self.name, "handler": name, "position": position + 1}))
        .with_source(error)
    }

    /// The guide's spelling of [`metrics`](Self::metrics)
    /// (`processing_chain.get_chain_metrics()`).
    pub fn get_chain_metrics(&self) -> ChainMetrics {
        self.metrics()
    }

    /// The chain's metrics: requests in total, succeeded and failed, and per handler.
    pub fn metrics(&self) -> ChainMetrics {
        let successful_requests = self.successes.load(Relaxed);
        let failed_requests = self.failures.load(Relaxed);
        ChainMetrics {
            chain_name: self.name.clone(),
            mode: self.mode,
            total_requests: successful_requests + failed_requests,
            successful_requests,
            failed_requests,
            handlers: self
                .links
                .iter()
                .map(|link| {
                    let latency = link.recorder.latency();
                    let failures = link.recorder.failures();
                    LinkMetrics {
                        name: link.handler.handler_name().to_owned(),
                        executions: link.recorder.successes() + failures,
                        failures,
                        average_time: latency.mean,
                        latency,
                    }
                })
                .collect(),
        }
    }
}

#[async_trait]
impl<T: Send + 'static> Handler for HandlerChain<T> {
    type Request = T;
    type Response = T;

    fn handler_name(&self) -> &str {
        &self.name
    }

    fn handler_kind(&self) -> flext_constants::HandlerKind {
        flext_constants::HandlerKind::Chain
    }

    /// Sequential chains accept what their first handler accepts; first-match chains what
    /// any of their handlers accepts. A handler whose `can_handle` panics is read as
    /// accepting, so that [`handle`](HandlerChain::handle) runs and reports the panic as an
    /// `OPERATION_ERROR`; this never panics.
    fn can_handle(&self, request: &T) -> bool {
        let accepts = |link: &Link<T>| {
            !matches!(
                catch_panic_sync(|| Ok(link.handler.can_handle(request))),
                Ok(false)
            )
        };
        match self.mode {
            ChainMode::Sequential => self.links.first().is_none_or(accepts),
            ChainMode::FirstMatch => self.links.iter().any(accepts),
        }
    }

    async fn handle(&self, request: T) -> FlextResult<T> {
        HandlerChain::handle(self, request).await
    }
}

impl<T: Send + 'static> MetricsSource for HandlerChain<T> {
    fn metric_set(&self) -> MetricSet {
        let m = self.metrics();
        let mut set = MetricSet::new(m.chain_name.clone());
        set.push(
            "total_requests",
            "Requests the chain handled.",
            MetricValue::Counter(m.total_requests),
        );
        set.push(
            "successful_requests",
            "Requests that went through.",
            MetricValue::Counter(m.successful_requests),
        );
        set.push(
            "failed_requests",
            "Requests that failed.",
            MetricValue::Counter(m.failed_requests),
        );
        for link in m.handlers {
            set.push_group(
                ("handler", &link.name),
                [
                    (
                        "handler_executions",
                        "Runs per handler.",
                        MetricValue::Counter(link.executions),
                    ),
                    (
                        "handler_failures",
                        "Failures per handler.",
                        MetricValue::Counter(link.failures),
                    ),
                    (
                        "handler_latency",
                        "Latency per handler.",
                        MetricValue::Latency(link.latency),
                    ),
                ],
            );
        }
        set
    }
}

impl<T: Send + 'static> fmt::Debug for HandlerChain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerChain")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field(
                "handlers",
                &self
                    .links
                    .iter()
                    .map(|l| l.handler.handler_name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
