//! The store a soak runs on: in memory, a SQLite file in a directory of its own, or a
//! PostgreSQL schema of its own; each removed at the end.

use std::path::PathBuf;
use std::sync::Arc;

use flext_handlers::Protocols::CheckpointStore;
use flext_handlers::prelude::*;
use flext_handlers::stores::{PostgresEventStore, PostgresStoreOptions, SqliteEventStore, redact};

/// The environment variable naming the PostgreSQL server of a `postgres` soak.
pub const POSTGRES_URL_VAR: &str = "FLEXT_TEST_POSTGRES_URL";

/// Which store to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// [`InMemoryEventStore`].
    Memory,
    /// A SQLite file in a fresh directory under the system's temporary directory.
    Sqlite,
    /// A fresh schema on the server named by `FLEXT_TEST_POSTGRES_URL`.
    Postgres,
}

impl StoreKind {
    /// Reads `memory`, `sqlite` or `postgres`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "memory" => Some(Self::Memory),
            "sqlite" => Some(Self::Sqlite),
            "postgres" => Some(Self::Postgres),
            _ => None,
        }
    }

    /// The kind's name, as `parse` reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// An opened store: events and checkpoints (the same store), and what to remove at the
/// end.
pub(super) struct Opened {
    /// The event store.
    pub(super) events: Arc<dyn EventStore>,
    /// The same store, as the checkpoint store of the projection and the relay.
    pub(super) checkpoints: Arc<dyn CheckpointStore>,
    /// Where it is, for the report.
    pub(super) description: String,
    cleanup: Cleanup,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

enum Cleanup {
    Nothing,
    Directory(PathBuf),
    Schema { url: String, schema: String },
}

/// Opens a fresh store of `kind`. A `postgres` store without `FLEXT_TEST_POSTGRES_URL` is
/// an `INVALID_ARGUMENT` naming the variable.
pub(super) async fn open(kind: StoreKind) -> FlextResult<Opened> {
    let unique = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis())
    );
    match kind {
        StoreKind::Memory => {
            let store = Arc::new(InMemoryEventStore::new());
            Ok(Opened {
                events: store.clone(),
                checkpoints: store,
                description: "in memory".to_owned(),
                cleanup: Cleanup::Nothing,
            })
        }
        StoreKind::Sqlite => {
            let directory = std::env::temp_dir().join(format!("flext-soak-{unique}"));
            std::fs::create_dir_all(&directory).map_err(|e| {
                FlextError::storage(format!("cannot create {}: {e}", directory.display()))
            })?;
            let path = directory.join("events.db");
            let store = Arc::new(SqliteEventStore::open(&path).await?);
            Ok(Opened {
                events: store.clone(),
                checkpoints: store,
                description: format!("SQLite file {}", path.display()),
                cleanup: Cleanup::Directory(directory),
            })
        }
        StoreKind::Postgres => {
            let url = std::env::var(POSTGRES_URL_VAR).map_err(|_| {
                FlextError::invalid_argument(format!(
                    "--store postgres needs {POSTGRES_URL_VAR}, for example \
                     postgres://postgres@127.0.0.1:5432/test"
                ))
            })?;
            let schema = format!("flext_soak_{unique}");
            let store = Arc::new(
                PostgresEventStore::connect_with(
                    PostgresStoreOptions::new(url.clone()).with_schema(schema.clone()),
                )
                .await?,
            );
            Ok(Opened {
                events: store.clone(),
                checkpoints: store,
                description: format!("PostgreSQL {}, schema {schema}", redact(&url)),
                cleanup: Cleanup::Schema { url, schema },
            })
        }
    }
}

impl Opened {
    /// Closes the store and removes what it wrote: the SQLite directory, or the PostgreSQL
    /// schema (with `psql`, since only the store adapters speak SQL). Returns a note when
    /// something is left behind.
    pub(super) fn remove(self) -> Option<String> {
        let Self {
            events,
            checkpoints,
            cleanup,
            ..
        } = self;
        drop((events, checkpoints));
        match cleanup {
            Cleanup::Nothing => None,
            Cleanup::Directory(directory) => std::fs::remove_dir_all(&directory)
                .err()
                .map(|e| format!("could not remove {}: {e}", directory.display())),
            Cleanup::Schema { url, schema } => {
                let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                let dropped = std::process::Command::new("psql")
                    .args([url.as_str(), "-q", "-c", sql.as_str()])
                    .output();
                match dropped {
                    Ok(output) if output.status.success() => None,
                    _ => Some(format!(
                        "could not drop the schema with psql; run `{sql}` on {}",
                        redact(&url)
                    )),
                }
            }
        }
    }
}
