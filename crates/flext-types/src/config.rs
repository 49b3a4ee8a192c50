//! Handler configuration and the per-environment table.

use std::time::Duration;

use flext_constants::{Environment, LogLevel, ValidationLevel, WireEnum, handler};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{FlextError, FlextResult};

/// How a handler behaves: its environment, log and validation levels, deadline and retries.
///
/// Every value is valid by construction except `timeout_ms`, which must be positive;
/// [`HandlerConfig::validate`] checks it and every way of changing a handler's configuration
/// goes through it.
///
/// The [default](HandlerConfig::default) is the guide's `BasicHandler` default: development,
/// `INFO`, `normal`, 30 000 ms, 3 retries. [`HandlerConfig::for_environment`] gives the
/// environment table.
///
/// The struct is non-exhaustive (later versions may add settings): build one from
/// [`default`](HandlerConfig::default) or [`for_environment`](HandlerConfig::for_environment)
/// and set the fields to change, or apply a JSON patch through a handler's `configure`.
///
/// ```
/// use flext_constants::Environment;
/// use flext_types::HandlerConfig;
///
/// let mut config = HandlerConfig::for_environment(Environment::Production);
/// config.timeout_ms = 5_000;
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandlerConfig {
    /// The environment this configuration is meant for.
    #[serde(with = "crate::serde_helpers::wire")]
    pub environment: Environment,
    /// Log verbosity.
    #[serde(with = "crate::serde_helpers::wire")]
    pub log_level: LogLevel,
    /// How strictly requests are validated.
    #[serde(with = "crate::serde_helpers::wire")]
    pub validation_level: ValidationLevel,
    /// The deadline of one call, in milliseconds (positive).
    pub timeout_ms: u64,
    /// How many times a call that fails with a passing error (`TIMEOUT`, `STORAGE_ERROR`,
    /// `RATE_LIMITED`, `CONCURRENCY_CONFLICT`) is tried again: a handler executed by name
    /// through `flext_management::HandlerManager::execute` gets 1 + `max_retries`
    /// attempts in all (the policy is `flext_patterns::Retry::from_config`); 0 is one try.
    pub max_retries: u32,
    /// Extra diagnostics for development.
    pub enable_debugging: bool,
    /// Detailed logs of each call.
    pub enable_detailed_logging: bool,
    /// Whether metrics are collected.
    pub enable_performance_metrics: bool,
    /// Whether errors are reported to the error sink.
    pub enable_error_reporting: bool,
}

/// The keys a JSON configuration patch may contain, in the order error messages list them.
const KEYS: &[&str] = &[
    "environment",
    "log_level",
    "validation_level",
    "timeout",
    "timeout_ms",
    "max_retries",
    "enable_debugging",
    "enable_detailed_logging",
    "enable_performance_metrics",
    "enable_error_reporting",
];

impl Default for HandlerConfig {
    fn default() -> Self {
        Self {
            environment: Environment::Development,
            log_level: LogLevel::Info,
            validation_level: ValidationLevel::Normal,
            timeout_ms: handler::DEFAULT_TIMEOUT_MS,
            max_retries: handler::MAX_RETRIES,
            enable_debugging: false,
            enable_detailed_logging: true,
            enable_performance_metrics: true,
            enable_error_reporting: true,
        }
    }
}

