//! What the host tells about itself, one type per event (in the spirit of
//! Vector's internal events): each writes its line in the log it belongs to,
//! its host log line, and its metrics, here and nowhere else. Metric labels
//! stay low in cardinality: tenant, pipeline, kind, failure kind, rule,
//! alert, direction; never a file name or a record key.

use super::IngestionRecord;
use super::logs::LogSink;
use crate::config::{PipelineKind, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
        super::prometheus::record_ingestion(self.0);
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

/// A guest call on a stream batch trapped (the batch is then halved).
pub struct StreamTrapped<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub failure: &'a str,
}

impl StreamTrapped<'_> {
    pub fn emit(&self) {
        metrics::counter!(
            "mysimbdp_failures_total",
            "tenant" => self.tenant.to_string(), "pipeline" => self.pipeline.to_string(), "kind" => "stream", "failure" => self.failure.to_string()
        )
        .increment(1);
    }
}

/// A stream batch was handled and its offsets may be committed.
pub struct StreamBatchDone<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub messages: u64,
}

impl StreamBatchDone<'_> {
    pub fn emit(&self) {
        metrics::counter!(
            "mysimbdp_stream_messages_processed_total", "tenant" => self.tenant.to_string(), "pipeline" => self.pipeline.to_string()
        )
        .increment(self.messages);
    }
}

/// A stream instance met a problem it retries (a poll, a commit, a batch).
pub struct StreamProblem<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub instance: u32,
    /// `warn` or `error`.
    pub level: &'a str,
    pub message: &'a str,
}

impl StreamProblem<'_> {
    pub fn emit(&self, log: &LogSink) {
        match self.level {
            "error" => tracing::error!(tenant = %self.tenant, instance = self.instance, "{}", self.message),
            _ => tracing::warn!(tenant = %self.tenant, instance = self.instance, "{}", self.message),
        }
        log.write(&serde_json::json!({
            "type": "event", "level": self.level, "tenant": self.tenant, "pipeline": self.pipeline, "instance": self.instance,
            "message": self.message,
        }));
    }
}

/// A stream instance stalled on a batch its pipeline keeps calling
/// unavailable, or went on after it (`mysimbdp_stream_stalled`, 1 or 0; the
/// alert `MysimbdpStreamStalled` fires on it).
pub struct StreamStalled<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub stalled: bool,
}

impl StreamStalled<'_> {
    pub fn emit(&self) {
        metrics::gauge!("mysimbdp_stream_stalled", "tenant" => self.tenant.to_string(), "pipeline" => self.pipeline.to_string())
            .set(if self.stalled { 1.0 } else { 0.0 });
    }
}

/// Collections the embedded store holds open (`mysimbdp_embedded_collections_open`);
/// idle ones are closed.
pub struct EmbeddedCollectionsOpen {
    pub open: usize,
}

impl EmbeddedCollectionsOpen {
    pub fn emit(&self) {
        metrics::gauge!("mysimbdp_embedded_collections_open").set(self.open as f64);
    }
}

/// Whether the operator suspended a tenant (`mysimbdp_tenant_suspended`, 1 or 0).
pub struct TenantSuspended<'a> {
    pub tenant: &'a TenantId,
    pub suspended: bool,
}

impl TenantSuspended<'_> {
    pub fn emit(&self) {
        metrics::gauge!("mysimbdp_tenant_suspended", "tenant" => self.tenant.to_string()).set(if self.suspended { 1.0 } else { 0.0 });
    }
}

/// A tenant's stream runs a new number of instances.
pub struct StreamScaled<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub from: u32,
    pub to: u32,
    pub reason: &'a str,
}

impl StreamScaled<'_> {
    pub fn emit(&self, log: &LogSink) {
        tracing::info!(tenant = %self.tenant, from = self.from, to = self.to, reason = %self.reason, "Stream instances changed.");
        log.write(&serde_json::json!({
            "type": "scaling", "tenant": self.tenant, "pipeline": self.pipeline, "from": self.from, "to": self.to, "reason": self.reason,
        }));
    }
}

/// How many instances a tenant's stream runs, and its bounds.
pub struct StreamInstances<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub running: usize,
    pub min: u32,
    pub max: u32,
}

impl StreamInstances<'_> {
    pub fn emit(&self) {
        let labels = [("tenant", self.tenant.to_string()), ("pipeline", self.pipeline.to_string())];
        metrics::gauge!("mysimbdp_stream_instances", &labels).set(self.running as f64);
        metrics::gauge!("mysimbdp_stream_min_instances", &labels).set(f64::from(self.min));
        metrics::gauge!("mysimbdp_stream_max_instances", &labels).set(f64::from(self.max));
    }
}

/// What the monitor measured of one running stream over one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Average time of a batch; none without batches.
    pub avg_ingestion_ms: Option<f64>,
    /// Messages not yet committed by the group; none if the broker did not say.
    pub lag: Option<u64>,
    /// Rejected or dead-lettered messages over all messages; none without messages.
    pub error_rate: Option<f64>,
    /// Since the last message (or since the stream started).
    pub idle_for_ms: Option<u64>,
}

/// The monitor measured a stream.
pub struct Measured<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub instances: u32,
    pub measured: &'a Measurement,
}

