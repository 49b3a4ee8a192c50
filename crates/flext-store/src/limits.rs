//! [`StoreLimits`]: how big an event, its metadata and a batch may be, the same on every
//! store.

/// How big an append may be: every store checks a batch against its limits before it
/// touches storage, so a batch one store accepts no store with the same limits refuses.
///
/// A batch over a limit is an `INVALID_ARGUMENT` naming the limit (`max_payload_bytes`, …),
/// the size found, the limit and, for an event's own limits, the event; nothing is stored.
/// The error's data carries the same as JSON (`limit`, `size`, `max`, `stream_id` and
/// `event_id`).
///
/// The limits apply to every append, an exact retry of a committed batch included: a store
/// checks them before it looks for the batch's events. So lowering the limits (reopening a
/// store with smaller ones) can refuse, as `INVALID_ARGUMENT`, the retry of a batch that
/// committed under the old ones, where the same limits would have answered it with the
/// original result. The batch stays stored once; raise the limits back to retry it, or
/// read the stream to see that it committed.
///
/// | limit | default | measured as |
/// |---|---|---|
/// | [`max_payload_bytes`](Self::max_payload_bytes) | 1 MiB | the payload's JSON text, in bytes |
/// | [`max_metadata_bytes`](Self::max_metadata_bytes) | 64 KiB | the header names and values, in UTF-8 bytes (the ids are fixed-size) |
/// | [`max_batch_events`](Self::max_batch_events) | 10 000 | events in one append |
/// | [`max_batch_bytes`](Self::max_batch_bytes) | 16 MiB | the payloads and metadata of one append, measured as above |
///
/// Why these defaults: 1 MiB per event is Kafka's default largest message and
/// EventStoreDB's default largest append — an event is a fact, not a file; 64 KiB of
/// headers is more than any tracing or tenancy scheme needs and the size of the largest
/// request headers common HTTP servers accept; 10 000 events and 16 MiB bound what one
/// append holds in memory and how long it holds the store's append lock (an append is one
/// transaction), while leaving room for bulk imports and for 16 events of the largest size.
/// Set a limit to `usize::MAX` to lift it. The fixed limits of stream ids and event types
/// are [`flext_constants::store`]'s: they follow what the databases can index.
///
/// ```
/// use flext_store::{InMemoryEventStore, StoreLimits};
///
/// assert_eq!(StoreLimits::default().max_payload_bytes, 1024 * 1024);
/// let limits = StoreLimits::new()
///     .with_max_payload_bytes(64 * 1024)
///     .with_max_batch_events(100);
/// let store = InMemoryEventStore::with_limits(limits);
/// assert_eq!(store.limits().max_batch_events, 100);
/// assert_eq!(store.limits().max_metadata_bytes, StoreLimits::DEFAULT_MAX_METADATA_BYTES);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StoreLimits {
    /// The largest payload, as JSON text, in bytes (default
    /// [`DEFAULT_MAX_PAYLOAD_BYTES`](Self::DEFAULT_MAX_PAYLOAD_BYTES), 1 MiB).
    pub max_payload_bytes: usize,
    /// The largest metadata: its header names and values together, in UTF-8 bytes (default
    /// [`DEFAULT_MAX_METADATA_BYTES`](Self::DEFAULT_MAX_METADATA_BYTES), 64 KiB).
    pub max_metadata_bytes: usize,
    /// The most events in one append (default
    /// [`DEFAULT_MAX_BATCH_EVENTS`](Self::DEFAULT_MAX_BATCH_EVENTS), 10 000).
    pub max_batch_events: usize,
    /// The most payload and metadata bytes in one append (default
    /// [`DEFAULT_MAX_BATCH_BYTES`](Self::DEFAULT_MAX_BATCH_BYTES), 16 MiB).
    pub max_batch_bytes: usize,
}

impl StoreLimits {
    /// The default largest payload: 1 MiB.
    pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
    /// The default largest metadata: 64 KiB.
    pub const DEFAULT_MAX_METADATA_BYTES: usize = 64 * 1024;
    /// The default most events in one append: 10 000.
    pub const DEFAULT_MAX_BATCH_EVENTS: usize = 10_000;
    /// The default most payload and metadata bytes in one append: 16 MiB.
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

    /// The defaults.
    pub const fn new() -> Self {
        Self {
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            max_metadata_bytes: Self::DEFAULT_MAX_METADATA_BYTES,
            max_batch_events: Self::DEFAULT_MAX_BATCH_EVENTS,
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
        }
    }

    /// The same limits with payloads of at most `bytes`.
    #[must_use]
    pub const fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// The same limits with metadata of at most `bytes`.
    #[must_use]
    pub const fn with_max_metadata_bytes(mut self, bytes: usize) -> Self {
        self.max_metadata_bytes = bytes;
        self
    }

    /// The same limits with at most `events` events in one append.
    #[must_use]
    pub const fn with_max_batch_events(mut self, events: usize) -> Self {
        self.max_batch_events = events;
        self
    }

    /// The same limits with at most `bytes` of payloads and metadata in one append.
    #[must_use]
    pub const fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_documented_sizes() {
        let limits = StoreLimits::default();
        assert_eq!(limits, StoreLimits::new());
        assert_eq!(limits.max_payload_bytes, 1_048_576, "1 MiB");
        assert_eq!(limits.max_metadata_bytes, 65_536, "64 KiB");
        assert_eq!(limits.max_batch_events, 10_000);
        assert_eq!(limits.max_batch_bytes, 16_777_216, "16 MiB");
    }

    #[test]
    fn each_setter_sets_its_own_limit() {
        let limits = StoreLimits::new()
            .with_max_payload_bytes(1)
            .with_max_metadata_bytes(2)
            .with_max_batch_events(3)
            .with_max_batch_bytes(4);
        assert_eq!(
            (
                limits.max_payload_bytes,
                limits.max_metadata_bytes,
                limits.max_batch_events,
                limits.max_batch_bytes
            ),
            (1, 2, 3, 4)
        );
    }
}
