//! Run with `cargo run --example event_sourcing`, or on a durable store with
//! `-- --store sqlite:events.db` or `-- --store postgres:postgres://postgres@127.0.0.1/test#demo`
//! (`memory`, the default, keeps the events in the process).
//!
//! The guide's "Complete Enterprise CQRS System with Event Sourcing": four users are created
//! and one is updated through the command bus (each command runs on the event-sourced `User`
//! aggregate), a projection runner feeds the read model from the event store, the query bus
//! answers from the read model, and the store's history is listed. The domain code is in
//! `examples/src/enterprise.rs`.

use std::collections::BTreeMap;

use flext_examples::enterprise::{
    DepartmentStats, EnterpriseUserSystem, UpdateUserCommand, UserProjection, guide_users,
};
use flext_examples::store_choice::StoreChoice;
use flext_handlers::prelude::*;
use serde_json::json;

/// Waits, up to 30 s, until readers of the whole log see `position`. On PostgreSQL a
/// commit shows to them once every older append to the store has ended (the store's read
/// barrier, so that no reader ever skips an event), which a read model catching up right
/// after a write would race if another append were in flight; the other stores show it at
/// once.
async fn until_the_log_shows(store: &dyn EventStore, position: u64) -> FlextResult<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.head_position().await? < position && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> FlextResult<()> {
    let choice = match StoreChoice::from_args(std::env::args().skip(1)) {
        Ok(choice) => choice,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    println!("=== Complete Enterprise CQRS with Event Sourcing ===");
    let store = match choice.open().await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("cannot open the event store: {error}");
            std::process::exit(1);
        }
    };
    let system = EnterpriseUserSystem::with_event_store(store)?;
    if choice != StoreChoice::Memory {
        println!("   Event store: {}", choice.describe());
    }

    println!("\n1. Creating users through command bus...");
    let mut created_user_ids = Vec::new();
    for command in guide_users() {
        let name = command.name.clone();
        match system.command_bus.send(command).await {
            Ok(user_id) => {
                println!("✅ Created user: {name} -> {user_id}");
                created_user_ids.push(user_id);
            }
            Err(error) => println!("❌ Failed to create {name}: {error}"),
        }
    }

    println!("\n2. Updating users through command bus...");
    let alice = created_user_ids[0].clone();
    let updates = BTreeMap::from([
        ("department".to_owned(), json!("Senior Engineering")),
        ("title".to_owned(), json!("Senior Developer")),
    ]);
    match system
        .command_bus
        .send(UpdateUserCommand {
            user_id: alice.clone(),
            updates,
        })
        .await
    {
        Ok(_) => println!("✅ Updated user {alice}"),
        Err(error) => println!("❌ Update failed: {error}"),
    }

    // The read model follows the event store through its checkpoint, once the log shows
    // what the commands wrote.
    let mut last_written = 0;
    for user_id in &created_user_ids {
        if let Some(event) = system.users.history(user_id).await?.last() {
            last_written = last_written.max(event.position);
        }
    }
    until_the_log_shows(&*system.event_store, last_written).await?;
    let progress = system.projection_runner.catch_up().await?;
    println!(
        "   Projection applied {} events (checkpoint {})",
        progress.applied, progress.position
    );

    println!("\n3. Querying read models...");
    for user_id in &created_user_ids[..2] {
        let projection: FlextResult<UserProjection> = system
            .query_bus
            .execute_named_as("GetUserProjection", user_id)
            .await;
        match projection {
            Ok(p) => println!(
                "✅ User projection {user_id}: {} in {}",
                p.name, p.department
            ),
            Err(error) => println!("❌ Query failed: {error}"),
        }
    }
    let stats: BTreeMap<String, DepartmentStats> = system
        .query_bus
        .execute_named_as("GetDepartmentStats", json!({}))
        .await?;
    println!("\n📊 Department Statistics:");
    for (department, stats) in &stats {
        println!("   {department}: {} users", stats.user_count);
    }

    println!("\n4. Event store analysis...");
    let all = system.event_store.read_all(1, usize::MAX).await?;
    let types: std::collections::BTreeSet<_> =
        all.iter().map(|e| e.event_type.to_string()).collect();
    println!("   Total events in store: {}", all.len());
    println!("   Event types: {types:?}");
    println!("\n   Events for user {alice}:");
    for event in system.users.history(&alice).await? {
        println!(
            "     - {} (v{}) at {}",
            event.event_type, event.version, event.timestamp
        );
    }
    Ok(())
}
