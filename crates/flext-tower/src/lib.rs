//! flext-handlers and tower, both ways.
//!
//! Depend on this crate (or on the facade's `tower` feature) to mount flext handlers in a
//! tower or axum stack, to route flext buses to tower services, or to put tower's
//! middleware (rate and concurrency limits, load shedding, buffers, timeouts, anything
//! that is a [`tower::Layer`]) around a flext handler:
//!
//! - [`HandlerService`] ([`HandlerExt::into_service`]): any flext
//!   [`Handler`](flext_protocols::Handler) as a [`tower::Service`] of its request type,
//!   always ready, failing with the handler's [`FlextError`](flext_types::FlextError)s;
//!   [`HandlerServiceRef`] ([`HandlerExt::as_service`]) serves a borrowed handler for a
//!   stack that lives no longer than it, with no `Arc` and one box less per call.
//! - [`ServiceHandler`]: any [`tower::Service`] as a flext handler with a name, readiness
//!   awaited before each call on one service instance.
//! - [`TowerLayered`] ([`HandlerExt::layer`], [`layer`]): a flext handler under a tower
//!   layer, a flext handler again with the same name and kind. The stack is generic, one
//!   concrete type, nothing boxed per layer.
//! - [`tower_error`]: tower's errors as `FlextError`s: a timeout is `TIMEOUT`, a shed
//!   request `RATE_LIMITED`, a closed or failed buffer `OPERATION_ERROR`, each naming the
//!   layer and the handler.
//!
//! ```
//! use flext_constants::ErrorCode;
//! use flext_handlers::cqrs::CommandBus;
//! use flext_impl::handler_fn;
//! use flext_protocols::Command;
//! use flext_tower::HandlerExt;
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! struct CreateUser(String);
//! impl Command for CreateUser {
//!     type Output = String;
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> flext_types::FlextResult<()> {
//! let create = handler_fn("create_user", |cmd: CreateUser| async move {
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//!     Ok(format!("created {}", cmd.0))
//! });
//! let mut bus = CommandBus::new();
//! bus.register::<CreateUser>(create.layer(
//!     ServiceBuilder::new()
//!         .concurrency_limit(16)
//!         .timeout(Duration::from_millis(20)),
//! ))?;
//!
//! let err = bus.send(CreateUser("ada".into())).await.unwrap_err();
//! assert_eq!(err.code(), ErrorCode::Timeout);
//! assert_eq!(err.message(), "timeout layer of 'create_user': request timed out");
//! # Ok(())
//! # }
//! ```
//!
//! The crate re-exports [`tower`] itself, so the versions always match.
//!
//! # Features
//!
//! None. Tower comes with the features the mapped errors need: `util`, `timeout`,
//! `limit`, `load-shed` and `buffer`.

mod error;
mod handler;
mod layer;
mod service;

pub use error::tower_error;
pub use handler::ServiceHandler;
pub use layer::{HandlerExt, TowerLayered, layer};
pub use service::{HandlerService, HandlerServiceRef};
pub use tower;
