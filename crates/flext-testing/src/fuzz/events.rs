//! Stored events and their envelopes: payload text, metadata, upcasting, decoding into an
//! event type.

use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_cqrs::{Envelope, Upcasters};
use flext_types::{EventMetadata, FlextError, FlextResult, JsonPayload, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{fields, has_float, text};

/// The event type the upcasters of [`event_envelope`] upgrade.
const UPCAST_TYPE: &str = "Fuzzed";
/// The current schema version of [`Fuzzed`]: versions 1 to 3 have upcasters.
const CURRENT: u32 = 4;

/// The current shape of the fuzzed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fuzzed {
    name: String,
    count: u32,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    kind: Option<Kind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Created,
    Renamed { from: String },
    Tagged(Vec<String>),
    Scored(i64, bool),
}

/// Fuzzes the decoding of a stored event into an envelope.
///
/// Fields, one a line: the schema version (decimal), the event type, the stream, the
/// metadata JSON, and the payload (the rest). Upcasters of `Fuzzed` run from versions 1,
/// 2 and 3 (one refuses a payload that is not an object) and from `u32::MAX`, the last
/// schema version there is.
///
/// Checks: a payload or metadata text that is not JSON is a `SERIALIZATION_ERROR`; metadata
/// that decodes round-trips through its stored text; an envelope carries the stored
/// event's fields; a payload that does not decode (before or after upcasting) is a
/// `SERIALIZATION_ERROR` naming the event type and the stream; an event that decodes,
/// stored again at the current version, decodes to itself.
pub fn event_envelope(data: &[u8]) {
    let [version, event_type, stream_id, metadata, payload] = fields::<5>(data);
    let schema_version = text(version).trim().parse::<u32>().unwrap_or(1);
    let metadata = match serde_json::from_slice::<EventMetadata>(metadata) {
        Ok(metadata) => {
            let stored = flext_store::metadata_text(&metadata).expect("metadata serializes");
            let again: EventMetadata =
                serde_json::from_str(&stored).expect("stored metadata reads back");
            assert_eq!(again, metadata);
            metadata
        }
        Err(error) => {
            let error = FlextError::from(error);
            assert_eq!(error.code(), ErrorCode::SerializationError);
            EventMetadata::default()
        }
    };
    let payload = match JsonPayload::from_text(text(payload)) {
        Ok(payload) => payload,
        Err(error) => {
            assert_eq!(error.code(), ErrorCode::SerializationError, "{error}");
            return;
        }
    };
    let stored = StoredEvent {
        event_id: Uuid::from_u128(7),
        stream_id: Arc::from(text(stream_id)),
        version: 3,
        position: 9,
        event_type: Arc::from(text(event_type)),
        schema_version,
        payload,
        timestamp: OffsetDateTime::UNIX_EPOCH,
        metadata: Arc::new(metadata),
    };
    let upcasters = upcasters();

    // Without upcasters the payload parses straight into the type.
    match Envelope::<Value>::decode(&stored, &Upcasters::new()) {
        Ok(envelope) => {
            carries_the_stored_fields(&envelope, &stored);
            let direct: Value = stored.payload.decode().expect("the same text parses");
            assert_eq!(envelope.payload, direct);
        }
        Err(error) => names_the_event(&error, &stored),
    }
    let upcast = Envelope::<Value>::decode(&stored, &upcasters);
    match &upcast {
        Ok(envelope) => carries_the_stored_fields(envelope, &stored),
        Err(error) => names_the_event(error, &stored),
    }
    match Envelope::<Fuzzed>::decode(&stored, &upcasters) {
        Ok(envelope) => {
            carries_the_stored_fields(&envelope, &stored);
            let value = upcast.expect("a payload that decodes into the type decodes as JSON");
            if !has_float(&value.payload) {
                assert_eq!(
                    serde_json::from_value::<Fuzzed>(value.payload)
                        .ok()
                        .as_ref(),
                    Some(&envelope.payload),
                    "the typed and the JSON decoding agree"
                );
            }
            stored_again_decodes_to_itself(&envelope.payload, &stored, &upcasters);
        }
        Err(error) => names_the_event(&error, &stored),
    }
}

fn upcasters() -> Upcasters {
    Upcasters::new()
        .register(UPCAST_TYPE, 1, |mut payload| {
            let object = payload
                .as_object_mut()
                .ok_or_else(|| FlextError::validation("version 1 of Fuzzed must be an object"))?;
            object.entry("count").or_insert(json!(0));
            Ok(payload)
        })
        .register(UPCAST_TYPE, 2, |mut payload| {
            if let Some(object) = payload.as_object_mut()
                && let Some(title) = object.remove("title")
            {
                object.insert("name".to_owned(), title);
            }
            Ok(payload)
        })
        .register(UPCAST_TYPE, 3, Ok::<Value, FlextError>)
        .register(UPCAST_TYPE, u32::MAX, |payload| -> FlextResult<Value> {
            Ok(payload)
        })
}

fn carries_the_stored_fields<E>(envelope: &Envelope<E>, stored: &StoredEvent) {
    assert_eq!(envelope.event_id, stored.event_id);
    assert_eq!(envelope.stream_id, stored.stream_id);
    assert_eq!((envelope.version, envelope.position), (3, 9));
    assert_eq!(envelope.event_type, stored.event_type);
    assert_eq!(envelope.schema_version, stored.schema_version);
    assert_eq!(envelope.timestamp, stored.timestamp);
    assert_eq!(envelope.metadata, stored.metadata);
}

fn names_the_event(error: &FlextError, stored: &StoredEvent) {
    assert_eq!(error.code(), ErrorCode::SerializationError, "{error}");
    let message = error.message();
    assert!(
        message.starts_with(&format!(
            "Cannot decode event {} (schema version ",
            stored.event_type
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(" of stream {} at version 3: ", stored.stream_id)),
        "{message}"
    );
}

fn stored_again_decodes_to_itself(event: &Fuzzed, stored: &StoredEvent, upcasters: &Upcasters) {
    let again = StoredEvent {
        schema_version: CURRENT,
        event_type: Arc::from(UPCAST_TYPE),
        payload: JsonPayload::encode(event).expect("an event encodes"),
        ..stored.clone()
    };
    let decoded: Fuzzed = upcasters
        .decode(&again)
        .expect("an encoded event decodes at the current version");
    assert_eq!(&decoded, event);
}
