//! Event-store records: what stores keep and return, as plain serialized data.
//!
//! Stores see events only in this form (type, schema version, JSON payload, metadata), so
//! an adapter never needs the application's event types. Records are cheap to clone: text
//! fields and the payload are shared (`Arc`), so an in-memory store hands out copies for
//! the price of reference-count bumps.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{FlextError, FlextResult};

/// A JSON document, kept as validated text.
///
/// Decoding parses the text straight into the target type, with no intermediate tree; SQL
/// adapters store and load the text as it is.
///
/// ```
/// use flext_types::JsonPayload;
///
/// let payload = JsonPayload::encode(&serde_json::json!({"name": "Alice"})).unwrap();
/// assert_eq!(payload.as_str(), r#"{"name":"Alice"}"#);
/// let value: serde_json::Value = payload.decode().unwrap();
/// assert_eq!(value["name"], "Alice");
/// assert!(JsonPayload::from_text("{not json").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonPayload(Arc<str>);

impl JsonPayload {
    /// Serializes `value`; a value that does not serialize is a `SERIALIZATION_ERROR`.
    pub fn encode(value: &impl Serialize) -> FlextResult<Self> {
        let text = serde_json::to_string(value).map_err(|e| {
            FlextError::serialization(format!("Payload does not serialize to JSON: {e}"))
                .with_source(e)
        })?;
        Ok(Self(Arc::from(text)))
    }

    /// Takes JSON text (for example from a database column), checking that it is JSON.
    pub fn from_text(text: impl Into<String>) -> FlextResult<Self> {
        let text = text.into();
        serde_json::from_str::<IgnoredAny>(&text).map_err(|e| {
            FlextError::serialization(format!("Payload is not valid JSON: {e}")).with_source(e)
        })?;
        Ok(Self(Arc::from(text)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the payload as a `T`; a mismatch is a `SERIALIZATION_ERROR` with serde's
    /// explanation.
    pub fn decode<T: DeserializeOwned>(&self) -> FlextResult<T> {
        serde_json::from_str(&self.0).map_err(|e| {
            FlextError::serialization(format!("Payload does not decode: {e}")).with_source(e)
        })
    }
}

impl fmt::Debug for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonPayload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(&self.0)
            .map_err(|e| serde::ser::Error::custom(format!("stored payload is not JSON: {e}")))?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonPayload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Self(Arc::from(raw.get())))
    }
}

/// What the writer expects a stream's version to be when it appends.
///
/// A stream's version is the version of its last event: events are numbered from 1, and a
/// stream with no events (one that does not exist) is at version 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream must be at exactly this version (0 means it must not exist).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::StreamExists => actual > 0,
            Self::Exact(expected) => expected == actual,
        }
    }

    /// The `CONCURRENCY_CONFLICT` error for a stream found at `actual`; its data carries
    /// the stream, the expected and the actual version.
    pub fn conflict(self, stream_id: &str, actual: u64) -> FlextError {
        FlextError::new(
            crate::ErrorCode::ConcurrencyConflict,
            format!("Stream {stream_id}: expected {self}, actual version {actual}"),
        )
        .with_data(serde_json::json!({
            "stream_id": stream_id,
            "expected": self,
            "actual": actual,
        }))
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// Lineage and headers of a stored event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The id shared by every message of one conversation.
    pub correlation_id: Option<Uuid>,
    /// The id of the message (usually a command) that caused the event.
    pub causation_id: Option<Uuid>,
    /// Free-form headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Rejects batches no store accepts: a blank stream id, one over
/// [`MAX_STREAM_ID_BYTES`](flext_constants::store::MAX_STREAM_ID_BYTES) or with a NUL
/// character, no events, an event type that is blank, over
/// [`MAX_EVENT_TYPE_BYTES`](flext_constants::store::MAX_EVENT_TYPE_BYTES) or with a NUL
/// (each `INVALID_ARGUMENT`), an event id twice in the batch (`DUPLICATE`). Every store
/// calls it first, so they reject alike.
pub fn validate_batch(stream_id: &str, events: &[NewEvent]) -> FlextResult<()> {
    use flext_constants::store::{MAX_EVENT_TYPE_BYTES, MAX_STREAM_ID_BYTES};

    if stream_id.trim().is_empty() {
        return Err(FlextError::invalid_argument("Stream id cannot be empty"));
    }
    let shown = |name: &str| -> String { name.chars().take(40).collect() };
    if stream_id.len() > MAX_STREAM_ID_BYTES {
        return Err(FlextError::invalid_argument(format!(
            "Stream id {:?}… is {} bytes; the limit is {MAX_STREAM_ID_BYTES}",
            shown(stream_id),
            stream_id.len()
        )));
    }
    if stream_id.contains('\0') {
        return Err(FlextError::invalid_argument(format!(
            "Stream id {stream_id:?} contains a NUL character"
        )));
    }
    if events.is_empty() {
        return Err(FlextError::invalid_argument(format!(
            "An append to stream {stream_id} needs at least one event"
        )));
    }
    // A single event (the common append) cannot repeat itself: no set to build.
    let mut seen =
        std::collections::HashSet::with_capacity(if events.len() > 1 { events.len() } else { 0 });
    for event in events {
        let name = &event.event_type;
        if name.trim().is_empty() || name.len() > MAX_EVENT_TYPE_BYTES || name.contains('\0') {
            return Err(FlextError::invalid_argument(format!(
                "Event {} in stream {stream_id} has an invalid type {:?}: it must be 1 to \
                 {MAX_EVENT_TYPE_BYTES} bytes, not blank, without NUL characters",
                event.event_id,
                shown(name)
            )));
        }
        if events.len() > 1 && !seen.insert(event.event_id) {
            return Err(FlextError::duplicate(format!(
                "Event {} appears twice in one batch for stream {stream_id}",
                event.event_id
            )));
        }
    }
    Ok(())
}

/// Where a stored event is: for [`retried_append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlace {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its global position.
    pub position: u64,
}

