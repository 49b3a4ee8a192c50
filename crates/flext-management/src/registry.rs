//! [`HandlerRegistry`]: handlers of any request type, by name, executed with JSON.

use std::any::Any;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use dashmap::DashMap;
use flext_constants::{HandlerKind, HandlerState};
use flext_impl::{BasicHandler, HandlerCore, JsonHandler, ManagedHandler, catch_panic};
use flext_protocols::{Handler, MetricsSource};
use flext_types::{FlextError, FlextResult, HandlerConfig, MetricSet, MetricValue};
use rustc_hash::FxHasher;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// A handler as a registry keeps it: executed with JSON, with its core (configuration,
/// metrics, state) and its concrete type for typed retrieval.
#[async_trait]
pub trait RegisteredHandler: Send + Sync {
    /// The handler's own name.
    fn handler_name(&self) -> &str;

    /// The handler's core: configuration, metrics, state.
    fn core(&self) -> &HandlerCore;

    /// Decodes `request`, handles it and encodes the response; a request that does not
    /// decode is a `SERIALIZATION_ERROR` naming the handler, a handler that panics an
    /// `OPERATION_ERROR`.
    async fn execute(&self, request: Value) -> FlextResult<Value>;

    /// The concrete handler, for [`HandlerRegistry::typed`].
    fn as_any(&self) -> &(dyn Any + Send + Sync);
}

impl fmt::Debug for dyn RegisteredHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredHandler")
            .field("name", &self.handler_name())
            .field("kind", &self.core().kind())
            .field("state", &self.core().state())
            .finish()
    }
}

/// A managed serde handler kept for execution by name.
struct Registered<H> {
    json: JsonHandler<Arc<H>>,
    handler: Arc<H>,
}

#[async_trait]
impl<H> RegisteredHandler for Registered<H>
where
    H: Handler + ManagedHandler + 'static,
    H::Request: DeserializeOwned,
    H::Response: Serialize,
{
    fn handler_name(&self) -> &str {
        self.handler.handler_name()
    }

    fn core(&self) -> &HandlerCore {
        self.handler.core()
    }

    async fn execute(&self, request: Value) -> FlextResult<Value> {
        // A user's own `ManagedHandler` may have no guard of its own (a `BasicHandler` has).
        catch_panic(self.json.handle(request)).await
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        &self.handler
    }
}

/// Where a registered handler is in its life; see [`LifecycleManager`](crate::LifecycleManager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Accepting calls.
    Running,
    /// Rejecting calls until resumed.
    Paused,
    /// Rejecting calls until started again.
    Stopped,
}

impl Lifecycle {
    const ALL: [Lifecycle; 3] = [Lifecycle::Running, Lifecycle::Paused, Lifecycle::Stopped];

    /// `running`, `paused` or `stopped`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Running => "running",
            Lifecycle::Paused => "paused",
            Lifecycle::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registry entry, shared by lookups.
pub(crate) struct Entry {
    pub(crate) handler: Arc<dyn RegisteredHandler>,
    pub(crate) kind: HandlerKind,
    pub(crate) registered_at: OffsetDateTime,
    lifecycle: AtomicU8,
}

impl Entry {
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        Lifecycle::ALL[usize::from(self.lifecycle.load(Relaxed))]
    }

    pub(crate) fn set_lifecycle(&self, lifecycle: Lifecycle) {
        self.lifecycle.store(lifecycle as u8, Relaxed);
    }
}

/// What [`HandlerRegistry::list_handlers`] says of each handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerInfo {
    /// The name it is registered under.
    pub name: String,
    /// Its kind.
    #[serde(with = "flext_types::serde_helpers::wire")]
    pub kind: HandlerKind,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
    /// Its handler state.
    #[serde(with = "flext_types::serde_helpers::wire")]
    pub state: HandlerState,
    /// Where it is in its life.
    pub lifecycle: Lifecycle,
}

/// The registry's own metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryMetrics {
    /// Handlers registered now.
    pub total_handlers: usize,
    /// Registrations ever accepted.
    pub total_registrations: u64,
    /// Lookups by name (including those inside `execute`).
    pub total_lookups: u64,
    /// Lookups that found their handler.
    pub successful_lookups: u64,
    /// `successful_lookups / total_lookups` in percent (100 with no lookups).
    pub lookup_success_rate: f64,
}

