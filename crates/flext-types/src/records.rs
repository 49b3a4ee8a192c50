//! Event-store records: what stores keep and return, as plain serialized data.
//!
//! Stores see events only in this form (type, schema version, JSON payload, metadata), so
//! an adapter never needs the application's event types. Records are cheap to clone: text
//! fields and the payload are shared (`Arc`), so an in-memory store hands out copies for
//! the price of reference-count bumps.

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

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
/// A payload can also keep one typed value beside its text, so it is decoded at most once:
/// [`from_value`](Self::from_value) keeps the value it serialized, and
/// [`decoded`](Self::decoded) keeps what it parsed the first time. Clones share the text
/// and the kept value, so a store that hands out clones of its records (the in-memory
/// store does) decodes each event once, however often it is read. The text stays the
/// truth: equality, hashing, [`as_str`](Self::as_str), serialization and
/// [`decode`](Self::decode) read only the text.
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
#[derive(Clone)]
pub struct JsonPayload(Arc<Payload>);

/// The text, and at most one value of the type it was made from or first decoded into.
struct Payload {
    text: Box<str>,
    kept: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl JsonPayload {
    fn new(text: impl Into<Box<str>>, kept: OnceLock<Box<dyn Any + Send + Sync>>) -> Self {
        Self(Arc::new(Payload {
            text: text.into(),
            kept,
        }))
    }

    /// Serializes `value`; a value that does not serialize is a `SERIALIZATION_ERROR`.
    pub fn encode(value: &impl Serialize) -> FlextResult<Self> {
        Ok(Self::new(to_text(value)?, OnceLock::new()))
    }

    /// Serializes `value` and keeps it, so [`decoded`](Self::decoded) as a `T` borrows it
    /// instead of parsing the text. A value that does not serialize is a
    /// `SERIALIZATION_ERROR`. (A repository encodes what it appends and decodes it once
    /// instead, so the value kept is exactly what the text decodes to.)
    ///
    /// The kept value is the one given, not the text parsed back: for a type whose JSON
    /// round trip is not exact (fields serde skips, floats printed shorter), use
    /// [`encode`](Self::encode), so that readers see what a durable store would return.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use flext_types::JsonPayload;
    ///
    /// let payload = JsonPayload::from_value(vec![1_u32, 2, 3]).unwrap();
    /// assert_eq!(payload.as_str(), "[1,2,3]");
    /// // Borrowed: the text is not parsed.
    /// assert!(matches!(payload.decoded::<Vec<u32>>().unwrap(), Cow::Borrowed(v) if v == &[1, 2, 3]));
    /// ```
    pub fn from_value<T: Serialize + Send + Sync + 'static>(value: T) -> FlextResult<Self> {
        let text = to_text(&value)?;
        Ok(Self::new(text, OnceLock::from(Box::new(value) as Box<_>)))
    }

    /// Takes JSON text (for example from a database column), checking that it is JSON.
    pub fn from_text(text: impl Into<String>) -> FlextResult<Self> {
        let text = text.into();
        serde_json::from_str::<IgnoredAny>(&text).map_err(|e| {
            FlextError::serialization(format!("Payload is not valid JSON: {e}")).with_source(e)
        })?;
        Ok(Self::new(text, OnceLock::new()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// Parses the payload as a `T`; a mismatch is a `SERIALIZATION_ERROR` with serde's
    /// explanation.
    pub fn decode<T: DeserializeOwned>(&self) -> FlextResult<T> {
        serde_json::from_str(&self.0.text).map_err(|e| {
            FlextError::serialization(format!("Payload does not decode: {e}")).with_source(e)
        })
    }

    /// The payload as a `T`, parsed at most once: borrowed when the payload keeps a `T`
    /// (made by [`from_value`](Self::from_value), or decoded as a `T` before, by this
    /// payload or a clone of it); else parsed, and kept when nothing else is. A payload
    /// keeps one value: decoding it as a second type parses each time (an owned value).
    /// A mismatch is a `SERIALIZATION_ERROR`, as with [`decode`](Self::decode), and keeps
    /// nothing.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use flext_types::JsonPayload;
    ///
    /// let payload = JsonPayload::from_text(r#"{"amount": 5}"#).unwrap();
    /// let first = payload.decoded::<serde_json::Value>().unwrap();
    /// assert_eq!(first["amount"], 5);
    /// // A clone shares what the first decoding kept.
    /// assert!(matches!(payload.clone().decoded::<serde_json::Value>().unwrap(), Cow::Borrowed(_)));
    /// assert!(payload.decoded::<Vec<u8>>().is_err());
    /// ```
    pub fn decoded<T>(&self) -> FlextResult<Cow<'_, T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        if self.0.kept.get().is_none() {
            let value: T = self.decode()?;
            // Another thread may have kept a value meanwhile: the check below reads
            // whichever was kept first.
            let _ = self.0.kept.set(Box::new(value));
        }
        match self.kept::<T>() {
            Some(value) => Ok(Cow::Borrowed(value)),
            None => self.decode().map(Cow::Owned),
        }
    }

    /// The kept value, when it is a `T`.
    fn kept<T: 'static>(&self) -> Option<&T> {
        self.0.kept.get().and_then(|kept| kept.downcast_ref::<T>())
    }
}

