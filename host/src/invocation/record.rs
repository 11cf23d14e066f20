//! The ingestion record of an invocation, built here and nowhere else: what
//! the tenant's log, `mysimbdp stats`, the operator page and the tenant's
//! `metrics` collection say about it.

use crate::capabilities::Scope;
use crate::failure::Failure;
use crate::telemetry::{IngestionRecord, Outcome};
use std::time::Duration;

/// What the host measured of one invocation (a file, or one polled batch
/// with all the guest calls it took).
pub(super) struct Measured {
    /// The file name, or `topic/partition@first-last` for a stream batch.
    pub source: String,
    pub records_in: u64,
    pub records_out: u64,
    pub records_rejected: u64,
    pub dead_lettered: u64,
    pub bytes: u64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration: Duration,
    pub fuel_consumed: u64,
    pub peak_memory_bytes: u64,
}

pub(super) fn record(scope: &Scope, measured: Measured, failure: Option<&Failure>) -> IngestionRecord {
    IngestionRecord {
        record_type: "ingestion".into(),
        tenant: scope.tenant.id.to_string(),
        kind: scope.kind,
        pipeline: scope.pipeline.to_string(),
        version: scope.version,
        source: measured.source,
        records_in: measured.records_in,
        records_out: measured.records_out,
        records_rejected: measured.records_rejected,
        dead_lettered: measured.dead_lettered,
        bytes: measured.bytes,
        started_at: measured.started_at,
        duration_ms: measured.duration.as_secs_f64() * 1000.0,
        fuel_consumed: measured.fuel_consumed,
        peak_memory_bytes: measured.peak_memory_bytes,
        outcome: if failure.is_none() { Outcome::Ok } else { Outcome::Failed },
        failure: failure.map(|f| f.kind),
        reason: failure.map(|f| f.message.clone()),
    }
}
