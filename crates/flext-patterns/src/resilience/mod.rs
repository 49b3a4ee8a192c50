//! Resilience: circuit breaker, retry, timeout, bulkhead and rate limiter. Each runs any
//! call (`call` or `run`) and is a [`Middleware`](flext_protocols::Middleware), so it wraps
//! a handler (with `Layered`) or sits on a bus.

mod breaker;
mod bulkhead;
mod rate_limit;
mod retry;
mod timeout;

pub use breaker::{
    BreakerState, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerMetrics, Permit,
    SlidingWindow, StateTransition,
};
pub use bulkhead::{Bulkhead, BulkheadMetrics};
pub use rate_limit::RateLimiter;
pub use retry::{RETRYABLE_BY_DEFAULT, Retry, RetryConfig};
pub use timeout::{Timeout, TimeoutHandler};
