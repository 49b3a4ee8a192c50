//! Integration tests of the concrete handlers, one module per topic.

mod basic;
mod checks;
mod concurrency;
mod deadlines;
mod measuring;
