//! Events of the stream instances: batches done or trapped, problems
//! retried, stalls, and the number of instances running.

use crate::config::TenantId;
use crate::telemetry::logs::LogSink;

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
