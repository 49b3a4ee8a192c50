//! The admin surface over HTTP, as a client and a browser see it.

mod browser;
mod client;
mod http;
mod service;
