//! The behaviours every [`EventStore`] must have, one function each.
//!
//! Each function takes a store, works only in streams of its own, and panics (fails the
//! test) on the first broken rule with a message saying which. None assumes the store is
//! empty, so they can share one database and run in parallel. Run them all with
//! [`event_store_conformance!`](crate::event_store_conformance).
//!
//! Positions strictly increase but need not be dense, and a store may show a commit to
//! `read_all` and `head_position` a moment after the append returns (PostgreSQL's read
//! barrier waits for every transaction that could still place an event below it): a check
//! of the whole log first waits with [`caught_up`] until the head has reached what it
//! appended. A store whose appends run side by side also runs
//! [`out_of_order_commits_are_not_skipped`], with its own way to hold an append open.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_types::{
    EventMetadata, ExpectedVersion, FlextResult, JsonPayload, NewEvent, StoredEvent,
};
use serde_json::json;
use uuid::Uuid;

use crate::unique_name;

mod concurrency;
mod edges;
mod limits;
pub mod opening;

/// How long a test waits for events a subscription should deliver.
const PATIENCE: Duration = Duration::from_secs(30);

/// The names of every behaviour, for [`event_store_conformance!`](crate::event_store_conformance).
pub const BEHAVIOURS: &[&str] = &[
    "append_to_new_stream",
    "expected_version_any",
    "expected_version_no_stream",
    "expected_version_stream_exists",
    "expected_version_exact",
    "conflicting_batch_stores_nothing",
    "duplicate_inside_batch_stores_nothing",
    "duplicate_event_id_is_rejected",
    "idempotent_retry",
    "streams_are_isolated",
    "read_ranges_and_limits",
    "visit_stream_walks_in_order_and_stops_at_an_error",
    "rejects_malformed_batches",
    "positions_increase_and_batches_do_not_interleave",
    "concurrent_writers_on_shared_streams",
    "racing_appends_with_any_all_land",
    "subscription_sees_every_event_once_in_order",
    "empty_batch_is_a_no_op",
    "reads_past_the_end_are_empty",
    "default_limits_are_enforced",
];

fn event(n: u64) -> NewEvent {
    let payload = JsonPayload::encode(&json!({"n": n})).expect("a JSON payload");
    NewEvent::new("Counted", payload)
}

fn batch(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count).map(event).collect()
}

fn numbers(events: &[StoredEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e.payload
                .decode::<serde_json::Value>()
                .expect("stored JSON")["n"]
                .as_u64()
                .expect("a number")
        })
        .collect()
}

fn versions(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(
    result: FlextResult<T>,
    expected: ExpectedVersion,
    actual: u64,
) {
    let error = result.expect_err("a concurrency conflict");
    assert_eq!(error.code(), ErrorCode::ConcurrencyConflict, "{error:?}");
    let data = error.data().expect("a conflict carries data");
    assert_eq!(
        data["expected"],
        serde_json::to_value(expected).expect("serializable"),
        "{error:?}"
    );
    assert_eq!(data["actual"], actual, "{error:?}");
}

/// Waits until `store`'s head has reached `position` (an event the caller appended), so
/// that `read_all` returns it; panics when it has not within 30 s. A store that
/// shows each commit at once returns at the first look.
pub async fn caught_up(store: &dyn EventStore, position: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let head = store.head_position().await.expect("head_position");
        if head >= position {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the head stayed at {head}, short of position {position}, for {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn all_of(store: &dyn EventStore, stream: &str) -> Vec<StoredEvent> {
    store
        .read_stream(stream, 1, usize::MAX)
        .await
        .expect("read_stream")
}

/// A first append creates the stream; every field of each event comes back as written.
pub async fn append_to_new_stream(store: Arc<dyn EventStore>) {
    let stream = unique_name("new");
    let correlation = Uuid::new_v4();
    let mut first = event(1);
    first.schema_version = 3;
    first.metadata = EventMetadata {
        correlation_id: Some(correlation),
        causation_id: Some(Uuid::new_v4()),
        headers: BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]),
    };
    let written = vec![first.clone(), event(2)];
    let result = store
        .append(&stream, ExpectedVersion::NoStream, written.clone())
        .await
        .expect("append");
    assert_eq!((result.first_version, result.last_version), (1, 2));
    assert_eq!(result.last_position, result.first_position + 1);
    assert_eq!(store.stream_version(&stream).await.expect("version"), 2);
    caught_up(&*store, result.last_position).await;

    let stored = all_of(&*store, &stream).await;
    assert_eq!(versions(&stored), [1, 2]);
    for (stored, written) in stored.iter().zip(&written) {
        assert_eq!(stored.event_id, written.event_id);
        assert_eq!(&*stored.stream_id, stream.as_str());
        assert_eq!(&*stored.event_type, written.event_type.as_str());
        assert_eq!(stored.schema_version, written.schema_version);
        assert_eq!(
            stored.payload.decode::<serde_json::Value>().unwrap(),
            written.payload.decode::<serde_json::Value>().unwrap()
        );
        assert_eq!(*stored.metadata, written.metadata);
    }
    assert_eq!(stored[0].position, result.first_position);
    assert_eq!(stored[1].position, result.last_position);
}

/// `Any` appends to a new and to an existing stream.
pub async fn expected_version_any(store: Arc<dyn EventStore>) {
    let stream = unique_name("any");
    store
        .append(&stream, ExpectedVersion::Any, batch(1, 1))
        .await
        .expect("any on a new stream");
    store
        .append(&stream, ExpectedVersion::Any, batch(2, 2))
        .await
        .expect("any on an existing stream");
    assert_eq!(numbers(&all_of(&*store, &stream).await), [1, 2, 3]);
}

/// `NoStream` appends only to a stream with no events.
pub async fn expected_version_no_stream(store: Arc<dyn EventStore>) {
    let stream = unique_name("no-stream");
    store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 2))
        .await
        .expect("no stream yet");
    let again = store
        .append(&stream, ExpectedVersion::NoStream, batch(3, 1))
        .await;
    assert_conflict(again, ExpectedVersion::NoStream, 2);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
}

