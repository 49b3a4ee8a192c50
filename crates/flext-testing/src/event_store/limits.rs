//! The behaviours of a store opened with [`StoreLimits`] of its own, run by
//! [`store_limits_conformance!`](crate::store_limits_conformance), and the helpers the
//! limit checks share.

use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_store::StoreLimits;
use flext_types::{AppendResult, ExpectedVersion, FlextResult, JsonPayload, NewEvent};
use uuid::Uuid;

use super::batch;
use crate::unique_name;

/// The names of the behaviours of
/// [`store_limits_conformance!`](crate::store_limits_conformance).
pub const LIMIT_BEHAVIOURS: &[&str] = &["configured_limits_are_enforced"];

/// An event whose payload is `payload_bytes` of JSON text (a string; at least 2) and whose
/// metadata is `metadata_bytes` of header name and value (none for 0).
pub(super) fn sized_event(payload_bytes: usize, metadata_bytes: usize) -> NewEvent {
    assert!(payload_bytes >= 2, "a JSON string takes at least 2 bytes");
    let text = format!("\"{}\"", "x".repeat(payload_bytes - 2));
    let mut event = NewEvent::new(
        "Sized",
        JsonPayload::from_text(text).expect("a JSON string"),
    );
    if metadata_bytes > 0 {
        // One header: a name of 1 byte and a value of the rest.
        event
            .metadata
            .headers
            .insert("k".to_owned(), "v".repeat(metadata_bytes - 1));
    }
    event
}

/// `result` is the `INVALID_ARGUMENT` of `limit`: its message states the size found as
/// the stores word it (` {size} events` for `max_batch_events`, ` {size} bytes` for the
/// others), ends with `; the limit ({limit}) is {max}` and names `event` (when the limit is
/// an event's own), and its data carries them.
#[track_caller]
pub(super) fn assert_over_limit(
    result: FlextResult<AppendResult>,
    limit: &str,
    size: usize,
    max: usize,
    event: Option<Uuid>,
) {
    let error = result.expect_err(&format!("over {limit}"));
    assert_eq!(
        error.code(),
        ErrorCode::InvalidArgument,
        "{limit}: {error:?}"
    );
    let message = error.message();
    let unit = if limit == "max_batch_events" {
        "events"
    } else {
        "bytes"
    };
    let found = format!(" {size} {unit}");
    assert!(
        message.contains(&found),
        "{limit}: the size as the error states it, {found:?}, in {message:?}"
    );
    let stated = format!("; the limit ({limit}) is {max}");
    assert!(
        message.ends_with(&stated),
        "{limit}: the limit as the error states it, {stated:?}, ends {message:?}"
    );
    let data = error.data().expect("a limit's error carries data");
    assert_eq!(data["limit"], limit, "{error:?}");
    assert_eq!(data["size"], size, "{error:?}");
    assert_eq!(data["max"], max, "{error:?}");
    if let Some(event) = event {
        assert!(
            message.contains(&event.to_string()),
            "the event in {message:?}"
        );
        assert_eq!(data["event_id"], event.to_string(), "{error:?}");
    }
}

