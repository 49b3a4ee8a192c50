//! The guide's programs produce the outcomes the guide expects.

mod enterprise;
mod orders;
mod programs;
mod users;
