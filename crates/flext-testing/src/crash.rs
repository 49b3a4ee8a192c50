//! The SIGKILL crash test of a durable store: the test binary runs itself as a writer child
//! that appends batches and reports each acknowledged one, the parent kills it mid-stream,
//! reopens the store and checks that every acknowledged batch is whole, none is partial and
//! positions still increase.
//!
//! [`crash_test!`](crate::crash_test) writes both tests in a store's `tests/it/crash.rs`;
//! the functions here are what they run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flext_protocols::EventStore;
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};

/// Events per batch the child appends, each batch to a stream of its own (`batch-{n}`).
pub const BATCH: usize = 3;

/// How long the parent reads acknowledgements before it kills the child anyway.
const READ_FOR: Duration = Duration::from_secs(20);

/// In the child: appends batches to `store` until killed, printing `acked {n}` once batch
/// `n` is acknowledged.
pub async fn write_until_killed(store: &impl EventStore) {
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

/// In the parent: runs this test binary's `child_test` alone, with `env` set to `place`
/// (where the store is), reads its acknowledgements until there are `most` (or 20 s have
/// passed), SIGKILLs it and returns the acknowledged batch numbers, after checking there
/// are at least `least`.
pub fn kill_writer_child(
    child_test: &str,
    env: &str,
    place: &str,
    least: usize,
    most: usize,
) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child_test, "--nocapture", "--test-threads", "1"])
        .env(env, place)
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
        if acked.len() >= most || started.elapsed() > READ_FOR {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    assert!(
        acked.len() >= least,
        "the child acknowledged {} batches",
        acked.len()
    );
    acked
}

/// In the parent, on the reopened store: every acknowledged batch is all there, no batch is
/// partial, positions strictly increase with each batch's adjacent, and a new append comes
/// after every committed position. (Positions need not be dense: PostgreSQL's come from
/// transaction ids.)
pub async fn check_after_the_kill(store: &impl EventStore, acked: &[u64]) {
    let mut highest = 0;
    for batch in acked {
        let events = store
            .read_stream(&format!("batch-{batch}"), 1, 10)
            .await
            .unwrap();
        assert_eq!(
            events.len(),
            BATCH,
            "acknowledged batch {batch} is all there"
        );
        highest = events.iter().map(|e| e.position).fold(highest, u64::max);
    }
    // The killed child's open transaction ends when the server sees its connection drop;
    // a store with a read barrier shows the log up to it only then.
    crate::event_store::caught_up(store, highest).await;
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all.len() % BATCH, 0, "no batch is partial");
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions strictly increase"
    );
    for chunk in all.chunks(BATCH) {
        assert!(
            chunk.iter().all(|e| e.stream_id == chunk[0].stream_id)
                && chunk[BATCH - 1].position == chunk[0].position + BATCH as u64 - 1,
            "a batch's positions are adjacent"
        );
    }
    let next = store
        .append(
            "after-crash",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Tick", JsonPayload::encode(&1).unwrap())],
        )
        .await
        .unwrap();
    let last = all.last().map_or(0, |e| e.position);
    assert!(
        next.first_position > last,
        "a new append ({}) comes after every committed position ({last})",
        next.first_position
    );
}

/// Writes a store's crash test: `crash_writer_child` (which does nothing unless `$env` is
/// set, so only the crash test's child runs it) and
/// `acknowledged_appends_survive_a_sigkill_and_no_batch_is_partial`.
///
/// - `$env`: the variable that tells the child where the store is;
/// - `$prepare`: an async fn returning `Option<String>`, that place (created, so the child
///   only appends), or `None` to skip;
/// - `$open`: an async fn opening the store at a place;
/// - `$least ..= $most`: how many acknowledged batches the parent waits for, at least and
///   at most.
///
/// Invoke it in a module named `crash` of the integration-test binary; the calling crate
/// needs `tokio` with the `macros` feature.
#[macro_export]
macro_rules! crash_test {
    (env: $env:expr, prepare: $prepare:path, open: $open:path, acks: $least:literal ..= $most:literal) => {
        /// In the child: append batches until killed, printing each acknowledged batch.
        #[tokio::test]
        async fn crash_writer_child() {
            let Ok(place) = std::env::var($env) else {
                return; // Only the crash test runs this, in a child process.
            };
            $crate::crash::write_until_killed(&$open(place).await).await;
        }

        #[tokio::test]
        async fn acknowledged_appends_survive_a_sigkill_and_no_batch_is_partial() {
            let Some(place) = $prepare().await else {
                return;
            };
            let acked = $crate::crash::kill_writer_child(
                "crash::crash_writer_child",
                $env,
                &place,
                $least,
                $most,
            );
            $crate::crash::check_after_the_kill(&$open(place).await, &acked).await;
        }
    };
}
