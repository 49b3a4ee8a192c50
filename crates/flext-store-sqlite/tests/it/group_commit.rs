//! Group commit: concurrent appends share transactions of the writer thread, yet each keeps
//! its own expected-version check and answer, and positions stay dense in commit order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_store_sqlite::SqliteEventStore;
use flext_types::{AppendResult, ExpectedVersion, JsonPayload, NewEvent};
use tokio::sync::Barrier;

use crate::{fresh, temp_path};

fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "Noted",
        JsonPayload::from_text(format!("{{\"n\":{n}}}")).unwrap(),
    )
}

/// Every event of the store, from position 1 on.
async fn everything(store: &SqliteEventStore) -> Vec<flext_types::StoredEvent> {
    store.read_all(1, usize::MAX).await.unwrap()
}

/// Positions 1..=n without a gap, and each append's answer naming exactly its events.
fn assert_dense_and_answered(
    stored: &[flext_types::StoredEvent],
    answers: &[(Vec<NewEvent>, AppendResult)],
) {
    let positions: Vec<u64> = stored.iter().map(|e| e.position).collect();
    let dense: Vec<u64> = (1..=stored.len() as u64).collect();
    assert_eq!(positions, dense, "positions are dense");
    let total: usize = answers.iter().map(|(events, _)| events.len()).sum();
    assert_eq!(total, stored.len(), "nothing lost, nothing extra");
    for (events, result) in answers {
        for (i, event) in events.iter().enumerate() {
            let at = &stored[(result.first_position - 1) as usize + i];
            assert_eq!(
                at.event_id, event.event_id,
                "the answer names the event's place"
            );
            assert_eq!(at.version, result.first_version + i as u64);
        }
        assert_eq!(
            result.last_position - result.first_position + 1,
            events.len() as u64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appends_at_one_expected_version_let_exactly_one_win() {
    let store = fresh().await;
    const RACERS: usize = 24;
    let mut winners = Vec::new();
    for version in 0..6u64 {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS as u64)
            .map(|racer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let batch = vec![event(version * 100 + racer)];
                    barrier.wait().await;
                    let answer = store
                        .append("contested", ExpectedVersion::Exact(version), batch.clone())
                        .await;
                    (batch, answer)
                })
            })
            .collect();
        let mut won = Vec::new();
        for task in tasks {
            let (batch, answer) = task.await.unwrap();
            match answer {
                Ok(result) => won.push((batch, result)),
                Err(error) => {
                    assert_eq!(error.code(), ErrorCode::ConcurrencyConflict, "{error}");
                }
            }
        }
        assert_eq!(
            won.len(),
            1,
            "exactly one append wins version {}",
            version + 1
        );
        assert_eq!(won[0].1.first_version, version + 1);
        winners.extend(won);
    }
    let stored = everything(&store).await;
    assert_dense_and_answered(&stored, &winners);
    assert_eq!(store.stream_version("contested").await.unwrap(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_on_streams_of_their_own_all_land_densely_in_commit_order() {
    let store = fresh().await;
    let tasks: Vec<_> = (0..32u64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = format!("own-{writer}");
                let mut answers = Vec::new();
                let mut version = 0;
                for round in 0..15u64 {
                    // 1 to 3 events, and now and then a batch of 600 (over 500 events).
                    let size = if writer == 7 && round == 3 {
                        600
                    } else {
                        1 + (writer + round) % 3
                    };
                    let batch: Vec<_> = (0..size)
                        .map(|n| event(writer * 10_000 + round * 1_000 + n))
                        .collect();
                    let result = store
                        .append(&stream, ExpectedVersion::Exact(version), batch.clone())
                        .await
                        .expect("a stream of its own has no conflict");
                    assert_eq!(result.first_version, version + 1);
                    version = result.last_version;
                    answers.push((batch, result));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    let stored = everything(&store).await;
    assert_dense_and_answered(&stored, &answers);
    assert_eq!(store.head_position().await.unwrap(), stored.len() as u64);
    // Each stream's versions are dense in position order (commit order).
    let mut versions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for stored in &stored {
        versions
            .entry(&stored.stream_id)
            .or_default()
            .push(stored.version);
    }
    for (stream, versions) in versions {
        let dense: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, dense, "{stream}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicts_retries_and_duplicates_among_concurrent_appends_leave_the_others_whole() {
    let store = fresh().await;
    let committed = vec![event(1), event(2)];
    let original = store
        .append("base", ExpectedVersion::NoStream, committed.clone())
        .await
        .unwrap();
    const EACH: u64 = 12;
    let barrier = Arc::new(Barrier::new(4 * EACH as usize));
    let mut tasks = Vec::new();
    for n in 0..EACH {
        for kind in 0..4u8 {
            let (store, barrier, committed) = (store.clone(), barrier.clone(), committed.clone());
            tasks.push(tokio::spawn(async move {
                let (stream, expected, batch) = match kind {
                    // A fresh stream: succeeds.
                    0 => (
                        format!("fresh-{n}"),
                        ExpectedVersion::NoStream,
                        vec![event(1000 + n)],
                    ),
                    // A wrong expected version: a conflict.
                    1 => (
                        "base".to_owned(),
                        ExpectedVersion::Exact(7),
                        vec![event(2000 + n)],
                    ),
                    // An exact retry of the committed batch: its original answer.
                    2 => ("base".to_owned(), ExpectedVersion::NoStream, committed),
                    // A stored id in another stream: a duplicate.
                    _ => (
                        format!("dup-{n}"),
                        ExpectedVersion::Any,
                        vec![committed[1].clone()],
                    ),
                };
                barrier.wait().await;
                (
                    kind,
                    batch.clone(),
                    store.append(&stream, expected, batch).await,
                )
            }));
        }
    }
    let mut landed = vec![(committed.clone(), original)];
    for task in tasks {
        let (kind, batch, answer) = task.await.unwrap();
        match kind {
            0 => landed.push((batch, answer.expect("a fresh stream lands"))),
            1 => assert_eq!(answer.unwrap_err().code(), ErrorCode::ConcurrencyConflict),
            2 => assert_eq!(answer.expect("a retry answers"), original),
            _ => assert_eq!(answer.unwrap_err().code(), ErrorCode::Duplicate),
        }
    }
    let stored = everything(&store).await;
    assert_eq!(stored.len() as u64, 2 + EACH);
    assert_dense_and_answered(&stored, &landed);
    let ids: HashSet<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), stored.len(), "no event stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_write_together_as_two_processes_would() {
    // Each store has its own writer thread and connections: they take turns on the write
    // lock through the busy timeout, as writers in two processes do.
    let path = temp_path();
    let first = SqliteEventStore::open(&path).await.unwrap();
    let second = SqliteEventStore::open(&path).await.unwrap();
    let mut tasks = Vec::new();
    for (which, store) in [first.clone(), second.clone()].into_iter().enumerate() {
        for writer in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("shared-{which}-{writer}");
                let mut answers = Vec::new();
                for n in 0..25u64 {
                    let batch = vec![event(n)];
                    let result = store
                        .append(&stream, ExpectedVersion::Exact(n), batch.clone())
                        .await
                        .expect("both stores write");
                    answers.push((batch, result));
                }
                // And both race on one stream: each append is either placed or a conflict.
                let contested = store
                    .append("both", ExpectedVersion::Any, vec![event(99)])
                    .await
                    .expect("any version is accepted");
                answers.push((Vec::new(), contested));
                answers
            }));
        }
    }
    let mut answers = Vec::new();
    let mut contested = Vec::new();
    for task in tasks {
        for (batch, result) in task.await.unwrap() {
            if batch.is_empty() {
                contested.push(result.first_version);
            } else {
                answers.push((batch, result));
            }
        }
    }
    contested.sort_unstable();
    assert_eq!(
        contested,
        (1..=8).collect::<Vec<u64>>(),
        "each append of 'both' has its own version"
    );
    let stored = everything(&first).await;
    assert_eq!(stored.len(), 8 * 26);
    let positions: Vec<u64> = stored.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=8 * 26).collect::<Vec<u64>>());
    for (batch, result) in &answers {
        let at = &stored[(result.first_position - 1) as usize];
        assert_eq!(at.event_id, batch[0].event_id);
    }
    assert_eq!(second.head_position().await.unwrap(), 8 * 26);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn an_in_memory_store_reads_what_its_writer_commits() {
    let store = SqliteEventStore::open(":memory:").await.unwrap();
    let other = SqliteEventStore::open(":memory:").await.unwrap();
    store
        .append("mem", ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!(store.stream_version("mem").await.unwrap(), 2);
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 2);
    assert_eq!(
        other.head_position().await.unwrap(),
        0,
        "each :memory: store is its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_memory_store_appends_and_reads_concurrently_without_lock_errors() {
    // The in-memory database's connections share one cache: readers meeting the writer's
    // open transaction wait for its commit instead of failing.
    let store = SqliteEventStore::open(":memory:").await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..40u64 {
                store
                    .append(
                        &format!("m-{writer}"),
                        ExpectedVersion::Exact(n),
                        vec![event(n)],
                    )
                    .await
                    .expect("an append succeeds");
            }
        }));
    }
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < 8 * 40 {
                let read = store
                    .read_all(1, usize::MAX)
                    .await
                    .expect("a read succeeds");
                assert!(read.len() >= seen, "a read never goes back");
                let positions: Vec<u64> = read.iter().map(|e| e.position).collect();
                assert_eq!(positions, (1..=read.len() as u64).collect::<Vec<_>>());
                seen = read.len();
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.head_position().await.unwrap(), 8 * 40);
}