impl HandlerConfig {
    /// The configuration the environment table gives for `environment`.
    ///
    /// | environment | log level | validation | timeout | retries | notes |
    /// |---|---|---|---|---|---|
    /// | production | WARNING | strict | 30 000 ms | 1 | no detailed logs |
    /// | development | DEBUG | loose | 60 000 ms | 5 | debugging on |
    /// | test | ERROR | strict | 5 000 ms | 0 | no metrics, no error reports |
    /// | staging, local | INFO | normal | 30 000 ms | 3 | |
    pub fn for_environment(environment: Environment) -> Self {
        let base = Self {
            environment,
            ..Self::default()
        };
        match environment {
            Environment::Production => Self {
                log_level: LogLevel::Warning,
                validation_level: ValidationLevel::Strict,
                timeout_ms: 30_000,
                max_retries: 1,
                enable_detailed_logging: false,
                ..base
            },
            Environment::Development => Self {
                log_level: LogLevel::Debug,
                validation_level: ValidationLevel::Loose,
                timeout_ms: 60_000,
                max_retries: 5,
                enable_debugging: true,
                ..base
            },
            Environment::Test => Self {
                log_level: LogLevel::Error,
                validation_level: ValidationLevel::Strict,
                timeout_ms: 5_000,
                max_retries: 0,
                enable_detailed_logging: false,
                enable_performance_metrics: false,
                enable_error_reporting: false,
                ..base
            },
            Environment::Staging | Environment::Local => Self {
                log_level: LogLevel::Info,
                validation_level: ValidationLevel::Normal,
                timeout_ms: 30_000,
                max_retries: 3,
                ..base
            },
        }
    }

    /// The environment table's configuration for an environment given by name, or an
    /// `INVALID_ARGUMENT` error listing the valid names.
    ///
    /// ```
    /// use flext_types::HandlerConfig;
    ///
    /// assert_eq!(HandlerConfig::for_environment_name("test").unwrap().timeout_ms, 5_000);
    /// let err = HandlerConfig::for_environment_name("prod").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "Invalid environment: prod. Valid values: development, staging, production, test, local"
    /// );
    /// ```
    pub fn for_environment_name(name: &str) -> FlextResult<Self> {
        Ok(Self::for_environment(Environment::parse_wire(name)?))
    }

    /// The deadline of one call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the values that types alone cannot: the timeout must be positive.
    pub fn validate(&self) -> FlextResult<()> {
        if self.timeout_ms == 0 {
            return Err(FlextError::invalid_argument(
                "Invalid timeout: 0. Expected a positive number of milliseconds",
            ));
        }
        Ok(())
    }

    /// A copy of `self` with the keys of a JSON object applied, or an `INVALID_ARGUMENT` error
    /// naming the first bad key or value. `self` is never half-changed: on error nothing
    /// applies.
    ///
    /// Keys: `environment`, `log_level`, `validation_level` (wire strings), `timeout` or
    /// `timeout_ms` (positive milliseconds), `max_retries` (non-negative integer) and the
    /// `enable_*` booleans. An unknown key is an error, so a typo cannot pass silently.
    ///
    /// ```
    /// use flext_types::HandlerConfig;
    /// use flext_constants::LogLevel;
    /// use serde_json::json;
    ///
    /// let base = HandlerConfig::default();
    /// let patched = base.patched(json!({"log_level": "DEBUG", "timeout": 5000}).as_object().unwrap()).unwrap();
    /// assert_eq!((patched.log_level, patched.timeout_ms), (LogLevel::Debug, 5000));
    ///
    /// let err = base.patched(json!({"log_level": "VERBOSE"}).as_object().unwrap()).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "Invalid log_level: VERBOSE. Valid values: DEBUG, INFO, WARNING, ERROR, CRITICAL, TRACE"
    /// );
    /// ```
    pub fn patched(&self, patch: &Map<String, Value>) -> FlextResult<Self> {
        let mut next = self.clone();
        for (key, value) in patch {
            match key.as_str() {
                "environment" => next.environment = parse_enum(value)?,
                "log_level" => next.log_level = parse_enum(value)?,
                "validation_level" => next.validation_level = parse_enum(value)?,
                "timeout" | "timeout_ms" => {
                    next.timeout_ms = value.as_u64().filter(|ms| *ms > 0).ok_or_else(|| {
                        FlextError::invalid_argument(format!(
                            "Invalid {key}: {value}. Expected a positive number of milliseconds"
                        ))
                    })?;
                }
                "max_retries" => {
                    next.max_retries = value
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            FlextError::invalid_argument(format!(
                                "Invalid max_retries: {value}. Expected a non-negative integer"
                            ))
                        })?;
                }
                "enable_debugging" => next.enable_debugging = parse_bool(key, value)?,
                "enable_detailed_logging" => next.enable_detailed_logging = parse_bool(key, value)?,
                "enable_performance_metrics" => {
                    next.enable_performance_metrics = parse_bool(key, value)?;
                }
                "enable_error_reporting" => next.enable_error_reporting = parse_bool(key, value)?,
                unknown => {
                    return Err(FlextError::invalid_argument(format!(
                        "Unknown configuration key: '{unknown}'. Valid keys: {}",
                        KEYS.join(", ")
                    )));
                }
            }
        }
        next.validate()?;
        Ok(next)
    }
}

