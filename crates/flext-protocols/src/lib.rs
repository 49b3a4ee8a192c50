//! The contracts of flext-handlers, as traits.
//!
//! This is layer 30: traits, their blanket impls for closures and smart pointers, and
//! nothing else — no runtime, no I/O, no tokio (a live subscription is a `futures-core`
//! `Stream`). Depend on it to write a handler, validator,
//! authorizer or middleware that works with every flext component.
//!
//! - [`Handler`]: an async, object-safe request handler with an associated request and
//!   response type, a name and a [`can_handle`](Handler::can_handle) predicate. Handlers are
//!   stored as [`BoxHandler`]s.
//! - [`Validator`] and [`Authorizer`]: checks that run before a handler; closures returning
//!   `bool` or `FlextResult<()>` qualify, async ones through [`authorizer_fn`].
//! - [`Middleware`] with [`Next`]: around-style composition with `before_request`,
//!   `after_response` and `handle_error` hooks.
//! - [`MetricsSource`]: anything that reports a [`MetricSet`](flext_types::MetricSet).
//! - [`Command`], [`Query`] and [`Event`]: the CQRS message contracts.
//!
//! - Event sourcing: [`EventStore`], [`SnapshotStore`], [`CheckpointStore`] (over the
//!   serialized records of `flext-types`), [`Aggregate`] and [`Projection`].
//! - [`Leases`] and [`HeldLease`]: one owner at a time for named work (a saga run, a
//!   projection) among processes sharing a store.
//! - [`RemoteTransport`] and [`RemoteDispatch`]: commands and queries handled in another
//!   process ([`RemoteCall`]), the buses on one side and a transport adapter on the other.
//!
//! ```
//! use flext_protocols::{async_trait, Handler};
//! use flext_types::{FlextError, FlextResult};
//!
//! struct Greeter;
//!
//! #[async_trait]
//! impl Handler for Greeter {
//!     type Request = String;
//!     type Response = String;
//!
//!     fn handler_name(&self) -> &str {
//!         "greeter"
//!     }
//!
//!     async fn handle(&self, name: String) -> FlextResult<String> {
//!         if name.is_empty() {
//!             return Err(FlextError::validation("Name is required"));
//!         }
//!         Ok(format!("Hello, {name}!"))
//!     }
//! }
//! ```

mod event_sourcing;
mod handler;
mod lease;
mod message;
mod metrics;
mod middleware;
mod remote;
mod verdict;

pub use async_trait::async_trait;
pub use event_sourcing::{
    Aggregate, CheckpointStore, EventStore, EventStream, Projection, ServicedAggregate,
    SnapshotStore,
};
pub use handler::{BoxHandler, HandleFuture, Handler};
pub use lease::{BoxLease, HeldLease, Leases};
pub use message::{Command, Event, Query};
pub use metrics::MetricsSource;
pub use middleware::{Middleware, Next, SharedMiddleware};
pub use remote::{RemoteCall, RemoteDispatch, RemoteKind, RemoteTransport};
pub use verdict::{
    AsyncCheck, AsyncCheckWith, Authorizer, AuthorizerFn, AuthorizerWith, Validator, Verdict,
    authorizer_fn, authorizer_with,
};
