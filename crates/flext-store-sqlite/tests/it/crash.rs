//! Crash safety: a child process appends in a loop, reporting each acknowledged append; it
//! is killed with SIGKILL; every acknowledged event must be there, and no batch partial.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flext_protocols::EventStore;
use flext_store_sqlite::SqliteEventStore;
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};

const CHILD_ENV: &str = "FLEXT_SQLITE_CRASH_CHILD_DB";
const BATCH: usize = 3;

/// In the child: append batches until killed, printing each acknowledged batch number.
#[tokio::test]
async fn crash_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // Only the crash test runs this, in a child process.
    };
    let store = SqliteEventStore::open(&path)
        .await
        .expect("the child opens the store");
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
    let path = crate::temp_path();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_writer_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
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
        if acked.len() >= 200 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    assert!(
        acked.len() >= 50,
        "the child acknowledged {} batches",
        acked.len()
    );

    let store = SqliteEventStore::open(&path)
        .await
        .expect("the store reopens after the kill");
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
}
