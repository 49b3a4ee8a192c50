//! A small shop under synthetic traffic, for the admin dashboard (`examples/admin.rs`):
//! orders placed through a command bus into an event store, cards charged through a
//! circuit breaker in front of a payment gateway that goes down now and then, and a
//! revenue projection that gives up on corrupt orders.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flext_handlers::Constants::HandlerKind;
use flext_handlers::Patterns::{CircuitBreakerConfig, SlidingWindow};
use flext_handlers::Types::{JsonPayload, NewEvent};
use flext_handlers::admin::Admin;
use flext_handlers::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// Every `CORRUPT_EVERY`-th order carries an amount of 0, which the revenue projection
/// refuses: it becomes a dead letter.
pub const CORRUPT_EVERY: u64 = 250;

/// Places an order: records `OrderPlaced` in the event store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The order's number.
    pub order_id: u64,
    /// Its amount, in cents.
    pub amount_cents: u64,
}

impl Command for PlaceOrder {
    type Output = u64;
}

/// Charges the card of an order through the payment gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    /// The order's number.
    pub order_id: u64,
    /// The amount, in cents.
    pub amount_cents: u64,
}

impl Command for ChargeCard {
    type Output = String;
}

/// Handles [`PlaceOrder`]: appends `OrderPlaced` to the order's stream.
#[derive(Debug)]
pub struct PlaceOrderHandler {
    store: InMemoryEventStore,
}

#[async_trait]
impl Handler for PlaceOrderHandler {
    type Request = PlaceOrder;
    type Response = u64;

    fn handler_name(&self) -> &str {
        "place_order"
    }

    async fn handle(&self, order: PlaceOrder) -> FlextResult<u64> {
        // Some work, a little longer for larger orders.
        tokio::time::sleep(Duration::from_micros(500 + order.amount_cents % 3_000)).await;
        let event = NewEvent::new("OrderPlaced", JsonPayload::encode(&order)?);
        let stream = format!("order-{}", order.order_id);
        let appended = self
            .store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await?;
        Ok(appended.last_position)
    }
}

/// A payment gateway that is down for the last third of every cycle (30 s by default) and
/// slow on some calls.
#[derive(Debug)]
pub struct PaymentGateway {
    started: Instant,
    cycle: Duration,
    calls: AtomicU64,
}

impl PaymentGateway {
    fn new(cycle: Duration) -> Self {
        Self {
            started: Instant::now(),
            cycle: cycle.max(Duration::from_millis(3)),
            calls: AtomicU64::new(0),
        }
    }

    /// Whether the gateway is in one of its outages now.
    pub fn is_down(&self) -> bool {
        let cycle = self.cycle.as_nanos();
        self.started.elapsed().as_nanos() % cycle >= cycle * 2 / 3
    }

    async fn charge(&self, charge: &ChargeCard) -> FlextResult<String> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let slow = if n.is_multiple_of(20) {
            25_000
        } else {
            2_000 + (n % 7) * 700
        };
        tokio::time::sleep(Duration::from_micros(slow)).await;
        if self.is_down() {
            return Err(FlextError::unavailable(
                "payment gateway unreachable at https://payments:hunter2@gateway.internal/charge",
            ));
        }
        Ok(format!("receipt-{}", charge.order_id))
    }
}

/// Handles [`ChargeCard`] through the `payments` breaker.
#[derive(Debug)]
pub struct ChargeCardHandler {
    breaker: Arc<CircuitBreaker>,
    gateway: Arc<PaymentGateway>,
}

#[async_trait]
impl Handler for ChargeCardHandler {
    type Request = ChargeCard;
    type Response = String;

    fn handler_name(&self) -> &str {
        "charge_card"
    }

    async fn handle(&self, charge: ChargeCard) -> FlextResult<String> {
        self.breaker.call(self.gateway.charge(&charge)).await
    }
}

/// Revenue from `OrderPlaced` events; an order of amount 0 is corrupt and refused.
#[derive(Debug, Default)]
pub struct Revenue {
    cents: AtomicU64,
}

