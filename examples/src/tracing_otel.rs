//! A shop whose order handler sends a second command and publishes an event, for the
//! `tracing_otel` example: every dispatch opens a `flext.dispatch` span carrying the
//! message, correlation and causation ids, and the nested dispatches run inside the order's
//! span, so an OpenTelemetry exporter shows one trace for the whole conversation.
//!
//! [`Shop::new`] wires it: `PlaceOrder` on the order bus, whose handler sends
//! `ReserveStock` to the stock bus and publishes `OrderPlaced` on the event bus. Each
//! handler reports the message it is handling to the shop's [`Witness`], which the
//! program uses to print what each handler saw (and the trace it ran in).

use std::sync::Arc;

use flext_handlers::CQRS::current_metadata;
use flext_handlers::prelude::*;

/// Place an order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    /// The order's id.
    pub order_id: String,
    /// How many items it holds.
    pub items: u32,
}

impl Command for PlaceOrder {
    type Output = String;
}

/// Reserve stock for an order: sent by the order handler.
#[derive(Debug, Clone, PartialEq)]
pub struct ReserveStock {
    /// The order's id.
    pub order_id: String,
    /// How many items to reserve.
    pub items: u32,
}

impl Command for ReserveStock {
    type Output = u32;
}

/// An order was placed: published by the order handler.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlaced {
    /// The order's id.
    pub order_id: String,
}

impl Event for OrderPlaced {
    fn event_name(&self) -> &str {
        "OrderPlaced"
    }
}

/// Told, by each handler, which handler it is and the metadata of the message it handles.
pub type Witness = Arc<dyn Fn(&'static str, &MessageMetadata) + Send + Sync>;

/// The shop's buses.
pub struct Shop {
    /// `PlaceOrder`.
    pub orders: CommandBus,
    /// `ReserveStock`.
    pub stock: Arc<CommandBus>,
    /// `OrderPlaced`, to one subscriber (the mailer).
    pub events: Arc<EventBus>,
}

impl std::fmt::Debug for Shop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shop").finish_non_exhaustive()
    }
}

/// What `witness` is told inside a handler: its name and its message's metadata (every bus
/// handler has one).
fn tell(witness: &Witness, handler: &'static str) -> FlextResult<()> {
    let metadata = current_metadata()
        .ok_or_else(|| FlextError::operation(format!("{handler} ran without a message")))?;
    witness(handler, &metadata);
    Ok(())
}

impl Shop {
    /// The shop, its handlers reporting to `witness`.
    pub fn new(witness: Witness) -> FlextResult<Self> {
        let mut stock = CommandBus::new();
        stock.register_fn({
            let witness = witness.clone();
            move |reserve: ReserveStock| {
                let witness = witness.clone();
                async move {
                    tell(&witness, "reserve_stock")?;
                    Ok(reserve.items)
                }
            }
        })?;
        let stock = Arc::new(stock);
        let events = Arc::new(EventBus::new());
        events.subscribe_fn("OrderPlaced", {
            let witness = witness.clone();
            move |_: Arc<OrderPlaced>| {
                let witness = witness.clone();
                async move { tell(&witness, "mailer") }
            }
        });
        let mut orders = CommandBus::new();
        orders.register_fn({
            let (stock, events) = (stock.clone(), events.clone());
            move |order: PlaceOrder| {
                let (stock, events, witness) = (stock.clone(), events.clone(), witness.clone());
                async move {
                    tell(&witness, "place_order")?;
                    let reserved = stock
                        .send(ReserveStock {
                            order_id: order.order_id.clone(),
                            items: order.items,
                        })
                        .await?;
                    let report = events
                        .publish(OrderPlaced {
                            order_id: order.order_id.clone(),
                        })
                        .await;
                    Ok(format!(
                        "order {} placed: {reserved} item(s) reserved, {} subscriber(s) told",
                        order.order_id, report.delivered
                    ))
                }
            }
        })?;
        Ok(Self {
            orders,
            stock,
            events,
        })
    }
}
