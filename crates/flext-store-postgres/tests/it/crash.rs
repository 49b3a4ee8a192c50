//! Crash safety: a child process appends in a loop, reporting each acknowledged append; it
//! is killed with SIGKILL mid-stream; every acknowledged event must be there, no batch
//! partial and no position skipped.

use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};

use crate::url;

/// A fresh schema, created first so that the child only appends; `None` without a server.
async fn prepare() -> Option<String> {
    let schema = format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    url("crash safety")?;
    drop(open(schema.clone()).await);
    Some(schema)
}

async fn open(schema: String) -> PostgresEventStore {
    let url = url("crash child").expect("the parent sets the URL");
    PostgresEventStore::connect_with(PostgresStoreOptions::new(url).with_schema(schema))
        .await
        .expect("the store connects")
}

flext_testing::crash_test!(
    env: "FLEXT_POSTGRES_CRASH_CHILD_SCHEMA",
    prepare: prepare,
    open: open,
    acks: 20..=100
);
