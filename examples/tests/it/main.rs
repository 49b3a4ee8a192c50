//! The guide's programs produce the outcomes the guide expects.

mod orders;
mod programs;
mod users;
