//! Typed errors for the limits the host enforces, so failures are classified
//! by type, not by message text.

use std::fmt;

/// The guest's linear memories and tables together would exceed the
/// profile's `memory_bytes`: one budget per invocation, however many memories
/// and tables its core instances declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimitExceeded {
    /// What the memory or table asked for.
    pub what: &'static str,
    /// Bytes of all memories and tables before the request.
    pub used: usize,
    /// Bytes they would take with it.
    pub requested: usize,
    pub max: usize,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory limit exceeded: a {} asked to take the invocation's memories and tables from {} to {} bytes; its profile allows {} in all (sandbox.memory_bytes)",
            self.what, self.used, self.requested, self.max
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// Core instances one invocation may create (a Rust component has about ten).
pub const MAX_INSTANCES: usize = 64;
/// Linear memories one invocation may create, in all its core instances.
pub const MAX_MEMORIES: usize = 8;
/// Tables one invocation may create.
pub const MAX_TABLES: usize = 32;
/// Bytes one table element is counted as (a pointer, as wasmtime stores it;
/// rounded up for the element's metadata).
pub const TABLE_ELEMENT_BYTES: usize = 16;

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

/// One budget for all linear memories and tables of an invocation's store,
/// in bytes, and caps on how many instances, memories and tables it may
/// create; remembers the peak, for the metrics.
pub(super) struct MemoryLimiter {
    max: usize,
    used: usize,
    peak: usize,
    /// What the last allowed growth added, undone if the growth then failed.
    pending: usize,
}

impl MemoryLimiter {
    pub fn new(max_bytes: u64) -> Self {
        MemoryLimiter { max: usize::try_from(max_bytes).unwrap_or(usize::MAX), used: 0, peak: 0, pending: 0 }
    }

    pub fn peak_bytes(&self) -> u64 {
        self.peak as u64
    }

    /// Takes `current` to `desired` bytes of one memory or table out of the
    /// shared budget.
    fn grow(&mut self, what: &'static str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let added = desired.saturating_sub(current);
        let requested = self.used.saturating_add(added);
        if requested > self.max {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { what, used: self.used, requested, max: self.max }));
        }
        self.used = requested;
        self.pending = added;
        self.peak = self.peak.max(self.used);
        Ok(true)
    }

    fn grow_failed(&mut self) {
        self.used -= std::mem::take(&mut self.pending);
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow("memory", current, desired)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow("table", current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    const PAGE: usize = 64 * 1024;

    #[test]
    fn memories_and_tables_share_one_budget() {
        // Steps (memory or table, current, desired in pages or elements,
        // allowed), applied in order to a 10-page budget.
        let steps: [(&str, usize, usize, bool); 8] = [
            ("memory", 0, 4, true),                                                       // the first memory: 4 of 10 pages
            ("memory", 0, 4, true),                                                       // a second memory: 8 of 10
            ("memory", 0, 3, false),                                                      // a third would make 11
            ("memory", 4, 5, true),                                                       // the first grows by one: 9 of 10
            ("table", 0, PAGE / TABLE_ELEMENT_BYTES, true),                               // a page's worth of elements: 10 of 10
            ("table", PAGE / TABLE_ELEMENT_BYTES, PAGE / TABLE_ELEMENT_BYTES + 1, false), // one element more
            ("memory", 5, 6, false),                                                      // nothing is left
            ("memory", 4, 4, true),                                                       // growing by nothing is always allowed
        ];
        let mut limiter = MemoryLimiter::new((10 * PAGE) as u64);
        for (n, (what, current, desired, allowed)) in steps.into_iter().enumerate() {
            let outcome = match what {
                "memory" => limiter.memory_growing(current * PAGE, desired * PAGE, None),
                _ => limiter.table_growing(current, desired, None),
            };
            assert_eq!(outcome.is_ok(), allowed, "step {n}: {what} {current} -> {desired}");
            if let Err(error) = outcome {
                assert!(error.downcast_ref::<MemoryLimitExceeded>().is_some(), "step {n} fails as the memory limit");
            }
        }
        assert_eq!(limiter.peak_bytes(), (10 * PAGE) as u64);
    }

    #[test]
    fn a_growth_that_failed_gives_its_bytes_back() {
        let mut limiter = MemoryLimiter::new((4 * PAGE) as u64);
        assert!(limiter.memory_growing(0, 3 * PAGE, None).unwrap());
        limiter.memory_grow_failed(wasmtime::Error::msg("the OS said no")).unwrap();
        assert!(limiter.memory_growing(0, 4 * PAGE, None).unwrap(), "the failed 3 pages are free again");
        assert!(limiter.memory_growing(4 * PAGE, 5 * PAGE, None).is_err());
    }

    /// A core module declaring one memory of `pages` pages, or none.
    fn module(engine: &wasmtime::Engine, pages: Option<u8>) -> wasmtime::Module {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        if let Some(pages) = pages {
            // Memory section: one memory, no maximum, `pages` minimum.
            bytes.extend_from_slice(&[5, 3, 1, 0, pages]);
        }
        wasmtime::Module::new(engine, &bytes).unwrap()
    }

    /// How many instances of `module` one store under `limiter` takes, up to
    /// 1000, and the error that stopped it.
    fn instantiate_until_refused(engine: &wasmtime::Engine, module: &wasmtime::Module, budget: usize) -> (usize, String) {
        let mut store = wasmtime::Store::new(engine, MemoryLimiter::new(budget as u64));
        store.limiter(|limiter| limiter);
        for n in 0..1000 {
            if let Err(error) = wasmtime::Instance::new(&mut store, module, &[]) {
                let kind = if error.downcast_ref::<MemoryLimitExceeded>().is_some() { "memory-limit" } else { "count" };
                return (n, kind.to_string());
            }
        }
        (1000, String::new())
    }

    #[test]
    fn a_store_creates_only_so_many_instances_and_memories_and_their_bytes_add_up() {
        let engine = wasmtime::Engine::default();
        let cases = [
            // (pages of the module's memory, budget, instances made, what stopped them)
            (None, PAGE, MAX_INSTANCES, "count"),
            (Some(0), 100 * PAGE, MAX_MEMORIES, "count"),
            (Some(4), 10 * PAGE, 2, "memory-limit"),
            (Some(4), 12 * PAGE, 3, "memory-limit"),
        ];
        for (pages, budget, made, stopped_by) in cases {
            let module = module(&engine, pages);
            assert_eq!(
                instantiate_until_refused(&engine, &module, budget),
                (made, stopped_by.to_string()),
                "memory of {pages:?} pages, a budget of {budget} bytes"
            );
        }
    }
}
