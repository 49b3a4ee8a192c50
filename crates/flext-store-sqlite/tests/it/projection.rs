//! Exactly-once projections on SQLite: a counter row incremented per event and a table of
//! applied event ids (primary key) always equal a replay up to the checkpoint, whatever
//! fails: an apply, the checkpoint write, a dropped future, a killed process, a second
//! runner of the same name.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_store_sqlite::{SqliteEventStore, SqliteProjection, SqliteProjectionRunner};
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent};
use sqlx::{Sqlite, Transaction};

use crate::temp_path;

/// The read model: `counter` (one row, incremented per event) and `applied` (one row per
/// event id; applying one twice breaks its primary key).
#[derive(Default)]
struct Counter {
    /// Positions whose apply writes its rows and then fails.
    fail_at: Mutex<BTreeSet<u64>>,
    panic_at: Option<u64>,
    /// A position whose apply waits for ever, after writing its rows.
    hang_at: Option<u64>,
    hanging: AtomicBool,
    /// Prints `applying {position}` (for the killed child).
    print: bool,
    /// Updates the counter row only (for the measurement).
    counter_only: bool,
    applies: AtomicU64,
}

fn storage(error: sqlx::Error) -> FlextError {
    FlextError::storage(error.to_string())
}

#[async_trait]
impl SqliteProjection for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        if self.print {
            println!("applying {}", event.position);
        }
        self.applies.fetch_add(1, Ordering::SeqCst);
        sqlx::query("UPDATE counter SET events = events + 1 WHERE id = 1")
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        if self.counter_only {
            return Ok(());
        }
        sqlx::query("INSERT INTO applied (event_id, position) VALUES (?, ?)")
            .bind(event.event_id.to_string())
            .bind(i64::try_from(event.position).unwrap())
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        if self.fail_at.lock().unwrap().contains(&event.position) {
            return Err(FlextError::validation(format!(
                "cannot count event {}",
                event.position
            )));
        }
        if self.panic_at == Some(event.position) {
            panic!("counter on fire");
        }
        if self.hang_at == Some(event.position) {
            self.hanging.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut Transaction<'_, Sqlite>) -> FlextResult<()> {
        sqlx::query("UPDATE counter SET events = 0 WHERE id = 1")
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        sqlx::query("DELETE FROM applied")
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        Ok(())
    }
}

/// A store at `path` with the read model's tables.
async fn open(path: &str) -> SqliteEventStore {
    let store = SqliteEventStore::open(path).await.unwrap();
    for sql in [
        "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), events INTEGER NOT NULL)",
        "INSERT OR IGNORE INTO counter (id, events) VALUES (1, 0)",
        "CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY, position INTEGER NOT NULL)",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    store
}

async fn append_n(store: &SqliteEventStore, n: usize) {
    for i in 0..n {
        let event = NewEvent::new("Tick", JsonPayload::encode(&i).unwrap());
        store
            .append(
                &format!("Tick-{}", i % 5),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap();
    }
}

/// The read model, checked against a replay of the log up to the checkpoint: the counter
/// equals the number of events up to it, and `applied` holds exactly their ids. Returns
/// the checkpoint.
async fn assert_equals_a_replay(store: &SqliteEventStore) -> u64 {
    let checkpoint: Option<i64> =
        sqlx::query_scalar("SELECT position FROM flext_checkpoints WHERE name = 'counter'")
            .fetch_optional(store.pool())
            .await
            .unwrap();
    let checkpoint = checkpoint.map_or(0, |p| u64::try_from(p).unwrap());
    let replay: BTreeSet<String> = store
        .read_all(1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.position <= checkpoint)
        .map(|event| event.event_id.to_string())
        .collect();
    let counter: i64 = sqlx::query_scalar("SELECT events FROM counter WHERE id = 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let applied: Vec<String> = sqlx::query_scalar("SELECT event_id FROM applied")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        usize::try_from(counter).unwrap(),
        replay.len(),
        "the counter counts each event up to the checkpoint once"
    );
    assert_eq!(
        applied.into_iter().collect::<BTreeSet<_>>(),
        replay,
        "the applied ids are the replay's"
    );
    checkpoint
}

fn runner(
    store: &SqliteEventStore,
    counter: &Arc<Counter>,
    batch: usize,
) -> SqliteProjectionRunner {
    SqliteProjectionRunner::new(store.clone(), counter.clone()).with_batch_size(batch)
}

#[tokio::test]
async fn catch_up_applies_every_event_once_in_batches_and_resumes_at_the_checkpoint() {
    let store = open(&temp_path()).await;
    append_n(&store, 25).await;
    let counter = Arc::new(Counter::default());
    let first = runner(&store, &counter, 10);
    assert_eq!(first.batch_size(), 10);
    assert_eq!(first.name(), "counter");
    let progress = first.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (25, 25));
    assert_eq!(assert_equals_a_replay(&store).await, 25);

    append_n(&store, 3).await;
    let progress = runner(&store, &counter, 10).catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (3, 28));
    assert_eq!(assert_equals_a_replay(&store).await, 28);
    assert_eq!(counter.applies.load(Ordering::SeqCst), 28, "nothing twice");
    assert_eq!(first.position().await.unwrap(), 28);
}

