use crate::capabilities::HostState;
use crate::capabilities::staging::InputFile;
use crate::config::{BatchPipelineSpec, Tenant};
use crate::pipelines::{self, PipelineKind};
use crate::platform::Platform;
use crate::runtime::{Failure, FailureKind};
use crate::telemetry::{IngestionRecord, Outcome, metrics};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Size and SHA-256 of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    pub bytes: u64,
    pub sha256: String,
}

/// Reads the file once to hash it.
pub async fn identify(path: &Path) -> anyhow::Result<FileIdentity> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 20];
        let mut bytes = 0;
        loop {
            let n = file.read(&mut buffer).with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            bytes += n as u64;
        }
        Ok(FileIdentity { bytes, sha256: hex::encode(hasher.finalize()) })
    })
    .await?
}

/// Runs `spec`'s active version on the file at `path` and records the result.
///
/// An `Err` means the ingestion could not start (no pipeline uploaded, the
/// file vanished); a pipeline or sink failure is an `Ok` record with
/// `outcome: failed` and its classified kind.
pub async fn ingest_file(
    platform: &Platform,
    tenant: &Arc<Tenant>,
    spec: &BatchPipelineSpec,
    path: &Path,
    name: &str,
) -> anyhow::Result<IngestionRecord> {
    ingest_file_with(platform, tenant, spec, path, name, IngestOptions::default()).await
}

/// What a caller may already know or want to watch.
#[derive(Default)]
pub struct IngestOptions {
    /// Size and checksum, when the caller computed them already.
    pub identity: Option<FileIdentity>,
    /// Counts the bytes the guest has read, for a progress bar.
    pub progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// [`ingest_file`] with [`IngestOptions`].
pub async fn ingest_file_with(
    platform: &Platform,
    tenant: &Arc<Tenant>,
    spec: &BatchPipelineSpec,
    path: &Path,
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
        None => identify(path).await?,
    };
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let input =
        InputFile { name: name.to_string(), size: identity.bytes, checksum: identity.sha256.clone(), file, progress: options.progress };

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
/// tenant's type and size constraints.
pub async fn ingest_path(
    platform: &Platform,
    tenant: &str,
    pipeline: Option<&str>,
    path: &Path,
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
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(violation) = crate::batch::constraints::check_file(&tenant.profile.constraints, Path::new(name), metadata.len()) {
        anyhow::bail!("tenant `{}` does not accept `{name}`: {}", tenant.id, violation.message());
    }
    ingest_file_with(platform, &tenant, spec, path, name, IngestOptions { identity: None, progress }).await
}
