//! Errors, results, configuration, metrics snapshots and message metadata.
//!
//! This is layer 20 of flext-handlers. It defines the plain data every other crate speaks
//! and knows nothing of async or I/O:
//!
//! - [`FlextError`] and [`FlextResult`], the error model: an [`ErrorCode`], a message,
//!   optional structured data and an optional source. The railway helpers ([`ResultExt`],
//!   [`combine`], [`traverse`], [`first_success`]) work on plain `Result`s.
//! - [`HandlerConfig`], the per-environment table behind
//!   [`HandlerConfig::for_environment`], and [`ConfigSource`] for partial JSON patches.
//! - [`PerformanceProfile`]: the standard, high and low performance profiles.
//! - [`HandlerMetrics`], [`LatencySummary`] and [`MetricSet`]: serializable metrics snapshots.
//! - [`MessageMetadata`]: message, correlation and causation ids and a timestamp.
//! - Event-store records: [`NewEvent`], [`StoredEvent`], [`ExpectedVersion`],
//!   [`AppendResult`], [`Snapshot`], [`DeadLetter`], with payloads as [`JsonPayload`]: plain
//!   data; the rules stores apply to them live in `flext-store`.
//! - [`http_status`]: the HTTP status a web layer answers each [`ErrorCode`] with (a
//!   documented table: `NOT_FOUND` 404, `WIRING_ERROR` 500, …).
//!
//! ```
//! use flext_types::{ErrorCode, FlextError, FlextResult, HandlerConfig, ResultExt};
//! use flext_constants::Environment;
//!
//! fn parse_age(raw: &str) -> FlextResult<u32> {
//!     raw.parse::<u32>()
//!         .map_err(|e| FlextError::validation(format!("Invalid age {raw:?}: {e}")))
//!         .ensure(|age| *age < 150, |age| FlextError::validation(format!("Age {age} is not plausible")))
//! }
//!
//! assert_eq!(parse_age("42"), Ok(42));
//! assert_eq!(parse_age("420").unwrap_err().code(), ErrorCode::ValidationError);
//!
//! let production = HandlerConfig::for_environment(Environment::Production);
//! assert_eq!(production.timeout_ms, 30_000);
//! assert_eq!(production.max_retries, 1);
//! ```
//!
//! # Features
//!
//! `default = []`: plain data, no HTTP.
//!
//! - `axum`: [`FlextError`] implements axum's `IntoResponse` (the status of
//!   [`http_status`] and the error's JSON), and `axum::Flext` answers any extractor's
//!   rejection in the same JSON shape. It brings `axum-core` and `http`, not `axum`.

#[cfg(feature = "axum")]
pub mod axum;
mod config;
mod error;
mod message;
mod metrics;
mod names;
mod page;
mod profile;
mod railway;
mod records;
pub mod serde_helpers;
mod status;

pub use config::{ConfigSource, HandlerConfig};
pub use error::{FlextError, FlextResult, panic_message};
pub use flext_constants::ErrorCode;
pub use message::MessageMetadata;
pub use metrics::{
    HandlerMetrics, LatencySummary, MetricSample, MetricSet, MetricValue, SizeSummary,
};
pub use names::short_type_name;
pub use page::{Cursor, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageRequest};
pub use profile::PerformanceProfile;
pub use railway::{ResultExt, combine, first_success, traverse};
pub use records::{
    AppendResult, DeadLetter, EventMetadata, ExpectedVersion, JsonPayload, NewEvent, Snapshot,
    StoredEvent,
};
pub use status::http_status;