/// `StreamExists` appends only to a stream with events.
pub async fn expected_version_stream_exists(store: Arc<dyn EventStore>) {
    let stream = unique_name("exists");
    let early = store
        .append(&stream, ExpectedVersion::StreamExists, batch(1, 1))
        .await;
    assert_conflict(early, ExpectedVersion::StreamExists, 0);
    assert!(
        all_of(&*store, &stream).await.is_empty(),
        "a rejected append stores nothing"
    );
    store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 1))
        .await
        .unwrap();
    store
        .append(&stream, ExpectedVersion::StreamExists, batch(2, 1))
        .await
        .expect("the stream exists");
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
}

/// `Exact(n)` appends only at version `n` (0: no stream); stale and future versions conflict.
pub async fn expected_version_exact(store: Arc<dyn EventStore>) {
    let stream = unique_name("exact");
    store
        .append(&stream, ExpectedVersion::Exact(0), batch(1, 1))
        .await
        .expect("exact 0 on a new stream");
    store
        .append(&stream, ExpectedVersion::Exact(1), batch(2, 1))
        .await
        .expect("exact 1");
    let stale = store
        .append(&stream, ExpectedVersion::Exact(1), batch(3, 1))
        .await;
    assert_conflict(stale, ExpectedVersion::Exact(1), 2);
    let ahead = store
        .append(&stream, ExpectedVersion::Exact(5), batch(3, 1))
        .await;
    assert_conflict(ahead, ExpectedVersion::Exact(5), 2);
    let result = store
        .append(&stream, ExpectedVersion::Exact(2), batch(3, 2))
        .await
        .expect("exact 2");
    assert_eq!((result.first_version, result.last_version), (3, 4));
}

/// A batch that conflicts stores none of its events.
pub async fn conflicting_batch_stores_nothing(store: Arc<dyn EventStore>) {
    let stream = unique_name("atomic");
    store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 2))
        .await
        .unwrap();
    let rejected = store
        .append(&stream, ExpectedVersion::Exact(1), batch(3, 5))
        .await;
    assert_conflict(rejected, ExpectedVersion::Exact(1), 2);
    assert_eq!(numbers(&all_of(&*store, &stream).await), [1, 2]);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
}

/// A batch with one event id twice is a `DUPLICATE` and stores none of its events.
pub async fn duplicate_inside_batch_stores_nothing(store: Arc<dyn EventStore>) {
    let stream = unique_name("dup-in-batch");
    let mut events = batch(1, 3);
    events[2].event_id = events[0].event_id;
    let error = store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .expect_err("a duplicate id");
    assert_eq!(error.code(), ErrorCode::Duplicate, "{error:?}");
    assert!(all_of(&*store, &stream).await.is_empty());
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
}

