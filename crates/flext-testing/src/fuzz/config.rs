//! Configuration patches, environment names and whole configurations from JSON.

use flext_constants::{Environment, ErrorCode, WireEnum};
use flext_impl::HandlerCore;
use flext_types::{ConfigSource, HandlerConfig};
use serde_json::Value;

use super::text;

/// Fuzzes the decoders of a handler's configuration.
///
/// The first byte picks the base configuration (an environment's); the rest is read as an
/// environment name, as a JSON patch applied to the base (to the plain value and through a
/// handler's `configure`), and as a whole [`HandlerConfig`] in JSON.
///
/// Checks: an applied patch leaves a valid configuration whose keys not named in the patch
/// are the base's, and applying it again changes nothing; a rejected patch is an
/// `INVALID_ARGUMENT` and leaves the handler's configuration as it was; an environment name
/// parses only to the environment of that wire string; a configuration that deserializes
/// serializes and deserializes to itself.
pub fn config_patch(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let environment = Environment::ALL[usize::from(pick) % Environment::ALL.len()];
    let base = HandlerConfig::for_environment(environment);

    let name = text(rest);
    match HandlerConfig::for_environment_name(&name) {
        Ok(config) => assert_eq!(config.environment.as_str(), name),
        Err(error) => assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}"),
    }

    if let Ok(patch) = serde_json::from_slice::<Value>(rest) {
        patch_applies_whole_or_not_at_all(&base, &patch);
    }

    if let Ok(config) = serde_json::from_slice::<HandlerConfig>(rest) {
        let json = serde_json::to_string(&config).expect("a configuration serializes");
        let again: HandlerConfig =
            serde_json::from_str(&json).expect("a serialized configuration deserializes");
        assert_eq!(again, config);
        match config.clone().apply_to(&base) {
            Ok(applied) => assert_eq!(applied, config),
            Err(error) => {
                assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
                assert_eq!(config.timeout_ms, 0, "only a zero timeout is refused");
            }
        }
    }
}

fn patch_applies_whole_or_not_at_all(base: &HandlerConfig, patch: &Value) {
    let handler = HandlerCore::new("fuzzed", flext_constants::HandlerKind::Basic);
    handler
        .configure(base)
        .expect("an environment's configuration is valid");
    let through_handler = handler.configure(patch);
    match patch.apply_to(base) {
        Ok(next) => {
            assert_eq!(through_handler, Ok(()));
            assert_eq!(handler.config(), next);
            next.validate()
                .expect("an applied patch leaves a valid configuration");
            assert!(next.timeout_ms > 0);
            assert_eq!(
                patch.apply_to(&next).as_ref(),
                Ok(&next),
                "a patch applied twice changes nothing more"
            );
            let map = patch.as_object().expect("only an object applies");
            untouched_fields_are_the_base(base, &next, map);
        }
        Err(error) => {
            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
            assert!(!error.message().is_empty());
            assert_eq!(through_handler.as_ref().err(), Some(&error));
            assert_eq!(&handler.config(), base, "nothing applied");
        }
    }
}

fn untouched_fields_are_the_base(
    base: &HandlerConfig,
    next: &HandlerConfig,
    patch: &serde_json::Map<String, Value>,
) {
    let named = |key: &str| patch.contains_key(key);
    let same = |key: &str, equal: bool| {
        assert!(named(key) || equal, "{key} changed without being named");
    };
    same("environment", next.environment == base.environment);
    same("log_level", next.log_level == base.log_level);
    same(
        "validation_level",
        next.validation_level == base.validation_level,
    );
    assert!(
        named("timeout") || named("timeout_ms") || next.timeout_ms == base.timeout_ms,
        "timeout_ms changed without being named"
    );
    same("max_retries", next.max_retries == base.max_retries);
    same(
        "enable_debugging",
        next.enable_debugging == base.enable_debugging,
    );
    same(
        "enable_detailed_logging",
        next.enable_detailed_logging == base.enable_detailed_logging,
    );
    same(
        "enable_performance_metrics",
        next.enable_performance_metrics == base.enable_performance_metrics,
    );
    same(
        "enable_error_reporting",
        next.enable_error_reporting == base.enable_error_reporting,
    );
}