impl Revenue {
    /// The revenue so far, in cents.
    pub fn cents(&self) -> u64 {
        self.cents.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Projection for Revenue {
    fn name(&self) -> &str {
        "revenue"
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        let order: PlaceOrder = event.payload.decode()?;
        if order.amount_cents == 0 {
            return Err(FlextError::validation(format!(
                "order {} has no amount",
                order.order_id
            )));
        }
        self.cents.fetch_add(order.amount_cents, Ordering::SeqCst);
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        self.cents.store(0, Ordering::SeqCst);
        Ok(())
    }
}

/// The shop: its handlers (registered for the admin surface and routed on the bus), its
/// breaker, store and projection.
#[derive(Debug)]
pub struct Shop {
    /// The handlers, by name.
    pub manager: Arc<HandlerManager>,
    /// The command bus the traffic goes through.
    pub bus: Arc<CommandBus>,
    /// The breaker in front of the payment gateway.
    pub breaker: Arc<CircuitBreaker>,
    /// The gateway.
    pub gateway: Arc<PaymentGateway>,
    /// The event store of orders.
    pub store: InMemoryEventStore,
    /// The revenue projection's runner.
    pub runner: Arc<ProjectionRunner>,
    /// The revenue read model.
    pub revenue: Arc<Revenue>,
}

impl Shop {
    /// A shop with nothing done yet, whose payment gateway is down for the last third of
    /// every `outage_cycle`.
    pub fn new(outage_cycle: Duration) -> FlextResult<Self> {
        let store = InMemoryEventStore::new();
        let gateway = Arc::new(PaymentGateway::new(outage_cycle));
        let mut config = CircuitBreakerConfig::default();
        config.sliding_window = SlidingWindow::CountBased(20);
        config.minimum_number_of_calls = 10;
        config.failure_rate_threshold = 50.0;
        config.wait_duration_in_open = Duration::from_secs(3);
        config.permitted_calls_in_half_open = 3;
        let breaker = Arc::new(CircuitBreaker::new("payments", config)?);

        let registry = Arc::new(HandlerRegistry::new());
        let place = BasicHandler::with_kind(
            "place_order",
            HandlerKind::Command,
            PlaceOrderHandler {
                store: store.clone(),
            },
        );
        registry.register("place_order", place)?;
        let charge = BasicHandler::with_kind(
            "charge_card",
            HandlerKind::Command,
            ChargeCardHandler {
                breaker: breaker.clone(),
                gateway: gateway.clone(),
            },
        );
        registry.register("charge_card", charge)?;

        // The bus routes to the very handlers the registry holds, so the dashboard shows
        // the traffic the bus carries.
        let mut bus = CommandBus::new();
        bus.register::<PlaceOrder>(
            registry.typed::<BasicHandler<PlaceOrderHandler>>("place_order")?,
        )?;
        bus.register::<ChargeCard>(
            registry.typed::<BasicHandler<ChargeCardHandler>>("charge_card")?,
        )?;

        let revenue = Arc::new(Revenue::default());
        let runner = ProjectionRunner::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            revenue.clone(),
        )
        .with_config(
            flext_handlers::CQRS::ProjectionConfig::default()
                .with_max_attempts(1)
                .with_backoff(flext_handlers::CQRS::Backoff::none()),
        );
        Ok(Self {
            manager: Arc::new(HandlerManager::with_registry(registry)),
            bus: Arc::new(bus),
            breaker,
            gateway,
            store,
            runner: Arc::new(runner),
            revenue,
        })
    }

    /// The admin surface of the shop: its handlers, bus, breaker and projection.
    pub fn admin(&self) -> Admin {
        Admin::new()
            .with_manager(self.manager.clone())
            .with_source(self.bus.clone())
            .with_breaker(self.breaker.clone())
            .with_projection(self.runner.clone())
    }

    /// Places and charges `per_second` orders a second until `stop` turns true; returns
    /// how many orders were placed and how many charges failed.
    pub async fn traffic(&self, per_second: u32, mut stop: watch::Receiver<bool>) -> (u64, u64) {
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut placed, mut failed) = (0, 0);
        let mut order_id = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return (placed, failed),
            }
            order_id += 1;
            let amount_cents = if order_id.is_multiple_of(CORRUPT_EVERY) {
                0
            } else {
                500 + (order_id * 7_919) % 20_000
            };
            if self
                .bus
                .send(PlaceOrder {
                    order_id,
                    amount_cents,
                })
                .await
                .is_ok()
            {
                placed += 1;
            }
            if self
                .bus
                .send(ChargeCard {
                    order_id,
                    amount_cents,
                })
                .await
                .is_err()
            {
                failed += 1;
            }
        }
    }
}
