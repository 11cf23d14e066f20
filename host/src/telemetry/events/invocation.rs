//! Events of one invocation of a guest: who it runs for, the calls the host
//! refused, what the guest logged and counted, and the ingestion's record.

use crate::config::{PipelineKind, TenantId};
use crate::telemetry::IngestionRecord;
use crate::telemetry::logs::LogSink;
use std::collections::BTreeMap;

/// Who an invocation runs for, as its events name it.
#[derive(Clone, Copy)]
pub struct Invocation<'a> {
    pub tenant: &'a TenantId,
    pub kind: PipelineKind,
    pub pipeline: &'a str,
    pub version: u32,
}

/// A call refused because it would exceed one of the tenant's quotas.
pub struct QuotaExceeded<'a> {
    pub by: Invocation<'a>,
    /// The field under `quotas` in the profile.
    pub quota: &'a str,
    pub message: &'a str,
}

impl QuotaExceeded<'_> {
    pub fn emit(&self, log: &LogSink) {
        let by = &self.by;
        log.write(&serde_json::json!({
            "type": "event", "level": "warn", "tenant": by.tenant, "pipeline": by.pipeline, "version": by.version,
            "message": format!("quota exceeded: {}", self.message), "quota": self.quota,
        }));
        self.count();
    }

    /// The metric alone, when the line is not written.
    pub fn count(&self) {
        let by = &self.by;
        metrics::counter!("mysimbdp_quota_exceeded_total", "tenant" => by.tenant.to_string(), "quota" => self.quota.to_string())
            .increment(1);
    }
}

/// A host call refused because it left the tenant's namespace.
pub struct CallDenied<'a> {
    pub by: Invocation<'a>,
    pub message: &'a str,
}

impl CallDenied<'_> {
    pub fn emit(&self, log: &LogSink) {
        let by = &self.by;
        log.write(&serde_json::json!({
            "type": "event", "level": "warn", "tenant": by.tenant, "pipeline": by.pipeline, "version": by.version, "message": self.message,
        }));
        self.count();
    }

    /// The metric alone, when the line is not written.
    pub fn count(&self) {
        let by = &self.by;
        metrics::counter!(
            "mysimbdp_denied_calls_total",
            "tenant" => by.tenant.to_string(), "pipeline" => by.pipeline.to_string(), "kind" => by.kind.as_str()
        )
        .increment(1);
    }
}

/// A line the guest logged or printed (`source`: `guest`, `stdout`,
/// `stderr`, or `host` for what the host says about the guest's output).
pub struct GuestLine<'a> {
    pub by: Invocation<'a>,
    pub level: &'a str,
    pub source: &'a str,
    pub message: &'a str,
}

impl GuestLine<'_> {
    pub fn emit(&self, log: &LogSink) {
        let by = &self.by;
        log.write(&serde_json::json!({
            "type": "guest-log", "level": self.level, "source": self.source, "tenant": by.tenant, "pipeline": by.pipeline,
            "version": by.version, "message": self.message,
        }));
    }
}

/// An ingestion (a file, or a stream batch) ended: its record in the
/// tenant's log, and its metrics.
pub struct Ingested<'a>(pub &'a IngestionRecord);

impl Ingested<'_> {
    pub fn emit(&self, log: &LogSink) {
        log.write(self.0);
        crate::telemetry::prometheus::record_ingestion(self.0);
    }
}

/// The counters a pipeline added to in one invocation.
pub struct GuestCounters<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub counters: &'a BTreeMap<String, u64>,
}

impl GuestCounters<'_> {
    /// `counters` are the totals since the host started (saturated at
    /// `u64::MAX`), set as they are.
    pub fn emit(&self) {
        for (name, total) in self.counters {
            metrics::counter!(
                format!("mysimbdp_guest_{name}_total"), "tenant" => self.tenant.to_string(), "pipeline" => self.pipeline.to_string()
            )
            .absolute(*total);
        }
    }
}
