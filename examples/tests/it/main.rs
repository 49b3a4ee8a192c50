//! The guide's programs produce the outcomes the guide expects.

mod admin;
mod bank_service;
mod chain;
mod enterprise;
mod leases;
mod management;
mod nats_bank;
mod order_saga;
mod orders;
mod programs;
mod replicas;
mod saga_processes;
mod test_kit;
mod users;