type Map = DashMap<String, Arc<Entry>, BuildHasherDefault<FxHasher>>;

/// Handlers of different request and response types in one place, by name.
///
/// Each handler is kept erased, executing JSON values ([`HandlerRegistry::execute`]), so a
/// handler can be called by name from configuration, a CLI or the network; its concrete type
/// stays reachable ([`HandlerRegistry::typed`]). Registration, lookup and removal work
/// concurrently from any number of tasks (a sharded map; a lookup is a read of one shard).
///
/// ```
/// use flext_management::HandlerRegistry;
/// use flext_impl::BasicHandler;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let registry = HandlerRegistry::new();
/// registry.register("doubler", BasicHandler::from_fn("doubler", |n: u32| async move { Ok(n * 2) }))?;
/// assert_eq!(registry.execute("doubler", json!(21)).await?, json!(42));
/// let err = registry.handler("tripler").unwrap_err();
/// assert_eq!(err.to_string(), "Handler 'tripler' not found in registry");
/// # Ok(())
/// # }
/// ```
pub struct HandlerRegistry {
    entries: Map,
    registrations: AtomicU64,
    lookups: AtomicU64,
    failed_lookups: AtomicU64,
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            entries: Map::default(),
            registrations: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            failed_lookups: AtomicU64::new(0),
        }
    }

    /// Registers a managed handler (a `BasicHandler`, `ValidatingHandler`, … of serde
    /// types) under `name`. An empty name is an `INVALID_ARGUMENT` "Handler name cannot be
    /// empty"; a taken one a `DUPLICATE` "Handler with name 'X' already registered".
    pub fn register<H>(&self, name: &str, handler: H) -> FlextResult<()>
    where
        H: Handler + ManagedHandler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        let kind = handler.kind();
        self.insert(name, kind, Self::erase(Arc::new(handler)))
    }

    /// Registers any serde handler under `name`, inside a `BasicHandler` for metrics, state
    /// and configuration, listed under the handler's own
    /// [`handler_kind`](Handler::handler_kind): `chain`, `pipeline`, `command`, … or
    /// `custom` when it names none.
    pub fn register_handler<H>(&self, name: &str, handler: H) -> FlextResult<()>
    where
        H: Handler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        let kind = handler.handler_kind();
        self.register(name, BasicHandler::with_kind(name, kind, handler))
    }

    pub(crate) fn erase<H>(handler: Arc<H>) -> Arc<dyn RegisteredHandler>
    where
        H: Handler + ManagedHandler + 'static,
        H::Request: DeserializeOwned,
        H::Response: Serialize,
    {
        Arc::new(Registered {
            json: JsonHandler::new(handler.clone()),
            handler,
        })
    }

    pub(crate) fn insert(
        &self,
        name: &str,
        kind: HandlerKind,
        handler: Arc<dyn RegisteredHandler>,
    ) -> FlextResult<()> {
        if name.trim().is_empty() {
            return Err(FlextError::invalid_argument("Handler name cannot be empty"));
        }
        match self.entries.entry(name.to_owned()) {
            dashmap::Entry::Occupied(_) => Err(FlextError::duplicate(format!(
                "Handler with name '{name}' already registered"
            ))),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Arc::new(Entry {
                    handler,
                    kind,
                    registered_at: OffsetDateTime::now_utc(),
                    lifecycle: AtomicU8::new(Lifecycle::Running as u8),
                }));
                self.registrations.fetch_add(1, Relaxed);
                Ok(())
            }
        }
    }

    /// The guide's spelling of [`handler`](Self::handler) (`registry.get_handler(name)`).
    pub fn get_handler(&self, name: &str) -> FlextResult<Arc<dyn RegisteredHandler>> {
        self.handler(name)
    }

    /// The handler registered under `name`, or `NOT_FOUND` "Handler 'X' not found in
    /// registry".
    ///
    /// A `NOT_FOUND`, not a `WIRING_ERROR`: the registry is looked up by a name the caller
    /// gives, often one that came from outside (an admin request, a configuration), so a
    /// missing name is an answer about that name, as "no such account" is.
    pub fn handler(&self, name: &str) -> FlextResult<Arc<dyn RegisteredHandler>> {
        self.entry(name).map(|entry| entry.handler.clone())
    }

    pub(crate) fn entry(&self, name: &str) -> FlextResult<Arc<Entry>> {
        self.lookups.fetch_add(1, Relaxed);
        match self.entries.get(name) {
            Some(entry) => Ok(entry.clone()),
            None => {
                self.failed_lookups.fetch_add(1, Relaxed);
                Err(FlextError::not_found(format!(
                    "Handler '{name}' not found in registry"
                )))
            }
        }
    }

    /// The handler registered under `name` as its concrete type `H`; `NOT_FOUND` when there
    /// is none, `WIRING_ERROR` when it is of another type (the program expects a type the
    /// name was not registered with).
    pub fn typed<H: Send + Sync + 'static>(&self, name: &str) -> FlextResult<Arc<H>> {
        let handler = self.handler(name)?;
        handler
            .as_any()
            .downcast_ref::<Arc<H>>()
            .cloned()
            .ok_or_else(|| {
                FlextError::wiring(format!(
                    "Handler '{name}' is not a {}",
                    flext_types::short_type_name::<H>()
                ))
            })
    }

    /// Removes the handler registered under `name`; `NOT_FOUND` if there is none.
    pub fn unregister(&self, name: &str) -> FlextResult<()> {
        self.entries
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| FlextError::not_found(format!("Handler '{name}' not found in registry")))
    }

    /// Whether a handler is registered under `name` (not counted as a lookup).
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The configuration of the handler registered under `name` (not counted as a lookup).
    pub(crate) fn config_of(&self, name: &str) -> Option<HandlerConfig> {
        self.entries
            .get(name)
            .map(|entry| entry.handler.core().config())
    }

    /// Every handler, by name.
    pub fn list_handlers(&self) -> Vec<HandlerInfo> {
        let mut list: Vec<HandlerInfo> = self
            .entries
            .iter()
            .map(|item| {
                let entry = item.value();
                HandlerInfo {
                    name: item.key().clone(),
                    kind: entry.kind,
                    registered_at: entry.registered_at,
                    state: entry.handler.core().state(),
                    lifecycle: entry.lifecycle(),
                }
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    pub(crate) fn entries(&self) -> Vec<(String, Arc<Entry>)> {
        let mut entries: Vec<_> = self
            .entries
            .iter()
            .map(|item| (item.key().clone(), item.value().clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    /// Runs the handler registered under `name` with a JSON request. A paused or stopped
    /// handler rejects the call with an `OPERATION_ERROR` saying so.
    pub async fn execute(&self, name: &str, request: Value) -> FlextResult<Value> {
        let entry = self.entry(name)?;
        match entry.lifecycle() {
            Lifecycle::Running => entry.handler.execute(request).await,
            other => Err(FlextError::operation(format!(
                "Handler '{name}' is {other} and does not accept calls"
            ))),
        }
    }

    /// The registry's own metrics.
    pub fn metrics(&self) -> RegistryMetrics {
        let total_lookups = self.lookups.load(Relaxed);
        let successful_lookups = total_lookups.saturating_sub(self.failed_lookups.load(Relaxed));
        RegistryMetrics {
            total_handlers: self.entries.len(),
            total_registrations: self.registrations.load(Relaxed),
            total_lookups,
            successful_lookups,
            lookup_success_rate: if total_lookups == 0 {
                100.0
            } else {
                successful_lookups as f64 * 100.0 / total_lookups as f64
            },
        }
    }

    /// The metrics of every registered handler, one set each, by name.
    pub fn handler_metric_sets(&self) -> Vec<MetricSet> {
        self.entries()
            .into_iter()
            .map(|(name, entry)| {
                let mut set = entry.handler.core().metrics().to_metric_set();
                set.source = name;
                set
            })
            .collect()
    }
}

impl Default for HandlerRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsSource for HandlerRegistry {
    fn metric_set(&self) -> MetricSet {
        let m = self.metrics();
        let mut set = MetricSet::new("handler_registry");
        set.push(
            "handlers",
            "Handlers registered now.",
            MetricValue::Gauge(m.total_handlers as f64),
        );
        set.push(
            "registrations",
            "Registrations accepted.",
            MetricValue::Counter(m.total_registrations),
        );
        set.push(
            "lookups",
            "Lookups by name.",
            MetricValue::Counter(m.total_lookups),
        );
        set.push(
            "successful_lookups",
            "Lookups that found their handler.",
            MetricValue::Counter(m.successful_lookups),
        );
        set
    }
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRegistry")
            .field("handlers", &self.entries.len())
            .finish_non_exhaustive()
    }
}
