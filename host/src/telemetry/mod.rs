//! Measurements taken by the host (never trusted from the guest): metrics for
//! Prometheus, per-tenant JSON-lines logs, and the statistics read back from
//! those logs.

pub(crate) mod events;
pub(crate) mod logs;
pub(crate) mod prometheus;
pub(crate) mod stats;

use crate::config::PipelineKind;
use crate::failure::{Failure, FailureKind};
use serde::{Deserialize, Serialize};

/// The result of one ingestion: one batch file or one stream batch. Written
/// to the tenant's log and to its `<tenant>-metrics` collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestionRecord {
    #[serde(rename = "type", default = "ingestion_type")]
    pub record_type: String,
    pub tenant: String,
    pub kind: PipelineKind,
    pub pipeline: String,
    pub version: u32,
    /// The file name, or `topic/partition@first-last` for a stream batch.
    pub source: String,
    pub records_in: u64,
    pub records_out: u64,
    pub records_rejected: u64,
    pub dead_lettered: u64,
    pub bytes: u64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: f64,
    pub fuel_consumed: u64,
    pub peak_memory_bytes: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn ingestion_type() -> String {
    "ingestion".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
}

impl IngestionRecord {
    pub fn failed(&self) -> Option<Failure> {
        self.failure.map(|kind| Failure::new(kind, self.reason.clone().unwrap_or_default()))
    }
}
