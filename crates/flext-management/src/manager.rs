//! [`HandlerManager`]: the guide's `EnterpriseHandlerManager` as a library component.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use flext_constants::{HandlerKind, HandlerState};
use flext_impl::{AuthorizingHandler, BasicHandler, Identity, Timer, ValidatingHandler};
use flext_patterns::Retry;
use flext_protocols::{Authorizer, Handler, Validator};
use flext_types::{FlextError, FlextResult, MetricSet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::registry::{HandlerRegistry, Lifecycle, RegisteredHandler};

/// One handler to create, configure and register with
/// [`HandlerManager::register_ecosystem`].
///
/// The kinds follow the guide: `basic` (passes JSON requests through, with metrics),
/// `validating` (needs a validator), `authorizing` (needs a check), and the kinds of a
/// handler of the user's (it needs the handler): `custom`, `command`, `query`, `chain`,
/// `pipeline`. `config` is a partial handler configuration in JSON
/// (`{"environment": "production", "timeout": 5000}`).
pub struct HandlerSpec {
    name: String,
    kind: HandlerKind,
    config: Option<Value>,
    validator: Option<Arc<dyn Validator<Value>>>,
    authorizer: Option<Arc<dyn Authorizer<Value>>>,
    handler: Option<Arc<dyn RegisteredHandler>>,
}

impl HandlerSpec {
    /// A spec of `kind`, with nothing attached yet.
    pub fn new(name: impl Into<String>, kind: HandlerKind) -> Self {
        Self {
            name: name.into(),
            kind,
            config: None,
            validator: None,
            authorizer: None,
            handler: None,
        }
    }

    /// A basic handler.
    pub fn basic(name: impl Into<String>) -> Self {
        Self::new(name, HandlerKind::Basic)
    }

    /// A validating handler with `validator`.
    pub fn validating(name: impl Into<String>, validator: impl Validator<Value> + 'static) -> Self {
        Self::new(name, HandlerKind::Validating).with_validator(validator)
    }

    /// An authorizing handler with `check`.
    pub fn authorizing(name: impl Into<String>, check: impl Authorizer<Value> + 'static) -> Self {
        Self::new(name, HandlerKind::Authorizing).with_authorizer(check)
    }

    /// A handler of serde types of the user's, wrapped in a `BasicHandler` of the handler's
    /// own [`handler_kind`](Handler::handler_kind): a `HandlerChain` is a `chain`, a
    /// `Pipeline` a `pipeline`, a handler that names no kind `custom`.
    pub fn custom<H>(name: impl Into<String>, handler: H) -> Self
    where
        H: Handler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        let kind = handler.handler_kind();
        Self::of_kind(name, kind, handler)
    }

    /// A command handler of serde types (a `BasicHandler` of kind `command`).
    pub fn command<H>(name: impl Into<String>, handler: H) -> Self
    where
        H: Handler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        Self::of_kind(name, HandlerKind::Command, handler)
    }

    /// A query handler of serde types (a `BasicHandler` of kind `query`).
    pub fn query<H>(name: impl Into<String>, handler: H) -> Self
    where
        H: Handler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        Self::of_kind(name, HandlerKind::Query, handler)
    }

    fn of_kind<H>(name: impl Into<String>, kind: HandlerKind, handler: H) -> Self
    where
        H: Handler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        let name = name.into();
        let wrapped = BasicHandler::with_kind(name.clone(), kind, handler);
        Self::new(name, kind).with_erased(HandlerRegistry::erase(Arc::new(wrapped)))
    }

    /// Attaches a validator (used by `validating`).
    #[must_use]
    pub fn with_validator(mut self, validator: impl Validator<Value> + 'static) -> Self {
        self.validator = Some(Arc::new(validator));
        self
    }

    /// Attaches an authorization check (used by `authorizing`).
    #[must_use]
    pub fn with_authorizer(mut self, check: impl Authorizer<Value> + 'static) -> Self {
        self.authorizer = Some(Arc::new(check));
        self
    }

    fn with_erased(mut self, handler: Arc<dyn RegisteredHandler>) -> Self {
        self.handler = Some(handler);
        self
    }

    /// Applies a partial JSON configuration to the handler once it is created.
    #[must_use]
    pub fn with_config(mut self, config: Value) -> Self {
        self.config = Some(config);
        self
    }

    /// Creates and configures the handler, or names what is missing or wrong.
    fn build(self) -> FlextResult<(String, HandlerKind, Arc<dyn RegisteredHandler>)> {
        let name = self.name;
        let handler = match self.kind {
            HandlerKind::Basic => {
                HandlerRegistry::erase(Arc::new(BasicHandler::<Identity<Value>>::new(name.clone())))
            }
            HandlerKind::Validating => {
                let validator = self.validator.ok_or_else(|| {
                    FlextError::invalid_argument(format!("Validator function required for {name}"))
                })?;
                HandlerRegistry::erase(Arc::new(ValidatingHandler::<Identity<Value>>::new(
                    name.clone(),
                    validator,
                )))
            }
            HandlerKind::Authorizing => {
                let check = self.authorizer.ok_or_else(|| {
                    FlextError::invalid_argument(format!("Auth function required for {name}"))
                })?;
                HandlerRegistry::erase(Arc::new(AuthorizingHandler::<Identity<Value>>::new(
                    name.clone(),
                    check,
                )))
            }
            HandlerKind::Custom
            | HandlerKind::Command
            | HandlerKind::Query
            | HandlerKind::Chain
            | HandlerKind::Pipeline => self.handler.ok_or_else(|| {
                FlextError::invalid_argument(format!("Handler required for {name}"))
            })?,
            other => {
                return Err(FlextError::invalid_argument(format!(
                    "Unknown handler type: {} for {name}. Valid types: basic, validating, authorizing, custom, command, query, chain, pipeline",
                    other.as_str()
                )));
            }
        };
        if let Some(config) = self.config {
            handler.core().configure(&config).map_err(|e| {
                FlextError::new(
                    e.code(),
                    format!("Failed to configure {name}: {}", e.message()),
                )
            })?;
        }
        Ok((name, self.kind, handler))
    }
}

