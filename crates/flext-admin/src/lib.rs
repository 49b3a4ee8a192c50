//! The admin HTTP surface of a flext-handlers service, on axum: health, Prometheus metrics,
//! handlers, circuit breakers, projections, and a live dashboard.
//!
//! Build an [`Admin`] with what the service has (a [`HandlerManager`] or registry, buses
//! and other metrics sources, breakers, projections), then either mount
//! [`Admin::router`] in the service's own axum app or [`Admin::serve`] it alone, on
//! `127.0.0.1` unless told otherwise. The surface is read-only; a bearer token
//! ([`Admin::with_token`]) guards it; no response carries a password
//! ([`redact`]).
//!
//! The dashboard (`GET /`) is one page with its script and styles inline: it fetches
//! nothing but this surface's endpoints, every second, and shows each handler's
//! throughput, error rate and latency percentiles (charted over the last minutes), the
//! breakers' states and the projections' lag.
//!
//! ```no_run
//! use std::sync::Arc;
//! use flext_admin::{Admin, ServeConfig};
//! use flext_management::HandlerManager;
//!
//! # async fn run() -> flext_types::FlextResult<()> {
//! let manager = Arc::new(HandlerManager::new());
//! let server = Admin::new().with_manager(manager).serve(ServeConfig::local(9180)).await?;
//! println!("dashboard at {}", server.url());
//! # Ok(())
//! # }
//! ```
//!
//! [`HandlerManager`]: flext_management::HandlerManager

#![forbid(unsafe_code)]

mod admin;
mod history;
mod http;
mod probe;
mod redact;
mod server;

/// The axum the router is built with, for mounting it without naming a version twice.
pub use axum;

pub use admin::{Admin, DEFAULT_HISTORY, DEFAULT_PROBE_TIMEOUT, DEFAULT_SAMPLE_INTERVAL};
pub use http::PROMETHEUS_CONTENT_TYPE;
pub use probe::{FnProbe, ProjectionProbe, ProjectionView, projection_probe};
pub use redact::redact;
pub use server::{AdminServer, DEFAULT_PORT, ServeConfig};
