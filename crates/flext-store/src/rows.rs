//! Records as SQL rows keep them: text and integers, decoded and checked the same way by
//! every SQL store, so they read alike and a corrupt row is named alike.

use std::fmt;
use std::sync::Arc;

use flext_types::{
    DeadLetter, EventMetadata, FlextError, FlextResult, JsonPayload, Snapshot, StoredEvent,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// A stored event as a SQL row gives it: text and integers, checked and decoded by
/// [`RawEvent::decode`] into a [`StoredEvent`]. Shared by the SQL stores so they read alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The event id, as text.
    pub event_id: String,
    /// The stream.
    pub stream_id: String,
    /// The stream version.
    pub version: i64,
    /// The global position.
    pub position: i64,
    /// The event type.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: i64,
    /// The payload, as JSON text.
    pub payload: String,
    /// The metadata, as JSON text ([`EventMetadata`]).
    pub metadata: String,
    /// The commit time, RFC 3339.
    pub recorded_at: String,
}

impl RawEvent {
    /// The row as a [`StoredEvent`]; a row that does not decode (a corrupt payload, a bad id
    /// or timestamp) is a `SERIALIZATION_ERROR` naming its position and what is wrong.
    pub fn decode(self) -> FlextResult<StoredEvent> {
        let position = self.position;
        let bad = |what: &str, detail: &dyn fmt::Display| {
            FlextError::serialization(format!(
                "Stored event at position {position} has {what}: {detail}"
            ))
        };
        let event_id =
            Uuid::parse_str(&self.event_id).map_err(|e| bad("a malformed event id", &e))?;
        let payload = JsonPayload::from_text(self.payload)
            .map_err(|e| bad("a payload that is not JSON", &e))?;
        let metadata: EventMetadata =
            serde_json::from_str(&self.metadata).map_err(|e| bad("malformed metadata", &e))?;
        let timestamp = OffsetDateTime::parse(
            &self.recorded_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| bad("a malformed timestamp", &e))?;
        let unsigned = |value: i64, what: &str| u64::try_from(value).map_err(|_| bad(what, &value));
        Ok(StoredEvent {
            event_id,
            stream_id: Arc::from(self.stream_id),
            version: unsigned(self.version, "a negative version")?,
            position: unsigned(self.position, "a negative position")?,
            event_type: Arc::from(self.event_type),
            schema_version: u32::try_from(self.schema_version)
                .map_err(|_| bad("a bad schema version", &self.schema_version))?,
            payload,
            timestamp,
            metadata: Arc::new(metadata),
        })
    }
}

/// `metadata` as the JSON text SQL stores keep.
pub fn metadata_text(metadata: &EventMetadata) -> FlextResult<String> {
    serde_json::to_string(metadata).map_err(FlextError::from)
}

/// `timestamp` as the RFC 3339 text SQL stores keep.
pub fn timestamp_text(timestamp: OffsetDateTime) -> FlextResult<String> {
    timestamp
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| FlextError::serialization(format!("Timestamp does not format: {e}")))
}

/// The columns of an event row in [`RawEvent`]'s order, for `SELECT {EVENT_COLUMNS} FROM …`
/// and `INSERT INTO … ({EVENT_COLUMNS})`.
pub const EVENT_COLUMNS: &str = "event_id, stream_id, version, position, event_type, schema_version, payload, metadata, recorded_at";

/// `value` as the signed 64-bit integer SQL stores keep; one beyond `i64::MAX` is an
/// `INVALID_ARGUMENT` naming `database`.
///
/// ```
/// assert_eq!(flext_store::signed(7, "SQLite"), Ok(7));
/// assert!(flext_store::signed(u64::MAX, "SQLite").is_err());
/// ```
pub fn signed(value: u64, database: &str) -> FlextResult<i64> {
    i64::try_from(value).map_err(|_| {
        FlextError::invalid_argument(format!("{value} is beyond what {database} stores"))
    })
}

/// A version, position or count as a SQL store reads it back: stores never write a negative
/// one, so one (a corrupt column) reads as 0.
pub fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A snapshot as a SQL row keeps it: text and integers, built by [`RawSnapshot::encode`] and
/// decoded by [`RawSnapshot::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSnapshot {
    /// The stream the state was built from.
    pub stream_id: String,
    /// The stream version the state includes.
    pub version: i64,
    /// The version of the state's shape.
    pub schema_version: i64,
    /// The state, as JSON text.
    pub payload: String,
    /// When it was taken, RFC 3339.
    pub taken_at: String,
}

impl RawSnapshot {
    /// The row of `snapshot`; a version beyond what `database` stores is an
    /// `INVALID_ARGUMENT`.
    pub fn encode(snapshot: &Snapshot, database: &str) -> FlextResult<Self> {
        Ok(Self {
            stream_id: snapshot.stream_id.clone(),
            version: signed(snapshot.version, database)?,
            schema_version: i64::from(snapshot.schema_version),
            payload: snapshot.payload.as_str().to_owned(),
            taken_at: timestamp_text(snapshot.timestamp)?,
        })
    }

