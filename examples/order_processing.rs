//! Run with `cargo run --example order_processing`.
//!
//! The guide's `OrderProcessingHandler`: a custom handler written against the abstract
//! handler contract, wrapped in a `BasicHandler` for metrics, processes four test orders
//! (standard, high-value, bulk, empty) and reports order statistics.

use flext_examples::orders::{OrderProcessingHandler, guide_test_orders};
use flext_handlers::prelude::*;

#[tokio::main]
async fn main() {
    let order_handler = BasicHandler::wrap(OrderProcessingHandler::new());

    println!("=== Order Processing Handler Testing ===");
    for (i, order_request) in guide_test_orders().into_iter().enumerate() {
        println!("\nOrder {}: Customer {}", i + 1, order_request.customer_id);
        match order_handler.handle(order_request).await {
            Ok(order) => {
                println!(
                    "✅ Order processed: {} (${:.2})",
                    order.id, order.total_amount
                );
                let status = serde_json::to_value(order.status).unwrap_or_default();
                println!("   Status: {}", status.as_str().unwrap_or("unknown"));
                for note in &order.processing_notes {
                    println!("   📝 {note}");
                }
            }
            Err(error) => println!("❌ Order failed: {error}"),
        }
    }

    let stats = order_handler.inner().get_order_statistics();
    println!("\n📊 Order Processing Statistics:");
    println!("   Total orders: {}", stats.total_orders);
    println!("   Total revenue: ${:.2}", stats.total_revenue);
    println!("   Average order value: ${:.2}", stats.average_order_value);
    println!(
        "   Orders requiring approval: {}",
        stats.orders_requiring_approval
    );

    let metrics = order_handler.get_metrics();
    println!(
        "\nHandler metrics: {} processed, {} successful, {} failed ({:.1}% success)",
        metrics.requests_processed,
        metrics.successful_requests,
        metrics.failed_requests,
        metrics.success_rate()
    );
}
