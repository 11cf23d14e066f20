//! A tenant's service profile (`tenants/<id>/profile.yaml`): what files it may
//! stage, how its ingestions are scheduled, and the sandbox its pipelines run in.
//!
//! The rules a profile must follow beyond its types are in [`validate`];
//! [`Profile::load`] applies them.

mod validate;

use super::{ByteSize, ConfigError, DEAD_LETTER_TOPIC, METRICS_COLLECTION, Name};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the tenant is, for operators.
    #[serde(default)]
    pub description: String,
    /// Which staged files are accepted at all.
    pub constraints: FileConstraints,
    /// How ingestions are scheduled and shared.
    pub agreement: ServiceAgreement,
    /// Limits of every pipeline invocation, unless a pipeline overrides them.
    pub sandbox: SandboxLimits,
    /// Batch pipelines, each bound to the staged files it matches (first match wins).
    #[serde(default)]
    pub batch: Vec<BatchPipelineSpec>,
    /// The stream pipeline and its scaling bounds.
    #[serde(default)]
    pub stream: Option<StreamSpec>,
    /// Index settings per collection (mappings for Elasticsearch/OpenSearch).
    #[serde(default)]
    pub collections: BTreeMap<Name, CollectionSpec>,
    /// Parameters every pipeline of the tenant sees (pipelines may override them).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// What the tenant's pipelines may create and write over all their
    /// invocations.
    #[serde(default)]
    pub quotas: Quotas,
}

/// A tenant's quotas across invocations: what its pipelines may create and
/// write in all, not per call. Exceeding one is `quota-exceeded` to the
/// guest, `mysimbdp_quota_exceeded_total{quota}` and a line in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// Collections the tenant may have (its `metrics` collection aside).
    pub collections: u32,
    /// Topics its pipelines may create since the host started (its stream's
    /// topics and the dead-letter topic aside).
    pub topics: u32,
    /// Distinct guest counter series (pipeline and name) exported for the
    /// tenant since the host started.
    pub counter_series: u32,
    /// Size of the guest log (`logs/<kind>-guest.log`) before it is rotated.
    pub guest_log_bytes: ByteSize,
    /// Rotated guest logs kept (`<kind>-guest.log.1` ...).
    pub guest_log_files: u32,
    /// Dead letters one invocation may send; beyond it the invocation fails
    /// as a sink error (retried, nothing dropped).
    pub dead_letters_per_invocation: u64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            collections: 32,
            topics: 16,
            counter_series: 256,
            guest_log_bytes: ByteSize(16 * ByteSize::MIB),
            guest_log_files: 3,
            dead_letters_per_invocation: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConstraints {
    /// File extensions accepted in staging, e.g. `[csv]`.
    pub allowed_types: Vec<String>,
    /// Largest single file.
    pub max_file_bytes: ByteSize,
    /// Most files taken from staging in one scheduling round.
    pub max_files_per_run: u32,
    /// Most bytes waiting in staging at once; files beyond it are quarantined.
    pub max_staging_bytes: ByteSize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAgreement {
    /// Ingestions of this tenant running at the same time.
    pub max_concurrent_ingestions: u32,
    /// `on-arrival`, or a cron expression (`sec min hour day month weekday`).
    #[serde(default)]
    pub schedule: Schedule,
    /// 1 (lowest) to 10: who goes first when the host is saturated.
    #[serde(default = "default_priority")]
    pub priority: u8,
}

fn default_priority() -> u8 {
    5
}

/// When staged files are ingested.
#[derive(Debug, Clone, Default)]
pub enum Schedule {
    /// As soon as a file is completely staged.
    #[default]
    OnArrival,
    /// At the times of a cron expression.
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "on-arrival" {
            return Ok(Schedule::OnArrival);
        }
        // Accept classic 5-field crontab lines by running them at second 0.
        let expression = if text.split_whitespace().count() == 5 { format!("0 {text}") } else { text.to_string() };
        cron::Schedule::from_str(&expression).map(|schedule| Schedule::Cron(Box::new(schedule))).map_err(|e| {
            // The parser's message draws a caret under the bad field on
            // extra lines; its last line says what is wrong.
            let reason = e.to_string().lines().last().unwrap_or_default().to_string();
            format!("`{text}` is neither `on-arrival` nor a cron expression (sec min hour day month weekday): {reason}")
        })
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Schedule::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Schedule::OnArrival => serializer.serialize_str("on-arrival"),
            Schedule::Cron(schedule) => serializer.serialize_str(schedule.source()),
        }
    }
}

/// The sandbox of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// Wasm instructions (roughly) one invocation may execute.
    pub fuel_per_invocation: u64,
    /// Linear memory one instance may grow to.
    pub memory_bytes: ByteSize,
    /// Wall-clock time one invocation may take, host calls included.
    pub deadline_ms: u64,
    /// Wasm call stack; deep recursion beyond it traps.
    #[serde(default = "default_stack")]
    pub max_wasm_stack_bytes: ByteSize,
}

fn default_stack() -> ByteSize {
    ByteSize(512 * ByteSize::KIB)
}

