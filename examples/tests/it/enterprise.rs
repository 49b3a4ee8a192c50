//! The guide's event-sourcing scenario, asserted on typed results.

use std::collections::BTreeMap;

use flext_examples::enterprise::{
    DepartmentStats, EnterpriseUserSystem, UpdateUserCommand, UserEvent, UserProjection,
    guide_users,
};
use flext_handlers::prelude::*;
use serde_json::json;

async fn run_the_guides_flow() -> (EnterpriseUserSystem, Vec<String>) {
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