impl fmt::Debug for HandlerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How a handler is doing, as the health report says it: judged on the calls made through
/// the manager and on the handler's own metrics, so a handler a bus calls directly counts
/// too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// It has handled requests, and succeeded at least once or never failed.
    Healthy,
    /// It has handled no request.
    Idle,
    /// It has failed and never succeeded.
    Unhealthy,
}

/// One handler in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerHealth {
    /// Its kind.
    #[serde(with = "flext_types::serde_helpers::wire")]
    pub kind: HandlerKind,
    /// How it is doing.
    pub health: Health,
    /// Where it is in its life.
    pub lifecycle: Lifecycle,
    /// Its handler state.
    #[serde(with = "flext_types::serde_helpers::wire")]
    pub state: HandlerState,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
    /// Requests executed through the manager.
    pub requests_processed: u64,
    /// When it was last executed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used: Option<OffsetDateTime>,
    /// Mean time of an execution, in milliseconds.
    pub average_duration_ms: f64,
    /// When it last succeeded.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// When it last failed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failure: Option<OffsetDateTime>,
    /// Its last error.
    pub last_error: Option<String>,
}

/// The state of every handler of a [`HandlerManager`], serializable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// When the report was made.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Handlers registered.
    pub total_registered_handlers: usize,
    /// Healthy handlers.
    pub active_handlers: usize,
    /// Handlers that handled nothing yet.
    pub idle_handlers: usize,
    /// Handlers that failed and never succeeded.
    pub unhealthy_handlers: usize,
    /// Requests executed through the manager.
    pub total_requests_processed: u64,
    /// The mean of the handlers' average times (of those that ran), in milliseconds.
    pub average_response_time_ms: f64,
    /// Each handler, by name.
    pub handlers: BTreeMap<String, HandlerHealth>,
}

#[derive(Default)]
struct Usage {
    requests: AtomicU64,
    total_nanos: AtomicU64,
    times: Mutex<Times>,
}

#[derive(Default, Clone)]
struct Times {
    last_used: Option<OffsetDateTime>,
    last_success: Option<OffsetDateTime>,
    last_failure: Option<OffsetDateTime>,
    last_error: Option<String>,
}

