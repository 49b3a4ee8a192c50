//! The tower adapter's tests: handlers as services, services as handlers, layers on
//! handlers, and tower's middleware on a command bus route. Time runs on a paused clock.

mod bus;
mod errors;
mod facade;
mod layered;
mod service;
mod service_handler;
mod support;
