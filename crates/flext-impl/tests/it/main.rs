//! Integration tests of the concrete handlers, one module per topic.

mod async_checks;
mod basic;
mod checks;
mod concurrency;
mod deadlines;
mod kinds;
mod measuring;