fn parse_enum<E: WireEnum>(value: &Value) -> FlextResult<E> {
    match value {
        Value::String(s) => Ok(E::parse_wire(s)?),
        // A non-string gets the same message as an unknown string, with its JSON text.
        other => Ok(E::parse_wire(&other.to_string())?),
    }
}

fn parse_bool(key: &str, value: &Value) -> FlextResult<bool> {
    value.as_bool().ok_or_else(|| {
        FlextError::invalid_argument(format!("Invalid {key}: {value}. Expected true or false"))
    })
}

/// Something a handler can be configured from: a whole [`HandlerConfig`] or a partial JSON
/// object (the guide's `configure({"log_level": "DEBUG"})`).
pub trait ConfigSource {
    /// The configuration that results from applying `self` to `base`, or an error naming
    /// the bad key or value.
    fn apply_to(self, base: &HandlerConfig) -> FlextResult<HandlerConfig>;
}

impl ConfigSource for HandlerConfig {
    fn apply_to(self, _base: &HandlerConfig) -> FlextResult<HandlerConfig> {
        self.validate()?;
        Ok(self)
    }
}

impl ConfigSource for &HandlerConfig {
    fn apply_to(self, base: &HandlerConfig) -> FlextResult<HandlerConfig> {
        self.clone().apply_to(base)
    }
}

impl ConfigSource for &Map<String, Value> {
    fn apply_to(self, base: &HandlerConfig) -> FlextResult<HandlerConfig> {
        base.patched(self)
    }
}

impl ConfigSource for &Value {
    fn apply_to(self, base: &HandlerConfig) -> FlextResult<HandlerConfig> {
        match self {
            Value::Object(map) => base.patched(map),
            other => Err(FlextError::invalid_argument(format!(
                "Handler configuration must be a JSON object, got: {other}"
            ))),
        }
    }
}

