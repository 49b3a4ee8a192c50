//! The wire-string contract shared by every closed enum in this crate.

use core::fmt;

/// A closed enum with a fixed, documented string for each variant.
///
/// The strings are the ones the flext guide uses on the wire and in configuration, so they
/// are stable: renaming one is a breaking change.
pub trait WireEnum: Copy + Eq + fmt::Debug + 'static {
    /// Every variant, in declaration order.
    const ALL: &'static [Self];

    /// The configuration key or concept this enum is parsed for, used in error messages
    /// (for example `log_level`).
    const FIELD: &'static str;

    /// The variant's wire string.
    fn as_str(self) -> &'static str;

    /// The variant whose wire string is exactly `s`, if any.
    fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    /// Parses `s`, or names the field, the bad value and the valid values.
    fn parse_wire(s: &str) -> Result<Self, UnknownVariant> {
        Self::from_wire(s).ok_or_else(|| UnknownVariant {
            field: Self::FIELD,
            value: s.to_owned(),
            valid: Self::ALL.iter().map(|v| v.as_str()).collect(),
        })
    }
}

/// A string that is not the wire string of any variant of a [`WireEnum`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant {
    field: &'static str,
    value: String,
    valid: Vec<&'static str>,
}

impl UnknownVariant {
    /// The field the value was given for (for example `log_level`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The value that was rejected.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The wire strings that would have been accepted.
    pub fn valid_values(&self) -> &[&'static str] {
        &self.valid
    }
}

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Invalid {}: {}. Valid values: {}",
            self.field,
            self.value,
            self.valid.join(", ")
        )
    }
}

impl std::error::Error for UnknownVariant {}

/// Declares a closed enum together with its [`WireEnum`], `Display` and `FromStr` impls.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $crate::WireEnum for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            const FIELD: &'static str = $field;

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }
        }

        impl $name {
            /// The variant's wire string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = $crate::UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <Self as $crate::WireEnum>::parse_wire(s)
            }
        }
    };
}

pub(crate) use wire_enum;
