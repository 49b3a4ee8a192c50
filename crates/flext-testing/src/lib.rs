//! The flext-handlers test kit: conformance suites for stores and given/when/then fixtures
//! for aggregates and sagas.
//!
//! Depend on it from tests (`[dev-dependencies]`).
//!
//! - [`event_store`], [`snapshot_store`], [`checkpoint_store`]: one async function per
//!   behaviour every store must have. Run them all from a store's tests with
//!   [`event_store_conformance!`], [`snapshot_store_conformance!`] and
//!   [`checkpoint_store_conformance!`]. Each function works in streams and names of its own
//!   (random suffixes), so the suites can share one database and run in parallel.
//! - [`event_store::opening`]: a fresh durable store opened by several pools and processes
//!   at once, written by [`concurrent_open_test!`]; [`store_limits_conformance!`] runs the
//!   behaviours of a store opened with limits of its own.
//! - [`crash`]: the SIGKILL crash test of a durable store, written by [`crash_test!`]: the
//!   test binary runs itself as a writer child and checks what survives the kill.
//! - [`prometheus`]: the Prometheus text exposition read by a strict parser.
//! - [`sql`]: what the SQL stores check beyond the contracts (hostile text, corrupt rows,
//!   checkpoints in the read model's transaction), with the store's own SQL as closures.
//! - [`workload`]: the appends and reads the stores' benchmarks measure, the same on every
//!   store; `bench` (feature `bench`) runs them as criterion benchmarks beside a store's
//!   baselines.
//! - [`fuzz`]: the bodies of the fuzz targets (`fuzz/` at the repository root), one
//!   function per decoder of outside input, replayed over the committed corpus by this
//!   crate's tests.
//! - [`AggregateFixture`]: given events, when a command, then events or an error.
//! - [`SagaFixture`]: given recorded progress, when run or resumed, then completed,
//!   compensated or failed, with exactly the records expected.
//!
//! In a store's `tests/`, with a factory that returns `None` (and so skips, saying so) when
//! the store's database is not configured:
//!
//! ```no_run
//! use std::sync::Arc;
//! use flext_protocols::EventStore;
//!
//! async fn store() -> Option<Arc<dyn EventStore>> {
//!     let url = std::env::var("MY_STORE_URL").ok()?;
//!     # let _ = url;
//!     # None
//!     // Some(Arc::new(MyStore::connect(&url).await.expect("the store connects")))
//! }
//!
//! flext_testing::event_store_conformance!(store);
//! # fn main() {}
//! ```

mod aggregate;
#[cfg(feature = "bench")]
pub mod bench;
pub mod checkpoint_store;
pub mod crash;
pub mod event_store;
pub mod fuzz;
pub mod prometheus;
mod saga;
pub mod snapshot_store;
pub mod sql;
pub mod workload;

pub use aggregate::{AggregateFixture, AggregateOutcome};
pub use saga::{FIXTURE_SAGA_ID, SagaFixture, SagaFixtureOutcome};

/// A name no other test uses: `prefix` and a random suffix.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Generates one `#[tokio::test]` per [`event_store`] behaviour.
///
/// `$factory` is an async function returning `Option<Arc<dyn EventStore>>`; `None` skips
/// the tests (for example when a database URL is not set) and says so. The calling crate
/// needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! event_store_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory,
            event_store,
            [
                append_to_new_stream,
                expected_version_any,
                expected_version_no_stream,
                expected_version_stream_exists,
                expected_version_exact,
                conflicting_batch_stores_nothing,
                duplicate_inside_batch_stores_nothing,
                duplicate_event_id_is_rejected,
                idempotent_retry,
                streams_are_isolated,
                read_ranges_and_limits,
                visit_stream_walks_in_order_and_stops_at_an_error,
                rejects_malformed_batches,
                positions_increase_and_batches_do_not_interleave,
                concurrent_writers_on_shared_streams,
                racing_appends_with_any_all_land,
                subscription_sees_every_event_once_in_order,
                empty_batch_is_a_no_op,
                reads_past_the_end_are_empty,
                default_limits_are_enforced,
            ]
        );
    };
}

/// Generates one `#[tokio::test]` per behaviour of a store opened with
/// [`StoreLimits`](flext_store::StoreLimits) of its own
/// ([`event_store::LIMIT_BEHAVIOURS`]).
///
/// `$factory` is an async function taking the limits and returning
/// `Option<Arc<dyn EventStore>>`, a fresh store opened with them; `None` skips the tests
/// and says so. The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
#[macro_export]
macro_rules! store_limits_conformance {
    ($factory:path) => {
        $crate::__limits_tests!($factory, [configured_limits_are_enforced,]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __limits_tests {
    ($factory:path, [$($behaviour:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $behaviour() {
                $crate::event_store::$behaviour($factory).await;
            }
        )*
    };
}

/// Generates one `#[tokio::test]` per [`snapshot_store`] behaviour; see
/// [`event_store_conformance!`].
#[macro_export]
macro_rules! snapshot_store_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory,
            snapshot_store,
            [snapshots_round_trip, older_snapshots_do_not_replace_newer,]
        );
    };
}

/// Generates one `#[tokio::test]` per [`checkpoint_store`] behaviour; see
/// [`event_store_conformance!`].
#[macro_export]
macro_rules! checkpoint_store_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory,
            checkpoint_store,
            [
                checkpoints_round_trip,
                dead_letters_round_trip_and_reset,
                dead_letters_are_kept_once_per_position_and_removed_one_by_one,
            ]
        );
    };
}

/// All three suites on one store type: `$factory` is an async function (a name in scope)
/// returning `Option<S>`, where `S` is the event, snapshot and checkpoint store at once, a
/// fresh one per call; `None` skips. Writes the modules `events_conformance`,
/// `snapshots_conformance` and `checkpoints_conformance`.
#[macro_export]
macro_rules! store_conformance {
    ($factory:ident) => {
        $crate::__store_conformance!(
            $factory,
            events_conformance,
            EventStore,
            event_store_conformance
        );
        $crate::__store_conformance!(
            $factory,
            snapshots_conformance,
            SnapshotStore,
            snapshot_store_conformance
        );
        $crate::__store_conformance!(
            $factory,
            checkpoints_conformance,
            CheckpointStore,
            checkpoint_store_conformance
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance {
    ($factory:ident, $module:ident, $contract:ident, $suite:ident) => {
        mod $module {
            async fn store() -> Option<::std::sync::Arc<dyn ::flext_protocols::$contract>> {
                Some(::std::sync::Arc::new(super::$factory().await?))
            }
            $crate::$suite!(store);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:path, $suite:ident, [$($behaviour:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $behaviour() {
                match $factory().await {
                    Some(store) => $crate::$suite::$behaviour(store).await,
                    None => eprintln!(
                        "skipped {}::{}: no store to test (is its URL variable set?)",
                        stringify!($suite),
                        stringify!($behaviour)
                    ),
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_macros_list_every_behaviour() {
        let macros = include_str!("lib.rs");
        for name in crate::event_store::BEHAVIOURS
            .iter()
            .chain(crate::event_store::LIMIT_BEHAVIOURS)
            .chain(crate::snapshot_store::BEHAVIOURS)
            .chain(crate::checkpoint_store::BEHAVIOURS)
        {
            assert!(
                macros.contains(&format!("{name},")),
                "{name} is missing from its macro"
            );
        }
    }
}