impl ConfigSource for Value {
    fn apply_to(self, base: &HandlerConfig) -> FlextResult<HandlerConfig> {
        (&self).apply_to(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_constants::ErrorCode;
    use serde_json::json;

    fn apply(patch: Value) -> FlextResult<HandlerConfig> {
        patch.apply_to(&HandlerConfig::default())
    }

    #[test]
    fn environment_table_matches_the_design() {
        let p = HandlerConfig::for_environment(Environment::Production);
        assert_eq!(
            (p.log_level, p.validation_level, p.timeout_ms, p.max_retries),
            (LogLevel::Warning, ValidationLevel::Strict, 30_000, 1)
        );
        let d = HandlerConfig::for_environment(Environment::Development);
        assert_eq!(
            (d.log_level, d.validation_level, d.timeout_ms, d.max_retries),
            (LogLevel::Debug, ValidationLevel::Loose, 60_000, 5)
        );
        assert!(d.enable_debugging);
        let t = HandlerConfig::for_environment(Environment::Test);
        assert_eq!(
            (t.log_level, t.validation_level, t.timeout_ms, t.max_retries),
            (LogLevel::Error, ValidationLevel::Strict, 5_000, 0)
        );
        for env in [Environment::Staging, Environment::Local] {
            let c = HandlerConfig::for_environment(env);
            assert_eq!(c.environment, env);
            assert_eq!(
                (c.log_level, c.validation_level, c.timeout_ms, c.max_retries),
                (LogLevel::Info, ValidationLevel::Normal, 30_000, 3)
            );
        }
        for env in Environment::ALL {
            let c = HandlerConfig::for_environment(*env);
            assert_eq!(c.environment, *env);
            assert!(!c.enable_debugging || *env == Environment::Development);
        }
    }

    #[test]
    fn every_valid_value_is_accepted() {
        for env in Environment::ALL {
            assert_eq!(
                apply(json!({"environment": env.as_str()}))
                    .unwrap()
                    .environment,
                *env
            );
        }
        for level in LogLevel::ALL {
            assert_eq!(
                apply(json!({"log_level": level.as_str()}))
                    .unwrap()
                    .log_level,
                *level
            );
        }
        for level in ValidationLevel::ALL {
            let c = apply(json!({"validation_level": level.as_str()})).unwrap();
            assert_eq!(c.validation_level, *level);
        }
    }

    #[test]
    fn bad_values_are_rejected_with_the_guides_messages() {
        let cases = [
            (
                json!({"log_level": "VERBOSE"}),
                "Invalid log_level: VERBOSE. Valid values: DEBUG, INFO, WARNING, ERROR, CRITICAL, TRACE",
            ),
            (
                json!({"environment": "prod"}),
                "Invalid environment: prod. Valid values: development, staging, production, test, local",
            ),
            (
                json!({"validation_level": "lenient"}),
                "Invalid validation_level: lenient. Valid values: strict, normal, loose, disabled",
            ),
            (
                json!({"log_level": 3}),
                "Invalid log_level: 3. Valid values: DEBUG, INFO, WARNING, ERROR, CRITICAL, TRACE",
            ),
            (
                json!({"timeout": 0}),
                "Invalid timeout: 0. Expected a positive number of milliseconds",
            ),
            (
                json!({"timeout": "5s"}),
                "Invalid timeout: \"5s\". Expected a positive number of milliseconds",
            ),
            (
                json!({"max_retries": -1}),
                "Invalid max_retries: -1. Expected a non-negative integer",
            ),
            (
                json!({"enable_debugging": "yes"}),
                "Invalid enable_debugging: \"yes\". Expected true or false",
            ),
        ];
        for (patch, message) in cases {
            let err = apply(patch).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn unknown_keys_and_non_objects_are_rejected() {
        let err = apply(json!({"log_levle": "DEBUG"})).unwrap_err();
        assert!(
            err.message().starts_with(
                "Unknown configuration key: 'log_levle'. Valid keys: environment, log_level"
            ),
            "{err}"
        );
        let err = apply(json!(["log_level"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Handler configuration must be a JSON object, got: [\"log_level\"]"
        );
    }

    #[test]
    fn a_bad_patch_changes_nothing() {
        let base = HandlerConfig::default();
        let err = json!({"log_level": "DEBUG", "validation_level": "bogus"})
            .apply_to(&base)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(base, HandlerConfig::default());
    }

    #[test]
    fn the_guides_ecosystem_configs_apply() {
        let c = apply(json!({"environment": "production", "timeout": 5000})).unwrap();
        assert_eq!(
            (c.environment, c.timeout_ms),
            (Environment::Production, 5000)
        );
        let c = apply(json!({"environment": "production", "max_retries": 2})).unwrap();
        assert_eq!(c.max_retries, 2);
        let c = apply(json!({"validation_level": "strict", "log_level": "DEBUG"})).unwrap();
        assert_eq!(
            (c.validation_level, c.log_level),
            (ValidationLevel::Strict, LogLevel::Debug)
        );
    }

    #[test]
    fn whole_configs_are_validated() {
        let bad = HandlerConfig {
            timeout_ms: 0,
            ..HandlerConfig::default()
        };
        assert_eq!(
            bad.apply_to(&HandlerConfig::default()).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn serde_uses_wire_strings() {
        let c = HandlerConfig::for_environment(Environment::Production);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["environment"], "production");
        assert_eq!(v["log_level"], "WARNING");
        assert_eq!(v["validation_level"], "strict");
        let back: HandlerConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }
}
