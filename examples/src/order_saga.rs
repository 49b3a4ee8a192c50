//! An order as a saga: reserve inventory, charge the payment, ship. A declined card
//! releases the reserved inventory; a shipment the carrier refuses refunds the payment and
//! releases the inventory; a process that dies mid-run is finished by the next one.
//!
//! The three services stand for outside systems. Each applies an idempotency key once (a
//! repeat returns the first answer and changes nothing) and writes every effect it has to a
//! [`Journal`], the outside world's view of what happened.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flext_handlers::Patterns::{Saga, SagaOutcome};
use flext_handlers::Protocols::EventStore;
use flext_handlers::Types::{FlextError, FlextResult};
use flext_handlers::async_trait;
use flext_handlers::protocols::EventStream;
use flext_handlers::types::{AppendResult, ExpectedVersion, NewEvent, StoredEvent};
use serde::{Deserialize, Serialize};

/// The saga's name: its runs are the streams `Saga-order-{order id}`.
pub const SAGA_NAME: &str = "order";
/// The card number the payment gateway always declines.
pub const DECLINED_CARD: &str = "4000000000000002";
/// The card number it always accepts.
pub const GOOD_CARD: &str = "4242424242424242";
/// The one place the carrier does not deliver to.
pub const NO_DELIVERY: &str = "Atlantis";

/// An order as the customer placed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id; the saga run's id too.
    pub id: String,
    /// The product.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
    /// What it costs, in cents.
    pub amount_cents: u64,
    /// The card to charge.
    pub card: String,
    /// Where it goes.
    pub address: String,
}

impl Order {
    /// An order `id` of `quantity` × `sku` for `amount_cents`, paid with `card`, going to
    /// `address`.
    pub fn new(
        id: &str,
        sku: &str,
        quantity: u32,
        amount_cents: u64,
        card: &str,
        address: &str,
    ) -> Self {
        Self {
            id: id.to_owned(),
            sku: sku.to_owned(),
            quantity,
            amount_cents,
            card: card.to_owned(),
            address: address.to_owned(),
        }
    }
}

/// The saga's data: the order, and what each step obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The order.
    pub order: Order,
    /// The warehouse's reservation, once reserved.
    pub reservation: Option<String>,
    /// The gateway's payment, once charged.
    pub payment: Option<String>,
    /// The carrier's tracking number, once shipped.
    pub tracking: Option<String>,
}

impl From<Order> for OrderState {
    fn from(order: Order) -> Self {
        Self {
            order,
            reservation: None,
            payment: None,
            tracking: None,
        }
    }
}

/// The outside world's record of every effect, one line each, in order; optionally also
/// appended to a file that other processes write too (each line tagged with its writer).
#[derive(Debug, Clone, Default)]
pub struct Journal {
    lines: Arc<Mutex<Vec<String>>>,
    file: Option<(PathBuf, String)>,
}

impl Journal {
    /// A journal in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A journal that also appends each line to `path` as `"{tag} {line}"`.
    pub fn shared(path: impl Into<PathBuf>, tag: &str) -> Self {
        Self {
            lines: Arc::default(),
            file: Some((path.into(), tag.to_owned())),
        }
    }

    /// The lines written by this process, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn write(&self, line: String) -> FlextResult<()> {
        if let Some((path, tag)) = &self.file {
            // One `write` of one line to a file opened for appending: lines of several
            // processes never interleave.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(format!("{tag} {line}\n").as_bytes()))
                .map_err(|e| FlextError::storage(format!("journal {}: {e}", path.display())))?;
        }
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        Ok(())
    }
}

/// Stock and reservations.
#[derive(Debug)]
pub struct Warehouse {
    stock: Mutex<HashMap<String, u32>>,
    reserved: Mutex<HashMap<String, String>>,
    released: Mutex<HashSet<String>>,
    journal: Journal,
}

impl Warehouse {
    /// Reserves the order's units once per `key`: the reservation's id. Too little stock is
    /// a `BUSINESS_RULE_VIOLATION`.
    pub fn reserve(&self, key: &str, order: &Order) -> FlextResult<String> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reservation) = reserved.get(key) {
            return Ok(reservation.clone());
        }
        let mut stock = self.stock.lock().unwrap_or_else(|e| e.into_inner());
        let left = stock.entry(order.sku.clone()).or_default();
        if *left < order.quantity {
            return Err(FlextError::business_rule(format!(
                "only {left} × {} in stock",
                order.sku
            )));
        }
        *left -= order.quantity;
        let reservation = format!("res-{}", order.id);
        self.journal.write(format!(
            "reserved {} × {} for {} ({reservation})",
            order.quantity, order.sku, order.id
        ))?;
        reserved.insert(key.to_owned(), reservation.clone());
        Ok(reservation)
    }

    /// Puts a reservation's units back on the shelf, once.
    pub fn release(&self, reservation: &str, order: &Order) -> FlextResult<()> {
        if !self
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reservation.to_owned())
        {
            return Ok(());
        }
        *self
            .stock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(order.sku.clone())
            .or_default() += order.quantity;
        self.journal.write(format!(
            "released {} × {} for {} ({reservation})",
            order.quantity, order.sku, order.id
        ))
    }

    /// The units of `sku` on the shelf.
    pub fn stock(&self, sku: &str) -> u32 {
        self.stock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sku)
            .copied()
            .unwrap_or(0)
    }
}

