//! Integration tests of the registry, the manager, the lifecycle and the exposition.

mod exposition;
mod kinds;
mod lifecycle;
mod manager;
#[cfg(feature = "metrics")]
mod metrics_bridge;
mod no_panic;
mod prometheus_parser;
mod registry;
mod retries;
