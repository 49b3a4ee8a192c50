//! Run with `cargo run --example handler_management`.
//!
//! The guide's "Handler Registry and Management": an ecosystem of four handlers (an email
//! validator, an admin authorizer, a data processor and the custom order processor) is
//! registered with its configuration, each is executed by name with a JSON request, then
//! the health report is printed and idle handlers are cleaned up.

use std::time::Duration;

use flext_examples::management::{guide_ecosystem, guide_requests};
use flext_handlers::prelude::*;

#[tokio::main]
async fn main() -> FlextResult<()> {
    println!("=== Enterprise Handler Management System ===");
    let manager = HandlerManager::new();
    let registered = manager.register_ecosystem(guide_ecosystem())?;
    println!("✅ Successfully registered {} handlers", registered.len());
    for (name, kind) in &registered {
        println!("   - {name}: {kind}");
    }

    println!("\n🔧 Testing handlers through management system...");
    for (name, request) in guide_requests() {
        println!("\n--- Testing {name} ---");
        match manager.execute(name, request).await {
            Ok(response) => {
                println!("✅ Handler {name} executed successfully");
                if let Some(fields) = response.as_object() {
                    for (key, value) in fields
                        .iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "data" | "items"))
                    {
                        println!("   {key}: {value}");
                    }
                }
            }
            Err(error) => println!("❌ Handler {name} failed: {error}"),
        }
    }

    println!("\n📊 Generating Handler Health Report...");
    let report = manager.get_handler_health_report();
    println!("Handler Ecosystem Health Report:");
    println!("   Report generated: {}", report.generated_at);
    println!("   Total handlers: {}", report.total_registered_handlers);
    println!("   Active: {}", report.active_handlers);
    println!("   Idle: {}", report.idle_handlers);
    println!("   With errors: {}", report.unhealthy_handlers);
    println!(
        "   Total requests processed: {}",
        report.total_requests_processed
    );
    println!(
        "   Average response time: {:.3}ms",
        report.average_response_time_ms
    );
    println!("\nHandler Details:");
    for (name, details) in &report.handlers {
        println!("   {name} ({}):", details.kind);
        println!("     - Health: {:?}", details.health);
        println!("     - Requests: {}", details.requests_processed);
        println!("     - Avg time: {:.3}ms", details.average_duration_ms);
        println!(
            "     - Last used: {}",
            details
                .last_used
                .map_or("Never".to_owned(), |t| t.to_string())
        );
        if let Some(error) = &details.last_error {
            println!("     - Last error: {error}");
        }
    }

    println!("\n🧹 Testing handler cleanup (zero idle time, for the demo)...");
    let cleaned = manager.cleanup_inactive(Duration::ZERO);
    if cleaned.is_empty() {
        println!("   No handlers needed cleanup (all recently active)");
    } else {
        println!("   Cleaned up handlers: {cleaned:?}");
    }
    Ok(())
}
