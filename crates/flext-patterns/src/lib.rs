//! Composition and resilience: handler chains, typed pipelines, middleware around any
//! handler, circuit breakers and friends, and sagas.
//!
//! This is layer 60 of flext-handlers.
//!
//! - [`HandlerChain`]: handlers in sequence (each output the next input; the first failure
//!   stops the chain and names the handler) or first-match (chain of responsibility), at
//!   most 50, with chain and per-handler metrics.
//! - [`Pipeline`]: a typed builder of up to 20 stages, each free to change the data's type;
//!   a failing or panicking stage reports "Pipeline failed at stage {i}: …".
//! - [`HookMiddleware`] (the guide's `Middleware`): `before_request`, `after_response` and
//!   `handle_error` closures, the same [`Middleware`](flext_protocols::Middleware) contract
//!   the buses use; [`Layered`] wraps any handler in a stack of middleware, first added
//!   outermost.
//!
//! - Resilience: [`CircuitBreaker`] (resilience4j's states and windows), [`Retry`],
//!   [`Timeout`], [`Bulkhead`], [`RateLimiter`]; each runs any call and is a middleware.
//! - [`Saga`]: steps with compensations, progress recorded in an event store, resumable
//!   after a restart.
//!
//! Chains, pipelines and layered handlers are handlers themselves, so they nest, go on
//! buses and into registries.

mod chain;
mod middleware;
mod pipeline;
mod resilience;
mod saga;

pub use chain::{ChainMetrics, ChainMode, HandlerChain, LinkMetrics};
pub use middleware::{HookMiddleware, Layered};
pub use pipeline::{Pipeline, PipelineMetrics, StageMetrics};
pub use resilience::{
    BreakerState, Bulkhead, BulkheadMetrics, CircuitBreaker, CircuitBreakerConfig,
    CircuitBreakerMetrics, Permit, RETRYABLE_BY_DEFAULT, RateLimiter, Retry, RetryConfig,
    SlidingWindow, StateTransition, Timeout, TimeoutHandler,
};
pub use saga::{Saga, SagaEvent, SagaOutcome, SagaStatus, StepContext};
