//! The SQL stores' row decoding: events, snapshots and dead letters as text and integers.

use flext_constants::ErrorCode;
use flext_store::{RawEvent, RawSnapshot, dead_letter_text, decode_dead_letters};
use flext_types::StoredEvent;

use super::{fields, text};

/// Fuzzes the decoding of SQL rows, as every SQL store reads them.
///
/// Fields, one a line: event id, stream, version, position, event type, schema version,
/// metadata JSON, time (RFC 3339), and the payload (the rest); integers are decimal, and a
/// field that is not one reads as its length, negated when it starts with `-`. The same
/// fields make a snapshot row (stream, version, schema version, payload, time) and two
/// dead-letter texts (metadata and payload).
///
/// Checks: a row that decodes, written back as a store writes it, decodes to the same
/// event; a row that does not is a `SERIALIZATION_ERROR` naming its position; likewise for
/// snapshots (naming the stream) and dead letters.
pub fn sql_row(data: &[u8]) {
    let [
        id,
        stream,
        version,
        position,
        event_type,
        schema,
        metadata,
        time,
        payload,
    ] = fields::<9>(data);
    let raw = RawEvent {
        event_id: text(id),
        stream_id: text(stream),
        version: integer(version),
        position: integer(position),
        event_type: text(event_type),
        schema_version: integer(schema),
        payload: text(payload),
        metadata: text(metadata),
        recorded_at: text(time),
    };
    event_row(&raw);
    snapshot_row(&raw);
    dead_letters(&[raw.metadata.clone(), raw.payload.clone()]);
}

fn integer(field: &[u8]) -> i64 {
    let field = text(field);
    field.trim().parse().unwrap_or_else(|_| {
        let length = i64::try_from(field.len()).unwrap_or(i64::MAX);
        if field.starts_with('-') {
            -length
        } else {
            length
        }
    })
}

fn event_row(raw: &RawEvent) {
    match raw.clone().decode() {
        Ok(event) => {
            assert_eq!(
                (&*event.stream_id, &*event.event_type),
                (raw.stream_id.as_str(), raw.event_type.as_str())
            );
            assert_eq!(
                event.payload.as_str(),
                raw.payload,
                "the payload reads verbatim"
            );
            let again = written_back(&event)
                .decode()
                .expect("a row written as a store writes it decodes");
            assert_eq!(again, event);
        }
        Err(error) => {
            assert_eq!(error.code(), ErrorCode::SerializationError, "{error}");
            let prefix = format!("Stored event at position {} has ", raw.position);
            assert!(error.message().starts_with(&prefix), "{error}");
        }
    }
}

/// `event` as a SQL store writes it.
pub(super) fn written_back(event: &StoredEvent) -> RawEvent {
    RawEvent {
        event_id: event.event_id.to_string(),
        stream_id: event.stream_id.to_string(),
        version: flext_store::signed(event.version, "SQL").expect("it was read from an i64"),
        position: flext_store::signed(event.position, "SQL").expect("it was read from an i64"),
        event_type: event.event_type.to_string(),
        schema_version: i64::from(event.schema_version),
        payload: event.payload.as_str().to_owned(),
        metadata: flext_store::metadata_text(&event.metadata).expect("metadata serializes"),
        recorded_at: flext_store::timestamp_text(event.timestamp)
            .expect("a time that parsed formats"),
    }
}

fn snapshot_row(raw: &RawEvent) {
    let row = RawSnapshot {
        stream_id: raw.stream_id.clone(),
        version: raw.version,
        schema_version: raw.schema_version,
        payload: raw.payload.clone(),
        taken_at: raw.recorded_at.clone(),
    };
    match row.decode() {
        Ok(snapshot) => {
            let again = RawSnapshot::encode(&snapshot, "SQL")
                .expect("a snapshot read from a row encodes")
                .decode()
                .expect("an encoded snapshot decodes");
            assert_eq!(again, snapshot);
        }
        Err(error) => {
            assert_eq!(error.code(), ErrorCode::SerializationError, "{error}");
        }
    }
}

fn dead_letters(texts: &[String]) {
    match decode_dead_letters(texts) {
        Ok(letters) => {
            let written: Vec<String> = letters
                .iter()
                .map(|letter| dead_letter_text(letter).expect("a letter serializes"))
                .collect();
            let again = decode_dead_letters(&written).expect("written letters decode");
            assert_eq!(again.len(), letters.len());
            for (again, letter) in again.iter().zip(&letters) {
                assert_eq!(
                    (
                        again.position,
                        again.event_id,
                        &again.stream_id,
                        again.attempts
                    ),
                    (
                        letter.position,
                        letter.event_id,
                        &letter.stream_id,
                        letter.attempts
                    )
                );
                assert_eq!(again.error.code(), letter.error.code());
                assert_eq!(again.parked_behind, letter.parked_behind);
            }
        }
        Err(error) => assert_eq!(error.code(), ErrorCode::SerializationError, "{error}"),
    }
}
