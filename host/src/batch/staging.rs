//! Files in a tenant's directories: what is staged, putting files there
//! atomically, and moving them on with a reason file beside them.

use super::constraints::Violation;
use crate::config::Tenant;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file waiting in staging.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: PathBuf,
    /// Relative to the staging directory, with `/` separators.
    pub relative: String,
    pub bytes: u64,
    pub modified: SystemTime,
    /// What it is when not a regular file (`symbolic link`, `named pipe`,
    /// ...): never ingested, and quarantined by the scan.
    pub special: Option<&'static str>,
}

/// Being written: `stage put` writes `.<name>.part` and renames it into place.
fn in_progress(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".part") || name.ends_with(".tmp")
}

/// Every file in `staging` and its subdirectories, oldest first.
pub fn list(staging: &Path) -> std::io::Result<Vec<StagedFile>> {
    let mut files = Vec::new();
    let mut dirs = vec![staging.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if in_progress(&name) {
                continue;
            }
            let Ok(metadata) = entry.metadata() else { continue };
            let path = entry.path();
            // Not followed: a link is listed as a link.
            let kind = metadata.file_type();
            if kind.is_dir() {
                dirs.push(path);
                continue;
            }
            let special = (!kind.is_file()).then(|| special_kind(&kind));
            let relative = path.strip_prefix(staging).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            files.push(StagedFile { path, relative, bytes: metadata.len(), modified: metadata.modified()?, special });
        }
    }
    files.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.relative.cmp(&b.relative)));
    Ok(files)
}

fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_fifo() {
        "named pipe"
    } else if kind.is_socket() {
        "socket"
    } else {
        "device"
    }
}

/// Copies `source` into the tenant's staging directory (under `into`) so the
/// host never sees half a file: written as `.<name>.part`, then renamed.
pub fn put(tenant: &Tenant, source: &Path, into: Option<&Path>) -> anyhow::Result<PathBuf> {
    let name = source.file_name().with_context(|| format!("{} has no file name", source.display()))?;
    let dir = match into {
        Some(sub) if sub.components().all(|c| matches!(c, std::path::Component::Normal(_))) => tenant.paths.staging.join(sub),
        Some(sub) => anyhow::bail!("--into {} must be a plain relative directory", sub.display()),
        None => tenant.paths.staging.clone(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The staging quota is kept at the door: a file beyond it is not staged.
    let bytes = std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?.len();
    let staged: u64 = list(&tenant.paths.staging).unwrap_or_default().iter().map(|f| f.bytes).sum();
    let limit = tenant.profile.constraints.max_staging_bytes;
    anyhow::ensure!(
        staged + bytes <= limit.bytes(),
        "{} ({}) was not staged: staging of tenant `{}` holds {} already, and with it would hold {}, above its max_staging_bytes \
         ({limit}); wait for the host to take staged files, or ask the operator for a larger quota",
        source.display(),
        super::constraints::human_bytes(bytes),
        tenant.id,
        super::constraints::human_bytes(staged),
        super::constraints::human_bytes(staged + bytes)
    );
    let target = dir.join(name);
    let partial = dir.join(format!(".{}.part", name.to_string_lossy()));
    let copied = std::fs::copy(source, &partial)
        .with_context(|| format!("cannot copy {} to {}", source.display(), partial.display()))
        .and_then(|_| {
            std::fs::File::open(&partial).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", partial.display()))
        })
        .and_then(|()| std::fs::rename(&partial, &target).with_context(|| format!("cannot move {} into place", target.display())))
        .and_then(|()| crate::framed::sync_dir(&target).with_context(|| format!("cannot sync the directory of {}", target.display())));
    if let Err(error) = copied {
        // Not staged (a full disk, say): no half file is left behind.
        let _ = std::fs::remove_file(&partial);
        return Err(error.context(format!("{} was not staged for tenant `{}`; nothing of it is in staging", source.display(), tenant.id)));
    }
    Ok(target)
}

/// Moves `file` to `dir/relative`; if that name is taken, `-<suffix>` is added
/// before the extension. Returns the new path.
pub fn move_into(file: &Path, dir: &Path, relative: &str, suffix: &str) -> std::io::Result<PathBuf> {
    let target = free_target(dir, relative, suffix)?;
    std::fs::rename(file, &target)?;
    Ok(target)
}

/// Where `move_into` puts a file: `dir/relative`, or with `-<suffix>` before
/// the extension if that is taken. Creates the parent directory.
fn free_target(dir: &Path, relative: &str, suffix: &str) -> std::io::Result<PathBuf> {
    let mut target = dir.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if target.exists() {
        let stem = target.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let name = match target.extension() {
            Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
            None => format!("{stem}-{suffix}"),
        };
        target.set_file_name(name);
    }
    Ok(target)
}

/// `move_into` for `quarantine/` and `failed/`: the reason file is written
/// first, so whoever lists the directory never sees the file without its
/// reason. If the reason cannot be written the file is moved all the same
/// (it is never left behind) and the error is logged.
pub fn move_with_reason(file: &Path, dir: &Path, suffix: &str, reason: &Reason) -> std::io::Result<PathBuf> {
    let target = free_target(dir, &reason.file, suffix)?;
    let reason_file = reason_path(&target);
    if let Err(error) = write_reason(&target, reason) {
        tracing::error!(tenant = %reason.tenant, file = %reason.file, %error, "Cannot write {}; the file is moved without it.", reason_file.display());
    }
    std::fs::rename(file, &target).inspect_err(|_| {
        let _ = std::fs::remove_file(&reason_file);
    })?;
    Ok(target)
}

/// Why a file is in `quarantine/` or `failed/`: `<file>.reason.json` beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub tenant: String,
    /// Path relative to staging, as it was staged.
    pub file: String,
    /// A constraint (`file-type`, ...) or a failure kind (`out-of-fuel`, ...).
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    pub message: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The manifest id, for failed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

pub fn reason_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".reason.json");
    file.with_file_name(name)
}

/// Writes the reason file for `file` (which need not exist yet).
fn write_reason(file: &Path, reason: &Reason) -> std::io::Result<()> {
    std::fs::write(reason_path(file), serde_json::to_vec_pretty(reason).expect("serializable"))
}

/// Moves a staged file to quarantine with its reason; never deletes it.
pub fn quarantine(tenant: &Tenant, file: &StagedFile, violation: &Violation) -> std::io::Result<PathBuf> {
    let reason = Reason {
        tenant: tenant.id.to_string(),
        file: file.relative.clone(),
        rule: violation.rule.clone(),
        limit: Some(violation.limit.clone()),
        actual: Some(violation.actual.clone()),
        message: violation.message(),
        at: chrono::Utc::now(),
        id: None,
        pipeline: None,
    };
    move_with_reason(&file.path, &tenant.paths.quarantine, &super::manifest::new_id(), &reason)
}

/// Files with their reasons in `quarantine/` or `failed/`.
pub fn with_reasons(dir: &Path) -> Vec<(PathBuf, Option<Reason>)> {
    let mut found = Vec::new();
    for file in list(dir).unwrap_or_default() {
        if file.relative.ends_with(".reason.json") {
            continue;
        }
        let reason = std::fs::read_to_string(reason_path(&file.path)).ok().and_then(|t| serde_json::from_str(&t).ok());
        found.push((file.path, reason));
    }
    found
}
