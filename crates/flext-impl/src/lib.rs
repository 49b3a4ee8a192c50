//! Concrete handlers: metrics, state, configuration, validation and authorization around
//! any processing step.
//!
//! This is layer 40 of flext-handlers. Every handler here owns a [`HandlerCore`] — name,
//! kind, configuration, lock-free metrics and state — and runs each call guarded by
//! [`HandlerCore::run`]: in-flight tracking, the configured deadline (`TIMEOUT`), panic
//! capture (`OPERATION_ERROR` "Handler execution failed: …") and a tracing span.
//!
//! | type | adds |
//! |---|---|
//! | [`BasicHandler`] | metrics, state, configuration, deadline, panic capture |
//! | [`ValidatingHandler`] | validators first; rejections leave metrics untouched |
//! | [`AuthorizingHandler`] | an authorization check first; a failing check denies |
//! | [`MetricsHandler`] | request/response sizes, errors by code |
//! | [`EventHandler`] | counts of events by name |
//!
//! Processing steps are any [`Handler`](flext_protocols::Handler) — re-exported here as
//! [`AbstractHandler`], the guide's name — or closures through [`handler_fn`] and
//! [`sync_handler_fn`]. [`ManagedHandler`] reads and changes configuration, metrics and
//! state of any of them. [`JsonHandler`] makes any serde handler a handler of JSON values,
//! and [`catch_panic`] turns a panic in user code into an `OPERATION_ERROR`. [`Deadline`] is
//! the workspace's one deadline: handler cores, `flext_patterns::Timeout` and the buses'
//! `TimeoutMiddleware` all run their calls through it.
//!
//! ```
//! use flext_impl::{BasicHandler, ManagedHandler};
//! use flext_protocols::Handler;
//! use flext_types::{FlextError, FlextResult};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upper = BasicHandler::from_fn("upper", |s: String| async move {
//!     if s.is_empty() {
//!         return Err(FlextError::validation("empty input"));
//!     }
//!     Ok(s.to_uppercase())
//! });
//! assert_eq!(upper.handle("flext".into()).await.unwrap(), "FLEXT");
//! assert!(upper.handle(String::new()).await.is_err());
//! assert_eq!(upper.metrics().success_rate(), 50.0);
//! # }
//! ```

mod authorizing;
mod backoff;
mod basic;
mod core;
mod deadline;
mod delegate;
mod event;
mod func;
mod guard;
mod histogram;
mod json;
mod metrics_handler;
mod recorder;
mod validating;

pub use authorizing::AuthorizingHandler;
pub use backoff::Backoff;
pub use basic::{BasicHandler, Identity};
pub use core::{HandlerCore, ManagedHandler};
pub use deadline::{Deadline, DeadlineSubject};
pub use event::EventHandler;
pub use flext_protocols::Handler as AbstractHandler;
pub use func::{
    FnHandler, StateFnHandler, SyncFnHandler, handler_fn, handler_with, sync_handler_fn,
};
pub use guard::{catch_panic, catch_panic_sync};
pub use histogram::LatencySnapshot;
pub use json::JsonHandler;
pub use metrics_handler::{MetricsHandler, MetricsReport};
pub use recorder::{InFlight, MetricsRecorder, Timer};
pub use validating::ValidatingHandler;
