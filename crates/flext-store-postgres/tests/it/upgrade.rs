//! A store written by the first schema (positions from 1 without gaps, every column but
//! the integers `TEXT`), opened by this version: migrated in place, it reads back the same
//! records in the same order, and new events come after the old ones.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use flext_constants::ErrorCode;

use flext_protocols::{CheckpointStore, EventStore, SnapshotStore};
use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};
use flext_types::{DeadLetter, ExpectedVersion, FlextError, JsonPayload, NewEvent};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::json;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Connection, Executor, PgConnection};

use crate::url;

/// The first schema, exactly as its migration ran it (its checksum must match).
const FIRST_SCHEMA: &str = "CREATE TABLE flext_events (
        position BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        stream_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        UNIQUE (stream_id, version)
    );
    CREATE TABLE flext_snapshots (
        stream_id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        schema_version BIGINT NOT NULL,
        payload TEXT NOT NULL,
        taken_at TEXT NOT NULL
    );
    CREATE TABLE flext_checkpoints (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL
    );
    CREATE TABLE flext_dead_letters (
        name TEXT NOT NULL,
        position BIGINT NOT NULL,
        letter TEXT NOT NULL,
        PRIMARY KEY (name, position)
    );";

/// The second migration, exactly as it shipped.
const SECOND_SCHEMA: &str = "CREATE TABLE flext_positions (
            id SMALLINT PRIMARY KEY CHECK (id = 1),
            position_offset BIGINT NOT NULL
        );
        INSERT INTO flext_positions (id, position_offset)
        SELECT 1, GREATEST(0, (COALESCE(MAX(position), 0) >> 20) + 1
                              - pg_current_xact_id()::text::bigint)
        FROM flext_events;";

/// The third migration, exactly as it first shipped (converting times with the server's
/// rounding).
const THIRD_SCHEMA_AS_SHIPPED: &str = "ALTER TABLE flext_events
            ALTER COLUMN event_id TYPE UUID USING event_id::uuid,
            ALTER COLUMN payload TYPE JSONB USING payload::jsonb,
            ALTER COLUMN metadata TYPE JSONB USING metadata::jsonb,
            ALTER COLUMN recorded_at TYPE TIMESTAMPTZ USING recorded_at::timestamptz;
        ALTER TABLE flext_snapshots
            ALTER COLUMN payload TYPE JSONB USING payload::jsonb,
            ALTER COLUMN taken_at TYPE TIMESTAMPTZ USING taken_at::timestamptz;
        ALTER TABLE flext_dead_letters
            ALTER COLUMN letter TYPE JSONB USING letter::jsonb;
        ALTER TABLE flext_checkpoints
            ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();";

/// The first three migrations as the version that introduced native types ran them.
#[derive(Debug)]
struct ThirdSchemaAsShipped;

impl<'s> MigrationSource<'s> for ThirdSchemaAsShipped {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            let migrations = [
                (
                    1,
                    "events, snapshots, checkpoints, dead letters",
                    FIRST_SCHEMA,
                ),
                (2, "positions from transaction ids", SECOND_SCHEMA),
                (
                    3,
                    "native types: uuid, jsonb, timestamptz",
                    THIRD_SCHEMA_AS_SHIPPED,
                ),
            ];
            Ok(migrations
                .into_iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[derive(Debug)]
struct FirstSchema;

impl<'s> MigrationSource<'s> for FirstSchema {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(vec![Migration::new(
                1,
                Cow::Borrowed("events, snapshots, checkpoints, dead letters"),
                MigrationType::Simple,
                Cow::Borrowed(FIRST_SCHEMA),
                false,
            )])
        })
    }
}

/// An event row as the first schema's store wrote it.
struct OldRow {
    event_id: String,
    stream_id: &'static str,
    version: i64,
    position: i64,
    event_type: &'static str,
    schema_version: i64,
    payload: String,
    metadata: String,
    recorded_at: &'static str,
}

/// Five events of two streams at positions 1 to 5, with nested, non-ASCII payloads and
/// metadata, recorded at a time with microseconds.
fn old_rows() -> Vec<OldRow> {
    let correlation = uuid::Uuid::now_v7();
    let metadata =
        json!({"correlation_id": correlation, "causation_id": null, "headers": {"tenant": "acme"}});
    (1..=5)
        .map(|n: i64| OldRow {
            event_id: uuid::Uuid::now_v7().to_string(),
            stream_id: if n % 2 == 0 { "Order-2" } else { "Order-1" },
            version: (n + 1) / 2,
            position: n,
            event_type: "OrderPlaced",
            schema_version: 1 + n % 2,
            payload: json!({"n": n, "name": "Ada", "nested": {"z": [1, 2.5, null], "a": "é"}})
                .to_string(),
            metadata: metadata.to_string(),
            recorded_at: "2026-03-04T05:06:07.123456Z",
        })
        .collect()
}

