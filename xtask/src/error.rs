//! The error of the tidy checks: something stopped a check from running at all.
//!
//! A rule that is broken is not an [`Error`]: it is a message in the list a check returns.

use std::fmt;

/// What went wrong while gathering the input of a check.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The kinds of [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file or directory could not be read.
    Io,
    /// `cargo metadata` could not be run, or it failed.
    Cargo,
    /// The metadata document is not the JSON that `cargo metadata` prints.
    Json,
}

impl Error {
    /// Returns what kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
