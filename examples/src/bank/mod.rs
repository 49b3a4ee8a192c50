//! The flagship service (`examples/bank_service.rs`): bank accounts as event-sourced
//! aggregates on a SQLite file, commands through the bus, withdrawals asking a fraud
//! service through a circuit breaker (an async decision that runs again on the fresh
//! state after a conflict), a balances read model kept exactly once in the store's own
//! database with a handle to wait on, a notifier fed by a relay, and an HTTP API on axum
//! whose errors answer with their status.
//!
//! - [`domain`]: the account and its fraud check.
//! - [`service`]: [`Bank`](service::Bank), the service.
//! - [`api`]: the HTTP routes.

pub mod api;
pub mod domain;
pub mod service;
