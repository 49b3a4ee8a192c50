//! Resilience: circuit breaker, retry, timeout, bulkhead and rate limiter. Each runs any
//! call (`call` or `run`) and is a [`Middleware`](flext_protocols::Middleware), so it wraps
//! a handler (with `Layered`) or sits on a bus. Retry is the exception on a bus: it runs the
//! rest of the stack again with a clone of the request, and a bus's erased dispatch cannot
//! be cloned, so retry wraps the handler (or the call to `send`) instead.

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
