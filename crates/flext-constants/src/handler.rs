//! Numeric limits and defaults for handlers, chains, pipelines and retries.

use core::time::Duration;

/// How long a handler may run before it times out, unless its configuration says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// [`DEFAULT_TIMEOUT`] in milliseconds, the unit handler configurations use.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// How many times a failed call is retried by default.
pub const MAX_RETRIES: u32 = 3;

/// The most handlers a single handler chain may hold.
pub const MAX_CHAIN_HANDLERS: usize = 50;

/// The most stages a single pipeline may hold.
pub const MAX_PIPELINE_STAGES: usize = 20;

/// A call that takes longer than this is reported as slow.
pub const SLOW_HANDLER_THRESHOLD: Duration = Duration::from_secs(5);