/// A fresh schema holding a store of the first schema with `rows`, and a connection to it.
async fn first_schema_store(url: &str, rows: &[OldRow]) -> (String, PgConnection) {
    let schema = format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let mut old = PgConnection::connect(url).await.unwrap();
    let prepare = format!("CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\"");
    old.execute(prepare.as_str()).await.unwrap();
    Migrator::new(FirstSchema)
        .await
        .unwrap()
        .run(&mut old)
        .await
        .unwrap();
    for row in rows {
        sqlx::query(
            "INSERT INTO flext_events (event_id, stream_id, version, position, event_type, \
             schema_version, payload, metadata, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.event_id)
        .bind(row.stream_id)
        .bind(row.version)
        .bind(row.position)
        .bind(row.event_type)
        .bind(row.schema_version)
        .bind(&row.payload)
        .bind(&row.metadata)
        .bind(row.recorded_at)
        .execute(&mut old)
        .await
        .unwrap();
    }
    (schema, old)
}

/// The highest schema version applied to `schema`, whether `flext_positions` (the second
/// migration's table) exists, and the type of `flext_events.payload`.
async fn schema_state(old: &mut PgConnection, schema: &str) -> (i64, bool, String) {
    sqlx::query_as(
        "SELECT (SELECT MAX(version) FROM _sqlx_migrations), \
                to_regclass('flext_positions') IS NOT NULL, \
                (SELECT data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = 'flext_events' \
                 AND column_name = 'payload')",
    )
    .bind(schema)
    .fetch_one(old)
    .await
    .unwrap()
}

/// Checks that `store` reads back `rows`, in order and at their positions, the same
/// records the first schema kept (times as `recorded_at`, which has microseconds at most).
async fn reads_back(store: &PostgresEventStore, rows: &[OldRow]) {
    let last = rows.last().map_or(0, |row| row.position as u64);
    flext_testing::event_store::caught_up(store, last).await;
    let read = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(read.len(), rows.len());
    for (event, row) in read.iter().zip(rows) {
        assert_eq!(event.event_id.to_string(), row.event_id);
        assert_eq!(
            (&*event.stream_id, event.version, event.position),
            (row.stream_id, row.version as u64, row.position as u64)
        );
        assert_eq!(
            (&*event.event_type, i64::from(event.schema_version)),
            (row.event_type, row.schema_version)
        );
        assert_eq!(
            event.payload.decode::<serde_json::Value>().unwrap(),
            serde_json::from_str::<serde_json::Value>(&row.payload).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&*event.metadata).unwrap(),
            serde_json::from_str::<serde_json::Value>(&row.metadata).unwrap()
        );
        assert_eq!(
            event
                .timestamp
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
            row.recorded_at
        );
    }
}

