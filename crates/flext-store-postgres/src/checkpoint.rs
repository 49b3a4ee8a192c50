//! Snapshots, checkpoints and dead letters of a [`PostgresEventStore`].

use async_trait::async_trait;
use flext_protocols::{CheckpointStore, SnapshotStore};
use flext_store::{
    RawSnapshot, SnapshotColumns, dead_letter_text, decode_dead_letters, signed, unsigned,
};
use flext_types::{DeadLetter, FlextResult, Snapshot};

use crate::PostgresEventStore;
use crate::schema::DATABASE;

#[async_trait]
impl SnapshotStore for PostgresEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> FlextResult<()> {
        let row = RawSnapshot::encode(&snapshot, DATABASE)?;
        sqlx::query(
            "INSERT INTO flext_snapshots (stream_id, version, schema_version, payload, taken_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version,
                 payload = excluded.payload, taken_at = excluded.taken_at
             WHERE excluded.version >= flext_snapshots.version",
        )
        .bind(row.stream_id)
        .bind(row.version)
        .bind(row.schema_version)
        .bind(row.payload)
        .bind(row.taken_at)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.fail("cannot save a snapshot", e))?;
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: &str) -> FlextResult<Option<Snapshot>> {
        let sql = "SELECT version, schema_version, payload, taken_at FROM flext_snapshots WHERE stream_id = $1";
        let row: Option<SnapshotColumns> = sqlx::query_as(sql)
            .bind(stream_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| self.fail("cannot load a snapshot", e))?;
        row.map(|row| RawSnapshot::from_columns(stream_id, row).decode())
            .transpose()
    }
}

#[async_trait]
impl CheckpointStore for PostgresEventStore {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM flext_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(|e| self.fail("cannot load a checkpoint", e))?;
        Ok(position.map(unsigned))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        let mut connection = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|e| self.fail("cannot save a checkpoint", e))?;
        Self::save_checkpoint_in(&mut connection, name, position).await
    }

    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        let text = dead_letter_text(&letter)?;
        sqlx::query("INSERT INTO flext_dead_letters (name, position, letter) VALUES ($1, $2, $3) ON CONFLICT (name, position) DO UPDATE SET letter = excluded.letter")
            .bind(name)
            .bind(signed(letter.position, DATABASE)?)
            .bind(text)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| self.fail("cannot add a dead letter", e))?;
        Ok(())
    }

    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
        let letters: Vec<String> = sqlx::query_scalar(
            "SELECT letter FROM flext_dead_letters WHERE name = $1 ORDER BY position",
        )
        .bind(name)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.fail("cannot read dead letters", e))?;
        decode_dead_letters(&letters)
    }

    async fn reset(&self, name: &str) -> FlextResult<()> {
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| self.fail("cannot reset", e))?;
        for sql in [
            "DELETE FROM flext_checkpoints WHERE name = $1",
            "DELETE FROM flext_dead_letters WHERE name = $1",
        ] {
            sqlx::query(sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.fail("cannot reset", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.fail("cannot reset", e))?;
        Ok(())
    }
}
