//! The error a pipeline returns, and how the host takes it.

use crate::__private::bindings::mysimbdp::pipeline::types::Error as WitError;
use std::fmt;

/// What a pipeline returns when it cannot go on. The host records the
/// ingestion as failed: `Unavailable` as a `sink-error` (worth trying again),
/// every other kind as a `guest-error` with the message. A failed file goes
/// to the tenant's `failed/` with the reason (`mysimbdp batch retry` stages
/// it again); for a stream batch the host halves the batch to find the
/// message that fails and dead-letters that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input is bad.
    InvalidInput(String),
    /// The host refused an action outside the tenant's namespace or profile.
    Denied(String),
    /// A limit of the tenant's profile was reached.
    QuotaExceeded(String),
    /// A sink or broker is down; the host may retry the ingestion later.
    Unavailable(String),
    /// Anything else the pipeline wants to fail with.
    Other(String),
}

impl Error {
    /// [`Error::InvalidInput`] with `message`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// [`Error::Other`] with `message`.
    pub fn other(message: impl Into<String>) -> Self {
        Error::Other(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::QuotaExceeded(m) => write!(f, "quota exceeded: {m}"),
            Error::Unavailable(m) => write!(f, "unavailable: {m}"),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<WitError> for Error {
    fn from(error: WitError) -> Self {
        match error {
            WitError::InvalidInput(m) => Error::InvalidInput(m),
            WitError::Denied(m) => Error::Denied(m),
            WitError::QuotaExceeded(m) => Error::QuotaExceeded(m),
            WitError::Unavailable(m) => Error::Unavailable(m),
            WitError::Other(m) => Error::Other(m),
        }
    }
}

impl From<Error> for WitError {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(m) => WitError::InvalidInput(m),
            Error::Denied(m) => WitError::Denied(m),
            Error::QuotaExceeded(m) => WitError::QuotaExceeded(m),
            Error::Unavailable(m) => WitError::Unavailable(m),
            Error::Other(m) => WitError::Other(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::InvalidInput(format!("JSON: {error}"))
    }
}