fn to_text(value: &impl Serialize) -> FlextResult<String> {
    serde_json::to_string(value).map_err(|e| {
        FlextError::serialization(format!("Payload does not serialize to JSON: {e}")).with_source(e)
    })
}

// The kept value is written once and then only read: a panic cannot leave it half-made.
impl std::panic::UnwindSafe for Payload {}
impl std::panic::RefUnwindSafe for Payload {}

impl PartialEq for JsonPayload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.text == other.0.text
    }
}

impl Eq for JsonPayload {}

impl Hash for JsonPayload {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.text.hash(state);
    }
}

impl fmt::Debug for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Display for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl Serialize for JsonPayload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(&self.0.text)
            .map_err(|e| serde::ser::Error::custom(format!("stored payload is not JSON: {e}")))?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonPayload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Self::new(raw.get(), OnceLock::new()))
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

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Deposited {
        amount: u64,
    }

    #[test]
    fn a_payload_made_from_a_value_lends_it_without_parsing() {
        let payload = JsonPayload::from_value(Deposited { amount: 7 }).unwrap();
        assert_eq!(payload.as_str(), r#"{"amount":7}"#);
        let decoded = payload.decoded::<Deposited>().unwrap();
        assert!(matches!(decoded, Cow::Borrowed(&Deposited { amount: 7 })));
        // Another type parses the text, and leaves the kept value alone.
        let value = payload.decoded::<serde_json::Value>().unwrap();
        assert!(matches!(value, Cow::Owned(_)));
        assert_eq!(value["amount"], 7);
        assert!(matches!(
            payload.decoded::<Deposited>().unwrap(),
            Cow::Borrowed(_)
        ));
        // `decode` always reads the text.
        assert_eq!(
            payload.decode::<Deposited>().unwrap(),
            Deposited { amount: 7 }
        );
    }

    #[test]
    fn a_payload_from_text_is_parsed_once_and_shared_by_its_clones() {
        let payload = JsonPayload::from_text(r#"{"amount": 3}"#).unwrap();
        let clone = payload.clone();
        // The first decoding keeps what it parsed, and lends it.
        assert!(matches!(
            payload.decoded::<Deposited>().unwrap(),
            Cow::Borrowed(&Deposited { amount: 3 })
        ));
        assert!(matches!(
            clone.decoded::<Deposited>().unwrap(),
            Cow::Borrowed(&Deposited { amount: 3 })
        ));
        // Equal text is an equal payload, whatever either keeps.
        assert_eq!(payload, JsonPayload::from_text(r#"{"amount": 3}"#).unwrap());
        assert_ne!(payload, JsonPayload::from_text(r#"{"amount":3}"#).unwrap());
    }

    #[test]
    fn a_payload_that_does_not_decode_keeps_nothing() {
        let payload = JsonPayload::from_text(r#"{"amount": "many"}"#).unwrap();
        let error = payload.decoded::<Deposited>().unwrap_err();
        assert!(error.is(ErrorCode::SerializationError));
        assert!(
            error.to_string().contains("Payload does not decode"),
            "{error}"
        );
        // Nothing was kept: the next type decoded is the one kept, and lent.
        let value = payload.decoded::<serde_json::Value>().unwrap();
        assert!(matches!(value, Cow::Borrowed(_)));
        assert_eq!(value["amount"], "many");
    }

    #[test]
    fn equal_payloads_hash_alike_and_serialize_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |payload: &JsonPayload| {
            let mut hasher = DefaultHasher::new();
            payload.hash(&mut hasher);
            hasher.finish()
        };
        let typed = JsonPayload::from_value(Deposited { amount: 1 }).unwrap();
        let text = JsonPayload::from_text(r#"{"amount":1}"#).unwrap();
        assert_eq!(typed, text);
        assert_eq!(hash(&typed), hash(&text));
        assert_ne!(hash(&typed), hash(&JsonPayload::from_text("[]").unwrap()));
        assert_eq!(serde_json::to_string(&typed).unwrap(), r#"{"amount":1}"#);
        // Shown as its text, whatever it keeps.
        assert_eq!(typed.to_string(), r#"{"amount":1}"#);
        assert_eq!(format!("{typed:?}"), r#"{"amount":1}"#);
        let back: JsonPayload = serde_json::from_str(r#"{"amount":1}"#).unwrap();
        assert_eq!(back, typed);
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
