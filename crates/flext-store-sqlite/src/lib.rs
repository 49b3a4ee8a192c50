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
//! - Appends are made by the store's writer thread (`flext-sqlite-writer`, one per opened
//!   store, ending when its last clone is dropped), on a rusqlite connection of its own
//!   with cached statements. Appends waiting together commit together (group commit): the
//!   thread takes the first waiting append and every one queued behind it (up to 512
//!   appends or 4096 events) and writes them in one `BEGIN IMMEDIATE` transaction, reading
//!   the head position once under the write lock, so positions follow commit order and no
//!   reader can skip a committed event. Each append has a savepoint of its own and its own
//!   expected-version check: a conflict, a retry of a committed append (answered with its
//!   original result) or a stored event id (`DUPLICATE`) rolls back that append alone and
//!   answers it, and its neighbours commit. A failed `COMMIT` answers every append of the
//!   group with a `STORAGE_ERROR`, and none is stored. A writer thread that died answers
//!   with a `STORAGE_ERROR`, never a hang. Writers in other processes take turns on the
//!   write lock through the busy timeout.
//! - Reads (`read_stream`, `read_all`, `stream_version`, `head_position`), snapshots,
//!   checkpoints and dead letters run on rusqlite read connections (at most
//!   [`SqliteStoreOptions::max_connections`] at once; more reads wait their turn), each
//!   call in a blocking task. sqlx's pool ([`SqliteEventStore::pool`]) opens the store
//!   and runs the migrations, and the projections' transactions. `:memory:` is one
//!   in-memory database of the store's own, shared by all its connections through
//!   SQLite's shared cache; there a lock is waited for without the busy timeout (SQLite
//!   reports shared-cache locks apart from busy files), so never await an append while
//!   holding a transaction of [`SqliteEventStore::pool`] on a `:memory:` store: the
//!   append would wait for that transaction.
//! - An append handed to the writer thread is written even if its caller stops waiting
//!   (its future dropped, a timeout): retry it with the same event ids, and the store
//!   answers the retry with the original result.
//! - Live subscriptions are woken in-process on each commit and poll as a fallback (for
//!   writers in other processes).
//! - [`SqliteProjectionRunner`] runs a [`SqliteProjection`] exactly once: its read model
//!   lives in the store's database, and each batch of events and the checkpoint commit in
//!   one transaction. [`SqliteEventStore::save_checkpoint_in`] does the same by hand.
//!
//! Durability: an append is answered only after its transaction's `COMMIT`, so an
//! acknowledged append is committed. In WAL mode with `synchronous = NORMAL` a committed
//! transaction survives a crash of the process; a power loss (or an operating-system
//! crash) may lose the last committed transactions, but never corrupts the file nor keeps
//! part of an append.
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
