//! Integration tests of the PostgreSQL store. They need `FLEXT_TEST_POSTGRES_URL`; without it
//! each test says it was skipped. Every test works in a schema of its own.

mod appends;
mod concurrent_open;
mod conformance;
mod crash;
mod leases;
mod projection;
mod redaction;
mod specifics;
mod upgrade;

use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};

/// The test server's URL, or `None` (after saying so) when it is not configured.
pub(crate) fn url(test: &str) -> Option<String> {
    match std::env::var("FLEXT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped {test}: FLEXT_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A store in a fresh schema of the test server.
pub(crate) async fn fresh(test: &str) -> Option<PostgresEventStore> {
    let url = url(test)?;
    let schema = format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let options = PostgresStoreOptions::new(url).with_schema(schema);
    Some(
        PostgresEventStore::connect_with(options)
            .await
            .expect("the test server is reachable"),
    )
}

/// Inserts, on `connection` (in its transaction, if it has one), an event of stream
/// `restored` at a position far ahead of what the cluster's transaction ids give, as a
/// dump restored from another cluster leaves; returns that position.
pub(crate) async fn restore_ahead(connection: &mut sqlx::PgConnection) -> i64 {
    let ahead: i64 = sqlx::query_scalar(
        "SELECT ((pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000) << 20) + 1",
    )
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO flext_events (event_id, stream_id, version, position, event_type, \
         schema_version, payload, metadata, recorded_at) \
         VALUES ($1::uuid, 'restored', 1, $2, 'Noted', 1, '1', '{}', now())",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(ahead)
    .execute(&mut *connection)
    .await
    .unwrap();
    ahead
}
