//! Event sourcing: envelopes and upcasters, the in-memory store, the repository, the
//! projection runner and the outbox relay, and how the last two retry.

mod consumer;
mod envelope;
mod projection;
mod relay;
mod repository;
pub(crate) mod retry;

pub use consumer::DeadLetterRetry;
pub use envelope::{Envelope, Upcasters};
pub use flext_impl::Backoff;
/// The in-memory stores live in `flext-store`; this path keeps working.
pub use flext_store::InMemoryEventStore;
pub use flext_store::{RunHandle, Runnable, Shutdown};
pub use projection::{
    ProjectionConfig, ProjectionHandle, ProjectionProgress, ProjectionRunner, ProjectionStatus,
};
pub use relay::EventRelay;
pub use repository::{Executed, Loaded, Repository, RepositoryConfig};
pub use retry::{DeadLetterPolicy, ErrorClass, TRANSIENT_BY_DEFAULT};
