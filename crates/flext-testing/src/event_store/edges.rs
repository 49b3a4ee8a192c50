//! The behaviours at the edges of an append and a read: an empty batch, reads past the end,
//! and the default [`StoreLimits`].

use std::sync::Arc;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_store::StoreLimits;
use flext_types::{AppendResult, ExpectedVersion, NewEvent};
use futures_util::StreamExt;

use super::limits::{assert_over_limit, sized_event};
use super::{PATIENCE, all_of, assert_conflict, batch, caught_up, event, numbers, versions};
use crate::unique_name;

/// An empty batch is a no-op that answers with the stream's version, as EventStoreDB's
/// append of no events does (and creates no stream): `last_version` is the stream's
/// version, `first_version` one more (no version was taken), `last_position` the store's
/// head position when it answered and `first_position` one more (no position was taken).
/// The expected version is still checked, as on every append — an empty batch at a version
/// the stream is not at is a `CONCURRENCY_CONFLICT` — and the stream id still has to be
/// valid. Nothing is stored and no subscriber sees anything.
pub async fn empty_batch_is_a_no_op(store: Arc<dyn EventStore>) {
    let stream = unique_name("empty");
    let head_before = store.head_position().await.expect("head");
    let mut live = store.subscribe(head_before + 1).await.expect("subscribe");

    let expecteds = [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
    ];
    for result in empty_appends(&*store, &stream, expecteds, 0).await {
        let head = store.head_position().await.expect("head");
        assert!(
            (head_before..=head).contains(&result.last_position),
            "last_position is the head when it answered: {result:?}, head {head_before}..={head}"
        );
    }
    let early = store
        .append(&stream, ExpectedVersion::StreamExists, Vec::new())
        .await;
    assert_conflict(early, ExpectedVersion::StreamExists, 0);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert!(all_of(&*store, &stream).await.is_empty(), "nothing stored");

    let appended = store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 3))
        .await
        .expect("the stream's first events");
    // A store may show a commit to readers a moment later (see `caught_up`).
    caught_up(store.as_ref(), appended.last_position).await;
    let expecteds = [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(3),
    ];
    for result in empty_appends(&*store, &stream, expecteds, 3).await {
        assert!(
            result.last_position >= appended.last_position,
            "the head includes the stream's events: {result:?} after {appended:?}"
        );
    }
    let stale = store
        .append(&stream, ExpectedVersion::NoStream, Vec::new())
        .await;
    assert_conflict(stale, ExpectedVersion::NoStream, 3);
    let behind = store
        .append(&stream, ExpectedVersion::Exact(2), Vec::new())
        .await;
    assert_conflict(behind, ExpectedVersion::Exact(2), 3);
    let blank = store
        .append(" ", ExpectedVersion::Any, Vec::new())
        .await
        .expect_err("a blank stream id, even with no events");
    assert_eq!(blank.code(), ErrorCode::InvalidArgument, "{blank:?}");

    store
        .append(&stream, ExpectedVersion::Exact(3), batch(4, 1))
        .await
        .expect("the stream goes on at version 4");
    assert_eq!(versions(&all_of(&*store, &stream).await), [1, 2, 3, 4]);
    let seen = tokio::time::timeout(PATIENCE, async {
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let event = live.next().await.expect("an open feed").expect("an event");
            if *event.stream_id == *stream {
                seen.push(event);
            }
        }
        seen
    })
    .await
    .expect("the stream's events arrived in time");
    assert_eq!(
        numbers(&seen),
        [1, 2, 3, 4],
        "subscribers saw the events and nothing of the empty batches"
    );
}

/// Reads from a version or position past the end — up to `u64::MAX`, beyond what any
/// database keeps — return nothing, as reads of a stream that does not exist do; a
/// subscription from there waits for events instead of failing.
pub async fn reads_past_the_end_are_empty(store: Arc<dyn EventStore>) {
    let stream = unique_name("past-end");
    store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 3))
        .await
        .expect("append");
    let beyond_signed = i64::MAX as u64 + 1;
    for from in [4, 5, i64::MAX as u64, beyond_signed, u64::MAX] {
        for limit in [0, 1, usize::MAX] {
            let read = store
                .read_stream(&stream, from, limit)
                .await
                .unwrap_or_else(|e| panic!("read_stream from version {from}: {e:?}"));
            assert!(read.is_empty(), "read_stream from version {from}: {read:?}");
        }
    }
    let missing = store
        .read_stream(&unique_name("missing"), u64::MAX, usize::MAX)
        .await
        .expect("read_stream of a missing stream from u64::MAX");
    assert!(missing.is_empty());
    for from in [i64::MAX as u64, beyond_signed, u64::MAX] {
        for limit in [0, 1, usize::MAX] {
            let read = store
                .read_all(from, limit)
                .await
                .unwrap_or_else(|e| panic!("read_all from position {from}: {e:?}"));
            assert!(read.is_empty(), "read_all from position {from}: {read:?}");
        }
    }
    assert_eq!(
        versions(&all_of(&*store, &stream).await),
        [1, 2, 3],
        "the stream still reads from its start"
    );
    let mut live = store.subscribe(u64::MAX).await.expect("subscribe");
    // Nothing can arrive (no store reaches that position); what is checked is that the feed
    // does not end with an error. A short wait suffices: the first read runs at once.
    let quiet = tokio::time::timeout(Duration::from_millis(300), live.next()).await;
    assert!(
        quiet.is_err(),
        "a subscription from u64::MAX waits quietly, got {:?}",
        quiet.ok()
    );
}

