//! The stream monitor and the manager's side of its alerts.
//!
//! Every `monitor_interval_ms` the monitor measures each running stream
//! (average batch time, consumer lag, error rate, idleness) against its
//! profile's thresholds. A crossed threshold is an [`Alert`]: logged,
//! counted, and published on the platform alerts topic. The stream manager
//! consumes that topic and acts: one more instance (up to the maximum) when
//! behind, one fewer (down to the minimum) when idle. Every decision is
//! logged with its reason.

use super::{StreamManager, instance::Instance, scaling};
use crate::backends::OutRecord;
use crate::config::PipelineKind;
use crate::telemetry::events;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Platform topics start with `_`, which tenant ids cannot.
pub const ALERTS_TOPIC: &str = "_mysimbdp.alerts";

pub use crate::telemetry::events::{Alert, AlertKind, Measurement};

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

/// Compares each running stream with its thresholds ([`scaling::crossed`]).
pub async fn check(manager: &StreamManager) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (tenant, spec, stats, instances, running_for) in manager.running().await {
        let window = stats.take();
        let group = Instance::group(&tenant, &spec);
        let lag = manager.services().messaging.lag(&group, &Instance::topics(&tenant, &spec)).await.ok();
        let measured = scaling::measure(&window, lag, running_for, Instant::now());
        let log = manager.invoker.logs().tenant(&tenant, PipelineKind::Stream);
        events::Measured { tenant: &tenant.id, pipeline: spec.name.as_str(), instances, measured: &measured }.emit(&log);
        for crossed in scaling::crossed(&spec.thresholds, &measured) {
            alerts.push(Alert {
                alert: crossed.kind,
                tenant: tenant.id.to_string(),
                pipeline: spec.name.to_string(),
                value: crossed.value,
                threshold: crossed.threshold,
                instances,
                at: chrono::Utc::now(),
                message: crossed.message,
            });
        }
    }
    alerts
}

/// Logs, counts and publishes an alert.
async fn raise(manager: &StreamManager, alert: &Alert) {
    let logs = manager.invoker.logs();
    let tenant_log = manager.registry.current().get(&alert.tenant).map(|tenant| logs.tenant(tenant, PipelineKind::Stream));
    events::AlertRaised(alert).emit(&logs.platform(), tenant_log.as_ref());
    let record = OutRecord {
        key: Some(alert.tenant.clone().into_bytes()),
        value: serde_json::to_vec(alert).expect("serializable"),
        headers: Vec::new(),
    };
    if let Err(error) = manager.services().messaging.publish(ALERTS_TOPIC, &[record]).await {
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

/// One decision on one alert ([`scaling::decide`]), carried out and logged
/// with its reason.
async fn act(manager: &StreamManager, alert: &Alert, last_change: &mut HashMap<String, Instant>, cooldown: Duration) {
    let Ok(tenant) = manager.registry.tenant(&alert.tenant) else { return };
    let Some(spec) = tenant.profile.stream.clone() else { return };
    let running = manager.running().await.into_iter().find(|(t, ..)| t.id == tenant.id).map(|(_, _, _, instances, _)| instances);
    let Some(instances) = running else { return };
    let settling = scaling::settling(last_change.get(tenant.id.as_str()).copied(), Instant::now(), cooldown);
    let mut decision = scaling::decide(alert.alert, &alert.message, instances, spec.min_instances, spec.max_instances, settling);
    if decision.direction.is_some() {
        let reason = format!("{} ({})", alert.alert.as_str(), alert.message);
        match manager.scale(&tenant.id, decision.to, &reason).await {
            Ok(()) => {
                last_change.insert(tenant.id.to_string(), Instant::now());
            }
            Err(error) => {
                decision = scaling::Decision { to: instances, direction: None, reason: format!("scaling failed: {error:#}") };
            }
        }
    }
    events::ScalingDecided {
        tenant: &tenant.id,
        pipeline: &alert.pipeline,
        alert: alert.alert,
        from: instances,
        to: decision.to,
        direction: decision.direction,
        reason: &decision.reason,
    }
    .emit(&manager.invoker.logs().tenant(&tenant, PipelineKind::Stream));
}
