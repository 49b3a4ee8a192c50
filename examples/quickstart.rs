//! Run with `cargo run --example quickstart`.
//!
//! The guide's quick start, in two parts:
//!
//! 1. A `BasicHandler` configured for production handles a create-user request, then
//!    reports its success rate and average response time.
//! 2. The complete CQRS flow: a `CreateUserCommand` on the command bus, a `UserCreated`
//!    event on the event bus, a `GetUserQuery` on the query bus. The handlers and their
//!    registration are in `examples/src/users.rs`.

use flext_examples::users::{CreateUserCommand, GetUserQuery, UserCqrs, UserCreatedEvent};
use flext_handlers::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> FlextResult<()> {
    basic_handler().await?;
    cqrs().await
}

async fn basic_handler() -> FlextResult<()> {
    println!("=== Basic Handler ===");
    // Create a handler with metrics, state and per-environment configuration.
    let handler = BasicHandler::new("user_service");

    // Configure it for production (WARNING logs, strict validation, 30 s deadline, 1 retry).
    let production_config = BasicHandler::create_environment_handler_config("production")?;
    handler.configure(production_config.clone())?;
    println!("Handler configured for {}", production_config.environment);

    // Process a request; metrics are collected automatically.
    let request_data = json!({
        "action": "create_user",
        "user": {"name": "John Doe", "email": "john@company.com"},
        "metadata": {"source": "api", "version": "2.1.0"}
    });

    match handler.handle(request_data).await {
        Ok(response) => {
            println!("Request processed successfully: {response}");
            let metrics = handler.get_metrics();
            println!("Success rate: {:.1}%", metrics.success_rate());
            println!(
                "Average response time: {:.3}ms",
                metrics.average_processing_time.as_secs_f64() * 1000.0
            );
            println!("Handler state: {}", handler.state());
        }
        Err(error) => println!("Processing failed: {error}"),
    }
    Ok(())
}

async fn cqrs() -> FlextResult<()> {
    println!("\n=== Complete CQRS Implementation ===");
    let app = UserCqrs::new()?;

    let create_command = CreateUserCommand {
        name: "Alice Johnson".into(),
        email: "alice@company.com".into(),
        department: "Engineering".into(),
    };

    // Send the command; its own validation runs before the handler.
    let user_id = app.command_bus.send(create_command.clone()).await?;
    println!("✅ User created: {user_id}");

    // Publish the domain event to every subscriber.
    let report = app
        .event_bus
        .publish(UserCreatedEvent {
            user_id: user_id.clone(),
            user_name: create_command.name.clone(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await;
    println!(
        "Event UserCreated delivered to {} subscriber(s)",
        report.delivered
    );

    // Query the created user, with and without sensitive details.
    let user = app
        .query_bus
        .execute(GetUserQuery {
            user_id: user_id.clone(),
            include_details: true,
        })
        .await?;
    println!("✅ User retrieved: {} in {}", user.name, user.department);
    println!(
        "   Email (with details): {}",
        user.email.as_deref().unwrap_or("hidden")
    );
    let summary = app
        .query_bus
        .execute(GetUserQuery {
            user_id,
            include_details: false,
        })
        .await?;
    println!(
        "   Email (without details): {}",
        summary.email.as_deref().unwrap_or("hidden")
    );

    // An invalid command never reaches its handler.
    let invalid = CreateUserCommand {
        name: "A".into(),
        email: "a@company.com".into(),
        department: "Sales".into(),
    };
    if let Err(error) = app.command_bus.send(invalid).await {
        println!("❌ Rejected: {error} ({})", error.code().name());
    }

    let metrics = app.command_bus.metrics();
    println!(
        "Command bus: {} processed, {} successful, {} failed",
        metrics.commands_processed, metrics.successful_commands, metrics.failed_commands
    );
    Ok(())
}
