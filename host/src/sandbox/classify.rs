//! Which [`Failure`] ended an invocation: by the typed error of the limit it
//! hit, the trap wasmtime reports, or what a sink said while the guest ran.

use super::limits::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLES};
use super::{DeadlineExceeded, MemoryLimitExceeded};
use crate::capabilities::Effects;
use crate::capabilities::bindings::GuestError;
use crate::failure::{Failure, FailureKind};
use std::time::Duration;
use wasmtime::Trap;

/// Classifies an error that ended the call (a trap or a host failure).
pub(super) fn classify(error: &wasmtime::Error, effects: &Effects, stderr: &str) -> Failure {
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Failure::new(FailureKind::MemoryLimit, limit.to_string());
    }
    // Wasmtime reports a store's instance, memory or table count past the
    // limiter's caps with this text only (no error type to downcast to).
    let text = format!("{error:#}");
    if let Some(at) = text.find("resource limit exceeded: ") {
        return Failure::new(
            FailureKind::MemoryLimit,
            format!(
                "memory limit exceeded: {}; an invocation may create at most {MAX_INSTANCES} core instances, {MAX_MEMORIES} memories and {MAX_TABLES} tables",
                &text[at + "resource limit exceeded: ".len()..]
            ),
        );
    }
    if let Some(deadline) = error.downcast_ref::<DeadlineExceeded>() {
        return past_deadline(Duration::from_millis(deadline.deadline_ms), effects, &deadline.to_string());
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

/// Whose time it was when the invocation ran past its deadline: the
/// store's when the guest was still waiting in a platform call, or spent at
/// least half the deadline waiting in them. Then it is a sink error (retried
/// with backoff, never dead-lettered); otherwise the guest's (a deadline,
/// which a stream bisects like a trap).
pub(super) fn deadline_kind(deadline: Duration, sink_wait: Duration, waiting_in: Option<&str>) -> FailureKind {
    if waiting_in.is_some() || sink_wait * 2 >= deadline { FailureKind::SinkError } else { FailureKind::Deadline }
}

/// The failure of an invocation that ran past `deadline`.
pub(super) fn past_deadline(deadline: Duration, effects: &Effects, what: &str) -> Failure {
    match deadline_kind(deadline, effects.sink_wait, effects.waiting_in) {
        FailureKind::SinkError => Failure::new(
            FailureKind::SinkError,
            format!(
                "slow store: {what}, {} ms of it waiting for the platform's stores{}; the work is retried and nothing is dead-lettered",
                effects.sink_wait.as_millis(),
                effects.waiting_in.map(|call| format!(" (still waiting in {call})")).unwrap_or_default()
            ),
        ),
        kind => Failure::new(kind, what),
    }
}

/// The line after the `panicked at` line holds the panic message.
fn stderr_after<'s>(stderr: &'s str, line: &str) -> &'s str {
    stderr.lines().skip_while(|l| l.trim() != line).nth(1).unwrap_or("").trim()
}

/// Classifies an error the guest returned.
pub(super) fn from_guest_error(error: GuestError, effects: &Effects) -> Failure {
    let (kind, message) = match error {
        GuestError::Unavailable(m) => (FailureKind::Unavailable, format!("unavailable: {m}")),
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

#[cfg(test)]
mod tests {
    use super::deadline_kind;
    use crate::failure::FailureKind::{Deadline, SinkError};
    use std::time::Duration;

    #[test]
    fn a_deadline_is_the_stores_when_the_guest_waited_for_it() {
        let ms = Duration::from_millis;
        let cases = [
            // (deadline, time waited in platform calls, call cut off in, kind)
            (ms(1000), ms(0), None, Deadline),
            (ms(1000), ms(499), None, Deadline),
            (ms(1000), ms(500), None, SinkError),
            (ms(1000), ms(990), None, SinkError),
            (ms(1000), ms(0), Some("coredms.bulk-index"), SinkError),
            (ms(1000), ms(10), Some("messaging.publish"), SinkError),
        ];
        for (deadline, waited, waiting_in, kind) in cases {
            assert_eq!(deadline_kind(deadline, waited, waiting_in), kind, "{deadline:?} {waited:?} {waiting_in:?}");
        }
    }
}
