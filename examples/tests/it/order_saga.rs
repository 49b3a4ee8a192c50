//! The order saga's three outcomes, on typed results: completed, compensated after a
//! declined card, finished by a restarted process after a crash.

use std::sync::Arc;

use flext_examples::order_saga::{
    DECLINED_CARD, GOOD_CARD, Journal, NO_DELIVERY, Order, SAGA_NAME, Shop, crash_and_resume,
    order_saga,
};
use flext_handlers::Patterns::SagaStatus;
use flext_handlers::prelude::*;

fn shop() -> Arc<Shop> {
    Arc::new(Shop::new(Journal::new(), &[("WIDGET", 10)]))
}

#[tokio::test]
async fn a_paid_order_reserves_inventory_charges_the_card_and_ships() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let shop = shop();
    let saga = order_saga(store, shop.clone()).unwrap();
    let order = Order::new("o-1", "WIDGET", 2, 5_998, GOOD_CARD, "Lisbon");
    let outcome = saga.run("o-1", order.into()).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Completed);
    assert_eq!(outcome.data.reservation.as_deref(), Some("res-o-1"));
    assert_eq!(outcome.data.payment.as_deref(), Some("pay-o-1"));
    assert_eq!(outcome.data.tracking.as_deref(), Some("trk-o-1"));
    assert_eq!(shop.warehouse.stock("WIDGET"), 8);
    assert_eq!(
        shop.journal.lines(),
        [
            "reserved 2 × WIDGET for o-1 (res-o-1)",
            "charged $59.98 to card …4242 for o-1 (pay-o-1)",
            "shipped o-1 to Lisbon (trk-o-1)",
        ]
    );
}

#[tokio::test]
async fn a_declined_payment_releases_the_reserved_inventory() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let shop = shop();
    let saga = order_saga(store, shop.clone()).unwrap();
    let order = Order::new("o-2", "WIDGET", 3, 8_997, DECLINED_CARD, "Porto");
    let outcome = saga.run("o-2", order.into()).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(outcome.failed_step.as_deref(), Some("charge_payment"));
    let error = outcome.error.unwrap();
    assert_eq!(
        (error.code(), error.to_string()),
        (
            ErrorCode::BusinessRuleViolation,
            "card …0002 declined".into()
        )
    );
    assert_eq!(outcome.compensated, ["reserve_inventory"]);
    assert!(outcome.compensation_failures.is_empty());
    assert_eq!(shop.warehouse.stock("WIDGET"), 10, "the units are back");
    assert_eq!(
        shop.journal.lines(),
        [
            "reserved 3 × WIDGET for o-2 (res-o-2)",
            "released 3 × WIDGET for o-2 (res-o-2)",
        ]
    );
}

#[tokio::test]
async fn a_refused_shipment_refunds_the_payment_and_releases_the_inventory() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let shop = shop();
    let saga = order_saga(store, shop.clone()).unwrap();
    let order = Order::new("o-4", "WIDGET", 1, 2_999, GOOD_CARD, NO_DELIVERY);
    let outcome = saga.run("o-4", order.into()).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(outcome.failed_step.as_deref(), Some("ship"));
    assert_eq!(outcome.compensated, ["charge_payment", "reserve_inventory"]);
    assert_eq!(
        shop.journal.lines(),
        [
            "reserved 1 × WIDGET for o-4 (res-o-4)",
            "charged $29.99 to card …4242 for o-4 (pay-o-4)",
            "refunded $29.99 for o-4 (pay-o-4)",
            "released 1 × WIDGET for o-4 (res-o-4)",
        ]
    );
}

#[tokio::test]
async fn a_run_that_crashed_after_charging_is_resumed_and_charges_the_card_once() {
    let store = InMemoryEventStore::new();
    let shop = shop();
    let order = Order::new("o-3", "WIDGET", 1, 15_000, GOOD_CARD, "Faro");
    let seen = crash_and_resume(Arc::new(store.clone()), shop.clone(), order)
        .await
        .unwrap();
    assert_eq!(seen.crash.code(), ErrorCode::StorageError);
    assert_eq!(seen.unfinished, ["o-3"]);
    assert_eq!(seen.resumed.len(), 1);
    let (id, outcome) = &seen.resumed[0];
    let outcome = outcome.as_ref().unwrap();
    assert_eq!(
        (id.as_str(), outcome.status),
        ("o-3", SagaStatus::Completed)
    );
    assert_eq!(outcome.data.tracking.as_deref(), Some("trk-o-3"));
    assert_eq!(
        shop.journal.lines(),
        [
            "reserved 1 × WIDGET for o-3 (res-o-3)",
            "charged $150.00 to card …4242 for o-3 (pay-o-3)",
            "shipped o-3 to Faro (trk-o-3)",
        ],
        "the charge ran again under its key and the gateway applied it once"
    );
    // The run's records: the charge was started twice (before and after the crash) and
    // completed once.
    let records: Vec<String> = store
        .read_stream(&format!("Saga-{SAGA_NAME}-o-3"), 1, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(
        records,
        [
            "SagaStarted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaCompleted",
        ]
    );
    let again = order_saga(Arc::new(store), shop).unwrap();
    assert!(again.unfinished().await.unwrap().is_empty());
}
