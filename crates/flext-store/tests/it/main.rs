//! Integration tests of the shared store code, one module per topic.

mod head_signal;
mod memory;
