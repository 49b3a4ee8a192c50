//! A store written by the first schema (positions from 1 without gaps, every column but
//! the integers `TEXT`), opened by this version: migrated in place, it reads back the same
//! records in the same order, and new events come after the old ones.

use std::borrow::Cow;
use std::time::Duration;

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
    let schema = format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let mut old = PgConnection::connect(&url).await.unwrap();
    let prepare = format!("CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\"");
    old.execute(prepare.as_str()).await.unwrap();
    Migrator::new(FirstSchema)
        .await
        .unwrap()
        .run(&mut old)
        .await
        .unwrap();
    let rows = old_rows();
    for row in &rows {
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
    flext_testing::event_store::caught_up(&store, 5).await;
    let read = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(read.len(), rows.len());
    for (event, row) in read.iter().zip(&rows) {
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
