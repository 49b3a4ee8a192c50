//! Exactly-once projections on PostgreSQL: a counter row incremented per event and a table
//! of applied event ids (primary key) always equal a replay up to the checkpoint, whatever
//! fails: an apply, the checkpoint write, a dropped future, a killed process, a second
//! runner of the same name. Events are found by their payload (the `n` of `append_n`), not
//! by position: positions need not be dense.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_store_postgres::{
    PostgresEventStore, PostgresProjection, PostgresProjectionRunner, PostgresStoreOptions,
};
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent};
use sqlx::{Postgres, Transaction};

/// The read model: `counter` (one row, incremented per event) and `applied` (one row per
/// event id; applying one twice breaks its primary key). Knobs name events by their `n`.
#[derive(Default)]
struct Counter {
    /// An event whose apply writes its rows and then fails.
    fail_at: Option<u64>,
    panic_at: Option<u64>,
    /// An event whose apply waits for ever, after writing its rows.
    hang_at: Option<u64>,
    hanging: AtomicBool,
    /// Prints `applying {n}` (for the killed child).
    print: bool,
    /// Updates the counter row only (for the measurement).
    counter_only: bool,
    applies: AtomicU64,
}

fn storage(error: sqlx::Error) -> FlextError {
    FlextError::storage(error.to_string())
}

