//! The guide's event-sourcing scenario, asserted on typed results.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use flext_examples::enterprise::{
    DepartmentStats, EnterpriseUserSystem, UpdateUserCommand, UserEvent, UserProjection,
    UserProjections, guide_users,
};
use flext_handlers::CQRS::{Backoff, ProjectionConfig};
use flext_handlers::prelude::*;
use flext_handlers::types::{FlextError, FlextResult, StoredEvent};
use serde_json::json;

/// The guide's commands: four users created, then Alice updated (five events).
async fn send_the_guides_commands() -> (EnterpriseUserSystem, Vec<String>) {
    let system = EnterpriseUserSystem::new().unwrap();
    let mut ids = Vec::new();
    for command in guide_users() {
        ids.push(system.command_bus.send(command).await.unwrap());
    }
    let updates = BTreeMap::from([
        ("department".to_owned(), json!("Senior Engineering")),
        ("title".to_owned(), json!("Senior Developer")),
    ]);
    assert!(
        system
            .command_bus
            .send(UpdateUserCommand {
                user_id: ids[0].clone(),
                updates
            })
            .await
            .unwrap()
    );
    (system, ids)
}

async fn run_the_guides_flow() -> (EnterpriseUserSystem, Vec<String>) {
    let (system, ids) = send_the_guides_commands().await;
    system.projection_runner.catch_up().await.unwrap();
    (system, ids)
}

#[tokio::test]
async fn four_users_created_and_alice_updated_give_five_events() {
    let (system, ids) = run_the_guides_flow().await;
    assert_eq!(ids.len(), 4);
    assert!(
        ids.iter()
            .all(|id| id.starts_with("user_") && id.len() == 13),
        "{ids:?}"
    );
    assert_eq!(system.command_bus.metrics().successful_commands, 5);

    let all = system.event_store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 5);
    let created = all
        .iter()
        .filter(|e| &*e.event_type == "UserCreated")
        .count();
    assert_eq!(
        (
            created,
            all.iter()
                .filter(|e| &*e.event_type == "UserUpdated")
                .count()
        ),
        (4, 1)
    );

    let history = system.users.history(&ids[0]).await.unwrap();
    let versions: Vec<_> = history
        .iter()
        .map(|e| (e.event_type.to_string(), e.version))
        .collect();
    assert_eq!(
        versions,
        [("UserCreated".to_owned(), 1), ("UserUpdated".to_owned(), 2)]
    );
    assert!(
        matches!(&history[1].payload, UserEvent::Updated { updates, .. } if updates["title"] == "Senior Developer")
    );

    let alice = system.users.load(&ids[0]).await.unwrap();
    assert_eq!(
        (alice.state.name.as_str(), alice.state.department.as_str()),
        ("Alice Johnson", "Senior Engineering")
    );
}

#[tokio::test]
async fn projections_reflect_the_update_and_department_counts() {
    let (system, ids) = run_the_guides_flow().await;
    let alice: UserProjection = system
        .query_bus
        .execute_named_as("GetUserProjection", &ids[0])
        .await
        .unwrap();
    assert_eq!(
        (
            alice.name.as_str(),
            alice.department.as_str(),
            alice.event_version
        ),
        ("Alice Johnson", "Senior Engineering", 2)
    );
    let bob: UserProjection = system
        .query_bus
        .execute_named_as("GetUserProjection", &ids[1])
        .await
        .unwrap();
    assert_eq!(
        (bob.name.as_str(), bob.department.as_str()),
        ("Bob Smith", "Sales")
    );

    let stats: BTreeMap<String, DepartmentStats> = system
        .query_bus
        .execute_named_as("GetDepartmentStats", json!({}))
        .await
        .unwrap();
    let counts: BTreeMap<&str, u64> = stats
        .iter()
        .map(|(d, s)| (d.as_str(), s.user_count))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("Engineering", 1),
            ("Marketing", 1),
            ("Sales", 1),
            ("Senior Engineering", 1)
        ])
    );
}

#[tokio::test]
async fn the_read_model_rebuilds_to_the_same_state_and_bad_commands_store_nothing() {
    let (system, ids) = run_the_guides_flow().await;
    let before = system.projections.get_department_statistics();
    let progress = system.projection_runner.rebuild().await.unwrap();
    assert_eq!(progress.applied, 5);
    assert_eq!(system.projections.get_department_statistics(), before);

    let err = system
        .command_bus
        .send(UpdateUserCommand {
            user_id: "user_missing".into(),
            updates: BTreeMap::from([("name".into(), json!("X"))]),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (ErrorCode::NotFound, "User user_missing not found")
    );
    let err = system
        .command_bus
        .send(UpdateUserCommand {
            user_id: ids[0].clone(),
            updates: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    let err = system
        .query_bus
        .execute_named("GetUserProjection", "user_missing")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "User user_missing not found in projections"
    );
    assert_eq!(
        system
            .event_store
            .read_all(1, usize::MAX)
            .await
            .unwrap()
            .len(),
        5,
        "nothing was stored"
    );
}

/// The user projections behind a gate that rejects the events at chosen positions, as if
/// the read model's database refused them for a while.
struct Refusing {
    inner: Arc<UserProjections>,
    refused: Mutex<HashSet<u64>>,
}

#[async_trait]
impl Projection for Refusing {
    fn name(&self) -> &str {
        "refusing_user_projections"
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        if self.refused.lock().unwrap().contains(&event.position) {
            return Err(FlextError::validation("the read model refused it"));
        }
        self.inner.apply(event).await
    }

    async fn reset(&self) -> FlextResult<()> {
        self.inner.reset().await
    }
}

#[tokio::test]
async fn a_dead_letter_retried_after_newer_events_of_other_users_reaches_the_projections() {
    let (system, ids) = send_the_guides_commands().await;
    // Bob's creation (position 2) is refused; Carol, David and Alice's update go on.
    let refusing = Arc::new(Refusing {
        inner: system.projections.clone(),
        refused: Mutex::new(HashSet::from([2])),
    });
    let runner = ProjectionRunner::new(
        system.event_store.clone(),
        Arc::new(InMemoryEventStore::new()),
        refusing.clone(),
    )
    .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.dead_lettered), (4, 1));
    assert_eq!(
        system
            .projections
            .get_user_projection(&ids[1])
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );

    refusing.refused.lock().unwrap().clear();
    assert_eq!(runner.retry_dead_letter(2).await.unwrap().applied, [2]);
    let bob = system.projections.get_user_projection(&ids[1]).unwrap();
    assert_eq!(
        (
            bob.name.as_str(),
            bob.department.as_str(),
            bob.event_version
        ),
        ("Bob Smith", "Sales", 1)
    );
    assert_eq!(
        system.projections.get_department_statistics()["Sales"].user_count,
        1
    );

    // Applied again (a restart before a checkpoint), an event changes nothing.
    let before = system.projections.get_department_statistics();
    for event in system.event_store.read_all(1, usize::MAX).await.unwrap() {
        refusing.apply(&event).await.unwrap();
    }
    assert_eq!(system.projections.get_department_statistics(), before);
}
