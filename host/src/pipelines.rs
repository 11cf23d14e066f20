//! Uploaded pipeline components, versioned per tenant:
//! `tenants/<id>/pipelines/<kind>/<name>/v<N>.wasm` with `v<N>.json` beside it.
//! The newest version is the active one; old versions stay for rollback and audit.

pub use crate::config::PipelineKind;
use crate::config::{Name, Tenant};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One uploaded version of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineVersion {
    pub tenant: String,
    pub kind: PipelineKind,
    pub name: String,
    pub version: u32,
    /// SHA-256 of the component, lowercase hex.
    pub sha256: String,
    pub bytes: u64,
    pub uploaded_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip)]
    pub path: PathBuf,
}

fn pipeline_dir(tenant: &Tenant, kind: PipelineKind, name: &Name) -> PathBuf {
    tenant.paths.pipelines.join(kind.as_str()).join(name.as_str())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The pipeline names a tenant's profile declares for `kind`.
pub fn declared(tenant: &Tenant, kind: PipelineKind) -> Vec<Name> {
    match kind {
        PipelineKind::Batch => tenant.profile.batch.iter().map(|p| p.name.clone()).collect(),
        PipelineKind::Stream => tenant.profile.stream.iter().map(|s| s.name.clone()).collect(),
    }
}

/// Resolves `--name` (or the only declared pipeline) against the profile.
pub fn resolve_name(tenant: &Tenant, kind: PipelineKind, name: Option<&str>) -> anyhow::Result<Name> {
    let declared = declared(tenant, kind);
    let listed = || declared.iter().map(Name::as_str).collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => declared.iter().find(|n| n.as_str() == name).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "the profile of tenant `{}` ({}) declares no {kind} pipeline `{name}` (declared: {}); add it to the profile first",
                tenant.id,
                tenant.profile_file.display(),
                if declared.is_empty() { "none".into() } else { listed() }
            )
        }),
        None => match declared.as_slice() {
            [only] => Ok(only.clone()),
            [] => anyhow::bail!(
                "the profile of tenant `{}` ({}) declares no {kind} pipeline; add one first",
                tenant.id,
                tenant.profile_file.display()
            ),
            _ => anyhow::bail!("tenant `{}` has several {kind} pipelines ({}); choose one with --name", tenant.id, listed()),
        },
    }
}

/// Stores `component` as the next version. The caller has checked it
/// implements the world of `kind`.
pub fn store(tenant: &Tenant, kind: PipelineKind, name: &Name, component: &[u8]) -> anyhow::Result<PipelineVersion> {
    let dir = pipeline_dir(tenant, kind, name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let version = versions(tenant, kind, name)?.last().map_or(1, |v| v.version + 1);
    let path = dir.join(format!("v{version}.wasm"));
    let record = PipelineVersion {
        tenant: tenant.id.to_string(),
        kind,
        name: name.to_string(),
        version,
        sha256: sha256_hex(component),
        bytes: component.len() as u64,
        uploaded_at: chrono::Utc::now(),
        path: path.clone(),
    };
    // Component first, metadata last: a version exists once its .json does.
    write_atomically(&path, component)?;
    write_atomically(&path.with_extension("json"), &serde_json::to_vec_pretty(&record)?)?;
    Ok(record)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot move {} into place", path.display()))
}

/// All versions of a pipeline, oldest first.
pub fn versions(tenant: &Tenant, kind: PipelineKind, name: &Name) -> anyhow::Result<Vec<PipelineVersion>> {
    let dir = pipeline_dir(tenant, kind, name);
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(found);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut record: PipelineVersion =
                serde_json::from_str(&text).with_context(|| format!("{} is not a pipeline record", path.display()))?;
            record.path = path.with_extension("wasm");
            found.push(record);
        }
    }
    found.sort_by_key(|v| v.version);
    Ok(found)
}

/// The active (newest) version, or an error that says how to upload one.
pub fn active(tenant: &Tenant, kind: PipelineKind, name: &Name) -> anyhow::Result<PipelineVersion> {
    versions(tenant, kind, name)?.pop().ok_or_else(|| {
        anyhow::anyhow!(
            "tenant `{}` has no {kind} pipeline `{name}` uploaded; upload one with `mysimbdp pipeline upload --tenant {} --kind {kind} --name {name} FILE.wasm`",
            tenant.id,
            tenant.id
        )
    })
}
