//! Appends without a store-wide lock and the read barrier: commits out of position order,
//! bounded lock waits that starve neither other streams nor reads, notifications that are
//! only wake-ups, and positions kept above the stored ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flext_constants::ErrorCode;
use flext_protocols::{CheckpointStore, EventStore};
use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};
use flext_testing::event_store::Held;
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};
use futures_util::StreamExt;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};

use crate::{fresh, url};

fn event(value: serde_json::Value) -> NewEvent {
    NewEvent::new("Noted", JsonPayload::encode(&value).unwrap())
}

fn schema_name() -> String {
    format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// The store's insert, written out: `events` at the next versions of `stream` (which is at
/// `version`), at the positions of the transaction `connection` is in.
async fn insert_as_the_store(
    connection: &mut PgConnection,
    stream: &str,
    version: i64,
    events: &[NewEvent],
) {
    for (n, event) in (1i64..).zip(events) {
        sqlx::query(
            "INSERT INTO flext_events (event_id, stream_id, version, position, event_type, \
             schema_version, payload, metadata, recorded_at) \
             SELECT $1::uuid, $2, $3, ((pg_current_xact_id()::text::bigint \
                 + (SELECT position_offset FROM flext_positions)) << 20) + $4, \
                 $5, 1, $6::jsonb, '{}', now()",
        )
        .bind(event.event_id.to_string())
        .bind(stream)
        .bind(version + n)
        .bind(n)
        .bind(&event.event_type)
        .bind(event.payload.as_str())
        .execute(&mut *connection)
        .await
        .unwrap();
    }
}

/// A connection of its own to the store's schema, outside its pool.
async fn connection_to(store: &PostgresEventStore) -> PgConnection {
    let mut connection = PgConnection::connect(&url("raw connection").unwrap())
        .await
        .unwrap();
    let search_path = format!("SET search_path TO \"{}\"", store.schema());
    connection.execute(search_path.as_str()).await.unwrap();
    connection
}

/// Places `events` at the start of `stream` in a transaction of its own, written as the
/// store would, and leaves it open: the returned future commits it.
async fn hold(store: PostgresEventStore, stream: String, events: Vec<NewEvent>) -> Held {
    let mut connection = connection_to(&store).await;
    connection.execute("BEGIN").await.unwrap();
    insert_as_the_store(&mut connection, &stream, 0, &events).await;
    Box::pin(async move {
        connection.execute("COMMIT").await.unwrap();
    })
}

/// The conformance suite's out-of-order test: a transaction places two events with the
/// store's SQL and stays open while eight appends commit; a tailing reader sees every event
/// once, in position order. Before, an append took a store-wide advisory lock, so the
/// later appends could not commit while one was open (the test timed out), and positions
/// from a sequence would have let a reader pass the open one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_commits_are_not_skipped() {
    let Some(store) = fresh("out of order").await else {
        return;
    };
    let held = store.clone();
    let hold = |stream, events| hold(held, stream, events);
    flext_testing::event_store::out_of_order_commits_are_not_skipped(Arc::new(store), hold).await;
}

