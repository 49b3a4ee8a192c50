//! Appends to a [`SqliteEventStore`]: handed to the store's writer thread, which commits
//! them in groups (see the `writer` module).

use flext_types::{AppendResult, ExpectedVersion, FlextResult, NewEvent};

use crate::SqliteEventStore;

impl SqliteEventStore {
    /// Appends a batch `flext_store::tables::check_batch` passed (valid, within the
    /// limits, with events). The answer comes once the append is committed; the writer
    /// thread has then advanced the head, waking live subscriptions.
    pub(crate) async fn append_now(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        self.inner.writer.append(stream_id, expected, events).await
    }
}
