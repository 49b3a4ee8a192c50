//! The `--store` flag of the event-sourcing program: which event store to run on.

use std::sync::Arc;

use flext_handlers::prelude::*;
use flext_handlers::stores::{PostgresEventStore, PostgresStoreOptions, SqliteEventStore, redact};

/// Where the events go.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// `memory` (the default): an in-memory store, gone when the program ends.
    Memory,
    /// `sqlite:PATH`: a SQLite file (created when missing) or `sqlite::memory:`.
    Sqlite(String),
    /// `postgres:URL` or `postgres:URL#SCHEMA`: a PostgreSQL server, tables in `SCHEMA`
    /// (default `public`).
    Postgres {
        /// The server URL.
        url: String,
        /// The schema that holds the tables.
        schema: String,
    },
}

impl std::fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres { url, schema } => f
                .debug_struct("Postgres")
                .field("url", &redact(url))
                .field("schema", schema)
                .finish(),
        }
    }
}

impl StoreChoice {
    /// Reads the value of `--store`; a bad value is a `VALIDATION_ERROR` naming it and the
    /// accepted forms.
    pub fn parse(value: &str) -> FlextResult<Self> {
        let invalid = |why: &str| {
            FlextError::validation(format!(
                "--store {value:?}: {why}; expected memory, sqlite:PATH or postgres:URL[#SCHEMA]"
            ))
        };
        if value == "memory" {
            return Ok(Self::Memory);
        }
        if let Some(path) = value.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(invalid("the SQLite path is empty"));
            }
            return Ok(Self::Sqlite(path.to_owned()));
        }
        if let Some(rest) = value.strip_prefix("postgres:") {
            let (url, schema) = match rest.rsplit_once('#') {
                Some((url, schema)) => (url, schema),
                None => (rest, "public"),
            };
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return Err(invalid("the PostgreSQL URL must start with postgres://"));
            }
            if schema.is_empty() {
                return Err(invalid("the schema after # is empty"));
            }
            return Ok(Self::Postgres {
                url: url.to_owned(),
                schema: schema.to_owned(),
            });
        }
        Err(invalid("unknown store"))
    }

    /// Reads `--store VALUE` or `--store=VALUE` from the program's arguments (without the
    /// program name); no flag means [`StoreChoice::Memory`].
    pub fn from_args(args: impl IntoIterator<Item = String>) -> FlextResult<Self> {
        let mut args = args.into_iter();
        let mut choice = Self::Memory;
        while let Some(arg) = args.next() {
            if arg == "--store" {
                let value = args
                    .next()
                    .ok_or_else(|| FlextError::validation("--store needs a value"))?;
                choice = Self::parse(&value)?;
            } else if let Some(value) = arg.strip_prefix("--store=") {
                choice = Self::parse(value)?;
            } else {
                return Err(FlextError::validation(format!(
                    "unknown argument {arg:?}; the only flag is --store"
                )));
            }
        }
        Ok(choice)
    }

    /// Opens (or connects to) the chosen store.
    pub async fn open(&self) -> FlextResult<Arc<dyn EventStore>> {
        Ok(match self {
            Self::Memory => Arc::new(InMemoryEventStore::new()),
            Self::Sqlite(path) => Arc::new(SqliteEventStore::open(path).await?),
            Self::Postgres { url, schema } => Arc::new(
                PostgresEventStore::connect_with(
                    PostgresStoreOptions::new(url.clone()).with_schema(schema.clone()),
                )
                .await?,
            ),
        })
    }

    /// A one-line description for the program's output (passwords redacted).
    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "in memory".to_owned(),
            Self::Sqlite(path) => format!("SQLite at {path}"),
            Self::Postgres { url, schema } => {
                format!("PostgreSQL at {}, schema {schema}", redact(url))
            }
        }
    }
}