/// The read barrier counts only transactions that place events: with a transaction that
/// writes no event open throughout (in the cluster, holding the oldest transaction id),
/// the out-of-order test still holds, and a reader tailing eight racing writers sees every
/// event once, in position order, and each commit soon after it returns. Before, that open
/// transaction held every reader back until it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_pass_a_long_transaction_that_writes_no_event_and_skip_nothing() {
    let Some(store) = fresh("quiet neighbour").await else {
        return;
    };
    let mut quiet = connection_to(&store).await;
    quiet.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut quiet)
        .await
        .unwrap();

    let held = store.clone();
    let hold = |stream, events| hold(held, stream, events);
    flext_testing::event_store::out_of_order_commits_are_not_skipped(Arc::new(store.clone()), hold)
        .await;
    let start = store.head_position().await.unwrap() + 1;

    const WRITERS: u64 = 8;
    const EACH: u64 = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for n in 0..EACH {
                    let appended = store
                        .append(
                            &format!("racer-{writer}"),
                            ExpectedVersion::Exact(n),
                            vec![event(json!(n))],
                        )
                        .await
                        .unwrap();
                    positions.push(appended.last_position);
                }
                positions
            })
        })
        .collect();
    let tailer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut from = start;
            let deadline = Instant::now() + Duration::from_secs(30);
            while (seen.len() as u64) < WRITERS * EACH {
                assert!(Instant::now() < deadline, "the tailer saw {}", seen.len());
                let page = store.read_all(from, 64).await.unwrap();
                for read in &page {
                    seen.push(read.position);
                    from = read.position + 1;
                }
                if page.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            seen
        })
    };
    let mut appended = Vec::new();
    for writer in writers {
        appended.extend(writer.await.unwrap());
    }
    let seen = tailer.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in position order");
    appended.sort_unstable();
    assert_eq!(seen, appended, "every event once, none skipped");

    // A commit shows at once while the quiet transaction is still open.
    let last = store
        .append("after", ExpectedVersion::NoStream, vec![event(json!(0))])
        .await
        .unwrap();
    assert_eq!(store.head_position().await.unwrap(), last.last_position);
    quiet.execute("ROLLBACK").await.unwrap();
}

/// Appends to one stream while another transaction holds its next version: each fails
/// with a `TIMEOUT` naming the store within the lock timeout; appends to other streams
/// go on meanwhile; while appends waiting on the lock fill every append slot, reads and
/// checkpoints still get connections at once. Before, the waiting append held the
/// store-wide lock with no limit: every other append, and then the pool, waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_stream_times_out_its_appends_and_starves_nothing_else() {
    let Some(url) = url("bounded waits") else {
        return;
    };
    let lock_timeout = Duration::from_millis(500);
    let options = PostgresStoreOptions::new(url)
        .with_schema(schema_name())
        .with_max_connections(6)
        .with_lock_timeout(lock_timeout)
        .with_acquire_timeout(Duration::from_secs(5));
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    store
        .append("locked", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    // Another transaction takes version 2 of the stream and stays open.
    let mut blocker = connection_to(&store).await;
    blocker.execute("BEGIN").await.unwrap();
    insert_as_the_store(&mut blocker, "locked", 1, &[event(json!("blocker"))]).await;

    // One append waits for the lock, alone: a typed error within the limit.
    let started = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        store.append("locked", ExpectedVersion::Any, vec![event(json!(2))]),
    )
    .await
    .expect("the append gives up by itself")
    .expect_err("the stream's next version is held");
    let waited = started.elapsed();
    assert_eq!(error.code(), ErrorCode::Timeout, "{error:?}");
    assert!(
        error.message().contains(store.schema()) && error.message().contains("lock"),
        "the error names the store and what timed out: {error}"
    );
    assert!(
        waited >= lock_timeout && waited < lock_timeout + Duration::from_secs(2),
        "gave up after {waited:?}"
    );

    // Many wait at once: they fill the append slots (four of six connections).
    let waiting: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append("locked", ExpectedVersion::Any, vec![event(json!(n))])
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile reads and checkpoints get connections at once, and so does another stream
    // once a slot frees.
    let quick = Duration::from_millis(400);
    let timed = Instant::now();
    store.read_stream("locked", 1, 10).await.unwrap();
    store.head_position().await.unwrap();
    store.read_all(1, 10).await.unwrap();
    store.save_checkpoint("reader", 1).await.unwrap();
    assert_eq!(store.load_checkpoint("reader").await.unwrap(), Some(1));
    assert!(
        timed.elapsed() < quick,
        "reads and checkpoints waited {:?} behind appends waiting on a lock",
        timed.elapsed()
    );
    assert!(
        waiting.iter().any(|w| !w.is_finished()),
        "appends were still waiting while the reads ran"
    );
    let free = tokio::time::timeout(
        Duration::from_secs(5),
        store.append(
            "free",
            ExpectedVersion::NoStream,
            vec![event(json!("free"))],
        ),
    )
    .await
    .expect("an append to another stream is not held up by the lock");
    free.expect("an append to another stream succeeds");
    for waiter in waiting {
        let error = waiter
            .await
            .unwrap()
            .expect_err("the version is still held");
        assert_eq!(error.code(), ErrorCode::Timeout, "{error:?}");
    }

    // Once the other transaction ends, the stream takes appends again.
    blocker.execute("ROLLBACK").await.unwrap();
    let appended = store
        .append("locked", ExpectedVersion::Exact(1), vec![event(json!(3))])
        .await
        .unwrap();
    assert_eq!(appended.last_version, 2);
}

