//! The flext-handlers event, snapshot and checkpoint stores on PostgreSQL.
//!
//! This is an adapter (layer 45): it implements the store contracts of `flext-protocols` and
//! is, with the SQLite adapter, the only crate that knows SQL.
//!
//! - A connection pool; every table lives in a schema of your choice (created if needed),
//!   so separate stores — and parallel tests — can share one database.
//! - The schema is created by embedded migrations on open, all of them and the position
//!   offset's move in one transaction: an upgrade that fails leaves the store at its old
//!   version. Replicas that open one schema at the same moment all succeed (an advisory
//!   lock per schema, held until the upgrade commits) and it is upgraded once. Each
//!   statement and lock wait of the upgrade is bounded by
//!   [`PostgresStoreOptions::migration_timeout`] (10 min). A database written by a newer
//!   schema is refused with an error saying so.
//! - Appends are checked against the store's [`StoreLimits`](flext_store::StoreLimits)
//!   ([`PostgresStoreOptions::with_limits`]); an empty batch is a no-op.
//! - Appends take no store-wide lock: each is one statement that commits by itself, so
//!   appends to different streams run side by side. Two appends to one stream meet at the
//!   unique key on stream and version: one wins, the other gets a `CONCURRENCY_CONFLICT`
//!   (or, when its expected version still holds, as with `Any`, runs again).
//! - Positions come from transaction ids (`(xid + offset) << 20 | n`): strictly increasing,
//!   a batch's adjacent, not dense. `read_all`, `head_position` and subscriptions stop at
//!   a read barrier, the oldest append to the store still running, so no reader skips an
//!   event that commits later with a lower position. The price: an append in flight holds
//!   readers back from later commits until it ends (never writers); transactions that
//!   write no event hold no one back, and the store's sessions end idle transactions
//!   ([`PostgresStoreOptions::idle_in_transaction_timeout`]).
//! - Every wait is bounded ([`PostgresStoreOptions::lock_timeout`], `statement_timeout`,
//!   `acquire_timeout`): past its limit a call fails with a `TIMEOUT` naming the store and
//!   what timed out. Appends waiting on locks never hold every pooled connection: two are
//!   kept for reads and checkpoints.
//! - Native column types: `uuid` event ids, `jsonb` payloads and metadata (query and index
//!   them in SQL), `timestamptz` times; an older store is converted in place on open. A
//!   payload reads back as equal JSON, not byte-identical text (jsonb sorts keys and drops
//!   spacing), and times keep microseconds (cut, not rounded, on append and on upgrade).
//!   JSON that jsonb refuses — a `\u0000`, a lone surrogate escape, a number beyond
//!   `numeric` — is an `INVALID_ARGUMENT` naming the stream; an older store holding such
//!   a row (or a bad id or time) is not upgraded: the open is a `SERIALIZATION_ERROR`
//!   naming each row, and the store stays as it was until the rows are repaired.
//! - Live subscriptions are woken by `LISTEN`/`NOTIFY` and poll as a fallback. A
//!   notification is only a wake-up: any role may notify any channel, so the head is read
//!   from the table each time, and a forged one costs one read.
//! - [`PostgresEventStore::save_checkpoint_in`] commits a projection's checkpoint in the
//!   same transaction as its read model.
//! - Leases ([`PostgresEventStore::acquire_lease`]): one owner at a time per projection or
//!   saga run among the processes sharing the schema, renewed by a heartbeat, taken over
//!   within a TTL plus a renewal interval (8 s by default) after the owner dies; writes
//!   fenced by its token ([`PostgresProjectionRunner::with_fence`], [`FencedCheckpoints`])
//!   fail once the lease is lost, so a paused owner writes nothing after waking.
//!   [`PostgresEventStore::projection_status`] shows a projection's checkpoint, the head,
//!   the events between and its lease's owner.
//! - A server that cannot be reached is an error naming it (without the password) within
//!   the connect timeout, at once when it refuses the connection; dropped connections are
//!   replaced by the pool. No error, log or `Debug` output shows a password ([`redact`]).

mod append;
mod lease;
mod projection;
mod redact;
mod schema;
mod tables;

pub use flext_store::TransactionalProgress;
pub use lease::{Fence, FencedCheckpoints, Lease, LeaseConfig, PostgresLeases, ProjectionStatus};
pub use projection::{PostgresProjection, PostgresProjectionHandle, PostgresProjectionRunner};
pub use redact::redact;
pub use schema::{PostgresEventStore, PostgresStoreOptions};
/// The `sqlx` the store is built on. A [`PostgresProjection`] writes its read model with it,
/// through the transaction it is given, so it must be this very version: a crate that
/// reaches the store through the facade (and may not depend on sqlx itself) finds it here.
pub use sqlx;
