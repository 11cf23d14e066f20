//! Typed errors for the limits the host enforces, so failures are classified
//! by type, not by message text.

use std::fmt;

/// The guest tried to grow its memory past the profile's `memory_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimitExceeded {
    pub current: usize,
    pub requested: usize,
    pub max: usize,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory limit exceeded: the guest asked to grow from {} to {} bytes; its profile allows {} (sandbox.memory_bytes)",
            self.current, self.requested, self.max
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// The invocation ran past the profile's `deadline_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineExceeded {
    pub deadline_ms: u64,
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deadline exceeded: the invocation ran longer than {} ms (sandbox.deadline_ms)", self.deadline_ms)
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Caps linear memory and remembers the peak, for the metrics.
pub(super) struct MemoryLimiter {
    max: usize,
    peak: usize,
}

impl MemoryLimiter {
    pub fn new(max_bytes: u64) -> Self {
        MemoryLimiter { max: max_bytes as usize, peak: 0 }
    }

    pub fn peak_bytes(&self) -> u64 {
        self.peak as u64
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { current, requested: desired, max: self.max }));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