/// Appends to different streams do not wait for each other: with an append to one stream
/// held open, eight appends to others each commit in well under the lock timeout. Before,
/// every append took one advisory lock per schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_to_other_streams_do_not_wait_for_an_open_one() {
    let Some(store) = fresh("appends side by side").await else {
        return;
    };
    let mut open = connection_to(&store).await;
    open.execute("BEGIN").await.unwrap();
    insert_as_the_store(&mut open, "open", 0, &[event(json!(0))]).await;
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        &format!("other-{n}"),
                        ExpectedVersion::NoStream,
                        vec![event(json!(n))],
                    )
                    .await
            })
        })
        .collect();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(3), writer)
            .await
            .expect("an append to another stream does not wait")
            .unwrap()
            .unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    open.execute("COMMIT").await.unwrap();
}

/// A `NOTIFY` on the store's channel with a forged position wakes the listener, which
/// reads the head from the table (one read) and finds nothing new: the subscription reads
/// nothing more, delivers nothing invented, and the next real event arrives at its own
/// position. Before, the listener took the payload as the head, so every waiting
/// subscription saw a head far ahead and read the table in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_notification_is_only_a_wake_up() {
    let Some(url) = url("forged notification") else {
        return;
    };
    let options = PostgresStoreOptions::new(url.clone())
        .with_schema(schema_name())
        .with_poll_interval(Duration::from_secs(3600));
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    let first = store
        .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    let mut tail = store.subscribe(1).await.unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivered.position, first.first_position);

    let mut other = PgConnection::connect(&url).await.unwrap();
    let scans = async |connection: &mut PgConnection| -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables \
             WHERE schemaname = $1 AND relname = 'flext_events'",
        )
        .bind(store.schema())
        .fetch_one(connection)
        .await
        .unwrap()
    };
    let before = scans(&mut other).await;
    sqlx::query("SELECT pg_notify($1, '999999999')")
        .bind(format!("flext_events_{}", store.schema()))
        .execute(&mut other)
        .await
        .unwrap();
    let invented = tokio::time::timeout(Duration::from_millis(1500), tail.next()).await;
    assert!(invented.is_err(), "nothing was delivered: {invented:?}");
    // Statistics reach the view when a backend flushes them (at most once a second while
    // it is busy); a subscription reading in a loop would show thousands of scans.
    let after = scans(&mut other).await;
    assert!(
        after - before < 50,
        "{} scans of the events table after one forged notification",
        after - before
    );
    assert_eq!(
        store.head_position().await.unwrap(),
        first.last_position,
        "the head is the table's"
    );

    let second = store
        .append("s", ExpectedVersion::Exact(1), vec![event(json!(2))])
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("the real commit's notification wakes the subscription")
        .unwrap()
        .unwrap();
    assert_eq!(
        (next.position, next.version),
        (second.first_position, 2),
        "the next event is the real one"
    );
}

