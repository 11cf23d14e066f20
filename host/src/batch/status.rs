//! What the operator sees of batch ingestion (`mysimbdp batch status`) and
//! what they can do about failures (`mysimbdp batch retry`). Everything is
//! read from the tenant's files and manifest, so it works with or without a
//! running host.

use super::lifecycle::{self, Step};
use super::manifest::{self, Entry, FileState, Manifest};
use super::staging::{self, Reason};
use crate::config::{Registry, Tenant};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    pub file: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The cron tick whose run took the file (cron pipelines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantStatus {
    pub tenant: String,
    /// Staged files not taken yet.
    pub staged: Vec<FileStatus>,
    pub queued: Vec<FileStatus>,
    pub running: Vec<FileStatus>,
    /// The most recent first, at most `recent`.
    pub done: Vec<FileStatus>,
    pub failed: Vec<FileStatus>,
    pub quarantined: Vec<FileStatus>,
}

fn from_entry(entry: &Entry) -> FileStatus {
    FileStatus {
        file: entry.file.clone(),
        state: serde_json::to_value(entry.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        pipeline: Some(entry.pipeline.clone()),
        reason: entry.reason.clone(),
        at: entry.ts,
        tick: entry.tick,
        path: None,
    }
}

fn from_reason(path: PathBuf, reason: Option<Reason>) -> FileStatus {
    let at = std::fs::metadata(&path).and_then(|m| m.modified()).map(chrono::DateTime::from).unwrap_or_else(|_| chrono::Utc::now());
    match reason {
        Some(reason) => FileStatus {
            file: reason.file,
            state: reason.rule,
            pipeline: reason.pipeline,
            reason: Some(reason.message),
            at: reason.at,
            tick: None,
            path: Some(path),
        },
        None => FileStatus {
            file: path.display().to_string(),
            state: "unknown".into(),
            pipeline: None,
            reason: None,
            at,
            tick: None,
            path: Some(path),
        },
    }
}

/// What the tenant's files are doing now. The manager records each step in
/// the manifest before it moves the file, and every move is one rename, so
/// reading in the manager's order (staging, then the manifest, then `work/`,
/// then `failed/` and `quarantine/`) finds every file at least once even while
/// it moves: one read after its step can only find it further along.
pub fn tenant_status(tenant: &Tenant, recent: usize) -> anyhow::Result<TenantStatus> {
    let files = staging::list(&tenant.paths.staging).unwrap_or_default();
    // Why a staged file that passes every rule is not taken yet, as the
    // scan's admission decides it (no cron tick due, no settling time).
    let admission = super::admission::admit(
        &tenant.profile,
        files.clone(),
        std::time::SystemTime::now(),
        std::time::Duration::ZERO,
        &Default::default(),
        &Default::default(),
    );
    let staged = files
        .into_iter()
        .map(|f| {
            let waits = admission.waiting.iter().find(|(w, _)| w.path == f.path).map(|(_, reason)| reason.clone());
            FileStatus {
                file: f.relative,
                state: if waits.is_some() { "waiting" } else { "staged" }.into(),
                pipeline: None,
                reason: waits,
                at: f.modified.into(),
                tick: None,
                path: Some(f.path),
            }
        })
        .collect();
    let latest =
        manifest::read_latest(&tenant.paths.manifest).with_context(|| format!("cannot read the manifest of tenant `{}`", tenant.id))?;
    let of = |state: FileState| latest.values().filter(|e| e.state == state).map(from_entry).collect::<Vec<_>>();
    let mut done: Vec<FileStatus> = of(FileState::Done).into_iter().chain(of(FileState::Duplicate)).collect();
    done.sort_by_key(|f| std::cmp::Reverse(f.at));
    done.truncate(recent);
    // The manifest records an outcome before the file leaves work/; until it
    // has moved (to failed/ with its reason, or archive/) it is still running.
    let finishing: Vec<FileStatus> = latest
        .values()
        .filter(|e| matches!(e.state, FileState::Failed | FileState::Done) && e.work_path(&tenant.paths.work).exists())
        .map(from_entry)
        .collect();
    let mut failed: Vec<FileStatus> = staging::with_reasons(&tenant.paths.failed).into_iter().map(|(p, r)| from_reason(p, r)).collect();
    failed.sort_by_key(|f| std::cmp::Reverse(f.at));
    let mut quarantined: Vec<FileStatus> =
        staging::with_reasons(&tenant.paths.quarantine).into_iter().map(|(p, r)| from_reason(p, r)).collect();
    quarantined.sort_by_key(|f| std::cmp::Reverse(f.at));
    Ok(TenantStatus {
        tenant: tenant.id.to_string(),
        staged,
        queued: of(FileState::Claimed),
        running: of(FileState::Ingesting).into_iter().chain(finishing).collect(),
        done,
        failed,
        quarantined,
    })
}

pub fn status(registry: &Registry, tenant: Option<&str>, recent: usize) -> anyhow::Result<Vec<TenantStatus>> {
    match tenant {
        Some(id) => Ok(vec![tenant_status(registry.require(id)?, recent)?]),
        None => registry.tenants().map(|t| tenant_status(t, recent)).collect(),
    }
}

/// Moves failed files (and, with `quarantined`, quarantined ones) back to
/// staging, where the manager takes them again. `files` narrows it down by
/// staged name; empty means all. Returns the files moved.
///
/// The manifest entries (`retried`) are written to `manifest`, which must be
/// the tenant's only writer: the running host's, or one opened under the data
/// directory's lock when no host runs ([`crate::host_lock`]).
pub fn retry(tenant: &Tenant, manifest: &Manifest, files: &[String], quarantined: bool) -> anyhow::Result<Vec<String>> {
    let mut dirs = vec![&tenant.paths.failed];
    if quarantined {
        dirs.push(&tenant.paths.quarantine);
    }
    let mut moved = Vec::new();
    let mut retried_entries = Vec::new();
    for dir in dirs {
        for (path, reason) in staging::with_reasons(dir) {
            let staged_as = reason
                .as_ref()
                .map(|r| r.file.clone())
                .unwrap_or_else(|| path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string());
            if !files.is_empty() && !files.iter().any(|f| *f == staged_as || path.ends_with(f)) {
                continue;
            }
            let target = staging::move_into(&path, &tenant.paths.staging, &staged_as, &manifest::new_id())
                .with_context(|| format!("cannot move {} back to staging", path.display()))?;
            let _ = std::fs::remove_file(staging::reason_path(&path));
            if let Some(Reason { id: Some(id), pipeline, .. }) = &reason {
                retried_entries.push(Entry {
                    id: id.clone(),
                    // A file in failed/ is recorded failed; the retry returns it.
                    state: lifecycle::after(Some(FileState::Failed), Step::Return).expect("a failed file can return"),
                    file: staged_as.clone(),
                    pipeline: pipeline.clone().unwrap_or_default(),
                    checksum: String::new(),
                    bytes: 0,
                    ts: chrono::Utc::now(),
                    reason: Some("sent back to staging by batch retry".into()),
                    tick: None,
                });
            }
            moved.push(target.strip_prefix(&tenant.paths.staging).unwrap_or(&target).display().to_string());
        }
    }
    if !retried_entries.is_empty() {
        manifest
            .record(&retried_entries, true)
            .with_context(|| format!("cannot write the manifest {} of tenant `{}`", manifest.path().display(), tenant.id))?;
    }
    Ok(moved)
}