#[async_trait]
impl PostgresProjection for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        let n: u64 = event.payload.decode()?;
        if self.print {
            println!("applying {n}");
        }
        self.applies.fetch_add(1, Ordering::SeqCst);
        sqlx::query("UPDATE counter SET events = events + 1 WHERE id = 1")
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        if self.counter_only {
            return Ok(());
        }
        sqlx::query("INSERT INTO applied (event_id, position) VALUES ($1, $2)")
            .bind(event.event_id.to_string())
            .bind(i64::try_from(event.position).unwrap())
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        if self.fail_at == Some(n) {
            return Err(FlextError::validation(format!("cannot count event {n}")));
        }
        if self.panic_at == Some(n) {
            panic!("counter on fire");
        }
        if self.hang_at == Some(n) {
            self.hanging.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<()> {
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

/// A store in `schema` with the read model's tables.
async fn open(url: &str, schema: &str) -> PostgresEventStore {
    let options = PostgresStoreOptions::new(url).with_schema(schema);
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    for sql in [
        "CREATE TABLE IF NOT EXISTS counter (id INT PRIMARY KEY CHECK (id = 1), events BIGINT NOT NULL)",
        "INSERT INTO counter (id, events) VALUES (1, 0) ON CONFLICT DO NOTHING",
        "CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    store
}

/// A store in a fresh schema, or `None` (skipped) without a test server.
async fn fresh(test: &str) -> Option<(String, String, PostgresEventStore)> {
    let url = crate::url(test)?;
    let schema = format!(
        "flext_p_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let store = open(&url, &schema).await;
    Some((url, schema, store))
}

/// Appends events `from..from + n`, each carrying its number, and waits until readers see
/// them (a commit shows once no older append to the store is still open).
async fn append_n(store: &PostgresEventStore, from: u64, n: u64) {
    let mut last = 0;
    for i in from..from + n {
        let event = NewEvent::new("Tick", JsonPayload::encode(&i).unwrap());
        last = store
            .append(
                &format!("Tick-{}", i % 5),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap()
            .last_position;
    }
    flext_testing::event_store::caught_up(store, last).await;
}

/// The position of event number `n`, waiting (at most 10 s) until reads see it: a commit
/// may show a moment late, while an older append to the store is still open.
async fn position_of(store: &PostgresEventStore, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = store.read_all(1, usize::MAX).await.unwrap();
        if let Some(event) = all
            .iter()
            .find(|event| event.payload.decode::<u64>().unwrap() == n)
        {
            return event.position;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "event {n} never showed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The read model, checked against a replay of the log up to the checkpoint: the counter
/// equals the number of events up to it, and `applied` holds exactly their ids. Returns
/// how many events that is.
async fn assert_equals_a_replay(store: &PostgresEventStore) -> usize {
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
    replay.len()
}

fn runner(
    store: &PostgresEventStore,
    counter: &Arc<Counter>,
    batch: usize,
) -> PostgresProjectionRunner {
    PostgresProjectionRunner::new(store.clone(), counter.clone()).with_batch_size(batch)
}

#[tokio::test]
async fn catch_up_applies_every_event_once_in_batches_and_resumes_at_the_checkpoint_pg() {
    let Some((_, _, store)) =
        fresh("catch_up_applies_every_event_once_in_batches_and_resumes_at_the_checkpoint_pg")
            .await
    else {
        return;
    };
    append_n(&store, 0, 25).await;
    let counter = Arc::new(Counter::default());
    let progress = runner(&store, &counter, 10).catch_up().await.unwrap();
    assert_eq!(progress.applied, 25);
    assert_eq!(progress.position, position_of(&store, 24).await);
    assert_eq!(assert_equals_a_replay(&store).await, 25);

    append_n(&store, 25, 3).await;
    let again = runner(&store, &counter, 10);
    assert_eq!(again.catch_up().await.unwrap().applied, 3);
    assert_eq!(assert_equals_a_replay(&store).await, 28);
    assert_eq!(counter.applies.load(Ordering::SeqCst), 28, "nothing twice");
    assert_eq!(
        again.position().await.unwrap(),
        position_of(&store, 27).await
    );
}

/// A failing apply has written its rows when it fails: the batch rolls back, the events
/// before the failing one commit one by one, the run stops at it; a panic likewise.
#[tokio::test]
async fn a_failing_or_panicking_apply_rolls_back_and_the_run_stops_just_before_the_event_pg() {
    let Some((_, _, store)) =
        fresh("a_failing_or_panicking_apply_rolls_back_and_the_run_stops_just_before_the_event_pg")
            .await
    else {
        return;
    };
    append_n(&store, 0, 20).await;
    let failing = Arc::new(Counter {
        fail_at: Some(13),
        ..Counter::default()
    });
    let error = runner(&store, &failing, 8).catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ValidationError);
    assert!(
        error.message().ends_with("cannot count event 13"),
        "{error}"
    );
    assert_eq!(
        error.data().unwrap()["position"],
        position_of(&store, 13).await
    );
    assert_eq!(assert_equals_a_replay(&store).await, 13);

    let panicking = Arc::new(Counter {
        panic_at: Some(15),
        ..Counter::default()
    });
    let error = runner(&store, &panicking, 8).catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert!(
        error
            .message()
            .ends_with("Handler execution failed: counter on fire"),
        "{error}"
    );
    assert_eq!(assert_equals_a_replay(&store).await, 15);

    runner(&store, &Arc::default(), 8).catch_up().await.unwrap();
    assert_eq!(assert_equals_a_replay(&store).await, 20);
}

/// The failure comes after every apply, at the checkpoint write (a trigger refuses it
/// from event 6 on): the read model's writes roll back with it.
#[tokio::test]
async fn a_failed_checkpoint_write_rolls_back_the_read_model_too_pg() {
    let Some((_, _, store)) =
        fresh("a_failed_checkpoint_write_rolls_back_the_read_model_too_pg").await
    else {
        return;
    };
    append_n(&store, 0, 10).await;
    let refused_from = position_of(&store, 6).await;
    sqlx::query(&format!(
        "CREATE FUNCTION refuse_checkpoint() RETURNS trigger AS $$ BEGIN \
         IF NEW.name = 'counter' AND NEW.position >= {refused_from} THEN \
         RAISE EXCEPTION 'injected checkpoint failure'; END IF; RETURN NEW; END $$ \
         LANGUAGE plpgsql"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_checkpoint BEFORE INSERT OR UPDATE ON flext_checkpoints \
         FOR EACH ROW EXECUTE FUNCTION refuse_checkpoint()",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let counter = Arc::new(Counter::default());
    let error = runner(&store, &counter, 4).catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    assert!(
        error.message().contains("injected checkpoint failure"),
        "{error}"
    );
    assert_eq!(assert_equals_a_replay(&store).await, 6);

    sqlx::query("DROP TRIGGER refuse_checkpoint ON flext_checkpoints")
        .execute(store.pool())
        .await
        .unwrap();
    runner(&store, &counter, 4).catch_up().await.unwrap();
    assert_eq!(assert_equals_a_replay(&store).await, 10);
}

/// The runner's future is dropped while a batch is half applied: nothing of that batch is
/// committed, and a new runner applies the rest exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_dropped_mid_batch_commits_nothing_of_it_pg() {
    let Some((_, _, store)) = fresh("a_runner_dropped_mid_batch_commits_nothing_of_it_pg").await
    else {
        return;
    };
    append_n(&store, 0, 30).await;
    let counter = Arc::new(Counter {
        hang_at: Some(14),
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

    let progress = tokio::time::timeout(
        Duration::from_secs(30),
        runner(&store, &Arc::default(), 10).catch_up(),
    )
    .await
    .expect("the dropped transaction's lock is released")
    .unwrap();
    assert_eq!(progress.applied, 20);
    assert_eq!(assert_equals_a_replay(&store).await, 30);
}

/// Two runners of the same name at once: each batch is applied by one of them (the
/// projection's lock is taken before the checkpoint is read), so every event is counted
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_of_one_name_never_apply_an_event_twice_pg() {
    let Some((_, _, store)) = fresh("two_runners_of_one_name_never_apply_an_event_twice_pg").await
    else {
        return;
    };
    append_n(&store, 0, 300).await;
    for round in 0..3 {
        if round > 0 {
            for sql in [
                "UPDATE counter SET events = 0",
                "DELETE FROM applied",
                "UPDATE flext_checkpoints SET position = 0 WHERE name = 'counter'",
            ] {
                sqlx::query(sql).execute(store.pool()).await.unwrap();
            }
        }
        let counter = Arc::new(Counter::default());
        let tasks: Vec<_> = (0..3)
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
async fn run_until_applies_new_events_live_and_rebuild_replays_once_pg() {
    let Some((_, _, store)) =
        fresh("run_until_applies_new_events_live_and_rebuild_replays_once_pg").await
    else {
        return;
    };
    append_n(&store, 0, 5).await;
    let counter = Arc::new(Counter::default());
    // Spawned: the handle's run is the runner's `run_until`.
    let handle = runner(&store, &counter, 50).spawn().unwrap();
    let live = handle.runner().clone();
    append_n(&store, 5, 40).await;
    let last = position_of(&store, 44).await;
    handle
        .wait_for_within(last, Duration::from_secs(20))
        .await
        .expect("the runner followed the new events");
    let progress = handle.shutdown().await.unwrap();
    assert_eq!((progress.applied, progress.position), (45, last));
    assert_eq!(assert_equals_a_replay(&store).await, 45);

    let rebuilt = live.rebuild().await.unwrap();
    assert_eq!(rebuilt.applied, 45);
    assert_eq!(assert_equals_a_replay(&store).await, 45);
    assert_eq!(counter.applies.load(Ordering::SeqCst), 90);
}

const CHILD_SCHEMA: &str = "FLEXT_PG_PROJECTION_CHILD_SCHEMA";

/// The child of the kill test: applies the log of the schema in its variable, printing
/// each event as it applies it, until it is killed.
#[tokio::test]
async fn projection_child_pg() {
    let (Ok(schema), Ok(url)) = (
        std::env::var(CHILD_SCHEMA),
        std::env::var("FLEXT_TEST_POSTGRES_URL"),
    ) else {
        return; // Only the kill test runs this, in a child process.
    };
    let store = open(&url, &schema).await;
    let counter = Arc::new(Counter {
        print: true,
        ..Counter::default()
    });
    runner(&store, &counter, 9).catch_up().await.unwrap();
    println!("done");
}

/// A child process applying the log is SIGKILLed at a different point each round (inside
/// a transaction, mostly): the read model equals a replay up to the checkpoint, and a new
/// runner finishes it exactly once.
#[tokio::test]
async fn a_killed_process_leaves_the_read_model_equal_to_a_replay_pg() {
    let Some((_, schema, store)) =
        fresh("a_killed_process_leaves_the_read_model_equal_to_a_replay_pg").await
    else {
        return;
    };
    append_n(&store, 0, 400).await;
    let mut counts = Vec::new();
    for kill_after in [40, 120, 150] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "projection::projection_child_pg", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_SCHEMA, &schema)
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
        // The server ends the killed child's session (and rolls back its transaction) once
        // it sees the socket closed; the next lock waits for that.
        counts.push(assert_equals_a_replay(&store).await);
    }
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]) && counts[0] > 0,
        "each child got further: {counts:?}"
    );
    let progress = tokio::time::timeout(
        Duration::from_secs(30),
        runner(&store, &Arc::default(), 9).catch_up(),
    )
    .await
    .expect("the killed sessions' locks are released")
    .unwrap();
    assert_eq!(progress.position, position_of(&store, 399).await);
    assert_eq!(assert_equals_a_replay(&store).await, 400);
}

/// Catch-up throughput of a transactional projection updating one row per event, 100
/// events per transaction (the target: 20k events/s). Run with `cargo test -p
/// flext-store-postgres --release --test it measure_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_transactional_catch_up_on_postgres() {
    const EVENTS: u64 = 20_000;
    let Some((_, _, store)) = fresh("measure_transactional_catch_up_on_postgres").await else {
        return;
    };
    for chunk in 0..EVENTS / 100 {
        let events = (0..100)
            .map(|i| NewEvent::new("Tick", JsonPayload::encode(&(chunk * 100 + i)).unwrap()))
            .collect();
        let appended = store
            .append(&format!("Tick-{chunk}"), ExpectedVersion::Any, events)
            .await
            .unwrap();
        flext_testing::event_store::caught_up(&store, appended.last_position).await;
    }
    let counter = Arc::new(Counter {
        counter_only: true,
        ..Counter::default()
    });
    let runner = PostgresProjectionRunner::new(store.clone(), counter);
    let started = std::time::Instant::now();
    let progress = runner.catch_up().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(progress.applied, EVENTS);
    println!(
        "transactional catch-up on PostgreSQL, one row per event, {} per transaction: {EVENTS} events in {elapsed:?}, {:.0} events/s",
        runner.batch_size(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );

    // The same events again, one UPDATE per batch.
    sqlx::query("UPDATE flext_checkpoints SET position = 0 WHERE name = 'counter'")
        .execute(store.pool())
        .await
        .unwrap();
    let runner = PostgresProjectionRunner::new(store.clone(), Arc::new(BatchCounter));
    let started = std::time::Instant::now();
    let progress = runner.catch_up().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(progress.applied, EVENTS);
    println!(
        "transactional catch-up on PostgreSQL, one UPDATE per batch of {}: {EVENTS} events in {elapsed:?}, {:.0} events/s",
        runner.batch_size(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );
}

/// The counter row only, one statement per batch (`apply_batch`), for the measurement.
struct BatchCounter;

#[async_trait]
impl PostgresProjection for BatchCounter {
    fn name(&self) -> &str {
        "counter"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[StoredEvent],
    ) -> FlextResult<()> {
        sqlx::query("UPDATE counter SET events = events + $1 WHERE id = 1")
            .bind(i64::try_from(events.len()).unwrap())
            .execute(&mut **tx)
            .await
            .map_err(storage)?;
        Ok(())
    }

    async fn reset(&self, _: &mut Transaction<'_, Postgres>) -> FlextResult<()> {
        Ok(())
    }
}
