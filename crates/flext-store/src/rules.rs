//! The rules every store applies to an append: which batches it accepts, how a retry of a
//! committed append is recognised, and which stream versions an expectation accepts.

use flext_types::{AppendResult, ExpectedVersion, FlextError, FlextResult, NewEvent};
use uuid::Uuid;

use crate::limits::StoreLimits;

/// Rejects batches no store accepts, so that every store rejects alike (each calls it
/// first, before it touches storage):
///
/// - a blank stream id, one over
///   [`MAX_STREAM_ID_BYTES`](flext_constants::store::MAX_STREAM_ID_BYTES) or with a NUL
///   character, and an event type that is blank, over
///   [`MAX_EVENT_TYPE_BYTES`](flext_constants::store::MAX_EVENT_TYPE_BYTES) or with a NUL:
///   each `INVALID_ARGUMENT`;
/// - a batch over one of `limits` — an event's payload or metadata, the batch's events or
///   bytes: an `INVALID_ARGUMENT` naming the limit, the size and the limit's value (and the
///   event, for an event's own limits), with the same as data;
/// - an event id twice in the batch: a `DUPLICATE`.
///
/// A batch of no events passes (with a valid stream id): an empty append is a no-op that
/// answers with the stream's version, see [`nothing_appended`].
///
/// ```
/// use flext_store::{StoreLimits, validate_batch};
/// use flext_types::{ErrorCode, JsonPayload, NewEvent};
///
/// let limits = StoreLimits::new().with_max_payload_bytes(8);
/// let small = NewEvent::new("Noted", JsonPayload::from_text("[1,2]").unwrap());
/// assert!(validate_batch("s", &[small], &limits).is_ok());
/// let big = NewEvent::new("Noted", JsonPayload::from_text("[1,2,3,4,5]").unwrap());
/// let refused = validate_batch("s", &[big], &limits).unwrap_err();
/// assert_eq!(refused.code(), ErrorCode::InvalidArgument);
/// assert!(refused.message().contains("max_payload_bytes"));
/// assert!(validate_batch("s", &[], &limits).is_ok());
/// ```
pub fn validate_batch(
    stream_id: &str,
    events: &[NewEvent],
    limits: &StoreLimits,
) -> FlextResult<()> {
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
    if events.len() > limits.max_batch_events {
        return Err(over_limit(
            format!("A batch for stream {stream_id} has {} events", events.len()),
            Limit::new(
                "max_batch_events",
                events.len(),
                limits.max_batch_events,
                stream_id,
            ),
        ));
    }
    // A single event (the common append) cannot repeat itself: no set to build.
    let mut seen =
        std::collections::HashSet::with_capacity(if events.len() > 1 { events.len() } else { 0 });
    let mut batch_bytes = 0usize;
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
        let payload = event.payload.as_str().len();
        if payload > limits.max_payload_bytes {
            return Err(over_limit(
                format!(
                    "Event {} in stream {stream_id} has a payload of {payload} bytes",
                    event.event_id
                ),
                Limit::new(
                    "max_payload_bytes",
                    payload,
                    limits.max_payload_bytes,
                    stream_id,
                )
                .of(event),
            ));
        }
        let metadata = metadata_bytes(event);
        if metadata > limits.max_metadata_bytes {
            return Err(over_limit(
                format!(
                    "Event {} in stream {stream_id} has {metadata} bytes of metadata",
                    event.event_id
                ),
                Limit::new(
                    "max_metadata_bytes",
                    metadata,
                    limits.max_metadata_bytes,
                    stream_id,
                )
                .of(event),
            ));
        }
        batch_bytes = batch_bytes.saturating_add(payload + metadata);
        if events.len() > 1 && !seen.insert(event.event_id) {
            return Err(FlextError::duplicate(format!(
                "Event {} appears twice in one batch for stream {stream_id}",
                event.event_id
            )));
        }
    }
    if batch_bytes > limits.max_batch_bytes {
        return Err(over_limit(
            format!(
                "A batch for stream {stream_id} has {batch_bytes} bytes of payloads and metadata"
            ),
            Limit::new(
                "max_batch_bytes",
                batch_bytes,
                limits.max_batch_bytes,
                stream_id,
            ),
        ));
    }
    Ok(())
}

/// The result of an append of no events to a stream at `version`, in a store whose head
/// position is `head`: nothing appended, so `last_version` is the stream's version and
/// `first_version` the one after it (the range `first..=last` is empty), and likewise
/// `last_position` is the head and `first_position` the position after it. Every store
/// answers an empty batch (once its expected version is satisfied) with this, and stores
/// and notifies nothing. At `u64::MAX`, which no store reaches, the version or position
/// after saturates: it stays `u64::MAX` rather than overflow.
///
/// ```
/// let nothing = flext_store::nothing_appended(3, 41);
/// assert_eq!((nothing.first_version, nothing.last_version), (4, 3));
/// assert_eq!((nothing.first_position, nothing.last_position), (42, 41));
/// ```
pub fn nothing_appended(version: u64, head: u64) -> AppendResult {
    AppendResult {
        first_version: version.saturating_add(1),
        last_version: version,
        first_position: head.saturating_add(1),
        last_position: head,
    }
}

/// The size of `event`'s metadata as [`StoreLimits::max_metadata_bytes`] measures it: its
/// header names and values, in UTF-8 bytes (the ids are fixed-size).
fn metadata_bytes(event: &NewEvent) -> usize {
    event
        .metadata
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

/// A limit a batch went over, for [`over_limit`].
struct Limit<'a> {
    name: &'static str,
    size: usize,
    max: usize,
    stream_id: &'a str,
    event_id: Option<Uuid>,
}

impl<'a> Limit<'a> {
    fn new(name: &'static str, size: usize, max: usize, stream_id: &'a str) -> Self {
        Self {
            name,
            size,
            max,
            stream_id,
            event_id: None,
        }
    }

    fn of(self, event: &NewEvent) -> Self {
        Self {
            event_id: Some(event.event_id),
            ..self
        }
    }
}

/// The `INVALID_ARGUMENT` of a batch over `limit`: `what` was found, and the limit.
fn over_limit(what: String, limit: Limit<'_>) -> FlextError {
    let mut data = serde_json::json!({
        "limit": limit.name,
        "size": limit.size,
        "max": limit.max,
        "stream_id": limit.stream_id,
    });
    if let Some(event_id) = limit.event_id {
        data["event_id"] = serde_json::Value::String(event_id.to_string());
    }
    FlextError::invalid_argument(format!(
        "{what}; the limit ({}) is {}",
        limit.name, limit.max
    ))
    .with_data(data)
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

/// The stream versions `expected` accepts, as an inclusive range of the signed integers
/// SQL stores keep, for `WHERE version BETWEEN low AND high`; a version no stream can reach
/// gives an empty range, so the append is a conflict.
///
/// ```
/// use flext_store::accepted_versions;
/// use flext_types::ExpectedVersion;
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

#[cfg(test)]
mod tests {
    use super::*;
    use flext_types::ErrorCode;

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
    fn nothing_appended_at_the_largest_version_and_head_does_not_overflow() {
        let nothing = nothing_appended(u64::MAX, u64::MAX);
        assert_eq!(
            (nothing.last_version, nothing.last_position),
            (u64::MAX, u64::MAX)
        );
        assert_eq!(
            (nothing.first_version, nothing.first_position),
            (u64::MAX, u64::MAX),
            "the version and position after the largest saturate"
        );
        let nothing = nothing_appended(u64::MAX - 1, 0);
        assert_eq!(
            (nothing.first_version, nothing.first_position),
            (u64::MAX, 1)
        );
    }
}
