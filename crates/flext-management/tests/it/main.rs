//! Integration tests of the registry, the manager, the lifecycle and the exposition.

mod exposition;
mod lifecycle;
mod manager;
mod prometheus_parser;
mod registry;
