//! Limits every event store enforces alike, so an append that one store accepts no other
//! store rejects.

/// The longest stream id, in bytes (UTF-8). PostgreSQL's btree indexes cannot hold much
/// more than 2.7 KB per key; every store keeps well below.
pub const MAX_STREAM_ID_BYTES: usize = 1024;

/// The longest event type name, in bytes (UTF-8).
pub const MAX_EVENT_TYPE_BYTES: usize = 256;