/// Charges and refunds.
#[derive(Debug)]
pub struct PaymentGateway {
    charged: Mutex<HashMap<String, String>>,
    refunded: Mutex<HashSet<String>>,
    journal: Journal,
}

impl PaymentGateway {
    /// Charges the order's card once per `key`: the payment's id. [`DECLINED_CARD`] is
    /// declined (`BUSINESS_RULE_VIOLATION`).
    pub fn charge(&self, key: &str, order: &Order) -> FlextResult<String> {
        let mut charged = self.charged.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(payment) = charged.get(key) {
            return Ok(payment.clone());
        }
        if order.card == DECLINED_CARD {
            return Err(FlextError::business_rule(format!(
                "card {} declined",
                card_tail(&order.card)
            )));
        }
        let payment = format!("pay-{}", order.id);
        self.journal.write(format!(
            "charged {} to card {} for {} ({payment})",
            dollars(order.amount_cents),
            card_tail(&order.card),
            order.id
        ))?;
        charged.insert(key.to_owned(), payment.clone());
        Ok(payment)
    }

    /// Refunds a payment, once.
    pub fn refund(&self, payment: &str, order: &Order) -> FlextResult<()> {
        if !self
            .refunded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(payment.to_owned())
        {
            return Ok(());
        }
        self.journal.write(format!(
            "refunded {} for {} ({payment})",
            dollars(order.amount_cents),
            order.id
        ))
    }
}

/// Shipments.
#[derive(Debug)]
pub struct Carrier {
    shipped: Mutex<HashMap<String, String>>,
    journal: Journal,
}

impl Carrier {
    /// Ships the order once per `key`: the tracking number. [`NO_DELIVERY`] is refused
    /// (`BUSINESS_RULE_VIOLATION`).
    pub fn ship(&self, key: &str, order: &Order) -> FlextResult<String> {
        let mut shipped = self.shipped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tracking) = shipped.get(key) {
            return Ok(tracking.clone());
        }
        if order.address == NO_DELIVERY {
            return Err(FlextError::business_rule(format!(
                "no delivery to {}",
                order.address
            )));
        }
        let tracking = format!("trk-{}", order.id);
        self.journal.write(format!(
            "shipped {} to {} ({tracking})",
            order.id, order.address
        ))?;
        shipped.insert(key.to_owned(), tracking.clone());
        Ok(tracking)
    }
}

/// The three services, writing to one journal.
#[derive(Debug)]
pub struct Shop {
    /// Stock and reservations.
    pub warehouse: Warehouse,
    /// Charges and refunds.
    pub payments: PaymentGateway,
    /// Shipments.
    pub carrier: Carrier,
    /// Every effect of the three.
    pub journal: Journal,
}

impl Shop {
    /// A shop with `stock` (units per SKU) whose services write to `journal`.
    pub fn new(journal: Journal, stock: &[(&str, u32)]) -> Self {
        Self {
            warehouse: Warehouse {
                stock: Mutex::new(stock.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()),
                reserved: Mutex::default(),
                released: Mutex::default(),
                journal: journal.clone(),
            },
            payments: PaymentGateway {
                charged: Mutex::default(),
                refunded: Mutex::default(),
                journal: journal.clone(),
            },
            carrier: Carrier {
                shipped: Mutex::default(),
                journal: journal.clone(),
            },
            journal,
        }
    }
}

