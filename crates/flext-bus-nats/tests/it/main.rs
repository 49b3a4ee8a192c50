//! The NATS adapter's tests. Each starts a private `nats-server -js` of its own (see
//! `server`), so they may kill and restart it; they run when `FLEXT_TEST_NATS_URL` is set.

mod consumer;
mod relay;
mod remote;
mod server;
mod support;
