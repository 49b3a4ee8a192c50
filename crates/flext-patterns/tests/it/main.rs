//! Integration tests of chains, pipelines and middleware, one module per topic.

mod breaker;
mod breaker_races;
mod breaker_states;
mod chains;
mod middleware;
mod pipelines;
mod resilience;
mod saga;
