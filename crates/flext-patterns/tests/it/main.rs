//! Integration tests of chains, pipelines and middleware, one module per topic.

mod breaker;
mod chains;
mod deadlines;
mod middleware;
mod pipelines;
mod resilience;
mod saga;
