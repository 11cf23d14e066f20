//! The stream monitor and the manager's side of its alerts.
//!
//! Every `monitor_interval_ms` the monitor measures each running stream
//! (average batch time, consumer lag, error rate, idleness) against its
//! profile's thresholds. A crossed threshold is an [`Alert`]: logged,
//! counted, and published on the platform alerts topic. The stream manager
//! consumes that topic and acts: one more instance (up to the maximum) when
//! behind, one fewer (down to the minimum) when idle. Every decision is
//! logged with its reason.

use super::{StreamManager, instance::Instance};
use crate::backends::OutRecord;
use crate::config::PipelineKind;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Platform topics start with `_`, which tenant ids cannot.
pub const ALERTS_TOPIC: &str = "_mysimbdp.alerts";

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

/// One measurement of a running stream.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub avg_ingestion_ms: Option<f64>,
    pub lag: Option<u64>,
    pub error_rate: Option<f64>,
    pub idle_for_ms: Option<u64>,
}

/// Measures, compares and alerts, every interval, until dropped.
pub fn spawn_monitor(manager: Arc<StreamManager>) -> tokio::task::JoinHandle<()> {
    let interval = Duration::from_millis(manager.config.monitor_interval_ms);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            for alert in check(&manager).await {
                raise(&manager, &alert).await;
            }
        }
    })
}

/// Compares each running stream with its thresholds.
pub async fn check(manager: &StreamManager) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (tenant, spec, stats, instances, running_for) in manager.running().await {
        let window = stats.take();
        let group = Instance::group(&tenant, &spec);
        let lag = manager.services().messaging.lag(&group, &Instance::topics(&tenant, &spec)).await.ok();
        let avg_ingestion_ms = (window.batches > 0).then(|| window.busy.as_secs_f64() * 1000.0 / window.batches as f64);
        let error_rate = (window.messages > 0).then(|| window.failed as f64 / window.messages as f64);
        let idle_for = window.last_message.map_or(running_for, |t| t.elapsed());
        let measured = Measurement { avg_ingestion_ms, lag, error_rate, idle_for_ms: Some(idle_for.as_millis() as u64) };

        let labels = [("tenant", tenant.id.to_string()), ("pipeline", spec.name.to_string())];
        if let Some(lag) = lag {
            metrics::gauge!("mysimbdp_stream_consumer_lag", &labels).set(lag as f64);
        }
        if let Some(avg) = avg_ingestion_ms {
            metrics::gauge!("mysimbdp_stream_avg_ingestion_seconds", &labels).set(avg / 1000.0);
        }
        if let Some(rate) = error_rate {
            metrics::gauge!("mysimbdp_stream_error_rate", &labels).set(rate);
        }
        manager.invoker.logs().tenant(&tenant, PipelineKind::Stream).write(&serde_json::json!({
            "type": "measurement", "tenant": tenant.id, "pipeline": spec.name, "instances": instances, "measured": measured,
        }));

        let thresholds = &spec.thresholds;
        let mut alert = |kind: AlertKind, value: f64, threshold: f64, message: String| {
            alerts.push(Alert {
                alert: kind,
                tenant: tenant.id.to_string(),
                pipeline: spec.name.to_string(),
                value,
                threshold,
                instances,
                at: chrono::Utc::now(),
                message,
            });
        };
        if let (Some(avg), Some(max)) = (avg_ingestion_ms, thresholds.max_avg_ingestion_ms)
            && avg > max as f64
        {
            alert(AlertKind::SlowIngestion, avg, max as f64, format!("batches take {avg:.0} ms on average; the profile allows {max} ms"));
        }
        if let (Some(lag), Some(max)) = (lag, thresholds.max_consumer_lag)
            && lag > max
        {
            alert(AlertKind::ConsumerLag, lag as f64, max as f64, format!("the group lags {lag} messages; the profile allows {max}"));
        }
        if let (Some(rate), Some(max)) = (error_rate, thresholds.max_error_rate)
            && rate > max
        {
            alert(
                AlertKind::ErrorRate,
                rate,
                max,
                format!("{:.0}% of messages failed; the profile allows {:.0}%", rate * 100.0, max * 100.0),
            );
        }
        if let Some(idle_after) = thresholds.idle_after_ms
            && idle_for.as_millis() as u64 >= idle_after
            && lag.unwrap_or(0) == 0
        {
            alert(
                AlertKind::Idle,
                idle_for.as_millis() as f64,
                idle_after as f64,
                format!("no message for {} ms and nothing waiting", idle_for.as_millis()),
            );
        }
    }
    alerts
}

