//! Events of the batch side: files quarantined, skipped as duplicates or
//! recovered after a stop, the batch manager's load, and writes that stop
//! and resume.

use crate::config::TenantId;
use crate::telemetry::logs::LogSink;
use std::path::Path;

/// A staged file moved to `quarantine/` for breaking a rule.
pub struct Quarantined<'a> {
    pub tenant: &'a TenantId,
    pub file: &'a str,
    pub rule: &'a str,
    pub limit: &'a str,
    pub actual: &'a str,
    pub message: &'a str,
    pub moved_to: &'a Path,
}

impl Quarantined<'_> {
    pub fn emit(&self, log: &LogSink) {
        tracing::warn!(tenant = %self.tenant, file = %self.file, rule = %self.rule, "File quarantined: {}.", self.message);
        log.write(&serde_json::json!({
            "type": "quarantine", "tenant": self.tenant, "file": self.file, "rule": self.rule, "limit": self.limit,
            "actual": self.actual, "message": self.message, "moved_to": self.moved_to,
        }));
        metrics::counter!("mysimbdp_files_quarantined_total", "tenant" => self.tenant.to_string(), "rule" => self.rule.to_string())
            .increment(1);
    }
}

/// A staged file whose checksum the pipeline ingested already.
pub struct Duplicate<'a> {
    pub tenant: &'a TenantId,
    pub file: &'a str,
    pub checksum: &'a str,
}

impl Duplicate<'_> {
    pub fn emit(&self, log: &LogSink) {
        tracing::info!(tenant = %self.tenant, file = %self.file, "File already ingested (same checksum); not ingested again.");
        log.write(&serde_json::json!({ "type": "duplicate", "tenant": self.tenant, "file": self.file, "checksum": self.checksum }));
    }
}

/// The batch manager's queue and workers, per tenant.
pub struct BatchLoad<'a> {
    pub tenant: &'a TenantId,
    pub queued: usize,
    pub running: usize,
}

impl BatchLoad<'_> {
    pub fn emit(&self) {
        metrics::gauge!("mysimbdp_batch_queued_files", "tenant" => self.tenant.to_string()).set(self.queued as f64);
        metrics::gauge!("mysimbdp_batch_running_ingestions", "tenant" => self.tenant.to_string()).set(self.running as f64);
    }
}

/// A tenant's manifest or store could not be written: it takes no files
/// until the host can write there again.
pub struct WritesStopped<'a> {
    pub tenant: &'a TenantId,
    /// `manifest` or `store`.
    pub what: &'a str,
    pub error: &'a str,
}

impl WritesStopped<'_> {
    pub fn emit(&self, platform: &LogSink) {
        tracing::error!(tenant = %self.tenant, what = self.what, error = %self.error, "Writes failing: the tenant takes no files until they succeed again.");
        metrics::gauge!("mysimbdp_writes_failing", "tenant" => self.tenant.to_string(), "what" => self.what.to_string()).set(1.0);
        platform.write(&serde_json::json!({
            "type": "event", "level": "error", "message": "writes failing: claiming stopped", "tenant": self.tenant, "what": self.what,
            "error": self.error,
        }));
    }
}

/// The host can write again where it could not: the tenant takes files again.
pub struct WritesResumed<'a> {
    pub tenant: &'a TenantId,
    pub what: &'a str,
    /// Outcomes that waited and were recorded now.
    pub recorded: usize,
    /// Files that failed for the store, staged again.
    pub restaged: usize,
}

impl WritesResumed<'_> {
    pub fn emit(&self, platform: &LogSink) {
        tracing::info!(tenant = %self.tenant, what = self.what, recorded = self.recorded, restaged = self.restaged, "Writes succeed again: the tenant takes files again.");
        metrics::gauge!("mysimbdp_writes_failing", "tenant" => self.tenant.to_string(), "what" => self.what.to_string()).set(0.0);
        platform.write(&serde_json::json!({
            "type": "event", "level": "info", "message": "writes succeed again: claiming resumed", "tenant": self.tenant, "what": self.what,
            "recorded": self.recorded, "restaged": self.restaged,
        }));
    }
}

/// A file the host found mid-way at start (after a stop or a crash), and
/// what it did with it: `resumed` (ingested again from its claim),
/// `forgotten` (never left staging), `finished` (its outcome was recorded,
/// the move was not). In the tenant's batch log.
pub struct IngestionRecovered<'a> {
    pub tenant: &'a TenantId,
    pub file: &'a str,
    pub how: &'a str,
}

impl IngestionRecovered<'_> {
    pub fn emit(&self, batch_log: &LogSink) {
        tracing::info!(tenant = %self.tenant, file = self.file, how = self.how, "A file interrupted by a stop was recovered.");
        batch_log.write(&serde_json::json!({
            "type": "event", "level": "info", "message": "interrupted file recovered", "tenant": self.tenant, "file": self.file,
            "how": self.how,
        }));
    }
}