/// Per-pipeline changes to the tenant's sandbox limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxOverrides {
    pub fuel_per_invocation: Option<u64>,
    pub memory_bytes: Option<ByteSize>,
    pub deadline_ms: Option<u64>,
    pub max_wasm_stack_bytes: Option<ByteSize>,
}

impl SandboxLimits {
    pub fn with(self, overrides: &SandboxOverrides) -> SandboxLimits {
        SandboxLimits {
            fuel_per_invocation: overrides.fuel_per_invocation.unwrap_or(self.fuel_per_invocation),
            memory_bytes: overrides.memory_bytes.unwrap_or(self.memory_bytes),
            deadline_ms: overrides.deadline_ms.unwrap_or(self.deadline_ms),
            max_wasm_stack_bytes: overrides.max_wasm_stack_bytes.unwrap_or(self.max_wasm_stack_bytes),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnSuccess {
    /// Move the file to `archive/`.
    #[default]
    Archive,
    /// Delete the file.
    Delete,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPipelineSpec {
    /// The pipeline's name; uploads are versioned under it.
    pub name: Name,
    /// Staged files this pipeline takes: a glob relative to the staging
    /// directory (`*.csv` for top-level files, `heavy/*.csv`, `**/*.csv`).
    #[serde(default = "all_files")]
    pub files: String,
    /// Overrides the agreement's schedule for this pipeline.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub sandbox: SandboxOverrides,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub on_success: OnSuccess,
}

fn all_files() -> String {
    "*".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    #[serde(default = "stream_name")]
    pub name: Name,
    /// Topics consumed, without the tenant prefix.
    pub topics: Vec<Name>,
    /// Partitions of each topic when the host creates it.
    #[serde(default = "one_i32")]
    pub partitions: i32,
    #[serde(default = "one")]
    pub min_instances: u32,
    #[serde(default = "one")]
    pub max_instances: u32,
    /// Messages handed to one invocation at most.
    #[serde(default = "default_batch_messages")]
    pub batch_max_messages: u32,
    /// How long an instance waits to fill a batch.
    #[serde(default = "default_batch_wait")]
    pub batch_max_wait_ms: u64,
    #[serde(default)]
    pub sandbox: SandboxOverrides,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub thresholds: StreamThresholds,
}

fn stream_name() -> Name {
    Name::parse("stream").expect("valid name")
}
fn one() -> u32 {
    1
}
fn one_i32() -> i32 {
    1
}
fn default_batch_messages() -> u32 {
    500
}
fn default_batch_wait() -> u64 {
    200
}

/// What the stream monitor compares measurements with.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamThresholds {
    /// Scale up when a batch takes longer than this on average.
    pub max_avg_ingestion_ms: Option<u64>,
    /// Scale up when the consumer group lags more messages than this.
    pub max_consumer_lag: Option<u64>,
    /// Alert when more than this fraction of messages fail (0 to 1).
    pub max_error_rate: Option<f64>,
    /// Scale down after this long without messages.
    pub idle_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    /// Elasticsearch/OpenSearch `mappings` of the index, as given.
    #[serde(default)]
    pub mappings: Option<serde_json::Value>,
}

/// The deepest wasm stack a profile may ask for.
pub const MAX_WASM_STACK_BYTES: u64 = 2 * 1024 * 1024;

/// Names a guest cannot use because the host writes them itself.
pub const RESERVED_COLLECTIONS: &[&str] = &[METRICS_COLLECTION];
pub const RESERVED_TOPICS: &[&str] = &[DEAD_LETTER_TOPIC];

impl Profile {
    pub fn load(file: &Path) -> Result<Profile, ConfigError> {
        let profile: Profile = super::load_yaml(file)?;
        profile.validate(file)?;
        Ok(profile)
    }

    /// The batch pipeline that takes the staged file at `relative` (first match).
    pub fn batch_pipeline_for(&self, relative: &Path) -> Option<&BatchPipelineSpec> {
        self.batch.iter().find(|p| files_glob(&p.files).map(|g| g.compile_matcher().is_match(relative)).unwrap_or(false))
    }

    pub fn batch_pipeline(&self, name: &str) -> Option<&BatchPipelineSpec> {
        self.batch.iter().find(|p| p.name.as_str() == name)
    }

    /// The sandbox limits the pipeline `name` of `kind` runs under, if the
    /// profile declares it.
    pub fn limits_of(&self, kind: super::PipelineKind, name: &str) -> Option<SandboxLimits> {
        match kind {
            super::PipelineKind::Batch => self.batch_pipeline(name).map(|p| self.sandbox.with(&p.sandbox)),
            super::PipelineKind::Stream => self.stream.as_ref().filter(|s| s.name.as_str() == name).map(|s| self.sandbox.with(&s.sandbox)),
        }
    }

    /// Tenant parameters overlaid with a pipeline's own.
    pub fn parameters_for(&self, pipeline: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut merged = self.parameters.clone();
        merged.extend(pipeline.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }
}

/// A pipeline's `files` pattern; `*` stays within a directory, `**` crosses them.
fn files_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern).literal_separator(true).build()
}