/// Logs, counts and publishes an alert.
async fn raise(manager: &StreamManager, alert: &Alert) {
    tracing::warn!(tenant = %alert.tenant, pipeline = %alert.pipeline, alert = alert.alert.as_str(), "Stream alert: {}.", alert.message);
    manager.invoker.logs().platform().write(&serde_json::json!({ "type": "alert", "alert": alert }));
    if let Some(tenant) = manager.registry.current().get(&alert.tenant) {
        manager.invoker.logs().tenant(tenant, PipelineKind::Stream).write(&serde_json::json!({ "type": "alert", "alert": alert }));
    }
    metrics::counter!(
        "mysimbdp_stream_alerts_total",
        "tenant" => alert.tenant.clone(),
        "pipeline" => alert.pipeline.clone(),
        "alert" => alert.alert.as_str()
    )
    .increment(1);
    let record = OutRecord {
        key: Some(alert.tenant.clone().into_bytes()),
        value: serde_json::to_vec(alert).expect("serializable"),
        headers: Vec::new(),
    };
    if let Err(error) = manager.services().messaging.publish(ALERTS_TOPIC, vec![record]).await {
        tracing::error!(%error, "Cannot publish an alert on {ALERTS_TOPIC}.");
    }
}

/// The manager's side: consumes the alerts topic and scales.
pub fn spawn_alert_listener(manager: Arc<StreamManager>) -> tokio::task::JoinHandle<()> {
    let started = chrono::Utc::now();
    let cooldown = Duration::from_millis(manager.config.monitor_interval_ms * 2);
    tokio::spawn(async move {
        let group = format!("_mysimbdp.stream-manager.{}", std::process::id());
        let topics = [ALERTS_TOPIC.to_string()];
        if let Err(error) = manager.services().ensure_topic(ALERTS_TOPIC, 1).await {
            tracing::error!(%error, "Cannot create the alerts topic; the stream manager will not scale.");
            return;
        }
        let mut consumer = loop {
            match manager.services().messaging.consumer(&group, &topics).await {
                Ok(consumer) => break consumer,
                Err(error) => {
                    tracing::warn!(%error, "Cannot consume the alerts topic yet.");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let mut last_change: HashMap<String, Instant> = HashMap::new();
        loop {
            let records = match consumer.poll(100, Duration::from_millis(500)).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(%error, "Polling the alerts topic failed.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for record in &records {
                let Ok(alert) = serde_json::from_slice::<Alert>(&record.value) else { continue };
                // Alerts from before this host started are history, not orders.
                if alert.at < started {
                    continue;
                }
                act(&manager, &alert, &mut last_change, cooldown).await;
            }
            if !records.is_empty() {
                let processed: Vec<_> = records.iter().map(|r| (r.topic.clone(), r.partition, r.offset)).collect();
                let _ = consumer.commit(&processed).await;
            }
        }
    })
}

/// One decision on one alert, logged with its reason.
async fn act(manager: &StreamManager, alert: &Alert, last_change: &mut HashMap<String, Instant>, cooldown: Duration) {
    let Ok(tenant) = manager.registry.tenant(&alert.tenant) else { return };
    let Some(spec) = tenant.profile.stream.clone() else { return };
    let running = manager.running().await.into_iter().find(|(t, ..)| t.id == tenant.id).map(|(_, _, _, instances, _)| instances);
    let Some(instances) = running else { return };
    let (target, direction) = match alert.alert {
        AlertKind::SlowIngestion | AlertKind::ConsumerLag => (instances + 1, "up"),
        AlertKind::Idle => (instances.saturating_sub(1), "down"),
        AlertKind::ErrorRate => {
            return decide(manager, &tenant, alert, instances, instances, "not scaling: more instances do not fix failing messages");
        }
    };
    let bounded = target.clamp(spec.min_instances.max(1), spec.max_instances);
    if bounded == instances {
        let limit = if direction == "up" { "maximum" } else { "minimum" };
        return decide(
            manager,
            &tenant,
            alert,
            instances,
            instances,
            &format!("not scaling: already at the profile's {limit} of {instances}"),
        );
    }
    if last_change.get(tenant.id.as_str()).is_some_and(|t| t.elapsed() < cooldown) {
        return decide(manager, &tenant, alert, instances, instances, "not scaling yet: the last change is still settling");
    }
    let reason = format!("{} ({})", alert.alert.as_str(), alert.message);
    match manager.scale(&tenant.id, bounded, &reason).await {
        Ok(()) => {
            last_change.insert(tenant.id.to_string(), Instant::now());
            metrics::counter!(
                "mysimbdp_stream_scaling_decisions_total",
                "tenant" => tenant.id.to_string(),
                "pipeline" => spec.name.to_string(),
                "direction" => direction
            )
            .increment(1);
            decide(manager, &tenant, alert, instances, bounded, &format!("scaled {direction}: {}", alert.message));
        }
        Err(error) => decide(manager, &tenant, alert, instances, instances, &format!("scaling failed: {error:#}")),
    }
}

fn decide(manager: &StreamManager, tenant: &crate::config::Tenant, alert: &Alert, from: u32, to: u32, reason: &str) {
    tracing::info!(tenant = %tenant.id, alert = alert.alert.as_str(), from, to, "Stream manager decision: {reason}.");
    manager.invoker.logs().tenant(tenant, PipelineKind::Stream).write(&serde_json::json!({
        "type": "decision", "tenant": tenant.id, "pipeline": alert.pipeline, "alert": alert.alert, "from": from, "to": to, "reason": reason,
    }));
}
