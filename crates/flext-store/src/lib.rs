//! What every flext-handlers store shares, and the in-memory stores.
//!
//! This is layer 35, between the contracts (`flext-protocols`, layer 30) and the handlers
//! (`flext-impl`, layer 40). The record types are plain data in `flext-types`; the store
//! contracts are traits in `flext-protocols`; this crate holds how a store keeps them, once:
//!
//! - The rules of an append: [`validate_batch`] (which batches any store refuses, among
//!   them those over the store's [`StoreLimits`]), [`nothing_appended`] (what an empty batch
//!   answers: it is a no-op), [`retried_append`] over [`StoredPlace`]s (an exact retry of a
//!   committed append returns its original result; any other reuse of an id is a
//!   `DUPLICATE`), and [`accepted_versions`] (the stream versions an expectation accepts,
//!   for SQL).
//! - [`StoreLimits`]: how big a payload, its metadata and a batch may be, one type with
//!   documented defaults that every store is opened with.
//! - The one tail: [`tail_events`] reads on from a position and waits on a [`HeadSignal`]
//!   when it has caught up; [`follow`] is the subscription of a store that reads through its
//!   contract and polls for commits it does not hear of.
//! - Rows as SQL stores keep them, database-independent: [`RawEvent`] and [`RawSnapshot`]
//!   decode and check a row, [`EVENT_COLUMNS`], [`metadata_text`], [`timestamp_text`],
//!   [`signed`]/[`unsigned`], dead letters as text, and the [`newer_schema`] refusal.
//! - [`tables`]: the contracts of a store on SQL tables, written once over the
//!   [`Statements`] a SQL store gives and the [`SqlTables`] calls that run them;
//!   [`sql_store_contracts!`] implements the three contracts with them.
//! - [`TransactionalRunner`]: exactly-once projections, written once over the
//!   [`TransactionalTarget`] each SQL store implements with its transaction: a batch of
//!   events and the checkpoint commit together.
//! - [`RunHandle`]: a runner ([`Runnable`]) spawned on a task of its own, to shut down, to
//!   join, and to wait on until it has finished a position (read-your-writes) or caught up.
//! - [`InMemoryEventStore`]: the event, snapshot and checkpoint stores in memory, for tests,
//!   demos and single-process use.
//!
//! Who should depend on it: the store adapters (`flext-store-sqlite`,
//! `flext-store-postgres`), and code that wants the in-memory store without the buses
//! (`flext_cqrs::InMemoryEventStore` and the facade's `stores::InMemoryEventStore` are this
//! type). No feature flags.
//!
//! ```
//! use flext_protocols::EventStore;
//! use flext_store::InMemoryEventStore;
//! use flext_types::{ErrorCode, ExpectedVersion, JsonPayload, NewEvent};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> flext_types::FlextResult<()> {
//! let store = InMemoryEventStore::new();
//! let created = NewEvent::new("UserCreated", JsonPayload::encode(&serde_json::json!({"name": "Ada"}))?);
//! store.append("User-1", ExpectedVersion::NoStream, vec![created.clone()]).await?;
//!
//! // The same batch again is a retry: the original result, nothing stored twice.
//! let retry = store.append("User-1", ExpectedVersion::NoStream, vec![created]).await?;
//! assert_eq!((retry.last_version, store.len()), (1, 1));
//!
//! // A blank stream id is refused by the rules every store applies.
//! let blank = NewEvent::new("UserCreated", JsonPayload::from_text("{}")?);
//! let refused = store.append(" ", ExpectedVersion::Any, vec![blank]).await.unwrap_err();
//! assert_eq!(refused.code(), ErrorCode::InvalidArgument);
//!
//! // A live subscription starts with what is stored.
//! let mut live = store.subscribe(1).await?;
//! assert_eq!(&*live.next().await.unwrap()?.stream_id, "User-1");
//! # Ok(())
//! # }
//! ```

mod handle;
mod limits;
mod memory;
mod rows;
mod rules;
pub mod tables;
mod tail;
mod transactional;

#[doc(hidden)]
pub mod __private {
    //! What [`sql_store_contracts!`](crate::sql_store_contracts) names, so that its callers
    //! need no imports of their own.
    pub use crate::tables::{self, SqlTables};
    pub use async_trait::async_trait;
    pub use flext_protocols::{CheckpointStore, EventStore, EventStream, SnapshotStore};
    pub use flext_types::{
        AppendResult, DeadLetter, ExpectedVersion, FlextResult, NewEvent, Snapshot, StoredEvent,
    };
}

pub use handle::{RunHandle, Runnable, Shutdown};
pub use limits::StoreLimits;
pub use memory::InMemoryEventStore;
pub use rows::{
    EVENT_COLUMNS, Migrations, RawEvent, RawSnapshot, dead_letter_text, decode_dead_letters,
    metadata_text, migrations_failed, newer_schema, signed, timestamp_text, unsigned,
};
pub use rules::{StoredPlace, accepted_versions, nothing_appended, retried_append, validate_batch};
pub use tables::{
    Arg, SqlConnection, SqlRow, SqlTables, Statements, after_failed_insert, find_retry,
    retry_or_conflict,
};
pub use tail::{HeadSignal, SUBSCRIPTION_BATCH, follow, tail_events};
pub use transactional::{
    Committed, TransactionalProgress, TransactionalRunner, TransactionalTarget,
};
