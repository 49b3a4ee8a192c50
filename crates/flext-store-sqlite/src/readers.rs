//! The store's read connections: rusqlite connections kept for reuse, each used inside a
//! blocking task (`tokio::task::spawn_blocking`) for one call, at most `max_connections`
//! at a time (the others wait their turn). In WAL mode a reader waits
//! for no writer; an in-memory database's readers share its cache with the writer and wait
//! for its commit (SQLite's unlock notification).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_types::{FlextError, FlextResult};
use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::lite::Database;
use crate::schema::storage;

/// The read connections of one store.
#[derive(Debug)]
pub(crate) struct Readers {
    database: Database,
    busy_timeout: Duration,
    path: String,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    /// One permit per read running: reads beyond `keep` wait instead of opening more
    /// connections.
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Read connections to `database` (`path` names it in errors): up to `keep` at once,
    /// kept idle between calls.
    pub(crate) fn new(
        database: Database,
        busy_timeout: Duration,
        path: String,
        keep: usize,
    ) -> Self {
        Self {
            database,
            busy_timeout,
            path,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
            permits: Arc::new(Semaphore::new(keep.max(1))),
        }
    }

    /// Runs `read` on a read connection in a blocking task; its failure is a
    /// `STORAGE_ERROR` saying `what` failed.
    pub(crate) async fn run<T, F>(
        self: &std::sync::Arc<Self>,
        what: &str,
        read: F,
    ) -> FlextResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = std::sync::Arc::clone(self);
        // Held until the blocking task ends, even when this future is dropped first.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| FlextError::storage(format!("SQLite store {}: {what}: {e}", self.path)))?;
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let connection = match readers.take() {
                Ok(connection) => connection,
                Err(error) => return Err((Some("cannot open a read connection"), error)),
            };
            let result = read(&connection);
            readers.give_back(connection);
            result.map_err(|error| (None, error))
        })
        .await;
        match done {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((opening, error))) => Err(storage(&self.path, opening.unwrap_or(what), error)),
            Err(error) => Err(FlextError::storage(format!(
                "SQLite store {}: {what}: the read task failed: {error}",
                self.path
            ))),
        }
    }

    /// An idle connection, or a new one.
    fn take(&self) -> rusqlite::Result<Connection> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(connection) => Ok(connection),
            None => self.database.connect(self.busy_timeout),
        }
    }

    /// Keeps `connection` for the next call, unless enough are kept (it closes). One left
    /// in a transaction (a failed multi-statement write) is rolled back first.
    fn give_back(&self, connection: Connection) {
        if !connection.is_autocommit() && connection.execute_batch("ROLLBACK").is_err() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.keep
        {
            idle.push(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_beyond_the_limit_wait_for_a_connection() {
        let path =
            std::env::temp_dir().join(format!("flext-sqlite-readers-{}.db", std::process::id()));
        let readers = Arc::new(Readers::new(
            Database::File(path.clone()),
            Duration::from_secs(1),
            path.display().to_string(),
            2,
        ));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let (readers, running, most) = (readers.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    readers
                        .run("read", move |connection| {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                            connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                        })
                        .await
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), 1);
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "two reads at a time, no more"
        );
        assert!(readers.idle.lock().unwrap().len() <= 2);
        let _ = std::fs::remove_file(path);
    }
}
