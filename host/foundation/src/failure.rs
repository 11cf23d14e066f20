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
    /// The guest said something it depends on is unavailable while no
    /// platform store failed under it: retried a bounded number of times
    /// ([`UNAVAILABLE_RETRIES`]), then the file fails (retryable) or the
    /// stream instance alerts and backs off, committing nothing.
    Unavailable,
}

/// Times an invocation the guest ended as `unavailable` is tried again at
/// once (with backoff) before the file fails or the stream alerts.
pub const UNAVAILABLE_RETRIES: u32 = 3;

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
            FailureKind::Unavailable => "unavailable",
        }
    }

    /// A trap ends the instance; the data it was given may be at fault.
    pub fn is_trap(self) -> bool {
        !matches!(self, FailureKind::GuestError | FailureKind::SinkError | FailureKind::Unavailable)
    }

    /// Not the data's fault: the work is retried, never dead-lettered.
    pub fn is_retried(self) -> bool {
        matches!(self, FailureKind::SinkError | FailureKind::Unavailable)
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
    /// A failure whose message is cut to [`MAX_MESSAGE_BYTES`]: a guest's
    /// error text lands in the manifest, `reason.json`, the tenant's log and
    /// the `metrics` collection through here.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match capped(&message, MAX_MESSAGE_BYTES) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(cut) => cut,
        };
        Failure { kind, message }
    }
}

/// Longest failure message kept, marker included.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `text` as it is when it fits in `max` bytes; otherwise cut at a character
/// boundary and ended with a marker saying how many bytes were cut, the
/// whole at most `max` bytes. Every guest text the host keeps or writes
/// (names in errors, log lines, error texts, reasons, header values) goes
/// through here.
pub fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    // The marker's digits are at most those of the whole length.
    let room = max.saturating_sub(format!("… [{} bytes cut]", text.len()).len());
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… [{} bytes cut]", &text[..end], text.len() - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_with_a_marker_within_their_cap() {
        let cases: [(&str, usize, &str); 6] = [
            // (text, cap, what is kept)
            ("short", 64, "short"),
            ("", 0, ""),
            ("exactly", 7, "exactly"),
            (&"a".repeat(100), 30, "aaaaaaaaaaa… [89 bytes cut]"),
            // Not inside a character: `é` is two bytes.
            (&"é".repeat(50), 30, "ééééé… [90 bytes cut]"),
            // A cap smaller than the marker keeps the marker alone.
            (&"b".repeat(100), 5, "… [100 bytes cut]"),
        ];
        for (text, max, kept) in cases {
            let cut = capped(text, max);
            assert_eq!(cut, kept, "{} bytes capped at {max}", text.len());
            assert!(cut.len() <= max.max("… [100 bytes cut]".len()), "{cut} fits in {max}");
        }
        let failure = Failure::new(FailureKind::GuestError, "R".repeat(1 << 20));
        assert!(failure.message.len() <= MAX_MESSAGE_BYTES && failure.message.ends_with("bytes cut]"), "{}", failure.message.len());
    }
}
