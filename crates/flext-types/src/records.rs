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

impl EventMetadata {
    /// The metadata of events caused by the message `cause` describes: its correlation, the
    /// message itself as causation, its headers.
    ///
    /// ```
    /// use flext_types::{EventMetadata, MessageMetadata};
    ///
    /// let command = MessageMetadata::new();
    /// let metadata = EventMetadata::caused_by(&command);
    /// assert_eq!(metadata.correlation_id, Some(command.correlation_id));
    /// assert_eq!(metadata.causation_id, Some(command.message_id));
    /// ```
    pub fn caused_by(cause: &crate::MessageMetadata) -> Self {
        Self {
            correlation_id: Some(cause.correlation_id),
            causation_id: Some(cause.message_id),
            headers: cause.headers.clone(),
        }
    }
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

    /// Encodes `event` as a record to append under `event_type` at `schema_version`, with a
    /// fresh time-ordered id. The name and version are arguments because this crate knows
    /// nothing of the `Event` contract (`flext_protocols::Event` gives both). A value that
    /// does not serialize is a `SERIALIZATION_ERROR` naming the event type.
    ///
    /// ```
    /// use flext_types::{EventMetadata, NewEvent};
    ///
    /// let event = NewEvent::encode("UserCreated", 2, &serde_json::json!({"name": "Ada"}), EventMetadata::default()).unwrap();
    /// assert_eq!((event.event_type.as_str(), event.schema_version), ("UserCreated", 2));
    /// assert_eq!(event.payload.as_str(), r#"{"name":"Ada"}"#);
    /// ```
    pub fn encode(
        event_type: impl Into<String>,
        schema_version: u32,
        event: &impl Serialize,
        metadata: EventMetadata,
    ) -> FlextResult<Self> {
        let event_type = event_type.into();
        let payload = JsonPayload::encode(event)
            .map_err(|e| e.with_context(format!("Event {event_type} cannot be stored")))?;
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type,
            schema_version,
            payload,
            metadata,
        })
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

impl AppendResult {
    /// Where `count` events (at least 1; an empty batch's result is an empty range, see the
    /// `EventStore` contract) went, appended to a stream at `version` in a store
    /// whose last position was `head`.
    ///
    /// ```
    /// use flext_types::AppendResult;
    ///
    /// let placed = AppendResult::following(4, 10, 3);
    /// assert_eq!((placed.first_version, placed.last_version), (5, 7));
    /// assert_eq!((placed.first_position, placed.last_position), (11, 13));
    /// ```
    pub fn following(version: u64, head: u64, count: u64) -> Self {
        Self {
            first_version: version + 1,
            last_version: version + count,
            first_position: head + 1,
            last_position: head + count,
        }
    }
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

/// An event a projection gave up on, with why, or parked behind one it gave up on.
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
    /// For an event never tried because an earlier event of its stream is a dead letter:
    /// that letter's position (the event is parked behind it). `None` for an event that was
    /// tried and failed. Absent from the JSON of older letters, which read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_behind: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

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

    #[test]
    fn dead_letters_read_without_parked_behind_and_write_it_only_when_parked() {
        let letter = DeadLetter {
            position: 7,
            event_id: Uuid::nil(),
            stream_id: "User-1".into(),
            event_type: "UserCreated".into(),
            attempts: 0,
            error: FlextError::operation("parked"),
            parked_behind: Some(3),
        };
        let text = serde_json::to_string(&letter).unwrap();
        assert!(text.contains("\"parked_behind\":3"), "{text}");
        assert_eq!(serde_json::from_str::<DeadLetter>(&text).unwrap(), letter);

        let tried = DeadLetter {
            parked_behind: None,
            ..letter
        };
        let text = serde_json::to_string(&tried).unwrap();
        assert!(
            !text.contains("parked_behind"),
            "older readers see the old shape: {text}"
        );
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        old.as_object_mut().unwrap().remove("parked_behind");
        assert_eq!(serde_json::from_value::<DeadLetter>(old).unwrap(), tried);
    }
}