/// A failing apply has written its rows when it fails: the batch rolls back, the events
/// before the failing one commit one by one, the run stops at it with its code and the
/// position named. Fixed, the next run goes on; nothing is doubled.
#[tokio::test]
async fn a_failing_apply_rolls_back_and_the_run_stops_just_before_the_event() {
    let store = open(&temp_path()).await;
    append_n(&store, 20).await;
    let counter = Arc::new(Counter::default());
    counter.fail_at.lock().unwrap().insert(14);
    let error = runner(&store, &counter, 8).catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ValidationError);
    assert!(
        error
            .message()
            .starts_with("Projection 'counter' cannot apply the event at position 14 (Tick of stream 'Tick-3'); nothing of it was committed and the checkpoint stays at 13: cannot count event 14"),
        "{error}"
    );
    assert_eq!(error.data().unwrap()["position"], 14);
    assert_eq!(assert_equals_a_replay(&store).await, 13);

    counter.fail_at.lock().unwrap().clear();
    let progress = runner(&store, &counter, 8).catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (7, 20));
    assert_eq!(assert_equals_a_replay(&store).await, 20);
}

/// A panicking apply is an `OPERATION_ERROR`, the same way; the process lives on.
#[tokio::test]
async fn a_panicking_apply_is_an_operation_error_and_rolls_back() {
    let store = open(&temp_path()).await;
    append_n(&store, 5).await;
    let counter = Arc::new(Counter {
        panic_at: Some(3),
        ..Counter::default()
    });
    let error = runner(&store, &counter, 10).catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert!(
        error
            .message()
            .ends_with("Handler execution failed: counter on fire"),
        "{error}"
    );
    assert_eq!(assert_equals_a_replay(&store).await, 2);
}

/// The failure comes after every apply, at the checkpoint write (a trigger refuses
/// positions from 7 on): the read model's writes roll back with it.
#[tokio::test]
async fn a_failed_checkpoint_write_rolls_back_the_read_model_too() {
    let store = open(&temp_path()).await;
    append_n(&store, 10).await;
    for event in ["INSERT", "UPDATE"] {
        sqlx::query(&format!(
            "CREATE TRIGGER refuse_{event} BEFORE {event} ON flext_checkpoints \
             WHEN NEW.name = 'counter' AND NEW.position >= 7 \
             BEGIN SELECT RAISE(ABORT, 'injected checkpoint failure'); END"
        ))
        .execute(store.pool())
        .await
        .unwrap();
    }
    let counter = Arc::new(Counter::default());
    let error = runner(&store, &counter, 4).catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    assert!(
        error.message().contains("injected checkpoint failure"),
        "{error}"
    );
    assert_eq!(assert_equals_a_replay(&store).await, 6);

    for event in ["INSERT", "UPDATE"] {
        sqlx::query(&format!("DROP TRIGGER refuse_{event}"))
            .execute(store.pool())
            .await
            .unwrap();
    }
    runner(&store, &counter, 4).catch_up().await.unwrap();
    assert_eq!(assert_equals_a_replay(&store).await, 10);
}