/// A stored position above what this cluster's transaction ids give (as after a dump
/// restored into another cluster, whose ids start low) makes an append fail with a
/// `STORAGE_ERROR` saying to open the store again, rather than place events below stored
/// ones; opening it again moves the positions on, and appends and reads go on in order.
#[tokio::test]
async fn stored_positions_ahead_of_the_transaction_ids_are_moved_past_on_open() {
    let Some(store) = fresh("positions ahead").await else {
        return;
    };
    let before = store
        .append("before", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    let ahead = crate::restore_ahead(&mut store.pool().acquire().await.unwrap()).await;
    let error = store
        .append("after", ExpectedVersion::NoStream, vec![event(json!(2))])
        .await
        .expect_err("positions would go backwards");
    assert_eq!(error.code(), ErrorCode::StorageError, "{error:?}");
    assert!(error.message().contains("open the store again"), "{error}");
    assert_eq!(store.stream_version("after").await.unwrap(), 0);

    let options = PostgresStoreOptions::new(url("positions ahead").unwrap())
        .with_schema(store.schema().to_owned());
    let reopened = PostgresEventStore::connect_with(options).await.unwrap();
    let after = reopened
        .append("after", ExpectedVersion::NoStream, vec![event(json!(2))])
        .await
        .unwrap();
    assert!(
        after.first_position > ahead as u64,
        "{after:?} after {ahead}"
    );
    flext_testing::event_store::caught_up(&reopened, after.last_position).await;
    let positions: Vec<u64> = reopened
        .read_all(1, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        positions,
        [before.first_position, ahead as u64, after.first_position]
    );
}

/// Every other wait is bounded too: a read behind a table lock ends at the statement
/// timeout, a call that finds every pooled connection taken ends at the acquire timeout,
/// each a `TIMEOUT` naming the store and what timed out; a transaction that writes no
/// event holds no reader back however long it stays open (before, any open transaction in
/// the cluster did); and a transaction that placed an event and was left idle on a store
/// connection, which holds the store's readers back, is ended by the server at the idle
/// timeout, after which readers see the commits it held back. Before, none of these
/// limits was set: each wait lasted as long as the other side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_connections_and_idle_transactions_are_bounded() {
    let Some(url) = url("bounded statements") else {
        return;
    };
    let options = PostgresStoreOptions::new(url)
        .with_schema(schema_name())
        .with_max_connections(1)
        .with_lock_timeout(Duration::ZERO)
        .with_statement_timeout(Duration::from_millis(300))
        .with_acquire_timeout(Duration::from_millis(300))
        .with_idle_in_transaction_timeout(Duration::from_secs(2));
    let store = PostgresEventStore::connect_with(options).await.unwrap();

    // A read behind a lock no one releases: the statement timeout ends it.
    let mut locker = connection_to(&store).await;
    locker
        .execute("BEGIN; LOCK TABLE flext_events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let error = store.read_stream("s", 1, 10).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout, "{error:?}");
    assert!(
        error.message().contains(store.schema())
            && error.message().contains("running one statement"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    locker.execute("ROLLBACK").await.unwrap();

    // The one pooled connection taken: the next call ends at the acquire timeout.
    let taken = store.pool().acquire().await.unwrap();
    let started = Instant::now();
    let error = store.head_position().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout, "{error:?}");
    assert!(
        error.message().contains("waiting for a pooled connection"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(taken);

    // A transaction that never writes the log holds no reader back, however long it stays
    // open: a commit shows at once.
    let other = fresh("idle transaction").await.unwrap();
    let mut quiet = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *quiet)
        .await
        .unwrap();
    let appended = other
        .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    assert_eq!(
        other.head_position().await.unwrap(),
        appended.last_position,
        "an open transaction that writes no event holds no reader back"
    );
    assert_eq!(other.read_all(1, 10).await.unwrap().len(), 1);
    quiet.rollback().await.unwrap();

    // One that placed an event in the log and was left idle holds readers back until the
    // server ends it.
    let mut idle = store.pool().begin().await.unwrap();
    let into_other = format!("SET LOCAL search_path TO \"{}\"", other.schema());
    idle.execute(into_other.as_str()).await.unwrap();
    insert_as_the_store(&mut idle, "held", 0, &[event(json!("held"))]).await;
    let appended = other
        .append("s", ExpectedVersion::Exact(1), vec![event(json!(2))])
        .await
        .unwrap();
    assert!(
        other.head_position().await.unwrap() < appended.last_position,
        "an older open transaction that placed an event holds readers back"
    );
    let started = Instant::now();
    flext_testing::event_store::caught_up(&other, appended.last_position).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "readers went on once the server ended the idle transaction: {:?}",
        started.elapsed()
    );
    assert_eq!(
        other.read_all(1, 10).await.unwrap().len(),
        2,
        "the idle transaction's event was rolled back with it"
    );
    let ended = sqlx::query("SELECT 1").execute(&mut *idle).await;
    assert!(ended.is_err(), "the server ended the idle transaction");
}

/// An append that accepts any version is never refused for losing races on a hot stream:
/// it runs again until it lands (it used to give up after 64 lost races, which this load
/// did not reach here, but the contract rules out at any load).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writers_on_one_hot_stream_all_land_with_any_version() {
    let Some(url) = url("one hot stream") else {
        return;
    };
    // Enough connections for every writer to be in a statement at once.
    let options = PostgresStoreOptions::new(url)
        .with_schema(schema_name())
        .with_max_connections(34);
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    const WRITERS: u64 = 32;
    const EACH: u64 = 20;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    store
                        .append("hot", ExpectedVersion::Any, vec![event(json!([w, i]))])
                        .await
                        .unwrap_or_else(|error| panic!("writer {w}, append {i}: {error}"));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let stream = store.read_stream("hot", 1, usize::MAX).await.unwrap();
    assert_eq!(stream.len() as u64, WRITERS * EACH);
    assert!(
        stream
            .iter()
            .zip(1u64..)
            .all(|(event, version)| event.version == version),
        "versions run 1..=n without a gap"
    );
}

/// Opening a store whose position offset needs no move takes no lock on the events: a
/// replica opens while another's append is still open, and does not pause it. (The upgrade
/// locks the events only to move the offset on, after a restore.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opening_a_store_waits_for_no_append() {
    let Some(store) = fresh("open beside an append").await else {
        return;
    };
    store
        .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    let mut open_append = connection_to(&store).await;
    open_append.execute("BEGIN").await.unwrap();
    insert_as_the_store(&mut open_append, "held", 0, &[event(json!("held"))]).await;

    let options =
        PostgresStoreOptions::new(url("reopen").unwrap()).with_schema(store.schema().to_owned());
    let reopened = tokio::time::timeout(
        Duration::from_secs(3),
        PostgresEventStore::connect_with(options),
    )
    .await
    .expect("the open does not wait for the open append")
    .unwrap();
    assert_eq!(reopened.read_stream("s", 1, 10).await.unwrap().len(), 1);
    open_append.execute("COMMIT").await.unwrap();
    assert_eq!(reopened.read_stream("held", 1, 10).await.unwrap().len(), 1);
}

