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
/// implements the world of `kind`. Safe under concurrent uploads: each takes
/// its version number by linking its synced component as `v<N>.wasm`, which
/// fails if another upload has that number, so two uploads at once get two
/// versions. The version exists once its `.json` is in place (synced,
/// renamed, the directory synced).
pub fn store(tenant: &Tenant, kind: PipelineKind, name: &Name, component: &[u8]) -> anyhow::Result<PipelineVersion> {
    let dir = pipeline_dir(tenant, kind, name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let unique = format!("{}.{:?}", std::process::id(), std::thread::current().id());
    let temporary = dir.join(format!(".upload.{unique}.tmp"));
    write_synced(&temporary, component)?;
    let mut version = versions(tenant, kind, name)?.last().map_or(1, |v| v.version + 1);
    let path = loop {
        let path = dir.join(format!("v{version}.wasm"));
        match std::fs::hard_link(&temporary, &path) {
            Ok(()) => break path,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => version += 1,
            Err(error) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(error).with_context(|| format!("cannot store {}", path.display()));
            }
        }
    };
    let _ = std::fs::remove_file(&temporary);
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
    let record_temporary = dir.join(format!(".record.{unique}.tmp"));
    write_synced(&record_temporary, &serde_json::to_vec_pretty(&record)?)?;
    std::fs::rename(&record_temporary, path.with_extension("json"))
        .with_context(|| format!("cannot move {} into place", path.with_extension("json").display()))?;
    crate::framed::sync_dir(&path).with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(record)
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let written = std::fs::File::create(path).and_then(|mut file| {
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    });
    written.with_context(|| format!("cannot write {}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn uploads_at_once_get_distinct_versions_each_with_its_own_component() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tenants.yaml"), "tenants:\n  - id: shop\n    profile: profile.yaml\n").unwrap();
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../tenants/retail/profile.yaml"), dir.path().join("profile.yaml")).unwrap();
        let registry = crate::config::Registry::load(&dir.path().join("tenants.yaml"), &dir.path().join("var"), None).unwrap();
        let tenant = Arc::new(registry.require("shop").unwrap().clone());
        let name = resolve_name(&tenant, PipelineKind::Batch, Some("orders")).unwrap();
        let uploads = 8;
        let barrier = Arc::new(Barrier::new(uploads));
        let threads: Vec<_> = (0..uploads)
            .map(|i| {
                let (tenant, name, barrier) = (tenant.clone(), name.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store(&tenant, PipelineKind::Batch, &name, format!("component {i}").as_bytes()).unwrap()
                })
            })
            .collect();
        let stored: Vec<PipelineVersion> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut numbers: Vec<u32> = stored.iter().map(|v| v.version).collect();
        numbers.sort();
        assert_eq!(numbers, (1..=uploads as u32).collect::<Vec<_>>(), "one version each");
        let listed = versions(&tenant, PipelineKind::Batch, &name).unwrap();
        assert_eq!(listed.len(), uploads);
        for version in &listed {
            let bytes = std::fs::read(&version.path).unwrap();
            assert_eq!(sha256_hex(&bytes), version.sha256, "v{}: the record describes its own component", version.version);
        }
        let leftovers: Vec<_> = std::fs::read_dir(listed[0].path.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