impl StoredPlace {
    /// Decodes a place from a SQL row's columns; a malformed id or a version or position
    /// below 1 is a `SERIALIZATION_ERROR` naming the row.
    pub fn from_row(
        event_id: &str,
        stream_id: String,
        version: i64,
        position: i64,
    ) -> FlextResult<Self> {
        let corrupt = |what: String| {
            FlextError::serialization(format!(
                "Stored event {event_id} in stream {stream_id} is corrupt: {what}"
            ))
        };
        let event_id = Uuid::parse_str(event_id).map_err(|e| corrupt(format!("its id: {e}")))?;
        let version = u64::try_from(version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| corrupt(format!("version {version}")))?;
        let position = u64::try_from(position)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| corrupt(format!("position {position}")))?;
        Ok(Self {
            event_id,
            stream_id,
            version,
            position,
        })
    }
}

/// The rule every store applies when some ids of a batch are already stored.
///
/// `first` is where the first batch event found in the store is; `run` is the stream's
/// events from that version on (at least as many as the batch, if the stream has them).
/// When the batch is exactly a retry — same stream, its first event first, the expected
/// version accepting the place it was appended at, the same ids in order — the original
/// result is returned; anything else is a `DUPLICATE` naming the event and where it is.
pub fn retried_append(
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    first: &StoredPlace,
    run: &[StoredPlace],
) -> FlextResult<AppendResult> {
    let duplicate = || {
        FlextError::duplicate(format!(
            "Event {} is already stored in stream {} at version {}",
            first.event_id, first.stream_id, first.version
        ))
    };
    let is_retry = first.stream_id == stream_id
        && events.first().is_some_and(|e| e.event_id == first.event_id)
        && first
            .version
            .checked_sub(1)
            .is_some_and(|before| expected.accepts(before))
        && run.len() >= events.len()
        && events
            .iter()
            .zip(run)
            .all(|(event, stored)| event.event_id == stored.event_id);
    if !is_retry {
        return Err(duplicate());
    }
    let last = &run[events.len() - 1];
    Ok(AppendResult {
        first_version: first.version,
        last_version: last.version,
        first_position: first.position,
        last_position: last.position,
    })
}

/// An event on its way into a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The event's id; appending the same ids again at the same expected version is an
    /// idempotent retry.
    pub event_id: Uuid,
    /// The event's name (`UserCreated`).
    pub event_type: String,
    /// The version of the payload's shape, for upcasting.
    pub schema_version: u32,
    /// The event's data.
    pub payload: JsonPayload,
    /// Lineage and headers.
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// A new event with a fresh time-ordered id, schema version 1 and no metadata.
    pub fn new(event_type: impl Into<String>, payload: JsonPayload) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: EventMetadata::default(),
        }
    }
}

/// An event as a store keeps it: a [`NewEvent`] plus the place the store gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: Arc<str>,
    /// Its version within the stream, from 1.
    pub version: u64,
    /// Its position in the whole store, from 1, strictly increasing in commit order.
    pub position: u64,
    /// The event's name.
    pub event_type: Arc<str>,
    /// The version of the payload's shape.
    pub schema_version: u32,
    /// The event's data.
    pub payload: JsonPayload,
    /// When the store committed it (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Lineage and headers.
    pub metadata: Arc<EventMetadata>,
}

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