/// A subscription sees commits that waited above the read barrier soon after the older
/// append holding them back ends, though nothing notifies then (the older one committed
/// outside the store) and polling is off: while committed events wait above the barrier,
/// the head keeper reads again, 5 ms after, doubling to 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_held_above_the_barrier_reach_a_subscription_without_polling() {
    let Some(url) = url("chase") else {
        return;
    };
    let options = PostgresStoreOptions::new(url)
        .with_schema(schema_name())
        .with_poll_interval(Duration::from_secs(3600));
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    let mut tail = store.subscribe(1).await.unwrap();
    let delivered = tokio::spawn(async move {
        let first = tail.next().await.unwrap().unwrap();
        let second = tail.next().await.unwrap().unwrap();
        [first.position, second.position]
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let held = hold(store.clone(), "held".to_owned(), vec![event(json!("held"))]).await;
    let later = store
        .append(
            "later",
            ExpectedVersion::NoStream,
            vec![event(json!("later"))],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!delivered.is_finished(), "nothing passes the open append");
    held.await;
    let positions = tokio::time::timeout(Duration::from_secs(5), delivered)
        .await
        .expect("the keeper found the commits once the barrier moved")
        .unwrap();
    assert!(positions[0] < later.first_position);
    assert_eq!(positions[1], later.first_position);
}
