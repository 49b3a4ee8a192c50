//! The flext-handlers event, snapshot and checkpoint stores on PostgreSQL.
//!
//! This is an adapter (layer 45): it implements the store contracts of `flext-protocols` and
//! is, with the SQLite adapter, the only crate that knows SQL.
//!
//! - A connection pool; every table lives in a schema of your choice (created if needed),
//!   so separate stores — and parallel tests — can share one database.
//! - The schema is created by embedded migrations on open; replicas that open one fresh
//!   schema at the same moment all succeed (the migrator holds a database-wide advisory
//!   lock) and it is created once. A database written by a newer schema is refused with an
//!   error saying so.
//! - Appends are checked against the store's [`StoreLimits`](flext_store::StoreLimits)
//!   ([`PostgresStoreOptions::with_limits`]); an empty batch is a no-op.
//! - Appends in one schema are serialized by a transaction-level advisory lock: positions
//!   follow commit order, a batch's positions are adjacent, and no reader can skip a
//!   committed event however transactions interleave.
//! - Live subscriptions are woken by `LISTEN`/`NOTIFY` and poll as a fallback.
//! - [`PostgresEventStore::save_checkpoint_in`] commits a projection's checkpoint in the
//!   same transaction as its read model.
//! - A server that cannot be reached is an error naming it (without the password) within
//!   the connect timeout, at once when it refuses the connection; dropped connections are
//!   replaced by the pool. No error, log or `Debug` output shows a password ([`redact`]).

mod append;
mod projection;
mod redact;
mod schema;
mod tables;

pub use flext_store::TransactionalProgress;
pub use projection::{PostgresProjection, PostgresProjectionRunner};
pub use redact::redact;
pub use schema::{PostgresEventStore, PostgresStoreOptions};
