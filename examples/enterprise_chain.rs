//! Run with `cargo run --example enterprise_chain`.
//!
//! The guide's enterprise processing chain: authentication → authorization → validation →
//! business logic, six requests through it, then each handler's counters and the chain's
//! metrics. The handlers are in `examples/src/api_chain.rs`.

use std::sync::Arc;

use flext_examples::api_chain::{
    AuthenticationHandler, AuthorizationHandler, BusinessLogicHandler, ValidationHandler,
    guide_requests,
};
use flext_handlers::prelude::*;

#[tokio::main]
async fn main() -> FlextResult<()> {
    println!("=== Building Enterprise Processing Chain ===");
    let auth = Arc::new(AuthenticationHandler::default());
    let authz = Arc::new(AuthorizationHandler::default());
    let validation = Arc::new(ValidationHandler::default());
    let business = Arc::new(BusinessLogicHandler::default());

    let mut chain = HandlerChain::new("enterprise_api_pipeline");
    chain.add_handler(auth.clone())?;
    println!("✅ Authentication handler added to chain");
    chain.add_handler(authz.clone())?;
    println!("✅ Authorization handler added to chain");
    chain.add_handler(validation.clone())?;
    println!("✅ Validation handler added to chain");
    chain.add_handler(business.clone())?;
    println!("✅ Business Logic handler added to chain");

    let requests = guide_requests();
    println!(
        "\n🔗 Processing {} requests through enterprise chain...",
        requests.len()
    );
    for (i, request) in requests.into_iter().enumerate() {
        let operation = request["operation"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let endpoint = request["endpoint"].as_str().unwrap_or("unknown").to_owned();
        println!("\n--- Request {}: {operation} at {endpoint} ---", i + 1);
        match chain.handle(request).await {
            Ok(processed) => {
                println!("✅ Enterprise chain processing successful!");
                let text = |key: &str| processed[key].as_str().unwrap_or("-").to_owned();
                println!("   Operation: {}", text("operation"));
                println!("   Status: {}", text("status"));
                println!("   Processed by: {}", text("processed_by"));
                println!("   User: {}", text("user_id"));
                if processed.get("resource_id").is_some() {
                    println!("   Resource: {}", text("resource_id"));
                }
            }
            Err(error) => println!("❌ Enterprise chain failed: {error}"),
        }
    }

    println!("\n📊 Enterprise Chain Performance Metrics:");
    let rate = |total: u64, failed: u64| (total - failed) as f64 / total.max(1) as f64 * 100.0;
    for (label, counters, total_word, failed_word) in [
        ("Authentication", &auth.counters, "Attempts", "Failures"),
        ("Authorization", &authz.counters, "Checks", "Denied"),
        (
            "Validation",
            &validation.counters,
            "Validations",
            "Failures",
        ),
        ("Business Logic", &business.counters, "Processed", "Errors"),
    ] {
        println!("{label}:");
        println!("   - {total_word}: {}", counters.total());
        println!("   - {failed_word}: {}", counters.failures());
        println!(
            "   - Success rate: {:.1}%",
            rate(counters.total(), counters.failures())
        );
    }

    let metrics = chain.get_chain_metrics();
    println!("\nOverall Chain:");
    println!("   - Total requests: {}", metrics.total_requests);
    println!("   - Successful: {}", metrics.successful_requests);
    println!("   - Failed: {}", metrics.failed_requests);
    println!(
        "   - Success rate: {:.1}%",
        rate(metrics.total_requests, metrics.failed_requests)
    );
    for link in &metrics.handlers {
        println!(
            "   - {}: {} runs, {} failures, {:.3} ms average",
            link.name,
            link.executions,
            link.failures,
            link.average_time.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