/// The records of a store the first schema wrote are read back the same, in the same
/// order and at the same positions, after the store is opened by this version; its
/// snapshot, checkpoint and dead letter too; a new append comes after them and a
/// subscription from the start delivers all of them once, in order. Before, there was no
/// schema to upgrade to (the migrations to positions from transaction ids and to native
/// column types are new).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_first_schema_is_upgraded_in_place() {
    let Some(url) = url("upgrade in place") else {
        return;
    };
    let rows = old_rows();
    let (schema, mut old) = first_schema_store(&url, &rows).await;
    old.execute(
        "INSERT INTO flext_snapshots VALUES ('Order-1', 2, 1, '{\"total\":3}', '2026-03-04T05:06:07.5Z'); \
         INSERT INTO flext_checkpoints VALUES ('totals', 3)",
    )
    .await
    .unwrap();
    let letter = DeadLetter {
        position: 4,
        event_id: uuid::Uuid::parse_str(&rows[3].event_id).unwrap(),
        stream_id: "Order-2".to_owned(),
        event_type: "OrderPlaced".to_owned(),
        attempts: 3,
        error: FlextError::validation("bad"),
        parked_behind: None,
    };
    sqlx::query("INSERT INTO flext_dead_letters VALUES ('totals', 4, $1)")
        .bind(flext_store::dead_letter_text(&letter).unwrap())
        .execute(&mut old)
        .await
        .unwrap();
    old.close().await.unwrap();

    let options = PostgresStoreOptions::new(url).with_schema(schema.clone());
    let store = PostgresEventStore::connect_with(options)
        .await
        .expect("the store upgrades its schema");
    let payload_type: String = sqlx::query_scalar(
        "SELECT data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'flext_events' AND column_name = 'payload'",
    )
    .bind(&schema)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(payload_type, "jsonb", "the columns have their native types");
    reads_back(&store, &rows).await;
    assert_eq!(store.head_position().await.unwrap(), 5);
    let snapshot = store.load_snapshot("Order-1").await.unwrap().unwrap();
    assert_eq!((snapshot.version, snapshot.schema_version), (2, 1));
    assert_eq!(
        snapshot.payload.decode::<serde_json::Value>().unwrap(),
        json!({"total": 3})
    );
    assert_eq!(store.load_checkpoint("totals").await.unwrap(), Some(3));
    assert_eq!(store.dead_letters("totals").await.unwrap(), [letter]);

    // The streams go on where they were, and new positions come after the old ones.
    let appended = store
        .append(
            "Order-1",
            ExpectedVersion::Exact(3),
            vec![NewEvent::new(
                "OrderPlaced",
                JsonPayload::encode(&json!({"n": 6})).unwrap(),
            )],
        )
        .await
        .unwrap();
    assert_eq!(appended.first_version, 4);
    assert!(appended.first_position > 5, "{appended:?}");
    let mut live = store.subscribe(1).await.unwrap();
    let mut positions = Vec::new();
    while positions.len() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("every event in time")
            .unwrap()
            .unwrap();
        positions.push(event.position);
    }
    assert_eq!(positions, [1, 2, 3, 4, 5, appended.first_position]);
}

