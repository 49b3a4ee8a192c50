//! Domain code of the guide's scenarios, shared by the example programs and by the tests
//! that check their outcomes.
//!
//! Each module ports one scenario of the flext guide; the programs in this package's
//! directory run them (`cargo run --example order_processing`).

pub mod admin_demo;
pub mod api_chain;
pub mod bank;
pub mod enterprise;
pub mod management;
pub mod nats_bank;
pub mod order_saga;
pub mod orders;
pub mod replicas;
pub mod store_choice;
pub mod tracing_otel;
pub mod users;