/// A store opened with small limits of its own keeps exactly those: at each limit an append
/// is stored, one over is an `INVALID_ARGUMENT` naming the limit that stores nothing, and a
/// store opened with the defaults accepts what the small limits refused.
///
/// `open` opens a fresh store with the given limits, or returns `None` to skip (and this
/// says so).
pub async fn configured_limits_are_enforced(
    open: impl AsyncFn(StoreLimits) -> Option<Arc<dyn EventStore>>,
) {
    let limits = StoreLimits::new()
        .with_max_payload_bytes(100)
        .with_max_metadata_bytes(50)
        .with_max_batch_events(5)
        .with_max_batch_bytes(300);
    let Some(store) = open(limits).await else {
        eprintln!("skipped configured_limits_are_enforced: no store to test");
        return;
    };
    let stream = unique_name("limits");
    let append =
        async |events: Vec<NewEvent>| store.append(&stream, ExpectedVersion::Any, events).await;

    append(vec![sized_event(100, 0)])
        .await
        .expect("a payload at its limit");
    let over = sized_event(101, 0);
    let id = over.event_id;
    assert_over_limit(
        append(vec![over]).await,
        "max_payload_bytes",
        101,
        100,
        Some(id),
    );

    append(vec![sized_event(2, 50)])
        .await
        .expect("metadata at its limit");
    let over = sized_event(2, 51);
    let id = over.event_id;
    assert_over_limit(
        append(vec![over]).await,
        "max_metadata_bytes",
        51,
        50,
        Some(id),
    );

    append(batch(1, 5))
        .await
        .expect("a batch of the most events");
    assert_over_limit(append(batch(1, 6)).await, "max_batch_events", 6, 5, None);

    let full: Vec<NewEvent> = (0..3).map(|_| sized_event(100, 0)).collect();
    append(full).await.expect("a batch of the most bytes");
    let mut heavy: Vec<NewEvent> = (0..2).map(|_| sized_event(100, 0)).collect();
    heavy.push(sized_event(100, 1));
    assert_over_limit(append(heavy).await, "max_batch_bytes", 301, 300, None);

    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        1 + 1 + 5 + 3,
        "the refused batches stored nothing"
    );

    let Some(roomy) = open(StoreLimits::default()).await else {
        return;
    };
    roomy
        .append(&stream, ExpectedVersion::Any, vec![sized_event(101, 51)])
        .await
        .expect("the default limits accept what the small ones refused");
}

#[cfg(test)]
mod tests {
    use flext_store::validate_batch;
    use flext_types::FlextError;

    use super::*;

    /// The error of a batch over `max_batch_bytes` (300) with `message`, and data saying
    /// the batch had 101 bytes.
    fn over_batch_bytes(message: &str) -> FlextResult<AppendResult> {
        Err(
            FlextError::invalid_argument(message.to_owned()).with_data(serde_json::json!({
                "limit": "max_batch_bytes",
                "size": 101,
                "max": 300,
                "stream_id": "s",
            })),
        )
    }

    #[test]
    fn the_errors_validate_batch_gives_pass() {
        let limits = StoreLimits::new()
            .with_max_payload_bytes(100)
            .with_max_metadata_bytes(50)
            .with_max_batch_events(5)
            .with_max_batch_bytes(300);
        let refused = |events: Vec<NewEvent>| {
            validate_batch("s", &events, &limits).map(|()| AppendResult {
                first_version: 1,
                last_version: 1,
                first_position: 1,
                last_position: 1,
            })
        };
        let over = sized_event(101, 0);
        let id = over.event_id;
        assert_over_limit(refused(vec![over]), "max_payload_bytes", 101, 100, Some(id));
        let over = sized_event(2, 51);
        let id = over.event_id;
        assert_over_limit(refused(vec![over]), "max_metadata_bytes", 51, 50, Some(id));
        let many = (0..6).map(|_| sized_event(2, 0)).collect();
        assert_over_limit(refused(many), "max_batch_events", 6, 5, None);
        let heavy = vec![
            sized_event(100, 0),
            sized_event(100, 0),
            sized_event(100, 1),
        ];
        assert_over_limit(refused(heavy), "max_batch_bytes", 301, 300, None);
    }

    #[test]
    #[should_panic(expected = "the size as the error states it")]
    fn a_message_with_the_size_only_inside_another_number_fails() {
        let error = over_batch_bytes(
            "A batch for stream s has 1101 bytes of payloads and metadata; \
             the limit (max_batch_bytes) is 300",
        );
        assert_over_limit(error, "max_batch_bytes", 101, 300, None);
    }

    #[test]
    #[should_panic(expected = "the limit as the error states it")]
    fn a_message_with_another_limit_value_fails() {
        let error = over_batch_bytes(
            "A batch for stream s has 101 bytes of payloads and metadata; \
             the limit (max_batch_bytes) is 3000",
        );
        assert_over_limit(error, "max_batch_bytes", 101, 300, None);
    }
}
