//! The guide's programs produce the outcomes the guide expects.

mod chain;
mod enterprise;
mod management;
mod orders;
mod programs;
mod users;
