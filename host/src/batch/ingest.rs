use crate::capabilities::HostState;
use crate::capabilities::staging::InputFile;
use crate::config::{BatchPipelineSpec, Tenant};
pub use crate::opened_file::FileIdentity;
use crate::opened_file::OpenedFile;
use crate::pipelines::{self, PipelineKind};
use crate::platform::Platform;
use crate::runtime::{Failure, FailureKind};
use crate::telemetry::{IngestionRecord, Outcome, metrics};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;

/// Opens the file at `path` (never through a link) and hashes it.
pub async fn identify(path: &Path) -> anyhow::Result<FileIdentity> {
    let file = OpenedFile::open(path, None)?;
    Ok(tokio::task::spawn_blocking(move || file.identify()).await?.with_context(|| format!("cannot read {}", path.display()))?)
}

/// Runs `spec`'s active version on `file` (opened and checked by the
/// caller, read through that descriptor up to its checked size) and records
/// the result. `name` is the file name the guest sees.
///
/// An `Err` means the ingestion could not start (no pipeline uploaded, the
/// file unreadable); a pipeline or sink failure is an `Ok` record with
/// `outcome: failed` and its classified kind.
pub async fn ingest_file(
    platform: &Platform,
    tenant: &Arc<Tenant>,
    spec: &BatchPipelineSpec,
    file: OpenedFile,
    name: &str,
) -> anyhow::Result<IngestionRecord> {
    ingest_file_with(platform, tenant, spec, file, name, IngestOptions::default()).await
}

/// What a caller may already know or want to watch.
#[derive(Default)]
pub struct IngestOptions {
    /// Size and checksum of the file's checked bytes, when the caller
    /// computed them already (through the same descriptor).
    pub identity: Option<FileIdentity>,
    /// Counts the bytes the guest has read, for a progress bar.
    pub progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// [`ingest_file`] with [`IngestOptions`].
pub async fn ingest_file_with(
    platform: &Platform,
    tenant: &Arc<Tenant>,
    spec: &BatchPipelineSpec,
    file: OpenedFile,
    name: &str,
    options: IngestOptions,
) -> anyhow::Result<IngestionRecord> {
    let version = pipelines::active(tenant, PipelineKind::Batch, &spec.name)?;
    let limits = tenant.profile.sandbox.with(&spec.sandbox);
    let compiled = platform.runtime.load(&version, limits.max_wasm_stack_bytes.bytes()).await.with_context(|| {
        format!("cannot load {} pipeline `{}` v{} of tenant `{}`", PipelineKind::Batch, spec.name, version.version, tenant.id)
    })?;
    let identity = match options.identity {
        Some(identity) => identity,
        None => {
            let hashed = file.clone();
            tokio::task::spawn_blocking(move || hashed.identify()).await?.with_context(|| format!("cannot read `{name}`"))?
        }
    };
    let mut input = InputFile::new(name, &identity.sha256, file);
    input.progress = options.progress;

    let _slot = platform.tenant_slots(&tenant.id).acquire_owned().await?;
    let scope = platform.scope(tenant, PipelineKind::Batch, &spec.name, version.version, &spec.parameters);
    let state = HostState::new(scope.clone(), limits.memory_bytes.bytes());
    let started_at = chrono::Utc::now();
    let (result, usage, state) = platform.runtime.run_batch(&compiled, &limits, state, input).await;

    // Acknowledged means durable and searchable: only then is the file done.
    let mut result = result;
    for index in &state.effects.indices {
        if let Err(error) = platform.services.coredms.flush(index, true).await
            && result.is_ok()
        {
            result = Err(Failure::new(FailureKind::SinkError, error.to_string()));
        }
    }

    let effects = &state.effects;
    let (records_in, records_out, records_rejected) = match &result {
        Ok(report) => (report.records_in, report.records_out, report.records_rejected),
        Err(_) => (0, effects.docs_indexed, effects.docs_failed),
    };
    let record = IngestionRecord {
        record_type: "ingestion".into(),
        tenant: tenant.id.to_string(),
        kind: PipelineKind::Batch,
        pipeline: spec.name.to_string(),
        version: version.version,
        source: name.to_string(),
        records_in,
        records_out,
        records_rejected,
        dead_lettered: effects.dead_lettered,
        bytes: identity.bytes,
        started_at,
        duration_ms: usage.duration.as_secs_f64() * 1000.0,
        fuel_consumed: usage.fuel_consumed,
        peak_memory_bytes: usage.peak_memory_bytes,
        outcome: if result.is_ok() { Outcome::Ok } else { Outcome::Failed },
        failure: result.as_ref().err().map(|f| f.kind),
        reason: result.as_ref().err().map(|f| f.message.clone()),
    };
    platform.record_ingestion(&scope, &record);
    metrics::record_guest_counters(tenant.id.as_str(), spec.name.as_str(), &effects.counters);
    Ok(record)
}

/// Ingests the file at `path` for `tenant` with the named pipeline, or the
/// first whose `files` pattern matches the file name. The file must meet the
/// tenant's type and size constraints and be a regular file (not a link); it
/// is opened once, and what was checked is what is read.
pub async fn ingest_path(
    platform: &Platform,
    tenant: &str,
    pipeline: Option<&str>,
    path: &Path,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> anyhow::Result<IngestionRecord> {
    ingest_path_within(platform, tenant, pipeline, path, None, progress).await
}

/// [`ingest_path`] of a file that must be inside `within` (links in its
/// directories resolved): what a tenant's own API token may ingest.
pub async fn ingest_path_within(
    platform: &Platform,
    tenant: &str,
    pipeline: Option<&str>,
    path: &Path,
    within: Option<&Path>,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> anyhow::Result<IngestionRecord> {
    let tenant = platform.tenant(tenant)?;
    let name = path.file_name().and_then(|n| n.to_str()).with_context(|| format!("{} has no file name", path.display()))?;
    let spec = match pipeline {
        Some(pipeline) => tenant
            .profile
            .batch_pipeline(pipeline)
            .with_context(|| format!("tenant `{}` has no batch pipeline `{pipeline}` in {}", tenant.id, tenant.profile_file.display()))?,
        None => tenant.profile.batch_pipeline_for(Path::new(name)).with_context(|| {
            let patterns: Vec<String> = tenant.profile.batch.iter().map(|p| format!("{} ({})", p.name, p.files)).collect();
            format!(
                "no batch pipeline of tenant `{}` takes `{name}` (pipelines: {}); name one with --pipeline",
                tenant.id,
                if patterns.is_empty() { "none".into() } else { patterns.join(", ") }
            )
        })?,
    };
    // Opened once: the descriptor checked here is the one hashed and read.
    let file = OpenedFile::open(path, within)?;
    if let Some(violation) = crate::batch::constraints::check_file(&tenant.profile.constraints, Path::new(name), file.size()) {
        anyhow::bail!("tenant `{}` does not accept `{name}`: {}", tenant.id, violation.message());
    }
    ingest_file_with(platform, &tenant, spec, file, name, IngestOptions { identity: None, progress }).await
}