impl Measured<'_> {
    pub fn emit(&self, log: &LogSink) {
        let labels = [("tenant", self.tenant.to_string()), ("pipeline", self.pipeline.to_string())];
        let measured = self.measured;
        if let Some(lag) = measured.lag {
            metrics::gauge!("mysimbdp_stream_consumer_lag", &labels).set(lag as f64);
        }
        if let Some(avg) = measured.avg_ingestion_ms {
            metrics::gauge!("mysimbdp_stream_avg_ingestion_seconds", &labels).set(avg / 1000.0);
        }
        if let Some(rate) = measured.error_rate {
            metrics::gauge!("mysimbdp_stream_error_rate", &labels).set(rate);
        }
        log.write(&serde_json::json!({
            "type": "measurement", "tenant": self.tenant, "pipeline": self.pipeline, "instances": self.instances, "measured": measured,
        }));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// Batches take longer than `max_avg_ingestion_ms` on average.
    SlowIngestion,
    /// The group lags more than `max_consumer_lag` messages.
    ConsumerLag,
    /// More than `max_error_rate` of the messages failed.
    ErrorRate,
    /// No message for `idle_after_ms` and nothing waiting.
    Idle,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SlowIngestion => "slow-ingestion",
            AlertKind::ConsumerLag => "consumer-lag",
            AlertKind::ErrorRate => "error-rate",
            AlertKind::Idle => "idle",
        }
    }
}

/// A stream threshold crossed, as the monitor publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert: AlertKind,
    pub tenant: String,
    pub pipeline: String,
    /// The measured value and the profile's threshold, in the threshold's unit.
    pub value: f64,
    pub threshold: f64,
    pub instances: u32,
    pub at: chrono::DateTime<chrono::Utc>,
    pub message: String,
}

/// An alert raised: in the platform log, the tenant's stream log (when the
/// tenant is known) and the alerts counter.
pub struct AlertRaised<'a>(pub &'a Alert);

impl AlertRaised<'_> {
    pub fn emit(&self, platform: &LogSink, tenant: Option<&LogSink>) {
        let alert = self.0;
        tracing::warn!(tenant = %alert.tenant, pipeline = %alert.pipeline, alert = alert.alert.as_str(), "Stream alert: {}.", alert.message);
        let line = serde_json::json!({ "type": "alert", "alert": alert });
        platform.write(&line);
        if let Some(tenant) = tenant {
            tenant.write(&line);
        }
        metrics::counter!(
            "mysimbdp_stream_alerts_total",
            "tenant" => alert.tenant.clone(), "pipeline" => alert.pipeline.clone(), "alert" => alert.alert.as_str()
        )
        .increment(1);
    }
}

/// What the stream manager decided on an alert, with the reason.
pub struct ScalingDecided<'a> {
    pub tenant: &'a TenantId,
    pub pipeline: &'a str,
    pub alert: AlertKind,
    pub from: u32,
    pub to: u32,
    /// `up` or `down` when it scaled.
    pub direction: Option<&'a str>,
    pub reason: &'a str,
}

impl ScalingDecided<'_> {
    pub fn emit(&self, log: &LogSink) {
        tracing::info!(tenant = %self.tenant, alert = self.alert.as_str(), from = self.from, to = self.to, "Stream manager decision: {}.", self.reason);
        if let Some(direction) = self.direction {
            metrics::counter!(
                "mysimbdp_stream_scaling_decisions_total",
                "tenant" => self.tenant.to_string(), "pipeline" => self.pipeline.to_string(), "direction" => direction.to_string()
            )
            .increment(1);
        }
        log.write(&serde_json::json!({
            "type": "decision", "tenant": self.tenant, "pipeline": self.pipeline, "alert": self.alert, "from": self.from, "to": self.to,
            "reason": self.reason,
        }));
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

/// A search being worked on (the search thread, the request in flight):
/// `mysimbdp_searches_running` counts it until the guard is dropped, so the
/// gauge falls back only once nothing works on the search any more.
pub struct SearchRunning(&'static str);

impl SearchRunning {
    pub fn start(backend: &'static str) -> SearchRunning {
        metrics::gauge!(SEARCHES_RUNNING, "backend" => backend).increment(1.0);
        SearchRunning(backend)
    }

    /// Present from the start, so a scrape can tell 0 from never measured.
    pub fn register(backend: &'static str) {
        metrics::gauge!(SEARCHES_RUNNING, "backend" => backend).set(0.0);
    }
}

impl Drop for SearchRunning {
    fn drop(&mut self) {
        metrics::gauge!(SEARCHES_RUNNING, "backend" => self.0).decrement(1.0);
    }
}

const SEARCHES_RUNNING: &str = "mysimbdp_searches_running";

/// An API request refused because its tenant had too many in flight.
pub struct RequestRefused<'a> {
    pub tenant: &'a str,
}

impl RequestRefused<'_> {
    pub fn emit(&self) {
        metrics::counter!("mysimbdp_api_requests_refused_total", "tenant" => self.tenant.to_string()).increment(1);
    }
}

/// Something the platform as a whole did (started, stopped, reloaded its
/// registry, refused a reload), in the platform log.
pub struct PlatformEvent<'a> {
    /// `info`, `warn` or `error`.
    pub level: &'a str,
    pub message: &'a str,
    /// More fields of the line.
    pub fields: serde_json::Value,
}

impl PlatformEvent<'_> {
    pub fn emit(&self, platform: &LogSink) {
        match self.level {
            "error" => tracing::error!(fields = %self.fields, "{}", self.message),
            "warn" => tracing::warn!(fields = %self.fields, "{}", self.message),
            _ => tracing::info!(fields = %self.fields, "{}", self.message),
        }
        let mut line = serde_json::json!({ "type": "event", "level": self.level, "message": self.message });
        if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), &self.fields) {
            line.extend(fields.clone());
        }
        platform.write(&line);
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