/// Registers ecosystems of handlers from specs, executes them by name with usage metrics,
/// reports their health and retires idle ones.
///
/// ```
/// use flext_management::{HandlerManager, HandlerSpec};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let manager = HandlerManager::new();
/// manager.register_ecosystem(vec![
///     HandlerSpec::basic("data_processor").with_config(json!({"environment": "production", "max_retries": 2})),
/// ])?;
/// manager.execute("data_processor", json!({"records": [1, 2, 3]})).await?;
/// let report = manager.health_report();
/// assert_eq!((report.total_registered_handlers, report.active_handlers), (1, 1));
/// # Ok(())
/// # }
/// ```
pub struct HandlerManager {
    registry: Arc<HandlerRegistry>,
    usage: DashMap<String, Arc<Usage>>,
}

impl HandlerManager {
    /// A manager with a registry of its own.
    pub fn new() -> Self {
        Self::with_registry(Arc::new(HandlerRegistry::new()))
    }

    /// A manager of an existing registry.
    pub fn with_registry(registry: Arc<HandlerRegistry>) -> Self {
        Self {
            registry,
            usage: DashMap::new(),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<HandlerRegistry> {
        &self.registry
    }

    /// Creates, configures and registers every handler of `specs`, returning each name with
    /// its kind. The first bad entry (a missing validator, check or handler, a bad
    /// configuration value, an empty or taken name) is an error naming it, and nothing of the
    /// ecosystem is registered.
    pub fn register_ecosystem(
        &self,
        specs: Vec<HandlerSpec>,
    ) -> FlextResult<BTreeMap<String, String>> {
        let mut built = Vec::with_capacity(specs.len());
        let mut names = HashSet::new();
        for spec in specs {
            if spec.name.trim().is_empty() {
                return Err(FlextError::invalid_argument("Handler name cannot be empty"));
            }
            if !names.insert(spec.name.clone()) || self.registry.contains(&spec.name) {
                return Err(FlextError::duplicate(format!(
                    "Handler with name '{}' already registered",
                    spec.name
                )));
            }
            built.push(spec.build()?);
        }
        let mut registered: Vec<String> = Vec::with_capacity(built.len());
        for (name, kind, handler) in built {
            if let Err(error) = self.registry.insert(&name, kind, handler) {
                // Someone took a name meanwhile: undo this ecosystem's registrations.
                for done in &registered {
                    let _ = self.registry.unregister(done);
                    self.usage.remove(done);
                }
                return Err(error);
            }
            self.usage.insert(name.clone(), Arc::default());
            registered.push(name);
        }
        Ok(self
            .registry
            .list_handlers()
            .into_iter()
            .filter(|info| registered.contains(&info.name))
            .map(|info| (info.name, info.kind.as_str().to_owned()))
            .collect())
    }

    /// Executes the handler registered under `name` with a JSON request, recording its use.
    ///
    /// A failure worth retrying (`TIMEOUT`, `STORAGE_ERROR`, `RATE_LIMITED`,
    /// `CONCURRENCY_CONFLICT`) is tried again as the handler's configured `max_retries`
    /// says ([`Retry::from_config`]: 1 + `max_retries` attempts, with backoff); a rejection
    /// or any other error is returned at once. The handler's own metrics count each
    /// attempt; the manager's usage counts one request.
    pub async fn execute(&self, name: &str, request: Value) -> FlextResult<Value> {
        let timer = Timer::start();
        let result = self.execute_with_retries(name, request).await;
        let elapsed = timer.elapsed();
        if !self.registry.contains(name) {
            return result; // Unknown (or removed meanwhile): nothing to track.
        }
        let usage = self.usage.entry(name.to_owned()).or_default().clone();
        usage.requests.fetch_add(1, Relaxed);
        usage.total_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
        let now = OffsetDateTime::now_utc();
        let mut times = usage.times.lock().unwrap_or_else(PoisonError::into_inner);
        times.last_used = Some(now);
        match &result {
            Ok(_) => times.last_success = Some(now),
            Err(error) => {
                times.last_failure = Some(now);
                times.last_error = Some(error.to_string());
            }
        }
        result
    }

    async fn execute_with_retries(&self, name: &str, request: Value) -> FlextResult<Value> {
        let retry = match self.registry.config_of(name) {
            Some(config) if config.max_retries > 0 => Retry::from_config(&config),
            // No retries (or no such handler): the request moves in without a copy.
            _ => return self.registry.execute(name, request).await,
        };
        retry
            .run(|_attempt| self.registry.execute(name, request.clone()))
            .await
    }

    /// The guide's spelling of [`health_report`](Self::health_report)
    /// (`handler_manager.get_handler_health_report()`).
    pub fn get_handler_health_report(&self) -> HealthReport {
        self.health_report()
    }

    /// The health of every registered handler.
    pub fn health_report(&self) -> HealthReport {
        let mut handlers = BTreeMap::new();
        for (name, entry) in self.registry.entries() {
            let usage = self.usage.get(&name).map(|u| u.clone()).unwrap_or_default();
            let requests = usage.requests.load(Relaxed);
            let times = usage
                .times
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let average_duration_ms = if requests == 0 {
                0.0
            } else {
                usage.total_nanos.load(Relaxed) as f64 / requests as f64 / 1e6
            };
            // Calls through the manager and the handler's own (a bus calls it directly).
            let recorder = entry.handler.core().recorder();
            let failed = times.last_failure.is_some() || recorder.failures() > 0;
            let succeeded = times.last_success.is_some() || recorder.successes() > 0;
            let health = if failed && !succeeded {
                Health::Unhealthy
            } else if requests > 0 || succeeded {
                Health::Healthy
            } else {
                Health::Idle
            };
            let state = match entry.lifecycle() {
                Lifecycle::Paused => HandlerState::Paused,
                _ => entry.handler.core().state(),
            };
            handlers.insert(
                name,
                HandlerHealth {
                    kind: entry.kind,
                    health,
                    lifecycle: entry.lifecycle(),
                    state,
                    registered_at: entry.registered_at,
                    requests_processed: requests,
                    last_used: times.last_used,
                    average_duration_ms,
                    last_success: times.last_success,
                    last_failure: times.last_failure,
                    last_error: times.last_error,
                },
            );
        }
        let count = |health: Health| handlers.values().filter(|h| h.health == health).count();
        let timed: Vec<f64> = handlers
            .values()
            .map(|h| h.average_duration_ms)
            .filter(|ms| *ms > 0.0)
            .collect();
        HealthReport {
            generated_at: OffsetDateTime::now_utc(),
            total_registered_handlers: handlers.len(),
            active_handlers: count(Health::Healthy),
            idle_handlers: count(Health::Idle),
            unhealthy_handlers: count(Health::Unhealthy),
            total_requests_processed: handlers.values().map(|h| h.requests_processed).sum(),
            average_response_time_ms: if timed.is_empty() {
                0.0
            } else {
                timed.iter().sum::<f64>() / timed.len() as f64
            },
            handlers,
        }
    }

    /// Unregisters every handler idle for at least `max_idle` (since its last use, or since
    /// its registration if never used) and returns their names. An idle time reaching back
    /// before the earliest date there is (`Duration::MAX`, say) cleans nothing up.
    pub fn cleanup_inactive(&self, max_idle: Duration) -> Vec<String> {
        let Some(cutoff) = time::Duration::try_from(max_idle)
            .ok()
            .and_then(|idle| OffsetDateTime::now_utc().checked_sub(idle))
        else {
            return Vec::new();
        };
        let mut cleaned = Vec::new();
        for (name, entry) in self.registry.entries() {
            let last_used = self.usage.get(&name).and_then(|u| {
                u.times
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .last_used
            });
            if last_used.unwrap_or(entry.registered_at) <= cutoff
                && self.registry.unregister(&name).is_ok()
            {
                self.usage.remove(&name);
                tracing::info!(handler = %name, "cleaned up inactive handler");
                cleaned.push(name);
            }
        }
        cleaned
    }

    /// The registry's metrics and every handler's, for exposition.
    pub fn metric_sets(&self) -> Vec<MetricSet> {
        let mut sets = vec![flext_protocols::MetricsSource::metric_set(&*self.registry)];
        sets.extend(self.registry.handler_metric_sets());
        sets
    }
}

impl Default for HandlerManager {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HandlerManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerManager")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}
