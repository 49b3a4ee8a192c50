//! The behaviours every [`CheckpointStore`] must have.

use std::sync::Arc;

use flext_protocols::CheckpointStore;
use flext_types::{DeadLetter, FlextError};
use uuid::Uuid;

use crate::unique_name;

/// The names of every behaviour.
pub const BEHAVIOURS: &[&str] = &[
    "checkpoints_round_trip",
    "dead_letters_round_trip_and_reset",
    "dead_letters_are_kept_once_per_position_and_removed_one_by_one",
];

/// Checkpoints start absent, load back as saved, move when saved again, and are per name.
pub async fn checkpoints_round_trip(store: Arc<dyn CheckpointStore>) {
    let name = unique_name("projection");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), None);
    store.save_checkpoint(&name, 41).await.expect("save");
    assert_eq!(store.load_checkpoint(&name).await.unwrap(), Some(41));
    store.save_checkpoint(&name, 42).await.expect("save");
    assert_eq!(store.load_checkpoint(&name).await.unwrap(), Some(42));
    assert_eq!(
        store.load_checkpoint(&unique_name("other")).await.unwrap(),
        None
    );
}

/// Dead letters accumulate in order with their errors; a reset forgets them and the
/// checkpoint.
pub async fn dead_letters_round_trip_and_reset(store: Arc<dyn CheckpointStore>) {
    let name = unique_name("projection");
    assert!(store.dead_letters(&name).await.expect("load").is_empty());
    for position in [7u64, 9] {
        store
            .add_dead_letter(&name, letter(position, 3))
            .await
            .expect("add");
    }
    store.save_checkpoint(&name, 9).await.unwrap();
    let letters = store.dead_letters(&name).await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.position).collect::<Vec<_>>(),
        [7, 9]
    );
    assert_eq!(letters[1].error.to_string(), "bad event at 9");
    assert_eq!(letters[1].attempts, 3);
    store.reset(&name).await.expect("reset");
    assert!(store.dead_letters(&name).await.unwrap().is_empty());
    assert_eq!(store.load_checkpoint(&name).await.unwrap(), None);
}

/// A name keeps one letter per position: adding it again (a retried write) replaces it.
/// Removing a letter forgets that one only, says whether there was one, and leaves the
/// checkpoint alone.
pub async fn dead_letters_are_kept_once_per_position_and_removed_one_by_one(
    store: Arc<dyn CheckpointStore>,
) {
    let name = unique_name("projection");
    let other = unique_name("projection");
    store
        .add_dead_letter(&name, letter(5, 1))
        .await
        .expect("add");
    store
        .add_dead_letter(&name, letter(3, 1))
        .await
        .expect("add");
    store
        .add_dead_letter(&name, letter(5, 4))
        .await
        .expect("add again");
    store
        .add_dead_letter(&other, letter(5, 1))
        .await
        .expect("add");
    store.save_checkpoint(&name, 5).await.unwrap();
    let letters = store.dead_letters(&name).await.unwrap();
    assert_eq!(
        letters
            .iter()
            .map(|l| (l.position, l.attempts))
            .collect::<Vec<_>>(),
        [(3, 1), (5, 4)],
        "one letter per position, the latest kept, in position order"
    );
    assert!(store.remove_dead_letter(&name, 5).await.expect("remove"));
    assert!(
        !store
            .remove_dead_letter(&name, 5)
            .await
            .expect("remove again")
    );
    assert!(
        !store
            .remove_dead_letter(&unique_name("none"), 3)
            .await
            .unwrap()
    );
    let left = store.dead_letters(&name).await.unwrap();
    assert_eq!(left.iter().map(|l| l.position).collect::<Vec<_>>(), [3]);
    assert_eq!(
        store.dead_letters(&other).await.unwrap().len(),
        1,
        "per name"
    );
    assert_eq!(store.load_checkpoint(&name).await.unwrap(), Some(5));
}

fn letter(position: u64, attempts: u32) -> DeadLetter {
    DeadLetter {
        position,
        event_id: Uuid::new_v4(),
        stream_id: "User-1".to_owned(),
        event_type: "UserCreated".to_owned(),
        attempts,
        error: FlextError::validation(format!("bad event at {position}")),
        parked_behind: None,
    }
}
