//! Run with `cargo run --example quickstart`.
//!
//! The guide's quick start: a `BasicHandler` configured for production handles a
//! create-user request, then reports its success rate and average response time.

use flext_handlers::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> FlextResult<()> {
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
