//! The test kit's own tests, one module per topic.

mod fuzz_corpus;
