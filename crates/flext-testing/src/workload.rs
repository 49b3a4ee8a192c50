//! Store workloads for benchmarks: the same appends and reads on every store, so the
//! adapters' figures compare like with like.
//!
//! Each function does the work and returns how many events it wrote or read; a store error
//! is returned, never swallowed, so a benchmark cannot measure a failing store.

use std::sync::Arc;

use flext_protocols::EventStore;
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent};

/// The benchmark event: a small JSON object of the size a typical domain event has
/// (about 120 bytes).
pub fn event(n: u64) -> FlextResult<NewEvent> {
    let payload = JsonPayload::from_text(format!(
        r#"{{"n":{n},"account":"acc-{n:08}","amount":1250,"currency":"EUR","note":"benchmark deposit"}}"#
    ))?;
    Ok(NewEvent::new("Deposited", payload))
}

/// `count` benchmark events, numbered from `from`.
pub fn events(from: u64, count: u64) -> FlextResult<Vec<NewEvent>> {
    (from..from + count).map(event).collect()
}

/// Appends `count` events one per call to `stream`, each checked against the version the
/// previous one gave (optimistic concurrency, as a repository appends).
pub async fn append_one_by_one(
    store: &dyn EventStore,
    stream: &str,
    count: u64,
) -> FlextResult<u64> {
    let mut version = store.stream_version(stream).await?;
    for n in 0..count {
        let result = store
            .append(stream, ExpectedVersion::Exact(version), vec![event(n)?])
            .await?;
        version = result.last_version;
    }
    Ok(count)
}

/// `writers` tasks each append `per_writer` single events to a stream of their own
/// (`{prefix}-{writer}`), all at once. Returns the events written.
pub async fn append_concurrently(
    store: Arc<dyn EventStore>,
    prefix: &str,
    writers: u64,
    per_writer: u64,
) -> FlextResult<u64> {
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            let stream = format!("{prefix}-{writer}");
            tokio::spawn(async move { append_one_by_one(&*store, &stream, per_writer).await })
        })
        .collect();
    let mut written = 0;
    for task in tasks {
        written += task
            .await
            .map_err(|e| FlextError::operation(format!("a benchmark writer failed: {e}")))??;
    }
    Ok(written)
}

/// Appends `batches` batches of `batch_size` events to `stream`, each batch in one call.
pub async fn append_in_batches(
    store: &dyn EventStore,
    stream: &str,
    batches: u64,
    batch_size: u64,
) -> FlextResult<u64> {
    let mut version = store.stream_version(stream).await?;
    for batch in 0..batches {
        let result = store
            .append(
                stream,
                ExpectedVersion::Exact(version),
                events(batch * batch_size, batch_size)?,
            )
            .await?;
        version = result.last_version;
    }
    Ok(batches * batch_size)
}

/// Reads `stream` from its start; returns the events read.
pub async fn read_stream(store: &dyn EventStore, stream: &str) -> FlextResult<u64> {
    Ok(store.read_stream(stream, 1, usize::MAX).await?.len() as u64)
}

/// Reads the whole store from position 1 in pages of `page` events; returns the events
/// read.
pub async fn read_all(store: &dyn EventStore, page: usize) -> FlextResult<u64> {
    let mut from = 1;
    let mut read = 0;
    loop {
        let events = store.read_all(from, page).await?;
        let Some(last) = events.last() else {
            return Ok(read);
        };
        from = last.position + 1;
        read += events.len() as u64;
    }
}
