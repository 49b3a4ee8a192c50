//! The guide's `OrderProcessingHandler`: a custom handler written against the abstract
//! handler contract, with validation, business rules and statistics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use flext_handlers::Implementation::AbstractHandler;
use flext_handlers::Types::{FlextError, FlextResult};
use flext_handlers::async_trait;
use serde::{Deserialize, Serialize};

/// Orders above this total need a manager's approval.
pub const APPROVAL_THRESHOLD: f64 = 1000.0;
/// Orders of at least this many line items get the bulk discount.
pub const BULK_ITEMS: usize = 5;
/// The bulk discount rate.
pub const BULK_DISCOUNT: f64 = 0.05;
/// The most line items one order may have.
pub const MAX_ITEMS: usize = 10;

/// One line of an order request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The product's name.
    pub name: String,
    /// The unit price.
    pub price: f64,
    /// How many units.
    pub quantity: u32,
}

impl OrderItem {
    /// A line of `quantity` units of `name` at `price`.
    pub fn new(name: &str, price: f64, quantity: u32) -> Self {
        Self {
            name: name.to_owned(),
            price,
            quantity,
        }
    }
}

/// A request to place an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// Who orders; required.
    #[serde(default)]
    pub customer_id: String,
    /// What is ordered; at least one line, at most [`MAX_ITEMS`].
    #[serde(default)]
    pub items: Vec<OrderItem>,
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted, waiting to be fulfilled.
    Pending,
    /// Above [`APPROVAL_THRESHOLD`]: a manager must approve it.
    RequiresApproval,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// `order_1`, `order_2`, …
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// What was ordered.
    pub items: Vec<OrderItem>,
    /// The total after any discount.
    pub total_amount: f64,
    /// Where the order stands.
    pub status: OrderStatus,
    /// The discount rate applied, if any.
    pub bulk_discount: Option<f64>,
    /// Notes of the business rules that applied.
    pub processing_notes: Vec<String>,
}

/// Order statistics, as the guide reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderStatistics {
    /// Orders placed.
    pub total_orders: usize,
    /// Their summed totals.
    pub total_revenue: f64,
    /// The mean order total (0 with no orders).
    pub average_order_value: f64,
    /// Orders waiting for approval.
    pub orders_requiring_approval: usize,
}

/// The guide's order processor: validates an order, applies the approval and bulk-discount
/// rules, and keeps the orders it placed.
#[derive(Debug, Default)]
pub struct OrderProcessingHandler {
    orders: Mutex<Vec<Order>>,
    next_id: AtomicU64,
}

impl OrderProcessingHandler {
    /// A processor with no orders.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics over the orders placed so far.
    pub fn get_order_statistics(&self) -> OrderStatistics {
        let orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        let total_revenue: f64 = orders.iter().map(|o| o.total_amount).sum();
        OrderStatistics {
            total_orders: orders.len(),
            total_revenue,
            average_order_value: if orders.is_empty() {
                0.0
            } else {
                total_revenue / orders.len() as f64
            },
            orders_requiring_approval: orders
                .iter()
                .filter(|o| o.status == OrderStatus::RequiresApproval)
                .count(),
        }
    }

    fn place(&self, request: OrderRequest) -> FlextResult<Order> {
        if request.customer_id.trim().is_empty() {
            return Err(FlextError::validation("Customer ID is required"));
        }
        if request.items.is_empty() {
            return Err(FlextError::validation("Order must contain items"));
        }
        if request.items.len() > MAX_ITEMS {
            return Err(FlextError::business_rule(format!(
                "Maximum {MAX_ITEMS} items per order"
            )));
        }
        let total: f64 = request
            .items
            .iter()
            .map(|item| item.price * f64::from(item.quantity))
            .sum();
        if total.is_nan() || total <= 0.0 {
            return Err(FlextError::validation("Order total must be positive"));
        }

        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut order = Order {
            id: format!("order_{id}"),
            customer_id: request.customer_id,
            total_amount: total,
            status: OrderStatus::Pending,
            bulk_discount: None,
            processing_notes: Vec::new(),
            items: request.items,
        };
        if total > APPROVAL_THRESHOLD {
            order.status = OrderStatus::RequiresApproval;
            order
                .processing_notes
                .push("High-value order requires manager approval".to_owned());
        }
        if order.items.len() >= BULK_ITEMS {
            order.bulk_discount = Some(BULK_DISCOUNT);
            order.total_amount = total * (1.0 - BULK_DISCOUNT);
            order
                .processing_notes
                .push("Bulk discount applied (5%)".to_owned());
        }
        self.orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(order.clone());
        Ok(order)
    }
}

#[async_trait]
impl AbstractHandler for OrderProcessingHandler {
    type Request = OrderRequest;
    type Response = Order;

    fn handler_name(&self) -> &str {
        "order_processor"
    }

    async fn handle(&self, request: OrderRequest) -> FlextResult<Order> {
        self.place(request)
    }
}

/// The guide's four test orders: standard, high-value, bulk, and one with no items.
pub fn guide_test_orders() -> Vec<OrderRequest> {
    vec![
        OrderRequest {
            customer_id: "cust_001".into(),
            items: vec![
                OrderItem::new("Laptop", 800.0, 1),
                OrderItem::new("Mouse", 25.0, 2),
            ],
        },
        OrderRequest {
            customer_id: "cust_002".into(),
            items: vec![OrderItem::new("Server", 1500.0, 1)],
        },
        OrderRequest {
            customer_id: "cust_003".into(),
            items: vec![
                OrderItem::new("Cable", 10.0, 5),
                OrderItem::new("Adapter", 15.0, 3),
                OrderItem::new("Switch", 50.0, 2),
                OrderItem::new("Router", 100.0, 1),
                OrderItem::new("Modem", 80.0, 1),
            ],
        },
        OrderRequest {
            customer_id: "cust_004".into(),
            items: vec![],
        },
    ]
}
