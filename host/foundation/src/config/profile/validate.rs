//! The rules of a service profile that its types alone cannot state
//! ([`Profile::validate`]): bounds on the constraints, the agreement, the
//! quotas and every sandbox, unique pipeline names, valid globs, and names
//! reserved for the host. Each problem names the file and the field.

use super::{MAX_WASM_STACK_BYTES, Profile, Quotas, RESERVED_COLLECTIONS, RESERVED_TOPICS, SandboxLimits, files_glob};
use crate::config::{ByteSize, ConfigError};
use std::collections::BTreeSet;
use std::path::Path;

impl Profile {
    /// Checks what types alone cannot; the first problem is returned.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let fail = |field: &str, message: String| Err(ConfigError::new(file, field, message));
        let c = &self.constraints;
        if c.allowed_types.is_empty() {
            return fail("constraints.allowed_types", "list at least one file extension, e.g. [csv]".into());
        }
        for (i, kind) in c.allowed_types.iter().enumerate() {
            if kind.is_empty() || kind.len() > 10 || !kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                return fail(
                    &format!("constraints.allowed_types[{i}]"),
                    format!("`{kind}` is not a file extension: write it lowercase without the dot, e.g. csv"),
                );
            }
        }
        if c.max_file_bytes.0 == 0 {
            return fail("constraints.max_file_bytes", "must be above 0".into());
        }
        if c.max_files_per_run == 0 {
            return fail("constraints.max_files_per_run", "must be at least 1".into());
        }
        if c.max_staging_bytes < c.max_file_bytes {
            return fail(
                "constraints.max_staging_bytes",
                format!("is {} but must be at least max_file_bytes ({})", c.max_staging_bytes, c.max_file_bytes),
            );
        }
        let a = &self.agreement;
        if !(1..=64).contains(&a.max_concurrent_ingestions) {
            return fail("agreement.max_concurrent_ingestions", format!("is {} but must be between 1 and 64", a.max_concurrent_ingestions));
        }
        if !(1..=10).contains(&a.priority) {
            return fail("agreement.priority", format!("is {} but must be between 1 (lowest) and 10", a.priority));
        }
        validate_sandbox(file, "sandbox", &self.sandbox)?;
        validate_quotas(file, &self.quotas)?;

        let mut names = BTreeSet::new();
        for (i, pipeline) in self.batch.iter().enumerate() {
            let at = |field: &str| format!("batch[{i}].{field}");
            if !names.insert(pipeline.name.clone()) {
                return fail(&at("name"), format!("`{}` is used by two batch pipelines", pipeline.name));
            }
            if let Err(e) = files_glob(&pipeline.files) {
                return fail(&at("files"), format!("`{}` is not a glob pattern: {e}", pipeline.files));
            }
            validate_sandbox(file, &at("sandbox"), &self.sandbox.with(&pipeline.sandbox))?;
        }
        if let Some(stream) = &self.stream {
            if stream.topics.is_empty() {
                return fail("stream.topics", "list at least one topic".into());
            }
            for (i, topic) in stream.topics.iter().enumerate() {
                if RESERVED_TOPICS.contains(&topic.as_str()) {
                    return fail(&format!("stream.topics[{i}]"), format!("`{topic}` is reserved for the host"));
                }
            }
            if !(1..=64).contains(&stream.partitions) {
                return fail("stream.partitions", format!("is {} but must be between 1 and 64", stream.partitions));
            }
            if stream.min_instances > stream.max_instances {
                return fail("stream.min_instances", format!("is {} but max_instances is {}", stream.min_instances, stream.max_instances));
            }
            if !(1..=32).contains(&stream.max_instances) {
                return fail("stream.max_instances", format!("is {} but must be between 1 and 32", stream.max_instances));
            }
            if !(1..=10_000).contains(&stream.batch_max_messages) {
                return fail("stream.batch_max_messages", format!("is {} but must be between 1 and 10000", stream.batch_max_messages));
            }
            if let Some(rate) = stream.thresholds.max_error_rate
                && !(0.0..=1.0).contains(&rate)
            {
                return fail("stream.thresholds.max_error_rate", format!("is {rate} but must be between 0 and 1"));
            }
            validate_sandbox(file, "stream.sandbox", &self.sandbox.with(&stream.sandbox))?;
        }
        for name in self.collections.keys() {
            if RESERVED_COLLECTIONS.contains(&name.as_str()) {
                return fail(&format!("collections.{name}"), format!("`{name}` is reserved for the host"));
            }
        }
        Ok(())
    }
}

/// Bounds that keep one tenant from hurting the host.
fn validate_quotas(file: &Path, quotas: &Quotas) -> Result<(), ConfigError> {
    let fail = |field: &str, message: String| Err(ConfigError::new(file, format!("quotas.{field}"), message));
    if !(1..=10_000).contains(&quotas.collections) {
        return fail("collections", format!("is {} but must be between 1 and 10000", quotas.collections));
    }
    if quotas.topics > 10_000 {
        return fail("topics", format!("is {} but must be at most 10000", quotas.topics));
    }
    if quotas.counter_series > 100_000 {
        return fail("counter_series", format!("is {} but must be at most 100000", quotas.counter_series));
    }
    if !(64 * ByteSize::KIB..=64 * ByteSize::GIB).contains(&quotas.guest_log_bytes.0) {
        return fail("guest_log_bytes", format!("is {} but must be between 64KiB and 64GiB", quotas.guest_log_bytes));
    }
    if !(1..=100).contains(&quotas.guest_log_files) {
        return fail("guest_log_files", format!("is {} but must be between 1 and 100", quotas.guest_log_files));
    }
    if quotas.dead_letters_per_invocation == 0 {
        return fail("dead_letters_per_invocation", "must be above 0".into());
    }
    Ok(())
}

fn validate_sandbox(file: &Path, at: &str, limits: &SandboxLimits) -> Result<(), ConfigError> {
    let fail = |field: &str, message: String| Err(ConfigError::new(file, format!("{at}.{field}"), message));
    if limits.fuel_per_invocation < 1_000_000 {
        return fail(
            "fuel_per_invocation",
            format!("is {} but must be at least 1000000 (a pipeline needs fuel to start)", limits.fuel_per_invocation),
        );
    }
    if !(2 * ByteSize::MIB..=4 * ByteSize::GIB).contains(&limits.memory_bytes.0) {
        return fail("memory_bytes", format!("is {} but must be between 2MiB and 4GiB", limits.memory_bytes));
    }
    if !(10..=86_400_000).contains(&limits.deadline_ms) {
        return fail("deadline_ms", format!("is {} but must be between 10 and 86400000 (a day)", limits.deadline_ms));
    }
    if !(64 * ByteSize::KIB..=MAX_WASM_STACK_BYTES).contains(&limits.max_wasm_stack_bytes.0) {
        return fail(
            "max_wasm_stack_bytes",
            format!("is {} but must be between 64KiB and {}", limits.max_wasm_stack_bytes, ByteSize(MAX_WASM_STACK_BYTES)),
        );
    }
    Ok(())
}