    /// The row as a [`Snapshot`]; a payload that is not JSON or a malformed time is a
    /// `SERIALIZATION_ERROR` naming the stream.
    pub fn decode(self) -> FlextResult<Snapshot> {
        let stream_id = self.stream_id;
        let timestamp = OffsetDateTime::parse(
            &self.taken_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| {
            FlextError::serialization(format!("Snapshot of {stream_id} has a malformed time: {e}"))
        })?;
        Ok(Snapshot {
            version: unsigned(self.version),
            schema_version: u32::try_from(self.schema_version).unwrap_or(0),
            payload: JsonPayload::from_text(self.payload)?,
            timestamp,
            stream_id,
        })
    }
}

/// `letter` as the JSON text SQL stores keep.
pub fn dead_letter_text(letter: &DeadLetter) -> FlextResult<String> {
    serde_json::to_string(letter).map_err(FlextError::from)
}

/// Dead letters from the JSON texts SQL stores keep; one that does not decode is a
/// `SERIALIZATION_ERROR`.
pub fn decode_dead_letters(texts: &[String]) -> FlextResult<Vec<DeadLetter>> {
    texts
        .iter()
        .map(|text| serde_json::from_str(text).map_err(FlextError::from))
        .collect()
}

/// The error for a database whose schema is newer than the store opening it knows:
/// `store` names the database (`SQLite store orders.db`), `found` is the version it has,
/// `known` how many migrations `package` knows.
///
/// ```
/// let error = flext_store::newer_schema("SQLite store a.db", 3, 1, "flext-store-sqlite");
/// assert_eq!(error.code(), flext_types::ErrorCode::StorageError);
/// assert!(error.message().contains("schema version 3, newer than this flext-store-sqlite knows (1)"));
/// ```
pub fn newer_schema(store: &str, found: i64, known: usize, package: &str) -> FlextError {
    FlextError::storage(format!(
        "{store}: the database has schema version {found}, newer than this {package} knows ({known}); open it with a newer version"
    ))
}

/// Why a SQL store's embedded migrations did not load or run, as a `STORAGE_ERROR` naming
/// `store`: a database of a schema version (`newer`) that the `known` migrations of
/// `package` do not have is refused as [`newer_schema`] says; any other failure says the
/// migrations failed, with `error` as its source.
pub fn migrations_failed<E>(
    store: &str,
    package: &str,
    known: usize,
    newer: Option<i64>,
    error: E,
) -> FlextError
where
    E: std::error::Error + Send + Sync + 'static,
{
    match newer {
        Some(found) => newer_schema(store, found, known, package),
        None => {
            FlextError::storage(format!("{store}: migrations failed: {error}")).with_source(error)
        }
    }
}

/// The embedded migrations of a SQL store: one `(version, description, SQL)` each, from
/// version 1 up without gaps.
pub type Migrations = &'static [(i64, &'static str, &'static str)];

#[cfg(test)]
mod raw_tests {
    use super::*;
    use flext_types::ErrorCode;

    fn raw() -> RawEvent {
        RawEvent {
            event_id: Uuid::new_v4().to_string(),
            stream_id: "User-1".into(),
            version: 1,
            position: 7,
            event_type: "UserCreated".into(),
            schema_version: 1,
            payload: r#"{"name":"Ada"}"#.into(),
            metadata: metadata_text(&EventMetadata::default()).unwrap(),
            recorded_at: timestamp_text(OffsetDateTime::UNIX_EPOCH).unwrap(),
        }
    }

    #[test]
    fn rows_decode_and_corrupt_rows_are_named() {
        let stored = raw().decode().unwrap();
        assert_eq!((stored.position, &*stored.stream_id), (7, "User-1"));
        let corrupt = RawEvent {
            payload: "{not json".into(),
            ..raw()
        }
        .decode()
        .unwrap_err();
        assert_eq!(corrupt.code(), ErrorCode::SerializationError);
        assert!(
            corrupt
                .message()
                .starts_with("Stored event at position 7 has a payload that is not JSON"),
            "{corrupt}"
        );
        let bad_id = RawEvent {
            event_id: "nope".into(),
            ..raw()
        }
        .decode()
        .unwrap_err();
        assert!(bad_id.message().contains("malformed event id"));
        let negative = RawEvent {
            version: -1,
            ..raw()
        }
        .decode()
        .unwrap_err();
        assert!(negative.message().contains("negative version"));
    }

    #[test]
    fn snapshots_round_trip_through_rows_and_bad_times_are_named() {
        let snapshot = Snapshot {
            stream_id: "User-1".into(),
            version: 4,
            schema_version: 2,
            payload: JsonPayload::from_text(r#"{"n":4}"#).unwrap(),
            timestamp: OffsetDateTime::UNIX_EPOCH,
        };
        let row = RawSnapshot::encode(&snapshot, "SQLite").unwrap();
        assert_eq!(row.clone().decode().unwrap(), snapshot);
        let bad = RawSnapshot {
            taken_at: "yesterday".into(),
            ..row
        }
        .decode()
        .unwrap_err();
        assert_eq!(bad.code(), ErrorCode::SerializationError);
        assert!(
            bad.message()
                .starts_with("Snapshot of User-1 has a malformed time"),
            "{bad}"
        );
        assert!(
            signed(u64::MAX, "SQLite")
                .unwrap_err()
                .message()
                .contains("beyond what SQLite stores")
        );
    }
}
