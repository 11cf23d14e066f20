//! Every way an invocation can fail, as a kind the operator can count and a
//! message that says what happened and what to change.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Ran out of `fuel_per_invocation`.
    OutOfFuel,
    /// Tried to grow past `memory_bytes`.
    MemoryLimit,
    /// Ran past `deadline_ms`.
    Deadline,
    /// Recursed deeper than `max_wasm_stack_bytes`.
    StackOverflow,
    /// The guest panicked (Rust `panic!`, `unwrap` on `None`, ...).
    GuestPanic,
    /// Any other trap (out-of-bounds access, division by zero, ...).
    GuestTrap,
    /// The guest returned an error.
    GuestError,
    /// The store, the broker or the staged file failed under the guest.
    SinkError,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::OutOfFuel => "out-of-fuel",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::Deadline => "deadline",
            FailureKind::StackOverflow => "stack-overflow",
            FailureKind::GuestPanic => "guest-panic",
            FailureKind::GuestTrap => "guest-trap",
            FailureKind::GuestError => "guest-error",
            FailureKind::SinkError => "sink-error",
        }
    }

    /// A trap ends the instance; the data it was given may be at fault.
    pub fn is_trap(self) -> bool {
        !matches!(self, FailureKind::GuestError | FailureKind::SinkError)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure { kind, message: message.into() }
    }
}
