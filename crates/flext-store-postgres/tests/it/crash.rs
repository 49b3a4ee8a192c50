//! Crash safety: a child process appends in a loop, reporting each acknowledged append; it
//! is killed with SIGKILL mid-stream; every acknowledged event must be there, no batch
//! partial and no position skipped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flext_protocols::EventStore;
use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};

use crate::url;

const CHILD_ENV: &str = "FLEXT_POSTGRES_CRASH_CHILD_SCHEMA";
const BATCH: usize = 3;

async fn open(url: String, schema: &str) -> PostgresEventStore {
    PostgresEventStore::connect_with(PostgresStoreOptions::new(url).with_schema(schema))
        .await
        .expect("the store connects")
}

/// In the child: append batches until killed, printing each acknowledged batch number.
#[tokio::test]
async fn crash_writer_child() {
    let Ok(schema) = std::env::var(CHILD_ENV) else {
        return; // Only the crash test runs this, in a child process.
    };
    let store = open(
        url("crash child").expect("the parent sets the URL"),
        &schema,
    )
    .await;
    for batch in 0u64.. {
        let events = (0..BATCH)
            .map(|i| {
                NewEvent::new(
                    "Tick",
                    JsonPayload::encode(&serde_json::json!({"batch": batch, "i": i})).unwrap(),
                )
            })
            .collect();
        store
            .append(&format!("batch-{batch}"), ExpectedVersion::NoStream, events)
            .await
            .expect("append");
        println!("acked {batch}");
    }
}

#[tokio::test]
async fn acknowledged_appends_survive_a_sigkill_and_no_batch_is_partial() {
    let Some(url) = url("crash safety") else {
        return;
    };
    let schema = format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    // Create the schema first, so the child only appends.
    drop(open(url.clone(), &schema).await);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_writer_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &schema)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked.push(n.parse::<u64>().unwrap());
        }
        if acked.len() >= 100 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    assert!(
        acked.len() >= 20,
        "the child acknowledged {} batches",
        acked.len()
    );

    let store = open(url, &schema).await;
    for batch in &acked {
        let events = store
            .read_stream(&format!("batch-{batch}"), 1, 10)
            .await
            .unwrap();
        assert_eq!(
            events.len(),
            BATCH,
            "acknowledged batch {batch} is all there"
        );
    }
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all.len() % BATCH, 0, "no batch is partial");
    assert!(
        all.windows(2).all(|w| w[1].position == w[0].position + 1),
        "positions have no gaps"
    );
    // A new append after the crash continues right after the last committed position.
    let next = store
        .append(
            "after-crash",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Tick", JsonPayload::encode(&1).unwrap())],
        )
        .await
        .unwrap();
    assert_eq!(next.first_position, all.len() as u64 + 1);
}
