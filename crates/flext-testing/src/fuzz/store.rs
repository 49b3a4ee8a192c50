//! A stored event row overwritten with arbitrary values and read back through a real
//! store: the SQL store's own path from its driver's values to a `StoredEvent`.

use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_store::RawEvent;
use flext_types::{ExpectedVersion, JsonPayload, NewEvent, StoredEvent};

use super::{fields, text};

/// The columns [`stored_row`] overwrites, in the order of its cells: every column of an
/// event row but the position.
pub const ROW_COLUMNS: [&str; 8] = [
    "event_id",
    "stream_id",
    "version",
    "event_type",
    "schema_version",
    "payload",
    "metadata",
    "recorded_at",
];

/// Which columns hold integers; the others hold text.
const INTEGER: [bool; 8] = [false, false, true, false, true, false, false, false];

/// A value for one column, of any of SQLite's storage classes (a store keeps whatever it is
/// given where the schema does not forbid it).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// Fuzzes the reading of a stored event row through `store`, whose SQL `write(store,
/// cells)` sets the columns of [`ROW_COLUMNS`] of the event at position 1 to `cells`,
/// returning whether the database took them (a constraint may refuse them).
///
/// The store must be empty or hold only what this function wrote. The input is one line
/// per column; a line starting `n` is `NULL`, `i` an integer, `r` a real, `t` text, `b` the
/// bytes after it; any other line is text.
///
/// Checks: reading the row is an event or a `SERIALIZATION_ERROR` or `STORAGE_ERROR`
/// naming what did not read, never a panic; a row of the columns' own types reads as
/// [`RawEvent::decode`] decodes its values; an event read back decodes again from the
/// row a store writes for it. The row is put back afterwards.
pub async fn stored_row<S: EventStore>(
    store: &S,
    data: &[u8],
    write: impl AsyncFn(&S, &[Cell]) -> bool,
) {
    if store.head_position().await.expect("the head reads") == 0 {
        let payload = JsonPayload::from_text("{}").expect("JSON");
        store
            .append(
                "s",
                ExpectedVersion::NoStream,
                vec![NewEvent::new("E", payload)],
            )
            .await
            .expect("the first event is stored");
    }
    let original = store.read_all(1, 1).await.expect("the original row reads");
    let original = original
        .first()
        .expect("the store holds the event at position 1");
    let cells = cells(data);
    let written = write(store, &cells).await;
    let read = store.read_all(1, 10).await;
    match &read {
        Ok(events) => {
            assert_eq!(events.len(), 1, "one row, at position 1");
            let event = &events[0];
            assert_eq!(event.position, 1);
            let again = super::rows::written_back(event)
                .decode()
                .expect("a row written as a store writes it decodes");
            assert_eq!(&again, event);
            if !written {
                assert_eq!(event, original, "a refused write changed nothing");
            }
        }
        Err(error) => {
            assert!(written, "the original row reads: {error}");
            assert!(
                matches!(
                    error.code(),
                    ErrorCode::SerializationError | ErrorCode::StorageError
                ),
                "{error}"
            );
        }
    }
    if written && let Some(raw) = as_raw(&cells) {
        let expected = raw.decode();
        match (&read, &expected) {
            (Ok(events), Ok(event)) => assert_eq!(&events[0], event),
            (Err(error), Err(expected)) => assert_eq!(error.message(), expected.message()),
            _ => panic!("the store read {read:?}, the row decodes as {expected:?}"),
        }
    }
    assert!(
        write(store, &cells_of(original)).await,
        "the original row is put back"
    );
}

/// The cells of `data`, one line per column.
fn cells(data: &[u8]) -> Vec<Cell> {
    fields::<8>(data)
        .iter()
        .map(|line| match line.split_first() {
            Some((b'n', _)) => Cell::Null,
            Some((b'i', rest)) => Cell::Int(text(rest).trim().parse().unwrap_or(0)),
            Some((b'r', rest)) => Cell::Real(text(rest).trim().parse().unwrap_or(0.5)),
            Some((b't', rest)) => Cell::Text(text(rest)),
            Some((b'b', rest)) => Cell::Blob(rest.to_vec()),
            _ => Cell::Text(text(line)),
        })
        .collect()
}

/// The row as [`RawEvent`] when every cell has its column's type.
fn as_raw(cells: &[Cell]) -> Option<RawEvent> {
    let mut texts = Vec::new();
    let mut ints = Vec::new();
    for (cell, integer) in cells.iter().zip(INTEGER) {
        match (cell, integer) {
            (Cell::Int(value), true) => ints.push(*value),
            (Cell::Text(value), false) => texts.push(value.clone()),
            _ => return None,
        }
    }
    let [
        event_id,
        stream_id,
        event_type,
        payload,
        metadata,
        recorded_at,
    ] = <[String; 6]>::try_from(texts).ok()?;
    let [version, schema_version] = <[i64; 2]>::try_from(ints).ok()?;
    Some(RawEvent {
        event_id,
        stream_id,
        version,
        position: 1,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
    })
}

fn cells_of(event: &StoredEvent) -> Vec<Cell> {
    let raw = super::rows::written_back(event);
    vec![
        Cell::Text(raw.event_id),
        Cell::Text(raw.stream_id),
        Cell::Int(raw.version),
        Cell::Text(raw.event_type),
        Cell::Int(raw.schema_version),
        Cell::Text(raw.payload),
        Cell::Text(raw.metadata),
        Cell::Text(raw.recorded_at),
    ]
}
