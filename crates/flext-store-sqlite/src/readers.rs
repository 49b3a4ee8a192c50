//! The store's read connections: rusqlite connections kept for reuse, each used inside a
//! blocking task (`tokio::task::spawn_blocking`) for one call. In WAL mode a reader waits
//! for no writer; an in-memory database's readers share its cache with the writer and wait
//! for its commit (SQLite's unlock notification).

use std::sync::Mutex;
use std::time::Duration;

use flext_types::{FlextError, FlextResult};
use rusqlite::Connection;

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
}

impl Readers {
    /// Read connections to `database` (`path` names it in errors), keeping up to `keep`
    /// idle ones between calls.
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
        let done = tokio::task::spawn_blocking(move || {
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
