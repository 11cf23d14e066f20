//! Which [`Failure`] ended an invocation: by the typed error of the limit it
//! hit, the trap wasmtime reports, or what a sink said while the guest ran.

use super::{DeadlineExceeded, MemoryLimitExceeded};
use crate::capabilities::Effects;
use crate::capabilities::bindings::GuestError;
use crate::failure::{Failure, FailureKind};
use wasmtime::Trap;

/// Classifies an error that ended the call (a trap or a host failure).
pub(super) fn classify(error: &wasmtime::Error, effects: &Effects, stderr: &str) -> Failure {
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
        None => match &effects.sink_error {
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
pub(super) fn from_guest_error(error: GuestError, effects: &Effects) -> Failure {
    let (kind, message) = match error {
        GuestError::Unavailable(m) => (FailureKind::SinkError, m),
        GuestError::InvalidInput(m) => (FailureKind::GuestError, format!("invalid input: {m}")),
        GuestError::Denied(m) => (FailureKind::GuestError, format!("denied: {m}")),
        GuestError::QuotaExceeded(m) => (FailureKind::GuestError, format!("quota exceeded: {m}")),
        GuestError::Other(m) => (FailureKind::GuestError, m),
    };
    match (&effects.sink_error, kind) {
        (Some(sink), _) => Failure::new(FailureKind::SinkError, sink.clone()),
        _ => Failure::new(kind, message),
    }
}
