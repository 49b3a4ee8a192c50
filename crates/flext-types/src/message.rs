//! Message metadata: ids, correlation, causation and timestamps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Identity and lineage of one message (command, query or event).
///
/// Every message has its own `message_id`; messages caused by it keep its `correlation_id`
/// and name it as their `causation_id`, so a whole conversation can be traced.
///
/// A message id names one message: a retry or a redelivery of a message carries its metadata
/// unchanged (its `timestamp` too: consumers that recognise repeats, such as
/// `flext_cqrs::Repository`, look for the original no further back than it), and another
/// message gets metadata of its own ([`new`](Self::new), [`caused_by`](Self::caused_by),
/// [`caused_by_named`](Self::caused_by_named)), never a copy of one already sent.
///
/// ```
/// use flext_types::MessageMetadata;
///
/// let command = MessageMetadata::new();
/// let event = command.caused_by();
/// assert_eq!(event.correlation_id, command.correlation_id);
/// assert_eq!(event.causation_id, Some(command.message_id));
/// assert_ne!(event.message_id, command.message_id);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMetadata {
    /// This message's id (a time-ordered UUID v7).
    pub message_id: Uuid,
    /// The id shared by every message of one conversation; a new conversation starts with
    /// its first message's id.
    pub correlation_id: Uuid,
    /// The id of the message that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// When the message was created (UTC, RFC 3339 on the wire).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Free-form headers (tenant, user, source …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl MessageMetadata {
    /// Metadata for a message that starts a new conversation.
    pub fn new() -> Self {
        let id = Uuid::now_v7();
        Self {
            message_id: id,
            correlation_id: id,
            causation_id: None,
            timestamp: OffsetDateTime::now_utc(),
            headers: BTreeMap::new(),
        }
    }

    /// Metadata for a message caused by the one `self` describes: a new id, the same
    /// correlation id and headers, and `self`'s id as causation.
    #[must_use]
    pub fn caused_by(&self) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            correlation_id: self.correlation_id,
            causation_id: Some(self.message_id),
            timestamp: OffsetDateTime::now_utc(),
            headers: self.headers.clone(),
        }
    }

    /// The metadata of a stored event delivered as a message (by a relay or a
    /// subscription): the event's id as the message id and its commit time as the
    /// timestamp, so every delivery of one event, after any restart, carries the same
    /// message (and what a subscriber derives from it, such as a repository's event ids,
    /// repeats); the event's correlation (its own id when it has none), causation and
    /// headers.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use flext_types::{EventMetadata, JsonPayload, MessageMetadata, StoredEvent};
    ///
    /// let command = MessageMetadata::new();
    /// let event = StoredEvent {
    ///     event_id: uuid::Uuid::now_v7(),
    ///     stream_id: "User-1".into(),
    ///     version: 1,
    ///     position: 7,
    ///     event_type: "UserCreated".into(),
    ///     schema_version: 1,
    ///     payload: JsonPayload::encode(&serde_json::json!({}))?,
    ///     timestamp: time::OffsetDateTime::now_utc(),
    ///     metadata: Arc::new(EventMetadata::caused_by(&command)),
    /// };
    /// let message = MessageMetadata::of_stored_event(&event);
    /// assert_eq!(message.message_id, event.event_id);
    /// assert_eq!(message.correlation_id, command.correlation_id);
    /// assert_eq!(message.causation_id, Some(command.message_id));
    /// assert_eq!(message, MessageMetadata::of_stored_event(&event), "the same every time");
    /// # Ok::<(), flext_types::FlextError>(())
    /// ```
    pub fn of_stored_event(event: &crate::StoredEvent) -> Self {
        Self {
            message_id: event.event_id,
            correlation_id: event.metadata.correlation_id.unwrap_or(event.event_id),
            causation_id: event.metadata.causation_id,
            timestamp: event.timestamp,
            headers: event.metadata.headers.clone(),
        }
    }

    /// The same metadata with another correlation id (for example one received from an
    /// upstream service).
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// The same metadata with a header set.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Metadata for the message named `name` that the one `self` describes causes, the same
    /// every time it is derived: its id is a UUID v5 of `name` in `self`'s id's namespace,
    /// its timestamp `self`'s; the correlation id and headers are `self`'s, and `self`'s id
    /// is the causation.
    ///
    /// For a handler that sends a message of its own and must send the same one when it
    /// runs again for the same message (a retry, a redelivery), so what the message does
    /// (a `Repository` command's events) is recognised as a repeat.
    /// [`caused_by`](Self::caused_by) mints a new message every time.
    ///
    /// ```
    /// use flext_types::MessageMetadata;
    ///
    /// let command = MessageMetadata::new();
    /// let follow_up = command.caused_by_named("reserve stock");
    /// assert_eq!(follow_up, command.caused_by_named("reserve stock"));
    /// assert_ne!(follow_up.message_id, command.caused_by_named("charge card").message_id);
    /// assert_eq!(follow_up.causation_id, Some(command.message_id));
    /// assert_eq!(follow_up.timestamp, command.timestamp);
    /// ```
    #[must_use]
    pub fn caused_by_named(&self, name: &str) -> Self {
        Self {
            message_id: Uuid::new_v5(&self.message_id, name.as_bytes()),
            correlation_id: self.correlation_id,
            causation_id: Some(self.message_id),
            timestamp: self.timestamp,
            headers: self.headers.clone(),
        }
    }
}

impl Default for MessageMetadata {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = MessageMetadata::new();
        let b = MessageMetadata::new();
        assert_ne!(a.message_id, b.message_id);
        assert!(
            a.message_id < b.message_id,
            "UUID v7 ids sort by creation time"
        );
        assert_eq!(a.correlation_id, a.message_id);
    }

    #[test]
    fn lineage_and_headers_carry_over() {
        let root = MessageMetadata::new().with_header("tenant", "acme");
        let child = root.caused_by();
        let grandchild = child.caused_by();
        assert_eq!(grandchild.correlation_id, root.correlation_id);
        assert_eq!(grandchild.causation_id, Some(child.message_id));
        assert_eq!(
            grandchild.headers.get("tenant").map(String::as_str),
            Some("acme")
        );
    }

    #[test]
    fn serde_round_trip_uses_rfc3339() {
        let m = MessageMetadata::new().with_header("source", "api");
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["timestamp"].as_str().unwrap().contains('T'));
        let back: MessageMetadata = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
