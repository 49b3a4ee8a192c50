//! Typed envelopes around stored events, and upcasters.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use flext_protocols::Event;
use flext_types::{EventMetadata, FlextError, FlextResult, StoredEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// A stored event with its payload decoded: the event and everything the store knows about
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<E> {
    /// The event's id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: Arc<str>,
    /// Its version within the stream, from 1.
    pub version: u64,
    /// Its global position in the store.
    pub position: u64,
    /// The event's name.
    pub event_type: Arc<str>,
    /// The schema version it was stored with (before any upcasting).
    pub schema_version: u32,
    /// When it was committed.
    pub timestamp: OffsetDateTime,
    /// Lineage and headers.
    pub metadata: Arc<EventMetadata>,
    /// The event.
    pub payload: E,
}

impl<E: DeserializeOwned> Envelope<E> {
    /// Decodes `stored`, bringing an old payload to the current shape with `upcasters`.
    pub fn decode(stored: &StoredEvent, upcasters: &Upcasters) -> FlextResult<Self> {
        Ok(Self {
            payload: upcasters.decode(stored)?,
            event_id: stored.event_id,
            stream_id: stored.stream_id.clone(),
            version: stored.version,
            position: stored.position,
            event_type: stored.event_type.clone(),
            schema_version: stored.schema_version,
            timestamp: stored.timestamp,
            metadata: stored.metadata.clone(),
        })
    }
}

/// An envelope is delivered under its event's name.
impl<E: Event> Event for Envelope<E> {
    fn event_name(&self) -> &str {
        self.payload.event_name()
    }

    fn schema_version(&self) -> u32 {
        self.payload.schema_version()
    }
}

type Upcast = Arc<dyn Fn(Value) -> FlextResult<Value> + Send + Sync>;

/// Functions that bring stored payloads of old schema versions to the current shape, keyed
/// by event type and the schema version they upgrade from.
///
/// Decoding a stored event applies the upcasters of its type from its schema version up,
/// one version at a time, until none is registered; then the payload decodes into the
/// current type. A payload that still does not decode is a `SERIALIZATION_ERROR` naming the
/// event type, schema version, stream and version — never a panic.
///
/// ```
/// use flext_cqrs::Upcasters;
/// use serde_json::json;
///
/// // Version 1 of UserCreated had no department.
/// let upcasters = Upcasters::new().register("UserCreated", 1, |mut payload| {
///     payload["department"] = json!("Unassigned");
///     Ok(payload)
/// });
/// assert!(upcasters.has("UserCreated", 1));
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    /// Per event type, per schema version upgraded from: looked up by `&str`, so decoding
    /// allocates no key.
    by_type: HashMap<String, HashMap<u32, Upcast>>,
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the upcaster of `event_type` from `from_version` to `from_version + 1`,
    /// replacing any registered for the same key.
    #[must_use]
    pub fn register(
        mut self,
        event_type: &str,
        from_version: u32,
        upcast: impl Fn(Value) -> FlextResult<Value> + Send + Sync + 'static,
    ) -> Self {
        self.by_type
            .entry(event_type.to_owned())
            .or_default()
            .insert(from_version, Arc::new(upcast));
        self
    }

    /// Whether an upcaster of `event_type` from `from_version` is registered.
    pub fn has(&self, event_type: &str, from_version: u32) -> bool {
        self.upcast(event_type, from_version).is_some()
    }

    /// As [`decode`](Self::decode), parsing a current payload at most once: an event
    /// whose payload keeps an `E` (see [`JsonPayload::decoded`]) is lent, not parsed —
    /// the in-memory store keeps each record's payload, so replaying a stream from it
    /// parses each event once (a repository reads its own appends back as it appends
    /// them, so those are never parsed on a load). A payload
    /// that needs upcasting is upcast and decoded each time.
    ///
    /// [`JsonPayload::decoded`]: flext_types::JsonPayload::decoded
    pub fn decoded<'a, E>(&self, stored: &'a StoredEvent) -> FlextResult<Cow<'a, E>>
    where
        E: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        if self.has(&stored.event_type, stored.schema_version) {
            return self.decode(stored).map(Cow::Owned);
        }
        match stored.payload.decoded::<E>() {
            Ok(event) => Ok(event),
            // The same parse again, for the error that names the event.
            Err(_) => self.decode(stored).map(Cow::Owned),
        }
    }

    /// The upcaster of `event_type` from `from_version`, if one is registered.
    fn upcast(&self, event_type: &str, from_version: u32) -> Option<&Upcast> {
        self.by_type.get(event_type)?.get(&from_version)
    }

    /// Decodes the payload of `stored` into an `E`, upcasting it first if needed.
    pub fn decode<E: DeserializeOwned>(&self, stored: &StoredEvent) -> FlextResult<E> {
        let cannot_decode = |version: u32, detail: &dyn fmt::Display| {
            FlextError::serialization(format!(
                "Cannot decode event {} (schema version {version}) of stream {} at version {}: {detail}",
                stored.event_type, stored.stream_id, stored.version
            ))
        };
        let mut version = stored.schema_version;
        // The common case: the payload is current, so it parses straight into the type.
        if !self.has(&stored.event_type, version) {
            return serde_json::from_str(stored.payload.as_str())
                .map_err(|e| cannot_decode(version, &e).with_source(e));
        }
        let mut value: Value = serde_json::from_str(stored.payload.as_str())
            .map_err(|e| cannot_decode(version, &e).with_source(e))?;
        while let Some(upcast) = self.upcast(&stored.event_type, version) {
            // An upcaster from the last schema version there is has nowhere to go.
            let next = version.checked_add(1).ok_or_else(|| {
                cannot_decode(version, &format!("no schema version follows {version}"))
            })?;
            value = flext_impl::catch_panic_sync(|| upcast(value))
                .map_err(|e| cannot_decode(version, &format!("the upcaster failed: {e}")))?;
            version = next;
        }
        serde_json::from_value(value).map_err(|e| cannot_decode(version, &e).with_source(e))
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self
            .by_type
            .iter()
            .flat_map(|(event_type, versions)| versions.keys().map(move |v| (event_type, v)))
            .collect();
        keys.sort();
        f.debug_struct("Upcasters").field("keys", &keys).finish()
    }
}
