//! Every way an invocation can fail, as a kind the operator can count and a
//! message that says what happened and what to change.

use super::{DeadlineExceeded, MemoryLimitExceeded};
use crate::capabilities::HostState;
use crate::runtime::bindings::GuestError;
use serde::{Deserialize, Serialize};
use std::fmt;
use wasmtime::Trap;

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

/// Classifies an error that ended the call (a trap or a host failure).
pub(super) fn classify(error: &wasmtime::Error, state: &HostState, stderr: &str) -> Failure {
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Failure::new(FailureKind::MemoryLimit, limit.to_string());
    }
    if let Some(deadline) = error.downcast_ref::<DeadlineExceeded>() {
        return Failure::new(FailureKind::Deadline, deadline.to_string());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::new(
            FailureKind::OutOfFuel,
            "out of fuel: the invocation executed more instructions than its profile allows (sandbox.fuel_per_invocation)",
        ),
        Some(Trap::StackOverflow) => Failure::new(
            FailureKind::StackOverflow,
            "stack overflow: the guest recursed deeper than its profile allows (sandbox.max_wasm_stack_bytes)",
        ),
        Some(Trap::Interrupt) => Failure::new(FailureKind::Deadline, "deadline exceeded: the invocation was interrupted"),
        Some(Trap::UnreachableCodeReached) => {
            let panic = stderr.lines().find(|l| l.contains("panicked at")).map(str::trim);
            let detail = match panic {
                Some(line) => format!("{line} {}", stderr_after(stderr, line)),
                None => "the guest aborted (wasm `unreachable`)".to_string(),
            };
            Failure::new(FailureKind::GuestPanic, format!("guest panic: {}", detail.trim()))
        }
        Some(trap) => Failure::new(FailureKind::GuestTrap, format!("guest trap: {trap}")),
        None => match &state.effects.sink_error {
            Some(sink) => Failure::new(FailureKind::SinkError, sink.clone()),
            None => Failure::new(FailureKind::GuestTrap, format!("{error:#}")),
        },
    }
}

/// The line after the `panicked at` line holds the panic message.
fn stderr_after<'s>(stderr: &'s str, line: &str) -> &'s str {
    stderr.lines().skip_while(|l| l.trim() != line).nth(1).unwrap_or("").trim()
}

/// Classifies an error the guest returned.
pub(super) fn from_guest_error(error: GuestError, state: &HostState) -> Failure {
    let (kind, message) = match error {
        GuestError::Unavailable(m) => (FailureKind::SinkError, m),
        GuestError::InvalidInput(m) => (FailureKind::GuestError, format!("invalid input: {m}")),
        GuestError::Denied(m) => (FailureKind::GuestError, format!("denied: {m}")),
        GuestError::QuotaExceeded(m) => (FailureKind::GuestError, format!("quota exceeded: {m}")),
        GuestError::Other(m) => (FailureKind::GuestError, m),
    };
    match (&state.effects.sink_error, kind) {
        (Some(sink), _) => Failure::new(FailureKind::SinkError, sink.clone()),
        _ => Failure::new(kind, message),
    }
}
