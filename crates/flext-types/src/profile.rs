//! Performance profiles: standard, high and low resource settings for a handler ecosystem.

use flext_constants::{PerformanceLevel, WireEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{FlextError, FlextResult};

/// Resource settings for a handler ecosystem at one [`PerformanceLevel`], after the guide's
/// `optimize_handler_performance`.
///
/// Non-exhaustive (later versions may add settings): start from
/// [`for_level`](PerformanceProfile::for_level) and set the fields to change.
///
/// ```
/// use flext_constants::PerformanceLevel;
/// use flext_types::PerformanceProfile;
///
/// let high = PerformanceProfile::for_level(PerformanceLevel::High);
/// assert_eq!(high.concurrent_handlers, 50);
/// assert!(high.response_caching_enabled);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PerformanceProfile {
    /// The level these settings belong to.
    #[serde(with = "crate::serde_helpers::wire")]
    pub performance_level: PerformanceLevel,
    /// Handlers that may run at once.
    pub concurrent_handlers: u32,
    /// Requests that may be in flight at once.
    pub max_concurrent_requests: u32,
    /// Requests that may wait for a slot.
    pub request_queue_size: u32,
    /// The processing deadline, in milliseconds.
    pub processing_timeout_ms: u64,
    /// Requests processed per batch.
    pub request_batch_size: u32,
    /// Whether responses may be cached.
    pub response_caching_enabled: bool,
    /// How often metrics are collected, in milliseconds.
    pub metrics_collection_interval_ms: u64,
    /// Whether request objects are pooled.
    pub enable_request_pooling: bool,
    /// Worker threads.
    pub thread_pool_size: u32,
    /// Memory budget in MiB.
    pub memory_limit_mb: u32,
    /// Whether payloads are compressed.
    pub enable_compression: bool,
}

impl PerformanceProfile {
    /// The preset settings of `level`.
    pub fn for_level(level: PerformanceLevel) -> Self {
        let standard = Self {
            performance_level: level,
            concurrent_handlers: 10,
            max_concurrent_requests: 100,
            request_queue_size: 1000,
            processing_timeout_ms: 30_000,
            request_batch_size: 100,
            response_caching_enabled: false,
            metrics_collection_interval_ms: 5000,
            enable_request_pooling: false,
            thread_pool_size: 4,
            memory_limit_mb: 512,
            enable_compression: false,
        };
        match level {
            PerformanceLevel::Standard => standard,
            PerformanceLevel::High => Self {
                concurrent_handlers: 50,
                request_batch_size: 500,
                response_caching_enabled: true,
                metrics_collection_interval_ms: 1000,
                enable_request_pooling: true,
                thread_pool_size: 16,
                memory_limit_mb: 2048,
                enable_compression: true,
                ..standard
            },
            PerformanceLevel::Low => Self {
                concurrent_handlers: 2,
                request_batch_size: 10,
                response_caching_enabled: false,
                metrics_collection_interval_ms: 10_000,
                enable_request_pooling: false,
                thread_pool_size: 1,
                memory_limit_mb: 128,
                enable_compression: false,
                ..standard
            },
        }
    }

    /// The guide's `optimize_handler_performance`: the preset of the object's
    /// `performance_level` (default `standard`), with any other keys of the object
    /// overriding the preset's values. An unknown level, key or ill-typed value is an
    /// `INVALID_ARGUMENT` error naming it.
    ///
    /// ```
    /// use flext_types::PerformanceProfile;
    /// use serde_json::json;
    ///
    /// let p = PerformanceProfile::optimize(json!({"performance_level": "high", "max_concurrent_requests": 100}).as_object().unwrap()).unwrap();
    /// assert_eq!(p.thread_pool_size, 16);
    /// assert_eq!(p.max_concurrent_requests, 100);
    /// ```
    pub fn optimize(settings: &Map<String, Value>) -> FlextResult<Self> {
        let level = match settings.get("performance_level") {
            None => PerformanceLevel::Standard,
            Some(Value::String(s)) => PerformanceLevel::parse_wire(s)?,
            Some(other) => PerformanceLevel::parse_wire(&other.to_string())?,
        };
        let mut merged = serde_json::to_value(Self::for_level(level))?;
        let Value::Object(fields) = &mut merged else {
            return Err(FlextError::operation(
                "performance profile did not serialize to an object",
            ));
        };
        for (key, value) in settings {
            if key == "performance_level" {
                continue;
            }
            if !fields.contains_key(key) {
                let valid: Vec<&str> = fields.keys().map(String::as_str).collect();
                return Err(FlextError::invalid_argument(format!(
                    "Unknown performance setting: '{key}'. Valid keys: {}",
                    valid.join(", ")
                )));
            }
            fields.insert(key.clone(), value.clone());
        }
        serde_json::from_value(merged)
            .map_err(|e| FlextError::invalid_argument(format!("Invalid performance setting: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_constants::ErrorCode;
    use serde_json::json;

    #[test]
    fn presets_differ_where_the_guide_says() {
        let s = PerformanceProfile::for_level(PerformanceLevel::Standard);
        let h = PerformanceProfile::for_level(PerformanceLevel::High);
        let l = PerformanceProfile::for_level(PerformanceLevel::Low);
        assert_eq!(
            (
                s.concurrent_handlers,
                h.concurrent_handlers,
                l.concurrent_handlers
            ),
            (10, 50, 2)
        );
        assert_eq!(
            (s.memory_limit_mb, h.memory_limit_mb, l.memory_limit_mb),
            (512, 2048, 128)
        );
        assert_eq!(s.max_concurrent_requests, h.max_concurrent_requests);
        assert_eq!(h.performance_level, PerformanceLevel::High);
    }

    #[test]
    fn optimize_rejects_unknown_levels_keys_and_types() {
        let bad_level = PerformanceProfile::optimize(
            json!({"performance_level": "turbo"}).as_object().unwrap(),
        );
        assert!(
            bad_level
                .unwrap_err()
                .message()
                .starts_with("Invalid performance_level: turbo")
        );
        let bad_key =
            PerformanceProfile::optimize(json!({"threads": 4}).as_object().unwrap()).unwrap_err();
        assert!(
            bad_key
                .message()
                .starts_with("Unknown performance setting: 'threads'")
        );
        let bad_type =
            PerformanceProfile::optimize(json!({"thread_pool_size": "many"}).as_object().unwrap())
                .unwrap_err();
        assert_eq!(bad_type.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn optimize_defaults_to_standard() {
        let p = PerformanceProfile::optimize(&Map::new()).unwrap();
        assert_eq!(p, PerformanceProfile::for_level(PerformanceLevel::Standard));
    }
}
