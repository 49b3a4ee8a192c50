//! The behaviours every [`SnapshotStore`] must have.

use std::sync::Arc;

use flext_protocols::SnapshotStore;
use flext_types::{JsonPayload, Snapshot};
use serde_json::json;

use crate::unique_name;

/// The names of every behaviour.
pub const BEHAVIOURS: &[&str] = &[
    "snapshots_round_trip",
    "older_snapshots_do_not_replace_newer",
];

fn snapshot(stream: &str, version: u64) -> Snapshot {
    Snapshot {
        stream_id: stream.to_owned(),
        version,
        schema_version: 2,
        payload: JsonPayload::encode(&json!({"total": version * 10})).expect("JSON"),
        timestamp: time::OffsetDateTime::UNIX_EPOCH,
    }
}

/// A saved snapshot loads back as written; a stream without one has none.
pub async fn snapshots_round_trip(store: Arc<dyn SnapshotStore>) {
    let stream = unique_name("snap");
    assert_eq!(store.load_snapshot(&stream).await.expect("load"), None);
    let saved = snapshot(&stream, 5);
    store.save_snapshot(saved.clone()).await.expect("save");
    let loaded = store
        .load_snapshot(&stream)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!((loaded.version, loaded.schema_version), (5, 2));
    assert_eq!(
        loaded.payload.decode::<serde_json::Value>().unwrap(),
        json!({"total": 50})
    );
    store
        .save_snapshot(snapshot(&stream, 9))
        .await
        .expect("save");
    assert_eq!(
        store.load_snapshot(&stream).await.unwrap().unwrap().version,
        9,
        "a later snapshot replaces it"
    );
    assert_eq!(
        store.load_snapshot(&unique_name("other")).await.unwrap(),
        None,
        "snapshots are per stream"
    );
}

/// A snapshot of an earlier version never replaces a later one.
pub async fn older_snapshots_do_not_replace_newer(store: Arc<dyn SnapshotStore>) {
    let stream = unique_name("snap-order");
    store
        .save_snapshot(snapshot(&stream, 20))
        .await
        .expect("save");
    store
        .save_snapshot(snapshot(&stream, 10))
        .await
        .expect("save");
    assert_eq!(
        store.load_snapshot(&stream).await.unwrap().unwrap().version,
        20
    );
}
