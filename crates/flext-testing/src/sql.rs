//! What the SQL stores check beyond the contracts, written once: hostile text stored and read
//! back verbatim, a corrupt row named in its error, a checkpoint that commits or rolls back
//! with its read model. Each store passes the SQL that only it knows as a closure.

use flext_constants::ErrorCode;
use flext_protocols::{CheckpointStore, EventStore};
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};
use serde_json::json;

fn event(value: serde_json::Value) -> NewEvent {
    NewEvent::new(
        "Noted",
        JsonPayload::encode(&value).expect("a JSON payload"),
    )
}

/// Quotes, SQL, non-ASCII text, a 1024-byte stream id and 200 KB payloads are stored and
/// read back verbatim, as stream ids, event types, payloads and header keys and values.
pub async fn hostile_input_round_trips(store: &impl EventStore) {
    let head = store.head_position().await.unwrap();
    let mut last = 0;
    // The longest stream id every store accepts (1024 bytes).
    let long = "λ".repeat(512);
    for stream in [
        "it's \"quoted\"",
        "'; DROP TABLE flext_events; --",
        "ünïcødé-🦀",
        long.as_str(),
    ] {
        // A 200 KB string: well within the default payload limit (1 MiB).
        let text = format!("{stream} / payload {}", "ß".repeat(100_000));
        let mut written = event(json!({"text": text}));
        // Event types are at most 256 bytes.
        let event_type: String = stream.chars().take(100).collect();
        written.event_type = event_type.clone();
        written
            .metadata
            .headers
            .insert(stream.to_owned(), stream.to_owned());
        last = store
            .append(stream, ExpectedVersion::NoStream, vec![written])
            .await
            .unwrap()
            .last_position;
        let read = store.read_stream(stream, 1, 10).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(
            (&*read[0].stream_id, &*read[0].event_type),
            (stream, event_type.as_str())
        );
        assert_eq!(
            read[0].payload.decode::<serde_json::Value>().unwrap()["text"],
            text
        );
        assert_eq!(read[0].metadata.headers[stream], stream);
    }
    crate::event_store::caught_up(store, last).await;
    assert_eq!(
        store.read_all(head + 1, usize::MAX).await.unwrap().len(),
        4,
        "the table survived"
    );
}

/// On an empty store: after `corrupt(store, position)` breaks the payload of the second
/// event appended, at `position` (its SQL is the store's), reading it is a
/// `SERIALIZATION_ERROR` naming the position, and the rows before it still read.
pub async fn a_corrupt_payload_is_named<S: EventStore>(
    store: &S,
    corrupt: impl AsyncFnOnce(&S, i64),
) {
    let appended = store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![event(json!(1)), event(json!(2))],
        )
        .await
        .unwrap();
    let position = appended.last_position;
    corrupt(
        store,
        i64::try_from(position).expect("a position SQL keeps"),
    )
    .await;
    crate::event_store::caught_up(store, position).await;
    let err = store.read_all(1, 10).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(
        err.message().starts_with(&format!(
            "Stored event at position {position} has a payload that is not JSON"
        )),
        "{err}"
    );
    assert_eq!(
        store.read_all(1, 1).await.unwrap().len(),
        1,
        "the rows before it still read"
    );
}

/// A read model's total and its checkpoint move together: `write(store, total, checkpoint,
/// commit)` sets the model's total and saves checkpoint `balances` in one transaction of the
/// store's database, committing it or rolling it back; `total(store)` reads the total back.
pub async fn a_checkpoint_moves_with_its_read_model<S: CheckpointStore>(
    store: &S,
    write: impl AsyncFn(&S, i64, u64, bool),
    total: impl AsyncFn(&S) -> i64,
) {
    write(store, 10, 5, true).await;
    assert_eq!(store.load_checkpoint("balances").await.unwrap(), Some(5));
    write(store, 99, 9, false).await;
    assert_eq!(
        (
            total(store).await,
            store.load_checkpoint("balances").await.unwrap()
        ),
        (10, Some(5)),
        "neither moved"
    );
}
