//! One file through a tenant's batch pipeline, outside the manager's
//! schedule: `mysimbdp ingest` and `POST /api/ingest`.

use crate::config::Tenant;
use crate::invocation::{FileInput, Input, Invoker};
pub use crate::opened_file::FileIdentity;
use crate::opened_file::OpenedFile;
use crate::telemetry::IngestionRecord;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Opens the file at `path` (never through a link) and hashes it.
pub async fn identify(path: &Path) -> anyhow::Result<FileIdentity> {
    let file = OpenedFile::open(path, None)?;
    tokio::task::spawn_blocking(move || file.identify()).await?.with_context(|| format!("cannot read {}", path.display()))
}

/// Ingests the file at `path` for `tenant` with the named pipeline, or the
/// first whose `files` pattern matches the file name. The file must meet the
/// tenant's type and size constraints, be a regular file (not a link) and,
/// with `within`, be inside that directory (links in its directories
/// resolved): what a tenant's own API token may ingest. It is opened once,
/// and what was checked is what is read.
///
/// An `Err` means the ingestion could not start; a pipeline or sink failure
/// is an `Ok` record with `outcome: failed` and its classified kind.
pub async fn ingest_path(
    invoker: &Invoker,
    tenant: &Arc<Tenant>,
    pipeline: Option<&str>,
    path: &Path,
    within: Option<&Path>,
    progress: Option<Arc<AtomicU64>>,
) -> anyhow::Result<IngestionRecord> {
    invoker.ensure_not_suspended(&tenant.id)?;
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
    let loaded = invoker.load_batch(tenant, spec).await?;
    let input = FileInput { progress, ..FileInput::new(file, name) };
    Ok(invoker.invoke(&loaded, Input::File(input)).await?.record)
}