/// The runner's future is dropped while a batch is half applied: nothing of that batch is
/// committed, and a new runner applies the rest exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_dropped_mid_batch_commits_nothing_of_it() {
    for hang_at in [11, 15, 20] {
        let store = open(&temp_path()).await;
        append_n(&store, 30).await;
        let counter = Arc::new(Counter {
            hang_at: Some(hang_at),
            ..Counter::default()
        });
        let first = runner(&store, &counter, 10);
        let task = tokio::spawn(async move { first.catch_up().await });
        tokio::time::timeout(Duration::from_secs(10), async {
            while !counter.hanging.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the runner reaches the event it hangs at");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(assert_equals_a_replay(&store).await, 10);

        let progress = runner(&store, &Arc::default(), 10)
            .catch_up()
            .await
            .unwrap();
        assert_eq!((progress.applied, progress.position), (20, 30));
        assert_eq!(assert_equals_a_replay(&store).await, 30);
    }
}

/// Two runners of the same name on one database, at once: each batch is applied by one of
/// them (the checkpoint is read in the write transaction), so every event is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_of_one_name_never_apply_an_event_twice() {
    for _ in 0..5 {
        let path = temp_path();
        let store = open(&path).await;
        append_n(&store, 300).await;
        let counter = Arc::new(Counter::default());
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let runner = runner(&store, &counter, 7);
                tokio::spawn(async move { runner.catch_up().await })
            })
            .collect();
        let mut applied = 0;
        for task in tasks {
            applied += task.await.unwrap().unwrap().applied;
        }
        assert_eq!(applied, 300, "each event applied by one runner");
        assert_eq!(counter.applies.load(Ordering::SeqCst), 300);
        assert_eq!(assert_equals_a_replay(&store).await, 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_applies_new_events_live_and_rebuild_replays_once() {
    let store = open(&temp_path()).await;
    append_n(&store, 5).await;
    let counter = Arc::new(Counter::default());
    // Spawned: the handle's run is the runner's `run_until`.
    let handle = runner(&store, &counter, 50).spawn().unwrap();
    let live = handle.runner().clone();
    append_n(&store, 40).await;
    handle
        .wait_for_within(45, Duration::from_secs(10))
        .await
        .expect("the runner followed the new events");
    let progress = handle.shutdown().await.unwrap();
    assert_eq!((progress.applied, progress.position), (45, 45));
    assert_eq!(assert_equals_a_replay(&store).await, 45);

    let rebuilt = live.rebuild().await.unwrap();
    assert_eq!((rebuilt.applied, rebuilt.position), (45, 45));
    assert_eq!(assert_equals_a_replay(&store).await, 45);
    assert_eq!(counter.applies.load(Ordering::SeqCst), 90);
}

/// The child of the kill test: applies the log to the database at the path in its
/// variable, printing each event as it applies it, until it is killed.
#[tokio::test]
async fn projection_child() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return; // Only the kill test runs this, in a child process.
    };
    let store = open(&path).await;
    let counter = Arc::new(Counter {
        print: true,
        ..Counter::default()
    });
    runner(&store, &counter, 9).catch_up().await.unwrap();
    println!("done");
}

const CHILD_DB: &str = "FLEXT_SQLITE_PROJECTION_CHILD_DB";

/// A child process applying the log is SIGKILLed at a different point each round (inside
/// a transaction, mostly): the read model equals a replay up to the checkpoint, and a new
/// runner finishes it exactly once.
#[tokio::test]
async fn a_killed_process_leaves_the_read_model_equal_to_a_replay() {
    let path = temp_path();
    let store = open(&path).await;
    append_n(&store, 600).await;
    let mut checkpoints = Vec::new();
    for kill_after in [40, 170, 333] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "projection::projection_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_DB, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.starts_with("applying ") {
                seen += 1;
            }
            if seen >= kill_after || line == "done" {
                break;
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().unwrap();
        checkpoints.push(assert_equals_a_replay(&store).await);
    }
    assert!(
        checkpoints.windows(2).all(|w| w[0] <= w[1]) && checkpoints[0] > 0,
        "each child got further: {checkpoints:?}"
    );
    let progress = runner(&store, &Arc::default(), 9).catch_up().await.unwrap();
    assert_eq!(progress.position, 600);
    assert_eq!(assert_equals_a_replay(&store).await, 600);
}