/// Rows our JSON decoder accepts but the native types refuse — a lone surrogate escape, a
/// number beyond `numeric`, a `\u0000`, a date that does not exist — make the upgrade
/// fail as a whole: a `SERIALIZATION_ERROR` naming each row (position, stream, version,
/// column, the server's reason), the store still at the first schema and its text
/// untouched, so the first version still opens it; once the rows are repaired, the
/// upgrade succeeds and the records read back as they were written. Before, the second
/// migration committed before the third failed: the store was left at schema version 2,
/// which the first version refuses as newer, with an error naming only a value.
#[tokio::test]
async fn a_row_the_native_types_refuse_fails_the_whole_upgrade_naming_it() {
    let Some(url) = url("upgrade refused rows") else {
        return;
    };
    let rows = old_rows();
    let (schema, mut old) = first_schema_store(&url, &rows).await;
    let corrupt = [
        (2, "payload", r#"{"text":"\ud800"}"#),
        (3, "payload", r#"{"n":1e200000}"#),
        (4, "metadata", r#"{"headers":{"tenant":"a\u0000b"}}"#),
        (5, "recorded_at", "2026-13-01T00:00:00Z"),
    ];
    for (position, column, value) in corrupt {
        let set = format!("UPDATE flext_events SET {column} = $1 WHERE position = $2");
        let updated = sqlx::query(&set).bind(value).bind(position);
        updated.execute(&mut old).await.unwrap();
    }
    for (_, _, value) in &corrupt[..3] {
        JsonPayload::from_text(*value).expect("our decoder accepts it");
    }

    let options = PostgresStoreOptions::new(url.clone()).with_schema(schema.clone());
    let error = PostgresEventStore::connect_with(options.clone())
        .await
        .expect_err("the rows do not convert");
    assert_eq!(error.code(), ErrorCode::SerializationError, "{error:?}");
    let message = error.message();
    for expected in [
        "cannot convert 4 rows",
        "the event at position 2 (stream Order-2, version 1): payload: ",
        "(SQLSTATE 22P02)",
        "the event at position 3 (stream Order-1, version 2): payload: ",
        "(SQLSTATE 22003)",
        "the event at position 4 (stream Order-2, version 2): metadata: ",
        "(SQLSTATE 22P05)",
        "the event at position 5 (stream Order-1, version 3): recorded_at: ",
        "(SQLSTATE 22008)",
        "the store was left as it was (schema version 1)",
        &schema,
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert_eq!(
        schema_state(&mut old, &schema).await,
        (1, false, "text".to_owned()),
        "nothing of the upgrade is kept"
    );
    let kept: String = sqlx::query_scalar("SELECT payload FROM flext_events WHERE position = 2")
        .fetch_one(&mut old)
        .await
        .unwrap();
    assert_eq!(kept, corrupt[0].2, "the row is as it was");
    Migrator::new(FirstSchema)
        .await
        .unwrap()
        .run(&mut old)
        .await
        .expect("the first version still opens the store");

    // Repaired, the rows convert and every record reads back as written.
    for row in &rows[1..] {
        sqlx::query(
            "UPDATE flext_events SET payload = $1, metadata = $2, recorded_at = $3 \
             WHERE position = $4",
        )
        .bind(&row.payload)
        .bind(&row.metadata)
        .bind(row.recorded_at)
        .bind(row.position)
        .execute(&mut old)
        .await
        .unwrap();
    }
    let store = PostgresEventStore::connect_with(options)
        .await
        .expect("the repaired store upgrades");
    assert_eq!(
        schema_state(&mut old, &schema).await,
        (4, true, "jsonb".to_owned())
    );
    reads_back(&store, &rows).await;
    old.close().await.unwrap();
}

/// Times with more than microseconds are cut to microseconds by the upgrade, as a fresh
/// append keeps them: the last nanoseconds of a year stay in that year. Before, the
/// server's conversion rounded them: 23:59:59.9999995 became midnight of the next year.
#[tokio::test]
async fn times_with_nanoseconds_are_cut_to_microseconds_by_the_upgrade() {
    let Some(url) = url("upgrade nanoseconds") else {
        return;
    };
    let mut rows = old_rows();
    rows.truncate(2);
    rows[0].recorded_at = "2026-12-31T23:59:59.9999995Z";
    rows[1].recorded_at = "2026-12-31T23:59:59.999999999Z";
    let (schema, mut old) = first_schema_store(&url, &rows).await;
    old.execute(
        "INSERT INTO flext_snapshots \
         VALUES ('Order-1', 1, 1, '{}', '2026-12-31T23:59:59.9999999Z')",
    )
    .await
    .unwrap();
    let options = PostgresStoreOptions::new(url).with_schema(schema.clone());
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    for row in &mut rows {
        row.recorded_at = "2026-12-31T23:59:59.999999Z";
    }
    reads_back(&store, &rows).await;
    let snapshot = store.load_snapshot("Order-1").await.unwrap().unwrap();
    let last = time::OffsetDateTime::parse(
        "2026-12-31T23:59:59.999999Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(snapshot.timestamp, last);

    // A fresh append keeps its time to the microsecond, within the moments around it.
    let before = time::OffsetDateTime::now_utc();
    store
        .append("fresh", ExpectedVersion::NoStream, vec![noted(json!(1))])
        .await
        .unwrap();
    let after = time::OffsetDateTime::now_utc();
    let fresh = store.read_stream("fresh", 1, 1).await.unwrap();
    let kept = fresh[0].timestamp;
    assert_eq!(kept.nanosecond() % 1_000, 0, "{kept}");
    assert!(
        before - Duration::from_micros(1) < kept && kept <= after,
        "{before} {kept} {after}"
    );
    old.close().await.unwrap();
}

fn noted(value: serde_json::Value) -> NewEvent {
    NewEvent::new("Noted", JsonPayload::encode(&value).unwrap())
}

/// The upgrade on open is bounded by the migration timeout: a table of a store of the
/// first schema held by another session, or the upgrade lock held by another replica,
/// makes the open a `TIMEOUT` naming the store and the limit within it, and the store is
/// left at the first schema; once the lock is gone, the open upgrades it. A migration
/// timeout of zero or beyond what the server keeps is an `INVALID_ARGUMENT` naming it.
/// Before, the upgrade set no limit and waited as long as the lock was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_waits_for_a_lock_at_most_the_migration_timeout() {
    let Some(url) = url("upgrade timeout") else {
        return;
    };
    let rows = old_rows();
    let (schema, mut old) = first_schema_store(&url, &rows).await;
    let bound = Duration::from_millis(300);
    let options = PostgresStoreOptions::new(url.clone())
        .with_schema(schema.clone())
        .with_migration_timeout(bound);
    for bad in [Duration::ZERO, Duration::from_secs(30 * 24 * 60 * 60)] {
        let error = PostgresEventStore::connect_with(options.clone().with_migration_timeout(bad))
            .await
            .expect_err("refused");
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error:?}");
        assert!(error.message().contains("migration_timeout"), "{error}");
    }

    let mut other = PgConnection::connect(&url).await.unwrap();
    let locks = [
        format!("LOCK TABLE \"{schema}\".flext_events IN ACCESS SHARE MODE"),
        format!(
            "SELECT pg_advisory_xact_lock(hashtext('flext-store-postgres upgrade'), \
             hashtext('{schema}'))"
        ),
    ];
    for lock in &locks {
        other.execute("BEGIN").await.unwrap();
        other.execute(lock.as_str()).await.unwrap();
        let started = Instant::now();
        let error = PostgresEventStore::connect_with(options.clone())
            .await
            .expect_err("the lock is held");
        let waited = started.elapsed();
        assert_eq!(error.code(), ErrorCode::Timeout, "{error:?}");
        assert!(
            error.message().contains(&schema)
                && error.message().contains("the upgrade on open timed out")
                && error
                    .message()
                    .contains("(the migration timeout is 300 ms)"),
            "{error}"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(
            schema_state(&mut old, &schema).await,
            (1, false, "text".to_owned())
        );
        other.execute("ROLLBACK").await.unwrap();
    }
    let store = PostgresEventStore::connect_with(options)
        .await
        .expect("the upgrade goes through once the locks are gone");
    reads_back(&store, &rows).await;
    other.close().await.unwrap();
    old.close().await.unwrap();
}

/// An open whose position offset needs no move takes no lock on the events, so it does not
/// wait for a transaction that is still inserting: here a restored event far ahead of the
/// transaction ids, which the open cannot see. Once that commits, the next append is
/// refused with a `STORAGE_ERROR` saying to open the store again, and stores nothing; the
/// next open moves the offset on (under a `SHARE` lock on the events) and appends land
/// above the restored event. (Every open used to take that lock, so starting a replica
/// paused the others' appends behind any open transaction on the events.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_restored_during_an_open_is_passed_at_the_next_open() {
    let Some(url) = url("rebase under way") else {
        return;
    };
    let rows = old_rows();
    let (schema, mut old) = first_schema_store(&url, &rows[..1]).await;
    let options = PostgresStoreOptions::new(url.clone()).with_schema(schema.clone());
    drop(
        PostgresEventStore::connect_with(options.clone())
            .await
            .unwrap(),
    );

    old.execute("BEGIN").await.unwrap();
    let ahead = crate::restore_ahead(&mut old).await;
    let store = tokio::time::timeout(
        Duration::from_secs(5),
        PostgresEventStore::connect_with(options.clone()),
    )
    .await
    .expect("the open does not wait for the insert")
    .unwrap();
    old.execute("COMMIT").await.unwrap();

    let error = store
        .append("after", ExpectedVersion::NoStream, vec![noted(json!(2))])
        .await
        .expect_err("the positions would not follow the restored event");
    assert_eq!(error.code(), ErrorCode::StorageError, "{error}");
    assert!(
        error.message().contains("open the store again") && error.message().contains(&schema),
        "{error}"
    );
    assert!(store.read_stream("after", 1, 10).await.unwrap().is_empty());

    let reopened = PostgresEventStore::connect_with(options).await.unwrap();
    let after = reopened
        .append("after", ExpectedVersion::NoStream, vec![noted(json!(2))])
        .await
        .expect("the offset moved past the restored event");
    assert!(after.first_position > ahead as u64, "{after:?} {ahead}");
    old.close().await.unwrap();
}

/// A store the third migration upgraded as it first shipped (rounding times) opens with
/// this version, which cuts them instead: the migration keeps its first checksum, so
/// sqlx does not refuse the store as changed, and the missing fourth migration is applied.
#[tokio::test]
async fn a_store_the_third_migration_upgraded_as_first_shipped_still_opens() {
    let Some(url) = url("third as shipped") else {
        return;
    };
    let mut rows = old_rows();
    rows.truncate(2);
    rows[1].recorded_at = "2026-12-31T23:59:59.9999995Z";
    let (schema, mut old) = first_schema_store(&url, &rows).await;
    Migrator::new(ThirdSchemaAsShipped)
        .await
        .unwrap()
        .run(&mut old)
        .await
        .unwrap();
    let options = PostgresStoreOptions::new(url).with_schema(schema.clone());
    let store = PostgresEventStore::connect_with(options)
        .await
        .expect("the third migration's checksum is the one it shipped with");
    assert_eq!(
        schema_state(&mut old, &schema).await,
        (4, true, "jsonb".to_owned())
    );
    // That version rounded: its times stay as it converted them.
    rows[1].recorded_at = "2027-01-01T00:00:00Z";
    reads_back(&store, &rows).await;
    old.close().await.unwrap();
}
