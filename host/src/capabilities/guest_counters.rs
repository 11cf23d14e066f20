//! `metrics`: a pipeline's own counters, exported under a prefix and labels
//! it cannot change.

use super::HostState;
use super::bindings::batch::mysimbdp::pipeline::metrics;

/// Distinct counters one pipeline may define; more would explode Prometheus.
const MAX_COUNTERS: usize = 64;

impl metrics::Host for HostState {
    async fn counter_add(&mut self, name: String, value: u64) -> wasmtime::Result<()> {
        let valid = (1..=64).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            self.deny("counter", format!("`{name}` is not a counter name (1 to 64 lowercase letters, digits and `_`)"));
            return Ok(());
        }
        if !self.effects.counters.contains_key(&name) && self.effects.counters.len() >= MAX_COUNTERS {
            self.deny("counter", format!("`{name}` would exceed {MAX_COUNTERS} counters per pipeline"));
            return Ok(());
        }
        if !self.effects.counters.contains_key(&name) {
            let scope = self.scope.clone();
            if let Err(exceeded) = scope.services.admit_series(&scope.tenant, scope.pipeline.as_str(), &name) {
                self.quota_exceeded(exceeded);
                return Ok(());
            }
        }
        // Saturates: a guest adding u64::MAX twice must not overflow the host.
        let counter = self.effects.counters.entry(name).or_default();
        *counter = counter.saturating_add(value);
        Ok(())
    }
}
