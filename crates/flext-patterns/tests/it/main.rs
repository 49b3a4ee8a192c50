//! Integration tests of chains, pipelines and middleware, one module per topic.

mod chains;
mod middleware;
mod pipelines;