/// The stream versions `expected` accepts, as an inclusive range of the signed integers
/// SQL stores keep, for `WHERE version BETWEEN low AND high`; a version no stream can reach
/// gives an empty range, so the append is a conflict.
///
/// ```
/// use flext_types::{ExpectedVersion, accepted_versions};
///
/// assert_eq!(accepted_versions(ExpectedVersion::NoStream), (0, 0));
/// assert_eq!(accepted_versions(ExpectedVersion::Exact(7)), (7, 7));
/// assert_eq!(accepted_versions(ExpectedVersion::StreamExists), (1, i64::MAX));
/// let (low, high) = accepted_versions(ExpectedVersion::Exact(u64::MAX));
/// assert!(low > high);
/// ```
pub fn accepted_versions(expected: ExpectedVersion) -> (i64, i64) {
    match expected {
        ExpectedVersion::Any => (0, i64::MAX),
        ExpectedVersion::NoStream => (0, 0),
        ExpectedVersion::StreamExists => (1, i64::MAX),
        ExpectedVersion::Exact(version) => i64::try_from(version).map_or((1, 0), |v| (v, v)),
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

/// Where an append put its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The version of the batch's first event.
    pub first_version: u64,
    /// The stream's version after the append (its last event's version).
    pub last_version: u64,
    /// The global position of the batch's first event.
    pub first_position: u64,
    /// The global position of the batch's last event.
    pub last_position: u64,
}

/// An aggregate's state at one stream version, serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream the state was built from.
    pub stream_id: String,
    /// The stream version the state includes.
    pub version: u64,
    /// The version of the state's shape.
    pub schema_version: u32,
    /// The state.
    pub payload: JsonPayload,
    /// When it was taken (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// An event a projection gave up on, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event's global position.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's stream.
    pub stream_id: String,
    /// The event's name.
    pub event_type: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// The last error.
    pub error: FlextError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn a_stored_place_with_a_corrupt_column_is_a_serialization_error() {
        let id = Uuid::now_v7().to_string();
        let place = StoredPlace::from_row(&id, "s".into(), 2, 7).unwrap();
        assert_eq!((place.version, place.position), (2, 7));
        for (id, version, position, named) in [
            (id.as_str(), 0, 7, "version 0"),
            (id.as_str(), -3, 7, "version -3"),
            (id.as_str(), 2, 0, "position 0"),
            ("not-a-uuid", 2, 7, "its id"),
        ] {
            let error = StoredPlace::from_row(id, "s".into(), version, position).unwrap_err();
            assert_eq!(error.code(), ErrorCode::SerializationError);
            assert!(error.to_string().contains(named), "{error}");
        }
    }

    #[test]
    fn expected_versions_accept_exactly_their_cases() {
        let cases = [
            (ExpectedVersion::Any, [true, true, true]),
            (ExpectedVersion::NoStream, [true, false, false]),
            (ExpectedVersion::StreamExists, [false, true, true]),
            (ExpectedVersion::Exact(0), [true, false, false]),
            (ExpectedVersion::Exact(1), [false, true, false]),
            (ExpectedVersion::Exact(2), [false, false, true]),
        ];
        for (expected, accepts) in cases {
            for (actual, accepted) in [0u64, 1, 2].into_iter().zip(accepts) {
                assert_eq!(
                    expected.accepts(actual),
                    accepted,
                    "{expected:?} at {actual}"
                );
            }
        }
    }

    #[test]
    fn conflicts_carry_expected_and_actual() {
        let err = ExpectedVersion::Exact(3).conflict("user-1", 4);
        assert_eq!(err.code(), ErrorCode::ConcurrencyConflict);
        assert_eq!(
            err.to_string(),
            "Stream user-1: expected version 3, actual version 4"
        );
        let data = err.data().unwrap();
        assert_eq!(data["expected"], serde_json::json!({"exact": 3}));
        assert_eq!(data["actual"], 4);
        let err = ExpectedVersion::NoStream.conflict("user-1", 2);
        assert_eq!(
            err.to_string(),
            "Stream user-1: expected no stream, actual version 2"
        );
        assert_eq!(err.data().unwrap()["expected"], "no_stream");
    }

    #[test]
    fn payloads_round_trip_through_serde_as_json_not_strings() {
        let payload = JsonPayload::encode(&serde_json::json!({"a": [1, 2]})).unwrap();
        let record = serde_json::json!({"payload": payload});
        assert_eq!(record["payload"]["a"][1], 2, "embedded as JSON");
        let back: JsonPayload = serde_json::from_value(record["payload"].clone()).unwrap();
        assert_eq!(
            back.decode::<serde_json::Value>().unwrap(),
            serde_json::json!({"a": [1, 2]})
        );
    }

    #[test]
    fn undecodable_payloads_explain_themselves() {
        let payload = JsonPayload::from_text(r#"{"name": 5}"#).unwrap();
        #[derive(Debug, Deserialize)]
        struct Named {
            #[allow(dead_code, reason = "only decoded")]
            name: String,
        }
        let err = payload.decode::<Named>().unwrap_err();
        assert_eq!(err.code(), ErrorCode::SerializationError);
        assert!(err.message().contains("invalid type: integer `5`"), "{err}");
    }
}

#[cfg(test)]
mod raw_tests {
    use super::*;
    use crate::ErrorCode;

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
}
