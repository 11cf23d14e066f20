//! The Prometheus recorder, and the metrics of an ingestion record (the
//! [`super::events::Ingested`] event's). Every other metric is recorded by
//! its event in [`super::events`]. Labels stay low in cardinality: tenant,
//! pipeline, kind (batch/stream), failure kind; never a file name or a record key.

use super::{IngestionRecord, Outcome};

/// Records an ingestion result.
pub fn record_ingestion(record: &IngestionRecord) {
    let labels = [("tenant", record.tenant.clone()), ("pipeline", record.pipeline.clone()), ("kind", record.kind.as_str().to_string())];
    let unit = match record.kind {
        crate::config::PipelineKind::Batch => "files",
        crate::config::PipelineKind::Stream => "batches",
    };
    match record.outcome {
        Outcome::Ok => metrics::counter!(format!("mysimbdp_{unit}_ingested_total"), &labels).increment(1),
        Outcome::Failed => {
            metrics::counter!(format!("mysimbdp_{unit}_failed_total"), &labels).increment(1);
            let mut with_failure = labels.to_vec();
            with_failure.push(("failure", record.failure.map_or("unknown", |f| f.as_str()).to_string()));
            metrics::counter!("mysimbdp_failures_total", &with_failure).increment(1);
        }
    }
    metrics::counter!("mysimbdp_records_in_total", &labels).increment(record.records_in);
    metrics::counter!("mysimbdp_records_out_total", &labels).increment(record.records_out);
    metrics::counter!("mysimbdp_records_rejected_total", &labels).increment(record.records_rejected);
    metrics::counter!("mysimbdp_dead_lettered_total", &labels).increment(record.dead_lettered);
    metrics::counter!("mysimbdp_bytes_ingested_total", &labels).increment(record.bytes);
    metrics::counter!("mysimbdp_fuel_consumed_total", &labels).increment(record.fuel_consumed);
    metrics::histogram!("mysimbdp_ingestion_duration_seconds", &labels).record(record.duration_ms / 1000.0);
    metrics::gauge!("mysimbdp_guest_memory_peak_bytes", &labels).set(record.peak_memory_bytes as f64);
}

/// Installs the process-wide Prometheus recorder and keeps it tidy.
pub fn install_recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        )?
        .install_recorder()?;
    for backend in ["embedded", "elasticsearch"] {
        super::events::SearchRunning::register(backend);
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