/// The saga: `reserve_inventory` (released by compensation), `charge_payment` (refunded),
/// `ship` (the last step, nothing to undo). Each step passes its idempotency key to its
/// service, so a step run again after a crash changes nothing twice.
pub fn order_saga(store: Arc<dyn EventStore>, shop: Arc<Shop>) -> FlextResult<Saga<OrderState>> {
    let (reserve, release, charge, refund, ship) =
        (shop.clone(), shop.clone(), shop.clone(), shop.clone(), shop);
    Saga::new(SAGA_NAME, store)?
        .step(
            "reserve_inventory",
            move |mut state: OrderState, ctx| {
                let reservation = reserve
                    .warehouse
                    .reserve(&ctx.idempotency_key, &state.order);
                async move {
                    state.reservation = Some(reservation?);
                    Ok(state)
                }
            },
            move |state: OrderState, _| {
                let released = match &state.reservation {
                    Some(reservation) => release.warehouse.release(reservation, &state.order),
                    None => Ok(()),
                };
                async move { released }
            },
        )?
        .step(
            "charge_payment",
            move |mut state: OrderState, ctx| {
                let payment = charge.payments.charge(&ctx.idempotency_key, &state.order);
                async move {
                    state.payment = Some(payment?);
                    Ok(state)
                }
            },
            move |state: OrderState, _| {
                let refunded = match &state.payment {
                    Some(payment) => refund.payments.refund(payment, &state.order),
                    None => Ok(()),
                };
                async move { refunded }
            },
        )?
        .step_without_compensation("ship", move |mut state: OrderState, ctx| {
            let tracking = ship.carrier.ship(&ctx.idempotency_key, &state.order);
            async move {
                state.tracking = Some(tracking?);
                Ok(state)
            }
        })
}

/// What the crash-and-restart scenario saw.
#[derive(Debug)]
pub struct CrashAndResume {
    /// Why the first process's run stopped (the power cut).
    pub crash: FlextError,
    /// The runs the restarted process found unfinished.
    pub unfinished: Vec<String>,
    /// What resuming each of them gave.
    pub resumed: Vec<(String, FlextResult<SagaOutcome<OrderState>>)>,
}

/// Runs `order` in a process that dies right after the card is charged, before the saga
/// records it ([`PowerCut`]), then restarts: a new saga on the same store and services
/// finds the unfinished run and resumes it.
pub async fn crash_and_resume(
    store: Arc<dyn EventStore>,
    shop: Arc<Shop>,
    order: Order,
) -> FlextResult<CrashAndResume> {
    let dying = Arc::new(PowerCut::after_step(store.clone(), "charge_payment"));
    let first_life = order_saga(dying, shop.clone())?;
    let id = order.id.clone();
    let crash = match first_life.run(&id, order.into()).await {
        Ok(outcome) => {
            return Err(FlextError::operation(format!(
                "the run was to stop at the power cut, it ended: {outcome:?}"
            )));
        }
        Err(crash) => crash,
    };
    let second_life = order_saga(store, shop)?;
    let unfinished = second_life.unfinished().await?;
    let resumed = second_life.resume_all().await?;
    Ok(CrashAndResume {
        crash,
        unfinished,
        resumed,
    })
}

/// An event store whose process "dies" right after step `step` ran: the append recording
/// that the step completed fails, and so does every later one, with a `STORAGE_ERROR`.
/// Reads still work (they are the next process's).
pub struct PowerCut {
    inner: Arc<dyn EventStore>,
    step: String,
    cut: AtomicBool,
}

impl std::fmt::Debug for PowerCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCut")
            .field("step", &self.step)
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl PowerCut {
    /// A store that goes dark when asked to record that `step` completed.
    pub fn after_step(inner: Arc<dyn EventStore>, step: &str) -> Self {
        Self {
            inner,
            step: step.to_owned(),
            cut: AtomicBool::new(false),
        }
    }

    fn records_completion_of_the_step(&self, events: &[NewEvent]) -> bool {
        events.iter().any(|event| {
            event.event_type == "SagaStepCompleted"
                && event
                    .payload
                    .decode::<serde_json::Value>()
                    .is_ok_and(|record| record["step"] == self.step.as_str())
        })
    }
}

#[async_trait]
impl EventStore for PowerCut {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        if self.records_completion_of_the_step(&events) {
            self.cut.store(true, Ordering::SeqCst);
        }
        if self.cut.load(Ordering::SeqCst) {
            return Err(FlextError::storage(
                "power cut: the process died before recording its progress",
            ));
        }
        self.inner.append(stream_id, expected, events).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        self.inner.read_stream(stream_id, from_version, limit).await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        self.inner.read_all(from_position, limit).await
    }

    async fn stream_version(&self, stream_id: &str) -> FlextResult<u64> {
        self.inner.stream_version(stream_id).await
    }

    async fn head_position(&self) -> FlextResult<u64> {
        self.inner.head_position().await
    }

    async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream> {
        self.inner.subscribe(from_position).await
    }
}

/// `$12.34` for 1234 cents.
pub fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// `…4242` for a card number.
pub fn card_tail(card: &str) -> String {
    let tail: String = card
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}
