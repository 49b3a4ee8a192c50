//! Stored events as JetStream messages and back: the payload is the body, everything else
//! travels in headers; subjects per category and event type.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use flext_types::{EventMetadata, FlextError, FlextResult, JsonPayload, StoredEvent};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The header names a relayed event carries.
pub mod header {
    /// The event's id: the message id, which the server's duplicate window keys on.
    pub const EVENT_ID: &str = "Nats-Msg-Id";
    /// On a dead letter: the event's id (its `Nats-Msg-Id` is the dead letter's own,
    /// `{consumer}:{event id}`).
    pub const DEAD_EVENT_ID: &str = "Flext-Event-Id";
    /// The event's type (its name).
    pub const EVENT_TYPE: &str = "Flext-Event-Type";
    /// The payload's schema version.
    pub const SCHEMA_VERSION: &str = "Flext-Schema-Version";
    /// The stream (aggregate) id, percent-escaped where it holds control characters or `%`.
    pub const STREAM_ID: &str = "Flext-Stream-Id";
    /// The event's version in its stream.
    pub const VERSION: &str = "Flext-Version";
    /// The event's position in the store's log.
    pub const POSITION: &str = "Flext-Position";
    /// The commit time, RFC 3339.
    pub const TIMESTAMP: &str = "Flext-Timestamp";
    /// The conversation's id.
    pub const CORRELATION_ID: &str = "Flext-Correlation-Id";
    /// The id of the message that caused the event.
    pub const CAUSATION_ID: &str = "Flext-Causation-Id";
    /// The event's free-form metadata headers, as a JSON object.
    pub const HEADERS: &str = "Flext-Headers";
    /// On a dead letter: the error's code (`FLEXT_1002`).
    pub const ERROR_CODE: &str = "Flext-Error-Code";
    /// On a dead letter: the error's message.
    pub const ERROR_MESSAGE: &str = "Flext-Error-Message";
    /// On a dead letter: how many times it was delivered.
    pub const DELIVERED: &str = "Flext-Delivered";
    /// On a dead letter: the consumer that gave up on it.
    pub const CONSUMER: &str = "Flext-Consumer";
    /// On a dead letter: the subject it was published on.
    pub const ORIGINAL_SUBJECT: &str = "Flext-Original-Subject";
    /// On a dead letter: its sequence in the event stream.
    pub const ORIGINAL_SEQUENCE: &str = "Flext-Original-Sequence";
}

