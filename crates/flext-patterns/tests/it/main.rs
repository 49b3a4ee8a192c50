//! Integration tests of chains, pipelines and middleware, one module per topic.

mod breaker;
mod breaker_races;
mod breaker_states;
mod chains;
mod deadlines;
mod kinds;
mod middleware;
mod no_panic;
mod pipelines;
mod resilience;
mod retry_config;
mod saga;
