//! Event sourcing: envelopes and upcasters, the in-memory store, the repository, the
//! projection runner and the outbox relay.

mod envelope;
mod memory;
mod projection;
mod relay;
mod repository;

pub use envelope::{Envelope, Upcasters, caused_by, encode_event};
pub use memory::InMemoryEventStore;
pub use projection::{ProjectionConfig, ProjectionProgress, ProjectionRunner};
pub use relay::EventRelay;
pub use repository::{Executed, Loaded, Repository, RepositoryConfig};
