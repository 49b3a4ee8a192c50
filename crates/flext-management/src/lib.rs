//! Management: a registry of handlers by name, an ecosystem manager with a health report,
//! a lifecycle manager, and metrics exposition.
//!
//! This is layer 70 of flext-handlers.
//!
//! - [`HandlerRegistry`]: handlers of any serde types in one place, executed by name with
//!   JSON, with typed retrieval, lookup metrics and concurrent registration.
//! - [`HandlerManager`]: the guide's `EnterpriseHandlerManager` — registers an ecosystem of
//!   [`HandlerSpec`]s all or nothing, executes by name with usage metrics, produces a
//!   serializable [`HealthReport`] and cleans up idle handlers.
//! - [`LifecycleManager`]: start, stop, pause and resume handlers.
//! - [`to_json`] and [`to_prometheus`]: every [`MetricSet`](flext_types::MetricSet) —
//!   handlers, buses, chains, pipelines, breakers, the registry — as JSON or Prometheus text.
//! - `MetricsBridge` (feature `metrics`): the same metrics, under the same names, recorded
//!   through the `metrics` crate's facade for whatever exporter the application installs.
//!
//! # Features
//!
//! `default = []`.
//!
//! - `metrics`: `MetricsBridge` and `MetricsBridgeTask` (the `metrics` crate, and tokio's
//!   runtime and timer for the bridge's interval).

#[cfg(feature = "metrics")]
mod bridge;
mod exposition;
mod lifecycle;
mod manager;
mod registry;

#[cfg(feature = "metrics")]
pub use bridge::{MetricsBridge, MetricsBridgeTask};
pub use exposition::{collect, to_json, to_prometheus};
pub use lifecycle::LifecycleManager;
pub use manager::{HandlerHealth, HandlerManager, HandlerSpec, Health, HealthReport};
pub use registry::{HandlerInfo, HandlerRegistry, Lifecycle, RegisteredHandler, RegistryMetrics};
