//! The rules every store applies to an append: which batches it accepts, how a retry of a
//! committed append is recognised, and which stream versions an expectation accepts.

use flext_types::{AppendResult, ExpectedVersion, FlextError, FlextResult, NewEvent};
use uuid::Uuid;

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
}
