//! Events of the stream monitor: what it measured, the alerts it raised and
//! what the stream manager decided on them.

use crate::config::TenantId;
use crate::telemetry::logs::LogSink;
use serde::{Deserialize, Serialize};

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
