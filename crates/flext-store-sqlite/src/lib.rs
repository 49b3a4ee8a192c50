//! The flext-handlers event, snapshot and checkpoint stores on embedded SQLite.
//!
//! This is an adapter (layer 45): it implements the store contracts of `flext-protocols` and
//! is the only crate besides the PostgreSQL adapter that knows SQL. SQLite is bundled, so no
//! system library is needed; the database is one file (or `:memory:`), in WAL mode with a
//! busy timeout.
//!
//! - The schema is created by embedded migrations on open, in one `BEGIN IMMEDIATE`
//!   transaction, so pools and processes that open one fresh file at the same moment all
//!   succeed and the schema is created once; a database written by a newer schema is
//!   refused with an error saying so.
//! - Appends are checked against the store's [`StoreLimits`](flext_store::StoreLimits)
//!   ([`SqliteStoreOptions::with_limits`]); an empty batch is a no-op.
//! - An append is one write transaction: SQLite has one writer at a time, so positions
//!   follow commit order and no reader can skip a committed event. The common append is a
//!   single autocommit statement that checks the expected version and inserts; a version
//!   mismatch, a stored event id or a batch over 500 events takes a `BEGIN IMMEDIATE`
//!   transaction that tells a conflict from a retry.
//! - Live subscriptions are woken in-process on each commit and poll as a fallback (for
//!   writers in other processes).
//! - [`SqliteProjectionRunner`] runs a [`SqliteProjection`] exactly once: its read model
//!   lives in the store's database, and each batch of events and the checkpoint commit in
//!   one transaction. [`SqliteEventStore::save_checkpoint_in`] does the same by hand.
//!
//! Durability: `synchronous = NORMAL` in WAL mode keeps every committed transaction across a
//! process crash; a power loss may lose the last transactions, never corrupt the file.
//!
//! ```
//! use flext_protocols::EventStore;
//! use flext_store_sqlite::SqliteEventStore;
//! use flext_types::{ExpectedVersion, JsonPayload, NewEvent};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> flext_types::FlextResult<()> {
//! let store = SqliteEventStore::open(":memory:").await?;
//! let event = NewEvent::new("UserCreated", JsonPayload::encode(&serde_json::json!({"name": "Ada"}))?);
//! store.append("User-1", ExpectedVersion::NoStream, vec![event]).await?;
//! assert_eq!(store.stream_version("User-1").await?, 1);
//! # Ok(())
//! # }
//! ```

mod append;
mod lite;
mod projection;
mod readers;
mod schema;
mod tables;
mod writer;

pub use flext_store::TransactionalProgress;
pub use projection::{SqliteProjection, SqliteProjectionHandle, SqliteProjectionRunner};
pub use schema::{SqliteEventStore, SqliteStoreOptions};

/// The sqlx the store is built on: a [`SqliteProjection`] writes its read model in the
/// transaction it is given (`sqlx::Transaction<'_, sqlx::Sqlite>`) through this very
/// crate, so an application needs no sqlx of its own, nor to match its version.
pub use sqlx;