/// The default [`StoreLimits`] hold on a store opened with its defaults: a payload of
/// [`max_payload_bytes`](StoreLimits::max_payload_bytes), metadata of
/// [`max_metadata_bytes`](StoreLimits::max_metadata_bytes) and a batch of
/// [`max_batch_events`](StoreLimits::max_batch_events) are stored; one byte or one event
/// more, or a batch over [`max_batch_bytes`](StoreLimits::max_batch_bytes), is an
/// `INVALID_ARGUMENT` naming the limit and stores nothing.
pub async fn default_limits_are_enforced(store: Arc<dyn EventStore>) {
    let limits = StoreLimits::default();
    let stream = unique_name("default-limits");

    let payload = sized_event(limits.max_payload_bytes, 0);
    store
        .append(&stream, ExpectedVersion::NoStream, vec![payload])
        .await
        .expect("a payload at the default limit");
    let over = sized_event(limits.max_payload_bytes + 1, 0);
    let id = over.event_id;
    let refused = store
        .append(&stream, ExpectedVersion::Any, vec![over])
        .await;
    let size = limits.max_payload_bytes + 1;
    assert_over_limit(
        refused,
        "max_payload_bytes",
        size,
        limits.max_payload_bytes,
        Some(id),
    );

    let metadata = sized_event(2, limits.max_metadata_bytes);
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![metadata])
        .await
        .expect("metadata at the default limit");
    let over = sized_event(2, limits.max_metadata_bytes + 1);
    let id = over.event_id;
    let refused = store
        .append(&stream, ExpectedVersion::Any, vec![over])
        .await;
    let size = limits.max_metadata_bytes + 1;
    assert_over_limit(
        refused,
        "max_metadata_bytes",
        size,
        limits.max_metadata_bytes,
        Some(id),
    );

    let most = limits.max_batch_events as u64;
    let result = store
        .append(&stream, ExpectedVersion::Exact(2), batch(1, most))
        .await
        .expect("a batch of the default most events");
    assert_eq!(result.last_version, 2 + most);
    let refused = store
        .append(&stream, ExpectedVersion::Any, batch(1, most + 1))
        .await;
    let size = limits.max_batch_events + 1;
    assert_over_limit(
        refused,
        "max_batch_events",
        size,
        limits.max_batch_events,
        None,
    );

    // Seventeen payloads of 1 MiB: each within its limit, together over 16 MiB.
    let heavy: Vec<NewEvent> = (0..17)
        .map(|_| sized_event(limits.max_payload_bytes, 0))
        .collect();
    let size = 17 * limits.max_payload_bytes;
    let refused = store.append(&stream, ExpectedVersion::Any, heavy).await;
    assert_over_limit(
        refused,
        "max_batch_bytes",
        size,
        limits.max_batch_bytes,
        None,
    );

    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        2 + most,
        "no refused batch stored anything"
    );
    // One event over a limit refuses its whole batch: the events before it are not stored.
    let mixed_stream = unique_name("mixed");
    let mut mixed = batch(1, 2);
    mixed.push(event(3));
    mixed.push(sized_event(limits.max_payload_bytes + 1, 0));
    let refused = store
        .append(&mixed_stream, ExpectedVersion::Any, mixed)
        .await
        .expect_err("a batch with one event over a limit");
    assert_eq!(refused.code(), ErrorCode::InvalidArgument, "{refused:?}");
    assert!(all_of(&*store, &mixed_stream).await.is_empty());
}

/// Appends no events to `stream` at each of `expecteds`, each an ok no-op on a stream at
/// `version`: nothing appended (the range after `version` is empty) and no position taken.
async fn empty_appends(
    store: &dyn EventStore,
    stream: &str,
    expecteds: [ExpectedVersion; 3],
    version: u64,
) -> Vec<AppendResult> {
    let mut results = Vec::new();
    for expected in expecteds {
        let result = store
            .append(stream, expected, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("an empty batch at {expected} is a no-op: {e:?}"));
        assert_eq!(
            (result.first_version, result.last_version),
            (version + 1, version),
            "nothing appended to a stream at {version}: {result:?}"
        );
        assert_eq!(
            result.first_position,
            result.last_position + 1,
            "no position taken: {result:?}"
        );
        results.push(result);
    }
    results
}
