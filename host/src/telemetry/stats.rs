//! Statistics from the ingestion records in the tenants' logs
//! (`mysimbdp stats`): per tenant and for the whole platform.

use super::{IngestionRecord, Outcome};
use crate::config::PipelineKind;
use crate::config::Registry;
use crate::telemetry::logs::tenant_log_path;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

/// Totals over a set of ingestions of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Files (batch) or message batches (stream) that succeeded.
    pub ingested: u64,
    pub failed: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub records_rejected: u64,
    pub dead_lettered: u64,
    pub bytes: u64,
    pub avg_ms: f64,
    pub p95_ms: f64,
    /// Bytes per second of ingestion time.
    pub bytes_per_second: f64,
    /// Input records per second of ingestion time.
    pub records_per_second: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantStats {
    pub tenant: String,
    pub batch: Totals,
    pub stream: Totals,
    /// Failed ingestions by failure kind.
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub since: Option<DateTime<Utc>>,
    pub tenants: Vec<TenantStats>,
    pub platform: TenantStats,
}

fn totals<'r>(records: impl Iterator<Item = &'r IngestionRecord>) -> Totals {
    let mut totals = Totals::default();
    let mut durations = Vec::new();
    for record in records {
        match record.outcome {
            Outcome::Ok => totals.ingested += 1,
            Outcome::Failed => totals.failed += 1,
        }
        totals.records_in += record.records_in;
        totals.records_out += record.records_out;
        totals.records_rejected += record.records_rejected;
        totals.dead_lettered += record.dead_lettered;
        totals.bytes += record.bytes;
        durations.push(record.duration_ms);
    }
    if !durations.is_empty() {
        let busy_ms: f64 = durations.iter().sum();
        totals.avg_ms = busy_ms / durations.len() as f64;
        durations.sort_by(f64::total_cmp);
        // Nearest rank.
        let rank = ((0.95 * durations.len() as f64).ceil() as usize).clamp(1, durations.len());
        totals.p95_ms = durations[rank - 1];
        if busy_ms > 0.0 {
            totals.bytes_per_second = totals.bytes as f64 / (busy_ms / 1000.0);
            totals.records_per_second = totals.records_in as f64 / (busy_ms / 1000.0);
        }
    }
    totals
}

fn tenant_stats(tenant: &str, records: &[&IngestionRecord]) -> TenantStats {
    let mut failures = BTreeMap::new();
    for record in records {
        if let Some(kind) = record.failure {
            *failures.entry(kind.to_string()).or_default() += 1;
        }
    }
    TenantStats {
        tenant: tenant.to_string(),
        batch: totals(records.iter().copied().filter(|r| r.kind == PipelineKind::Batch)),
        stream: totals(records.iter().copied().filter(|r| r.kind == PipelineKind::Stream)),
        failures,
    }
}

/// Statistics per tenant and for the platform over `records`.
pub fn compute(records: &[IngestionRecord], since: Option<DateTime<Utc>>) -> Stats {
    let mut by_tenant: BTreeMap<&str, Vec<&IngestionRecord>> = BTreeMap::new();
    for record in records.iter().filter(|r| since.is_none_or(|s| r.started_at >= s)) {
        by_tenant.entry(&record.tenant).or_default().push(record);
    }
    let all: Vec<&IngestionRecord> = by_tenant.values().flatten().copied().collect();
    Stats {
        since,
        tenants: by_tenant.iter().map(|(tenant, records)| tenant_stats(tenant, records)).collect(),
        platform: tenant_stats("(platform)", &all),
    }
}

/// The ingestion records in the logs of the tenants (or one of them).
pub fn read_records(registry: &Registry, tenant: Option<&str>) -> anyhow::Result<Vec<IngestionRecord>> {
    let tenants = match tenant {
        Some(id) => vec![registry.require(id)?.clone()],
        None => registry.tenants().cloned().collect(),
    };
    let mut records = Vec::new();
    for tenant in tenants {
        for kind in [PipelineKind::Batch, PipelineKind::Stream] {
            let path = tenant_log_path(&tenant.paths.logs, kind);
            let Ok(file) = std::fs::File::open(&path) else { continue };
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                if !line.contains("\"type\":\"ingestion\"") {
                    continue;
                }
                if let Ok(record) = serde_json::from_str::<IngestionRecord>(&line) {
                    records.push(record);
                }
            }
        }
    }
    Ok(records)
}

/// `--since`: a duration back from now (`90m`, `2h`, `7d`) or an RFC 3339 time.
pub fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let duration = humantime::parse_duration(text).map_err(|e| {
        anyhow::anyhow!("--since `{text}` is neither a duration like 90m, 2h, 7d nor a time like 2026-11-21T10:00:00Z ({e})")
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(duration)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    fn record(tenant: &str, kind: PipelineKind, ms: f64, failure: Option<FailureKind>) -> IngestionRecord {
        IngestionRecord {
            record_type: "ingestion".into(),
            tenant: tenant.into(),
            kind,
            pipeline: "p".into(),
            version: 1,
            source: "s".into(),
            records_in: 10,
            records_out: 9,
            records_rejected: 1,
            dead_lettered: 1,
            bytes: 1000,
            started_at: Utc::now(),
            duration_ms: ms,
            fuel_consumed: 0,
            peak_memory_bytes: 0,
            outcome: if failure.is_some() { Outcome::Failed } else { Outcome::Ok },
            failure,
            reason: None,
        }
    }

    #[test]
    fn totals_and_percentiles() {
        let mut records: Vec<IngestionRecord> = (1..=20).map(|i| record("a", PipelineKind::Batch, f64::from(i) * 10.0, None)).collect();
        records.push(record("a", PipelineKind::Batch, 1000.0, Some(FailureKind::OutOfFuel)));
        records.push(record("b", PipelineKind::Stream, 5.0, None));
        let stats = compute(&records, None);
        let a = &stats.tenants[0];
        assert_eq!((a.batch.ingested, a.batch.failed, a.batch.records_in), (20, 1, 210));
        assert_eq!(a.batch.p95_ms, 200.0);
        assert_eq!(a.failures["out-of-fuel"], 1);
        assert_eq!(stats.tenants[1].stream.ingested, 1);
        assert_eq!(stats.platform.batch.bytes, 21_000);
        assert_eq!(stats.platform.stream.records_in, 10);
    }
}