/// An event id already stored, in this stream or another, is a `DUPLICATE` unless the
/// append is an exact retry.
pub async fn duplicate_event_id_is_rejected(store: Arc<dyn EventStore>) {
    let first = unique_name("dup-a");
    let second = unique_name("dup-b");
    let original = batch(1, 2);
    store
        .append(&first, ExpectedVersion::NoStream, original.clone())
        .await
        .unwrap();

    let elsewhere = store
        .append(&second, ExpectedVersion::Any, original.clone())
        .await;
    assert_eq!(
        elsewhere.expect_err("an id stored elsewhere").code(),
        ErrorCode::Duplicate
    );
    assert!(all_of(&*store, &second).await.is_empty());

    let mut mixed = batch(3, 1);
    mixed.push(original[0].clone());
    let overlapping = store.append(&first, ExpectedVersion::Exact(2), mixed).await;
    assert_eq!(
        overlapping.expect_err("a new id with a stored one").code(),
        ErrorCode::Duplicate
    );
    assert_eq!(store.stream_version(&first).await.unwrap(), 2);
}

/// Appending the same ids again at the same expected version returns the original result
/// and stores nothing new.
pub async fn idempotent_retry(store: Arc<dyn EventStore>) {
    let stream = unique_name("retry");
    let events = batch(1, 2);
    let original = store
        .append(&stream, ExpectedVersion::Exact(0), events.clone())
        .await
        .unwrap();
    let retried = store
        .append(&stream, ExpectedVersion::Exact(0), events.clone())
        .await
        .expect("a retry");
    assert_eq!(retried, original);
    let next = batch(3, 1);
    let appended = store
        .append(&stream, ExpectedVersion::Any, next.clone())
        .await
        .unwrap();
    assert_eq!(
        store
            .append(&stream, ExpectedVersion::Any, next)
            .await
            .expect("a retry with Any"),
        appended
    );
    assert_eq!(numbers(&all_of(&*store, &stream).await), [1, 2, 3]);
}

/// Streams do not see each other's events or versions.
pub async fn streams_are_isolated(store: Arc<dyn EventStore>) {
    let a = unique_name("iso-a");
    let b = unique_name("iso-b");
    store
        .append(&a, ExpectedVersion::NoStream, batch(1, 3))
        .await
        .unwrap();
    store
        .append(&b, ExpectedVersion::NoStream, batch(100, 1))
        .await
        .expect("b is new");
    store
        .append(&a, ExpectedVersion::Exact(3), batch(4, 1))
        .await
        .unwrap();
    assert_eq!(numbers(&all_of(&*store, &a).await), [1, 2, 3, 4]);
    assert_eq!(numbers(&all_of(&*store, &b).await), [100]);
    assert_eq!(versions(&all_of(&*store, &b).await), [1]);
    assert_eq!(store.stream_version(&b).await.unwrap(), 1);
}

/// Stream reads honour their start version and limit; `read_all` honours its start position
/// and limit.
pub async fn read_ranges_and_limits(store: Arc<dyn EventStore>) {
    let stream = unique_name("ranges");
    let result = store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 10))
        .await
        .unwrap();
    let read = |from, limit| {
        let store = store.clone();
        let stream = stream.clone();
        async move { versions(&store.read_stream(&stream, from, limit).await.unwrap()) }
    };
    assert_eq!(read(1, 3).await, [1, 2, 3]);
    assert_eq!(read(4, 100).await, [4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(read(10, 1).await, [10]);
    assert!(read(11, 10).await.is_empty());
    assert!(read(1, 0).await.is_empty());
    assert_eq!(
        read(0, 2).await,
        [1, 2],
        "version 0 reads from the first event"
    );
    assert!(
        store
            .read_stream(&unique_name("missing"), 1, 10)
            .await
            .unwrap()
            .is_empty()
    );

    caught_up(&*store, result.last_position).await;
    let all = store.read_all(result.first_position, 4).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].position, result.first_position);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let from_last = store.read_all(result.last_position, 1).await.unwrap();
    assert_eq!(
        from_last[0].event_id,
        all_of(&*store, &stream).await[9].event_id
    );
}

