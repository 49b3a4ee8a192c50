//! The store's own rusqlite connections (the writer thread's and the readers'): which
//! database they open, how, and the rows they return to the shared contract code.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flext_store::{Arg, SqlConnection, SqlRow};
use flext_types::{FlextError, FlextResult};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::schema::storage;

/// Numbers the in-memory databases of this process, so each `:memory:` store has its own.
static MEMORY_DATABASES: AtomicU64 = AtomicU64::new(0);

/// The database a store's connections open: a file, or one in-memory database shared by
/// every connection of the store (sqlx's pool, the writer, the readers) through SQLite's
/// shared cache, under a name of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Database {
    /// A database file.
    File(PathBuf),
    /// A named in-memory database in shared-cache mode (`file:NAME`, opened with
    /// `SQLITE_OPEN_MEMORY`): it lives while one of its connections is open.
    Memory(String),
}

impl Database {
    /// A fresh in-memory database, named after the process and a counter.
    pub(crate) fn memory() -> Self {
        let n = MEMORY_DATABASES.fetch_add(1, Ordering::Relaxed);
        Self::Memory(format!("file:flext-memory-{}-{n}", std::process::id()))
    }

    /// A new connection, waiting up to `busy_timeout` for another writer, committing with
    /// `synchronous = NORMAL` (in WAL mode, which the file keeps). The connection is used
    /// by one thread at a time, so SQLite's own mutex is left out.
    pub(crate) fn connect(&self, busy_timeout: Duration) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = match self {
            Self::File(path) => Connection::open_with_flags(path, flags)?,
            Self::Memory(name) => Connection::open_with_flags(
                name,
                flags | OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE,
            )?,
        };
        connection.busy_timeout(busy_timeout)?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.set_prepared_statement_cache_capacity(32);
        Ok(connection)
    }
}

/// A row read by one of the store's rusqlite connections: its values, by column.
#[derive(Debug)]
pub(crate) struct Row(Vec<Value>);

impl SqlRow for Row {
    fn int(&self, index: usize) -> FlextResult<i64> {
        match self.0.get(index) {
            Some(Value::Integer(value)) => Ok(*value),
            other => Err(unreadable(index, "an integer", other)),
        }
    }

    fn text(&self, index: usize) -> FlextResult<String> {
        match self.0.get(index) {
            Some(Value::Text(text)) => Ok(text.clone()),
            other => Err(unreadable(index, "text", other)),
        }
    }
}

/// The `SERIALIZATION_ERROR` of column `index` that is not `wanted`.
fn unreadable(index: usize, wanted: &str, found: Option<&Value>) -> FlextError {
    let found = match found {
        None => "no such column",
        Some(Value::Null) => "NULL",
        Some(Value::Integer(_)) => "an integer",
        Some(Value::Real(_)) => "a real number",
        Some(Value::Text(_)) => "text",
        Some(Value::Blob(_)) => "a blob",
    };
    FlextError::serialization(format!("Column {index} is {found}, not {wanted}"))
}

/// `args` as rusqlite values, owned (to cross into a blocking task).
pub(crate) fn values(args: &[Arg<'_>]) -> Vec<Value> {
    args.iter()
        .map(|arg| match *arg {
            Arg::Int(value) => Value::Integer(value),
            Arg::Text(text) => Value::Text(text.to_owned()),
        })
        .collect()
}

/// The rows of `sql` with `args` on `connection` (a cached statement).
pub(crate) fn fetch_rows(
    connection: &Connection,
    sql: &str,
    args: &[Value],
) -> rusqlite::Result<Vec<Row>> {
    let mut statement = connection.prepare_cached(sql)?;
    let columns = statement.column_count();
    let mut rows = statement.query(rusqlite::params_from_iter(args))?;
    let mut read = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for index in 0..columns {
            values.push(row.get::<_, Value>(index)?);
        }
        read.push(Row(values));
    }
    Ok(read)
}

/// The writer's connection inside its transaction, as the shared retry rules
/// (`flext_store::find_retry`) read it: each fetch runs at once, so its future is ready
/// when made and [`at_once`] takes its output without an executor.
pub(crate) struct InTransaction<'c> {
    pub(crate) connection: &'c mut Connection,
    pub(crate) path: &'c str,
}

impl SqlConnection for InTransaction<'_> {
    type Row = Row;

    fn fetch(
        &mut self,
        what: &str,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = FlextResult<Vec<Row>>> + Send {
        let rows = fetch_rows(self.connection, sql, &values(args))
            .map_err(|e| storage(self.path, what, e));
        std::future::ready(rows)
    }
}

/// The output of `future`, which must be ready at its first poll (its reads ran on a
/// rusqlite connection before it was made). One that is not is a `STORAGE_ERROR`, never a
/// hang.
pub(crate) fn at_once<T>(future: impl Future<Output = FlextResult<T>>) -> FlextResult<T> {
    use std::task::{Context, Poll, Waker};

    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => Err(FlextError::storage(
            "SQLite store: a lookup of the writer thread did not finish at once",
        )),
    }
}
