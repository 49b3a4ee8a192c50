//! Run with `cargo run --example order_saga`.
//!
//! An order as a saga of three steps: reserve inventory → charge payment → ship. Three
//! orders show the three outcomes: one completes; one is paid with a declined card, so its
//! reserved inventory is released; one is interrupted by a simulated crash right after the
//! card is charged, and a restarted process resumes it from the saga's records without
//! charging the card twice. The domain code is in `examples/src/order_saga.rs`.

use std::sync::Arc;

use flext_examples::order_saga::{
    DECLINED_CARD, GOOD_CARD, Journal, Order, OrderState, Shop, card_tail, crash_and_resume,
    dollars, order_saga,
};
use flext_handlers::Patterns::{SagaOutcome, SagaStatus};
use flext_handlers::prelude::*;

#[tokio::main]
async fn main() -> FlextResult<()> {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let shop = Arc::new(Shop::new(Journal::new(), &[("WIDGET", 10), ("GADGET", 5)]));
    let saga = order_saga(store.clone(), shop.clone())?;
    println!("=== Order saga: reserve inventory → charge payment → ship ===");

    let paid = Order::new("order-1", "WIDGET", 2, 5_998, GOOD_CARD, "Lisbon");
    println!("\n1. {}", describe(&paid));
    report(&saga.run(&paid.id.clone(), paid.into()).await?);

    let declined = Order::new("order-2", "WIDGET", 3, 8_997, DECLINED_CARD, "Porto");
    println!("\n2. {}", describe(&declined));
    report(&saga.run(&declined.id.clone(), declined.into()).await?);
    println!(
        "   WIDGET in stock: {} (10, less 2 shipped)",
        shop.warehouse.stock("WIDGET")
    );

    let interrupted = Order::new("order-3", "GADGET", 1, 15_000, GOOD_CARD, "Faro");
    println!(
        "\n3. {} — the process dies after charging the card, before recording it",
        describe(&interrupted)
    );
    let seen = crash_and_resume(store.clone(), shop.clone(), interrupted).await?;
    println!("   💥 first process stopped: {}", seen.crash);
    println!("   🔁 restarted; unfinished runs: {:?}", seen.unfinished);
    for (id, resumed) in &seen.resumed {
        match resumed {
            Ok(outcome) => report(outcome),
            Err(error) => println!("   ❌ {id} could not be resumed: {error}"),
        }
    }
    let charges = shop
        .journal
        .lines()
        .iter()
        .filter(|line| line.starts_with("charged ") && line.contains(" for order-3 "))
        .count();
    println!("   card charges for order-3: {charges}");

    println!("\nWhat the outside world saw:");
    for line in shop.journal.lines() {
        println!("   {line}");
    }
    Ok(())
}

fn describe(order: &Order) -> String {
    format!(
        "{}: {} × {}, {}, card {}, to {}",
        order.id,
        order.quantity,
        order.sku,
        dollars(order.amount_cents),
        card_tail(&order.card),
        order.address
    )
}

fn report(outcome: &SagaOutcome<OrderState>) {
    let state = &outcome.data;
    match outcome.status {
        SagaStatus::Completed => println!(
            "   ✅ {} completed: reservation {}, payment {}, tracking {}",
            outcome.saga_id,
            state.reservation.as_deref().unwrap_or("-"),
            state.payment.as_deref().unwrap_or("-"),
            state.tracking.as_deref().unwrap_or("-"),
        ),
        SagaStatus::Compensated | SagaStatus::CompensationFailed => {
            let how = if outcome.status == SagaStatus::Compensated {
                "compensated"
            } else {
                "not fully compensated (a resume retries the failed compensations)"
            };
            println!(
                "   ↩️  {} {how}: {} failed ({}); undone: {}",
                outcome.saga_id,
                outcome.failed_step.as_deref().unwrap_or("-"),
                outcome
                    .error
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                outcome.compensated.join(", "),
            );
            for (step, error) in &outcome.compensation_failures {
                println!("   ⚠️  compensation of {step} failed: {error}");
            }
        }
    }
}