/// `visit_stream` visits the events `read_stream` returns, in version order from the
/// version asked for, counts them, and stops at the first error the visitor returns,
/// handing it back; a stream that does not exist visits nothing.
pub async fn visit_stream_walks_in_order_and_stops_at_an_error(store: Arc<dyn EventStore>) {
    let stream = unique_name("visit");
    store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 6))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let visited = store
        .visit_stream(&stream, 3, &mut |event| {
            seen.push((
                event.version,
                event.payload.decode::<serde_json::Value>()?["n"].clone(),
            ));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(visited, 4, "versions 3 to 6 are visited");
    assert_eq!(
        seen,
        (3..=6).map(|n| (n, json!(n))).collect::<Vec<_>>(),
        "events come in version order with their payloads"
    );
    let read = store.read_stream(&stream, 1, usize::MAX).await.unwrap();
    let mut ids = Vec::new();
    store
        .visit_stream(&stream, 0, &mut |event| {
            ids.push(event.event_id);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(ids, read.iter().map(|e| e.event_id).collect::<Vec<_>>());

    let mut calls = 0;
    let error = store
        .visit_stream(&stream, 1, &mut |event| {
            calls += 1;
            if event.version == 2 {
                return Err(flext_types::FlextError::validation("stop at two"));
            }
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(calls, 2, "the walk stops at the visitor's first error");
    assert_eq!(error.to_string(), "stop at two");
    let mut none = 0;
    let missing = store
        .visit_stream(&unique_name("missing"), 1, &mut |_| {
            none += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((missing, none), (0, 0));
    let past = store
        .visit_stream(&stream, 7, &mut |_| Ok(()))
        .await
        .unwrap();
    assert_eq!(past, 0, "nothing past the stream's end");
}

/// Empty, oversized or NUL-carrying stream ids; blank, oversized or NUL-carrying event
/// types: each is `INVALID_ARGUMENT` and stores nothing, on every store. (An empty batch is
/// a no-op: [`empty_batch_is_a_no_op`].)
pub async fn rejects_malformed_batches(store: Arc<dyn EventStore>) {
    use flext_constants::store::{MAX_EVENT_TYPE_BYTES, MAX_STREAM_ID_BYTES};

    let stream = unique_name("malformed");
    let typed = |event_type: String| {
        let mut event = event(1);
        event.event_type = event_type;
        vec![event]
    };
    let long_stream = format!("{stream}-{}", "λ".repeat(MAX_STREAM_ID_BYTES));
    let cases: Vec<(String, Vec<NewEvent>, &str)> = vec![
        ("  ".to_owned(), batch(1, 1), "a blank stream id"),
        (long_stream, batch(1, 1), "an oversized stream id"),
        (
            format!("{stream}\0x"),
            batch(1, 1),
            "a NUL in the stream id",
        ),
        (stream.clone(), typed(" ".to_owned()), "a blank event type"),
        (
            stream.clone(),
            typed("T".repeat(MAX_EVENT_TYPE_BYTES + 1)),
            "an oversized event type",
        ),
        (
            stream.clone(),
            typed("A\0B".to_owned()),
            "a NUL in the event type",
        ),
    ];
    for (stream_id, events, case) in cases {
        let error = store
            .append(&stream_id, ExpectedVersion::Any, events)
            .await
            .expect_err(case);
        assert_eq!(
            error.code(),
            ErrorCode::InvalidArgument,
            "{case}: {error:?}"
        );
    }
    // The limits themselves are accepted.
    let at_limit = format!(
        "{stream}-{}",
        "s".repeat(MAX_STREAM_ID_BYTES - stream.len() - 1)
    );
    store
        .append(
            &at_limit,
            ExpectedVersion::Any,
            typed("T".repeat(MAX_EVENT_TYPE_BYTES)),
        )
        .await
        .expect("a stream id and an event type at their limits");
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        0,
        "nothing stored"
    );
    assert_eq!(store.stream_version(&at_limit).await.unwrap(), 1);
}

pub use edges::{
    default_limits_are_enforced, empty_batch_is_a_no_op, reads_past_the_end_are_empty,
};
pub use limits::{LIMIT_BEHAVIOURS, configured_limits_are_enforced};

pub use concurrency::{
    Held, concurrent_writers_on_shared_streams, out_of_order_commits_are_not_skipped,
    positions_increase_and_batches_do_not_interleave, racing_appends_with_any_all_land,
    subscription_sees_every_event_once_in_order,
};