/// Catch-up throughput of a transactional projection updating one row per event, 100
/// events per transaction. Run with `cargo test -p flext-store-sqlite --release --test it
/// measure_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_transactional_catch_up_on_sqlite() {
    const EVENTS: usize = 20_000;
    let store = open(&temp_path()).await;
    for chunk in 0..EVENTS / 100 {
        let events = (0..100)
            .map(|i| NewEvent::new("Tick", JsonPayload::encode(&(chunk * 100 + i)).unwrap()))
            .collect();
        store
            .append(&format!("Tick-{chunk}"), ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let counter = Arc::new(Counter {
        counter_only: true,
        ..Counter::default()
    });
    let runner = SqliteProjectionRunner::new(store.clone(), counter);
    let started = std::time::Instant::now();
    let progress = runner.catch_up().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(progress.applied, EVENTS as u64);
    println!(
        "transactional catch-up on SQLite, one row per event, {} per transaction: {EVENTS} events in {elapsed:?}, {:.0} events/s",
        runner.batch_size(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );

    // The same events again, one UPDATE per batch.
    sqlx::query("UPDATE flext_checkpoints SET position = 0 WHERE name = 'counter'")
        .execute(store.pool())
        .await
        .unwrap();
    let runner = SqliteProjectionRunner::new(store.clone(), Arc::new(BatchCounter));
    let started = std::time::Instant::now();
    let progress = runner.catch_up().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(progress.applied, EVENTS as u64);
    println!(
        "transactional catch-up on SQLite, one UPDATE per batch of {}: {EVENTS} events in {elapsed:?}, {:.0} events/s",
        runner.batch_size(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );
}

/// The counter row only, one statement per batch (`apply_batch`), for the measurement.
struct BatchCounter;

#[async_trait]
impl SqliteProjection for BatchCounter {
    fn name(&self) -> &str {
        "counter"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        events: &[StoredEvent],
    ) -> FlextResult<()> {
        sqlx::query("UPDATE counter SET events = events + ? WHERE id = 1")
            .bind(i64::try_from(events.len()).unwrap())
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        Ok(())
    }

    async fn reset(&self, _: &mut Transaction<'_, Sqlite>) -> FlextResult<()> {
        Ok(())
    }
}

/// Spawned: an append is in the read model once `wait_for` its last position resolves;
/// `caught_up` waits for the head; shutdown returns the run's progress, committed; a
/// failing event fails a pending waiter and the join with its error.
#[tokio::test]
async fn a_spawned_runner_waits_for_an_append_and_stops_with_its_progress() {
    let store = open(&temp_path()).await;
    append_n(&store, 12).await;
    let counter = Arc::new(Counter::default());
    let handle = runner(&store, &counter, 5).spawn().unwrap();
    assert_eq!(handle.name(), "counter");
    assert_eq!(handle.caught_up().await.unwrap(), 12);
    assert_eq!(assert_equals_a_replay(&store).await, 12);

    let event = NewEvent::new("Tick", JsonPayload::encode(&"more").unwrap());
    let appended = store
        .append("Tick-9", ExpectedVersion::Any, vec![event])
        .await
        .unwrap();
    handle.wait_for(appended.last_position).await.unwrap();
    assert_eq!(handle.position(), 13);
    assert_eq!(assert_equals_a_replay(&store).await, 13, "read-your-writes");

    let progress = handle.shutdown().await.unwrap();
    assert_eq!((progress.applied, progress.position), (13, 13));

    counter.fail_at.lock().unwrap().insert(15);
    let handle = runner(&store, &counter, 5).spawn().unwrap();
    let (waited, ()) = tokio::join!(handle.wait_for(16), append_n(&store, 3));
    let error = waited.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ValidationError);
    assert!(error.message().contains("position 15"), "{error}");
    assert!(handle.is_finished());
    assert_eq!(handle.position(), 14, "committed up to the failing event");
    assert_eq!(
        handle.join().await.unwrap_err().code(),
        ErrorCode::ValidationError
    );
    assert_eq!(assert_equals_a_replay(&store).await, 14);
}
