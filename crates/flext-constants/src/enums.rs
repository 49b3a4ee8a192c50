//! The closed enums of handler configuration and state.

use crate::wire::wire_enum;

wire_enum! {
    /// Where a handler is in its life: idle until called, processing while a call runs,
    /// then the outcome of the last call.
    HandlerState, field = "state" {
        /// Never called, or reset.
        Idle => "idle",
        /// At least one call is running.
        Processing => "processing",
        /// The last call succeeded.
        Completed => "completed",
        /// The last call failed.
        Failed => "failed",
        /// The last call ran past its deadline.
        Timeout => "timeout",
        /// Paused by its lifecycle manager; calls are rejected.
        Paused => "paused",
    }
}

wire_enum! {
    /// The deployment environment a configuration is meant for.
    Environment, field = "environment" {
        /// A developer's machine: verbose, lenient, long timeouts.
        Development => "development",
        /// Pre-production.
        Staging => "staging",
        /// Production: quiet, strict.
        Production => "production",
        /// Automated tests: short timeouts, no retries.
        Test => "test",
        /// A local run of a deployed configuration.
        Local => "local",
    }
}

wire_enum! {
    /// Log verbosity, with the guide's upper-case names.
    LogLevel, field = "log_level" {
        /// Debug output.
        Debug => "DEBUG",
        /// Informational output.
        Info => "INFO",
        /// Warnings and worse.
        Warning => "WARNING",
        /// Errors and worse.
        Error => "ERROR",
        /// Critical errors only.
        Critical => "CRITICAL",
        /// Everything, including traces.
        Trace => "TRACE",
    }
}

wire_enum! {
    /// How strictly requests are validated.
    ValidationLevel, field = "validation_level" {
        /// Every rule is enforced.
        Strict => "strict",
        /// The usual rules are enforced.
        Normal => "normal",
        /// Only essential rules are enforced.
        Loose => "loose",
        /// No validation.
        Disabled => "disabled",
    }
}

wire_enum! {
    /// The kind of a handler, as registries and health reports show it.
    HandlerKind, field = "handler kind" {
        /// A plain handler with metrics and state.
        Basic => "basic",
        /// A handler that validates requests first.
        Validating => "validating",
        /// A handler that authorizes requests first.
        Authorizing => "authorizing",
        /// A handler with request/response size and error-code metrics.
        Metrics => "metrics",
        /// A handler of domain events.
        Event => "event",
        /// A command handler: one per command type, it changes state.
        Command => "command",
        /// A query handler: it reads and changes nothing.
        Query => "query",
        /// A `HandlerChain`: handlers in sequence, or the first that accepts.
        Chain => "chain",
        /// A typed `Pipeline` of stages.
        Pipeline => "pipeline",
        /// A handler written by the user that names no other kind.
        Custom => "custom",
    }
}

wire_enum! {
    /// A performance profile level (see the performance profiles in `flext-types`).
    PerformanceLevel, field = "performance_level" {
        /// Balanced defaults.
        Standard => "standard",
        /// More concurrency, batching and memory.
        High => "high",
        /// Minimal resources.
        Low => "low",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WireEnum;

    fn round_trips<E: WireEnum + core::str::FromStr<Err = crate::UnknownVariant>>() {
        for v in E::ALL {
            assert_eq!(E::from_wire(v.as_str()), Some(*v));
            assert_eq!(v.as_str().parse::<E>().ok(), Some(*v));
        }
        let err = E::parse_wire("no-such-value").unwrap_err();
        assert_eq!(err.field(), E::FIELD);
        assert_eq!(err.value(), "no-such-value");
        assert_eq!(err.valid_values().len(), E::ALL.len());
    }

    #[test]
    fn every_enum_round_trips_its_wire_strings() {
        round_trips::<HandlerState>();
        round_trips::<Environment>();
        round_trips::<LogLevel>();
        round_trips::<ValidationLevel>();
        round_trips::<HandlerKind>();
        round_trips::<PerformanceLevel>();
        round_trips::<crate::ErrorCode>();
    }

    #[test]
    fn wire_strings_match_the_guide() {
        let states: Vec<_> = HandlerState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            states,
            [
                "idle",
                "processing",
                "completed",
                "failed",
                "timeout",
                "paused"
            ]
        );
        let envs: Vec<_> = Environment::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            envs,
            ["development", "staging", "production", "test", "local"]
        );
        let levels: Vec<_> = LogLevel::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            levels,
            ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "TRACE"]
        );
        let validation: Vec<_> = ValidationLevel::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(validation, ["strict", "normal", "loose", "disabled"]);
        let kinds: Vec<_> = HandlerKind::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "basic",
                "validating",
                "authorizing",
                "metrics",
                "event",
                "command",
                "query",
                "chain",
                "pipeline",
                "custom"
            ]
        );
    }

    #[test]
    fn parsing_is_exact() {
        assert!(
            "debug".parse::<LogLevel>().is_err(),
            "log levels are upper-case"
        );
        assert!("Production".parse::<Environment>().is_err());
        assert!(" strict".parse::<ValidationLevel>().is_err());
    }

    #[test]
    fn unknown_values_name_field_and_valid_values() {
        let err = "prod".parse::<Environment>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid environment: prod. Valid values: development, staging, production, test, local"
        );
        let err = "lenient".parse::<ValidationLevel>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid validation_level: lenient. Valid values: strict, normal, loose, disabled"
        );
    }
}