/// The subject token for `text`: ASCII letters, digits, `_` and `-` kept, anything else
/// (`.`, `*`, `>`, spaces, other characters) `_`; an empty text is `_`.
pub fn subject_token(text: &str) -> String {
    if text.is_empty() {
        return "_".to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A stream's category: its id up to the first `-` (`Account-42` → `Account`), the whole
/// id when it has none.
pub fn category(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or(stream_id, |(c, _)| c)
}

/// `{prefix}.{category}.{event type}`, each token made safe by [`subject_token`].
pub fn default_subject(prefix: &str, event: &StoredEvent) -> String {
    format!(
        "{prefix}.{}.{}",
        subject_token(category(&event.stream_id)),
        subject_token(&event.event_type)
    )
}

/// Escapes `%`, control characters and whitespace other than an inner space as `%XX`
/// (UTF-8 bytes), so any text is a header value that arrives unchanged (the client trims
/// values and refuses line breaks).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let edge = i == 0 || i == last;
        if c == '%' || c.is_control() || (c.is_whitespace() && (c != ' ' || edge)) {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Undoes [`escape`]; `None` when the text is not an escaped UTF-8 string.
pub fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The headers and body of the message the relay publishes for `event`.
pub fn encode(event: &StoredEvent) -> FlextResult<(HeaderMap, Bytes)> {
    let mut headers = HeaderMap::new();
    // Owned values: the header map takes a `String` as it is (a `&str` it copies).
    headers.insert(header::EVENT_ID, event.event_id.to_string());
    headers.insert(header::EVENT_TYPE, escape(&event.event_type));
    headers.insert(header::SCHEMA_VERSION, event.schema_version.to_string());
    headers.insert(header::STREAM_ID, escape(&event.stream_id));
    headers.insert(header::VERSION, event.version.to_string());
    headers.insert(header::POSITION, event.position.to_string());
    let timestamp = event.timestamp.format(&Rfc3339).map_err(|e| {
        FlextError::serialization(format!(
            "Event {} has a time RFC 3339 cannot show: {e}",
            event.event_id
        ))
    })?;
    headers.insert(header::TIMESTAMP, timestamp);
    if let Some(id) = event.metadata.correlation_id {
        headers.insert(header::CORRELATION_ID, id.to_string());
    }
    if let Some(id) = event.metadata.causation_id {
        headers.insert(header::CAUSATION_ID, id.to_string());
    }
    if !event.metadata.headers.is_empty() {
        // JSON escapes control characters; `escape` takes care of the rest.
        let json = serde_json::to_string(&event.metadata.headers)?;
        headers.insert(header::HEADERS, escape(&json));
    }
    let body = Bytes::copy_from_slice(event.payload.as_str().as_bytes());
    Ok((headers, body))
}

/// The stored event a message the relay published carries (its headers and body); a `SERIALIZATION_ERROR` naming the header that is
/// missing or malformed (such a message is poison: it goes to the dead-letter stream).
pub fn decode_message(headers: Option<&HeaderMap>, body: &[u8]) -> FlextResult<StoredEvent> {
    let empty = HeaderMap::new();
    let headers = headers.unwrap_or(&empty);
    let text = |name: &str| -> FlextResult<String> {
        let value = headers.get(name).ok_or_else(|| {
            FlextError::serialization(format!("The message has no {name} header"))
        })?;
        unescape(value.as_str()).ok_or_else(|| {
            FlextError::serialization(format!("The message's {name} header is not escaped text"))
        })
    };
    let parsed = |name: &str| -> FlextResult<u64> {
        let value = text(name)?;
        value.parse().map_err(|_| {
            FlextError::serialization(format!(
                "The message's {name} header {value:?} is not a number"
            ))
        })
    };
    let uuid = |name: &str, value: &str| -> FlextResult<Uuid> {
        Uuid::parse_str(value).map_err(|_| {
            FlextError::serialization(format!(
                "The message's {name} header {value:?} is not a UUID"
            ))
        })
    };
    let optional_uuid = |name: &str| -> FlextResult<Option<Uuid>> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => uuid(name, value.as_str()).map(Some),
        }
    };
    let id_header = if headers.get(header::DEAD_EVENT_ID).is_some() {
        header::DEAD_EVENT_ID
    } else {
        header::EVENT_ID
    };
    let event_id = uuid(id_header, &text(id_header)?)?;
    let version = parsed(header::VERSION)?;
    let position = parsed(header::POSITION)?;
    let schema_version = u32::try_from(parsed(header::SCHEMA_VERSION)?).map_err(|_| {
        FlextError::serialization("The message's schema version does not fit 32 bits")
    })?;
    let timestamp = text(header::TIMESTAMP)?;
    let timestamp = OffsetDateTime::parse(&timestamp, &Rfc3339).map_err(|e| {
        FlextError::serialization(format!(
            "The message's {} header {timestamp:?} is not an RFC 3339 time: {e}",
            header::TIMESTAMP
        ))
    })?;
    let meta_headers: BTreeMap<String, String> = match headers.get(header::HEADERS) {
        None => BTreeMap::new(),
        Some(_) => serde_json::from_str(&text(header::HEADERS)?).map_err(|e| {
            FlextError::serialization(format!(
                "The message's {} header is not a JSON object of strings: {e}",
                header::HEADERS
            ))
        })?,
    };
    let body = std::str::from_utf8(body).map_err(|_| {
        FlextError::serialization(format!("The payload of event {event_id} is not UTF-8"))
    })?;
    let payload = JsonPayload::from_text(body).map_err(|e| {
        FlextError::serialization(format!("The payload of event {event_id} is not JSON: {e}"))
    })?;
    Ok(StoredEvent {
        event_id,
        stream_id: Arc::from(text(header::STREAM_ID)?),
        version,
        position,
        event_type: Arc::from(text(header::EVENT_TYPE)?),
        schema_version,
        payload,
        timestamp,
        metadata: Arc::new(EventMetadata {
            correlation_id: optional_uuid(header::CORRELATION_ID)?,
            causation_id: optional_uuid(header::CAUSATION_ID)?,
            headers: meta_headers,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str) -> StoredEvent {
        StoredEvent {
            event_id: Uuid::now_v7(),
            stream_id: Arc::from(stream),
            version: 3,
            position: 77,
            event_type: Arc::from("Deposited"),
            schema_version: 2,
            payload: JsonPayload::from_text(r#"{"amount":5}"#).unwrap(),
            timestamp: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000)
                .unwrap(),
            metadata: Arc::new(EventMetadata {
                correlation_id: Some(Uuid::now_v7()),
                causation_id: None,
                headers: BTreeMap::from([("tenant".into(), "a\r\nb%".into())]),
            }),
        }
    }

    #[test]
    fn an_event_survives_the_trip_through_headers_and_body() {
        for stream in [
            "Account-1",
            "odd\nstream %41 ünï",
            " Account-1 ",
            "\u{a0}x\u{2003}",
        ] {
            let sent = event(stream);
            let (headers, body) = encode(&sent).unwrap();
            assert_eq!(
                headers.get("Nats-Msg-Id").unwrap().as_str(),
                sent.event_id.to_string()
            );
            for (_, values) in headers.iter() {
                for value in values {
                    assert!(!value.as_str().contains(['\r', '\n']));
                }
            }
            assert_eq!(decode_message(Some(&headers), &body).unwrap(), sent);
        }
    }

    #[test]
    fn a_malformed_message_is_a_serialization_error_naming_the_header() {
        let (mut headers, body) = encode(&event("Account-1")).unwrap();
        headers.insert(header::VERSION, "x");
        let err = decode_message(Some(&headers), &body).unwrap_err();
        assert!(err.to_string().contains("Flext-Version"), "{err}");
        assert!(
            decode_message(None, &body)
                .unwrap_err()
                .to_string()
                .contains("Nats-Msg-Id")
        );
        let (headers, _) = encode(&event("Account-1")).unwrap();
        let err = decode_message(Some(&headers), b"{not json").unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn subjects_are_made_of_safe_tokens() {
        assert_eq!(
            default_subject("ev", &event("Account-1")),
            "ev.Account.Deposited"
        );
        assert_eq!(
            default_subject("ev", &event("a.b*c>-1")),
            "ev.a_b_c_.Deposited"
        );
        assert_eq!(category("plain"), "plain");
        assert_eq!(subject_token(""), "_");
        assert_eq!(unescape(&escape("50% \u{7f}\t")).unwrap(), "50% \u{7f}\t");
        assert_eq!(escape(" a b\u{a0}"), "%20a b%C2%A0");
        assert_eq!(subject_token("a_b-C9"), "a_b-C9");
        assert_eq!(unescape("%G1"), None);
        assert_eq!(unescape("%4"), None);
    }
}
