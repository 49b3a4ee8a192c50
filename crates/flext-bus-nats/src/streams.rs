//! [`EventStreams`]: the JetStream streams relayed events and their dead letters live in.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use flext_types::{FlextError, FlextResult};

use crate::error::nats_error;

/// The layout a relay and its consumers share: the JetStream stream of events (subjects
/// `{subject_prefix}.{category}.{event type}`) and the dead-letter stream
/// (`{subject_prefix}_dlq.>`).
///
/// [`ensure`](EventStreams::ensure) creates both when missing (file storage; the events'
/// duplicate window as set, 2 minutes by default, which is the server's default too) and
/// checks that existing ones take the subjects this layout publishes on.
///
/// ```
/// use std::time::Duration;
/// use flext_bus_nats::EventStreams;
///
/// let streams = EventStreams::new("BANK", "bank.events")?
///     .with_duplicate_window(Duration::from_secs(30))?;
/// assert_eq!(streams.dead_letter_stream(), "BANK_DLQ");
/// assert_eq!(streams.dead_letter_prefix(), "bank.events_dlq");
/// assert!(EventStreams::new("bad name", "x").is_err());
/// # Ok::<(), flext_types::FlextError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStreams {
    stream: String,
    subject_prefix: String,
    dead_letter_stream: String,
    dead_letter_prefix: String,
    duplicate_window: Duration,
}

impl EventStreams {
    /// Events in stream `stream` under subjects `{subject_prefix}.{category}.{type}`, dead
    /// letters in `{stream}_DLQ` under `{subject_prefix}_dlq.>` (a root of their own: the
    /// server refuses streams whose subjects overlap).
    ///
    /// An `INVALID_ARGUMENT` names a stream name that is not letters, digits, `_` and `-`,
    /// or a prefix that is not dot-separated tokens of such characters.
    pub fn new(stream: impl Into<String>, subject_prefix: impl Into<String>) -> FlextResult<Self> {
        let stream = stream.into();
        let subject_prefix = subject_prefix.into();
        check_name("stream name", &stream)?;
        check_prefix(&subject_prefix)?;
        Ok(Self {
            dead_letter_stream: format!("{stream}_DLQ"),
            dead_letter_prefix: format!("{subject_prefix}_dlq"),
            stream,
            subject_prefix,
            duplicate_window: Duration::from_secs(120),
        })
    }

    /// Sets how long the server remembers a message id to drop a re-publish (at least
    /// 100 ms).
    pub fn with_duplicate_window(mut self, window: Duration) -> FlextResult<Self> {
        if window < Duration::from_millis(100) {
            return Err(FlextError::invalid_argument(format!(
                "duplicate_window must be at least 100 ms, got {window:?}"
            )));
        }
        self.duplicate_window = window;
        Ok(self)
    }

    /// The events' stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The events' subjects begin with this.
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    /// The dead letters' stream.
    pub fn dead_letter_stream(&self) -> &str {
        &self.dead_letter_stream
    }

    /// The dead letters' subjects begin with this: `{subject_prefix}_dlq`.
    pub fn dead_letter_prefix(&self) -> &str {
        &self.dead_letter_prefix
    }

    /// The duplicate window.
    pub fn duplicate_window(&self) -> Duration {
        self.duplicate_window
    }

    /// The subjects of the events' stream: `{prefix}.*.*` (category, event type).
    pub(crate) fn event_subjects(&self) -> String {
        format!("{}.*.*", self.subject_prefix)
    }

    /// Creates the two streams when missing; an `UNAVAILABLE` when the server cannot be
    /// reached, a `STORAGE_ERROR` when it refuses (a stream of that name with other
    /// subjects, say).
    pub async fn ensure(&self, jetstream: &jetstream::Context) -> FlextResult<()> {
        self.ensure_one(
            jetstream,
            &self.stream,
            self.event_subjects(),
            self.duplicate_window,
        )
        .await?;
        self.ensure_one(
            jetstream,
            &self.dead_letter_stream,
            format!("{}.>", self.dead_letter_prefix),
            self.duplicate_window,
        )
        .await
    }

    async fn ensure_one(
        &self,
        jetstream: &jetstream::Context,
        name: &str,
        subjects: String,
        duplicate_window: Duration,
    ) -> FlextResult<()> {
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.clone()],
            storage: stream::StorageType::File,
            duplicate_window,
            ..Default::default()
        };
        let mut stream = jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|e| nats_error(format!("JetStream stream {name} cannot be created"), e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| nats_error(format!("JetStream stream {name} cannot be read"), e))?;
        if !info.config.subjects.contains(&subjects) {
            return Err(FlextError::storage(format!(
                "JetStream stream {name} exists with subjects {:?}, not {subjects:?}",
                info.config.subjects
            )));
        }
        Ok(())
    }
}

/// An `INVALID_ARGUMENT` naming `what` unless `name` is 1 or more ASCII letters, digits,
/// `_` and `-`.
pub(crate) fn check_name(what: &str, name: &str) -> FlextResult<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(FlextError::invalid_argument(format!(
            "Invalid {what} {name:?}: use 1 or more ASCII letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

/// An `INVALID_ARGUMENT` unless `prefix` is dot-separated tokens of ASCII letters, digits,
/// `_` and `-`.
pub(crate) fn check_prefix(prefix: &str) -> FlextResult<()> {
    for token in prefix.split('.') {
        check_name("subject prefix", token).map_err(|_| {
            FlextError::invalid_argument(format!(
                "Invalid subject prefix {prefix:?}: use dot-separated tokens of ASCII letters, \
                 digits, '_' or '-'"
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_are_tokens_of_safe_characters() {
        for good in ["A", "bank-1", "x_Y9"] {
            assert!(check_name("stream name", good).is_ok(), "{good}");
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        assert!(check_prefix("bank.events.v-1").is_ok());
        for bad in ["", "a b", "a.b", "a*", "a>", "ü"] {
            let err = check_name("stream name", bad).unwrap_err();
            assert!(err.to_string().contains("Invalid stream name"), "{err}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>"] {
            let err = check_prefix(bad).unwrap_err();
            assert!(
                err.to_string().contains("Invalid subject prefix"),
                "{bad}: {err}"
            );
        }
        assert!(
            EventStreams::new("S", "p")
                .unwrap()
                .with_duplicate_window(Duration::from_millis(99))
                .is_err()
        );
        let streams = EventStreams::new("S", "p")
            .unwrap()
            .with_duplicate_window(Duration::from_millis(100))
            .unwrap();
        assert_eq!(streams.duplicate_window(), Duration::from_millis(100));
        assert_eq!(streams.event_subjects(), "p.*.*");
        assert_eq!((streams.stream(), streams.subject_prefix()), ("S", "p"));
    }
}
