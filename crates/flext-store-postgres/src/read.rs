//! Reads and live subscriptions of a [`PostgresEventStore`]: the event store contract.

use async_trait::async_trait;
use flext_protocols::{EventStore, EventStream};
use flext_store::{EVENT_COLUMNS, EventColumns, RawEvent, follow, signed, unsigned};
use flext_types::{AppendResult, ExpectedVersion, FlextError, FlextResult, NewEvent, StoredEvent};

use crate::PostgresEventStore;
use crate::schema::DATABASE;

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        self.append_now(stream_id, expected, events).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM flext_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
        );
        self.read(&sql, Some(stream_id), from_version, limit).await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM flext_events WHERE position >= $1 ORDER BY position LIMIT $2"
        );
        self.read(&sql, None, from_position, limit).await
    }

    async fn stream_version(&self, stream_id: &str) -> FlextResult<u64> {
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| self.fail("cannot read the stream version", e))?;
        Ok(unsigned(version))
    }

    async fn head_position(&self) -> FlextResult<u64> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM flext_events")
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| self.fail("cannot read the head position", e))?;
        Ok(unsigned(head))
    }

    async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream> {
        // Woken by notifications; polling covers a dropped listener connection.
        Ok(follow(
            self.clone(),
            from_position,
            &self.inner.head,
            self.inner.poll_interval,
        ))
    }
}

impl PostgresEventStore {
    pub(crate) async fn read(
        &self,
        sql: &str,
        key: Option<&str>,
        from: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query = sqlx::query_as(sql);
        let query = match key {
            Some(stream) => query.bind(stream),
            None => query,
        };
        let rows: Vec<EventColumns> = query
            .bind(signed(from.max(1), DATABASE)?)
            .bind(limit)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail_read(e))?;
        rows.into_iter()
            .map(|row| RawEvent::from(row).decode())
            .collect()
    }

    /// A read that failed: a column that does not decode is a corrupt row
    /// (`SERIALIZATION_ERROR`), anything else a `STORAGE_ERROR`.
    fn fail_read(&self, error: sqlx::Error) -> FlextError {
        match error {
            sqlx::Error::ColumnDecode { .. } => {
                FlextError::serialization(format!("Stored event row does not read: {error}"))
            }
            error => self.fail("cannot read events", error),
        }
    }
}
