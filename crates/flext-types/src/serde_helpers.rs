//! `#[serde(with = …)]` helpers for flext's own data types.
//!
//! [`wire`] (de)serializes any [`WireEnum`](flext_constants::WireEnum) as its wire string,
//! so `flext-constants` can stay free of dependencies; [`millis`] (de)serializes a
//! [`Duration`](std::time::Duration) as a number of milliseconds (a float), the unit the guide
//! reports times in.

/// (De)serializes a [`WireEnum`](flext_constants::WireEnum) as its wire string.
///
/// ```
/// use flext_constants::LogLevel;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Settings {
///     #[serde(with = "flext_types::serde_helpers::wire")]
///     log_level: LogLevel,
/// }
/// let s: Settings = serde_json::from_str(r#"{"log_level":"DEBUG"}"#).unwrap();
/// assert_eq!(s.log_level, LogLevel::Debug);
/// assert!(serde_json::from_str::<Settings>(r#"{"log_level":"debug"}"#).is_err());
/// ```
pub mod wire {
    use flext_constants::WireEnum;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `value` as its wire string.
    pub fn serialize<E: WireEnum, S: Serializer>(value: &E, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_str())
    }

    /// Deserializes a wire string; an unknown one is an error listing the valid values.
    pub fn deserialize<'de, E: WireEnum, D: Deserializer<'de>>(d: D) -> Result<E, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        E::parse_wire(&s).map_err(serde::de::Error::custom)
    }
}

/// (De)serializes a [`Duration`](std::time::Duration) as milliseconds (a float).
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes `value` as a float number of milliseconds.
    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64() * 1000.0)
    }

    /// Deserializes a non-negative, finite number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid duration: {ms} ms (expected a finite, non-negative number)"
            ))
        })
    }
}
