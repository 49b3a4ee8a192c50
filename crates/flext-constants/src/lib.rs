//! Limits, defaults, closed enums and error codes shared by every flext-handlers crate.
//!
//! This is layer 10 of the workspace: it has no dependencies and no logic beyond the mapping
//! between each enum and its wire string. Everything else depends on it, so it must stay
//! small and stable.
//!
//! - [`handler`]: numeric limits and defaults ([`handler::DEFAULT_TIMEOUT`],
//!   [`handler::MAX_CHAIN_HANDLERS`], …).
//! - Closed enums with their wire strings: [`HandlerState`], [`Environment`], [`LogLevel`],
//!   [`ValidationLevel`], [`HandlerKind`], [`PerformanceLevel`].
//! - [`ErrorCode`]: the flext error codes (`FLEXT_3001` for validation, …).
//!
//! Every enum implements [`WireEnum`], [`core::fmt::Display`] and [`core::str::FromStr`];
//! parsing an unknown string gives an [`UnknownVariant`] that lists the valid values.
//!
//! ```
//! use flext_constants::{HandlerState, LogLevel, WireEnum};
//!
//! assert_eq!(HandlerState::Idle.as_str(), "idle");
//! assert_eq!("WARNING".parse::<LogLevel>(), Ok(LogLevel::Warning));
//! let err = "VERBOSE".parse::<LogLevel>().unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "Invalid log_level: VERBOSE. Valid values: DEBUG, INFO, WARNING, ERROR, CRITICAL, TRACE"
//! );
//! ```

mod codes;
mod enums;
pub mod handler;
pub mod store;
mod wire;

pub use codes::ErrorCode;
pub use enums::{
    Environment, HandlerKind, HandlerState, LogLevel, PerformanceLevel, ValidationLevel,
};
pub use wire::{UnknownVariant, WireEnum};
