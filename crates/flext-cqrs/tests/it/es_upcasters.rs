//! Upcasters at the edges of the schema versions, as the fuzz target `event_envelope`
//! found them.

use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_cqrs::{Envelope, Upcasters};
use flext_types::{EventMetadata, JsonPayload, StoredEvent};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

fn stored(schema_version: u32) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::from_u128(1),
        stream_id: Arc::from("User-1"),
        version: 2,
        position: 5,
        event_type: Arc::from("UserCreated"),
        schema_version,
        payload: JsonPayload::encode(&json!({"name": "Ada"})).unwrap(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        metadata: Arc::new(EventMetadata::default()),
    }
}

#[test]
fn an_upcaster_from_the_last_schema_version_is_a_serialization_error_not_an_overflow() {
    // A stored schema version of u32::MAX (a corrupt row reads as one) with an upcaster
    // registered from it: there is no version after it to upcast to.
    let upcasters = Upcasters::new().register("UserCreated", u32::MAX, |mut payload| {
        payload["upcast"] = json!(true);
        Ok(payload)
    });
    let error = Envelope::<Value>::decode(&stored(u32::MAX), &upcasters).unwrap_err();
    assert_eq!(error.code(), ErrorCode::SerializationError);
    assert_eq!(
        error.message(),
        format!(
            "Cannot decode event UserCreated (schema version {}) of stream User-1 at version 2: \
             no schema version follows {}",
            u32::MAX,
            u32::MAX
        )
    );
}

#[test]
fn upcasters_up_to_the_last_schema_version_still_run() {
    let upcasters = Upcasters::new().register("UserCreated", u32::MAX - 1, |mut payload| {
        payload["upcast"] = json!(true);
        Ok(payload)
    });
    let envelope = Envelope::<Value>::decode(&stored(u32::MAX - 1), &upcasters).unwrap();
    assert_eq!(envelope.payload, json!({"name": "Ada", "upcast": true}));
    assert_eq!(envelope.schema_version, u32::MAX - 1, "the stored version");
}
