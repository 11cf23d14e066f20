//! One scan of a tenant's staging directory: the files it may take now
//! (per-file rules, the staging quota, the run limit, the cron ticks due),
//! quarantining those that break a rule, and the claim of the rest.

use super::constraints::{Violation, check_file, check_staging_total};
use super::manager::{DueCron, Inner, Job, TenantState};
use super::manifest::{self, Entry, FileState};
use super::staging::{self, StagedFile};
use crate::config::{PipelineKind, Schedule, TenantId};
use crate::opened_file::{FileIdentity, OpenedFile};
use crate::telemetry::metrics as telemetry;
use chrono::Utc;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

impl Inner {
    /// Cron pipelines whose tick has come, per tenant, with that tick; advances
    /// their ticks. A host that wakes late (busy, suspended) runs a pipeline
    /// once for the ticks it missed, under the earliest of them.
    pub(super) fn due_cron(&self, now: chrono::DateTime<Utc>) -> HashMap<TenantId, DueCron> {
        let mut due: HashMap<TenantId, DueCron> = HashMap::new();
        for (id, state) in self.states() {
            let tenant = state.tenant();
            let mut next = state.cron_next.lock().expect("cron poisoned");
            for pipeline in &tenant.profile.batch {
                let schedule = pipeline.schedule.as_ref().unwrap_or(&tenant.profile.agreement.schedule);
                let Schedule::Cron(cron) = schedule else { continue };
                let name = pipeline.name.to_string();
                let tick = *next.entry(name.clone()).or_insert_with(|| cron.after(&now).next().unwrap_or(now));
                if tick <= now {
                    due.entry(id.clone()).or_default().insert(name.clone(), tick);
                    next.insert(name, cron.after(&now).next().unwrap_or(now + chrono::Duration::days(365)));
                }
            }
        }
        due
    }

    pub(super) fn next_cron(&self) -> Option<chrono::DateTime<Utc>> {
        self.states().into_iter().flat_map(|(_, s)| s.cron_next.lock().expect("cron poisoned").values().copied().collect::<Vec<_>>()).min()
    }

    pub(super) async fn scan_all(self: &Arc<Self>, due_cron: &HashMap<TenantId, DueCron>) {
        let _one_scan_at_a_time = self.scan_lock.lock().await;
        let no_cron = DueCron::new();
        for (id, state) in self.states() {
            let cron = due_cron.get(&id).unwrap_or(&no_cron);
            if let Err(error) = self.scan_tenant(&state, cron).await {
                tracing::error!(tenant = %id, error = %format!("{error:#}"), "Scanning the staging directory failed.");
            }
        }
        self.publish_load();
        self.wake.notify_one();
    }

    fn quarantine(&self, state: &TenantState, file: &StagedFile, violation: &Violation) {
        let tenant = &state.tenant();
        match staging::quarantine(tenant, file, violation) {
            Ok(moved) => {
                tracing::warn!(tenant = %tenant.id, file = %file.relative, rule = %violation.rule, "File quarantined: {}.", violation.message());
                self.logs.tenant(tenant, PipelineKind::Batch).write(&serde_json::json!({
                    "type": "quarantine",
                    "tenant": tenant.id,
                    "file": file.relative,
                    "rule": violation.rule,
                    "limit": violation.limit,
                    "actual": violation.actual,
                    "message": violation.message(),
                    "moved_to": moved,
                }));
                telemetry::record_quarantine(tenant.id.as_str(), &violation.rule);
            }
            Err(error) => tracing::error!(tenant = %tenant.id, file = %file.relative, %error, "Cannot quarantine a file."),
        }
    }

    /// One scan of a tenant's staging directory: constraints, then the run of
    /// on-arrival pipelines and of the cron pipelines in `due`.
    async fn scan_tenant(self: &Arc<Self>, state: &TenantState, due: &DueCron) -> anyhow::Result<()> {
        let tenant = &state.tenant();
        let profile = &tenant.profile;
        let min_age = Duration::from_millis(self.config.min_file_age_ms);
        let now = SystemTime::now();
        let files = staging::list(&tenant.paths.staging)?;

        // Rules each file can break alone.
        let mut kept = Vec::new();
        for file in files {
            let settled = now.duration_since(file.modified).unwrap_or_default() >= min_age;
            if !settled {
                kept.push((file, false));
                continue;
            }
            if let Some(kind) = file.special {
                self.quarantine(state, &file, &Violation::new("not-a-regular-file", "a regular file", kind));
                continue;
            }
            let pipeline = profile.batch_pipeline_for(Path::new(&file.relative));
            let violation = check_file(&profile.constraints, Path::new(&file.relative), file.bytes).or_else(|| {
                pipeline.is_none().then(|| {
                    let patterns: Vec<&str> = profile.batch.iter().map(|p| p.files.as_str()).collect();
                    Violation::new("no-pipeline", if patterns.is_empty() { "none".into() } else { patterns.join(", ") }, &file.relative)
                })
            });
            match violation {
                Some(violation) => self.quarantine(state, &file, &violation),
                None => kept.push((file, true)),
            }
        }

        // The staging quota: oldest files fit first.
        let mut total = 0;
        let mut within = Vec::new();
        for (file, settled) in kept {
            total += file.bytes;
            match check_staging_total(&profile.constraints, total) {
                Some(violation) if settled => {
                    total -= file.bytes;
                    self.quarantine(state, &file, &violation);
                }
                _ => within.push((file, settled)),
            }
        }

        // This run: settled files of pipelines that run now.
        let mut run: Vec<StagedFile> = within
            .into_iter()
            .filter(|(_, settled)| *settled)
            .map(|(file, _)| file)
            .filter(|file| {
                let pipeline = profile.batch_pipeline_for(Path::new(&file.relative)).expect("checked above");
                match pipeline.schedule.as_ref().unwrap_or(&profile.agreement.schedule) {
                    Schedule::OnArrival => true,
                    Schedule::Cron(_) => due.contains_key(pipeline.name.as_str()),
                }
            })
            .collect();
        let limit = profile.constraints.max_files_per_run as usize;
        if run.len() > limit {
            let count = run.len();
            for file in run.split_off(limit) {
                self.quarantine(state, &file, &Violation::new("max-files-per-run", limit, count));
            }
        }
        if !run.is_empty() {
            self.claim(state, run, due).await;
        }
        Ok(())
    }

    /// Records the claims durably, each with the cron tick that took it, then
    /// moves the files to `work/` and queues them.
    async fn claim(self: &Arc<Self>, state: &TenantState, files: Vec<StagedFile>, due: &DueCron) {
        let tenant = &state.tenant();
        let mut claims = Vec::new();
        for file in files {
            // Opened once, here: the descriptor checked and hashed now is the
            // one the worker reads, whatever happens to the name afterwards.
            let (opened, identity) = match open_and_hash(&file.path, &tenant.paths.staging).await {
                Ok(opened) => opened,
                Err(OpenFailure::Refused(refused)) => {
                    let kind = match refused {
                        crate::opened_file::OpenRefused::Link { .. } => "symbolic link",
                        crate::opened_file::OpenRefused::NotRegular { kind, .. } => kind,
                        _ => "file outside the staging directory",
                    };
                    self.quarantine(state, &file, &Violation::new("not-a-regular-file", "a regular file", kind));
                    continue;
                }
                Err(OpenFailure::Unreadable(error)) => {
                    tracing::warn!(tenant = %tenant.id, file = %file.relative, %error, "Cannot read a staged file; will retry.");
                    continue;
                }
            };
            // Checked again on what was opened: it may have grown since the scan.
            if let Some(violation) = check_file(&tenant.profile.constraints, Path::new(&file.relative), opened.size()) {
                self.quarantine(state, &file, &violation);
                continue;
            }
            let pipeline = tenant.profile.batch_pipeline_for(Path::new(&file.relative)).expect("checked by the scan");
            let entry = Entry {
                id: manifest::new_id(),
                state: FileState::Claimed,
                file: file.relative.clone(),
                pipeline: pipeline.name.to_string(),
                checksum: identity.sha256.clone(),
                bytes: identity.bytes,
                ts: Utc::now(),
                reason: None,
                tick: due.get(pipeline.name.as_str()).copied(),
            };
            if state.done.lock().expect("done poisoned").contains(&(entry.pipeline.clone(), identity.sha256.clone())) {
                let entry =
                    Entry { state: FileState::Duplicate, reason: Some("a file with this checksum was already ingested".into()), ..entry };
                self.record(state, std::slice::from_ref(&entry), true);
                tracing::info!(tenant = %tenant.id, file = %file.relative, "File already ingested (same checksum); not ingested again.");
                self.logs.tenant(tenant, PipelineKind::Batch).write(&serde_json::json!({
                    "type": "duplicate", "tenant": tenant.id, "file": file.relative, "checksum": identity.sha256,
                }));
                self.dispose(state, &entry, &file.path, pipeline.on_success);
                continue;
            }
            claims.push((entry, file, opened, identity));
        }
        let entries: Vec<Entry> = claims.iter().map(|(entry, ..)| entry.clone()).collect();
        if entries.is_empty() {
            return;
        }
        self.record(state, &entries, true);
        for (entry, file, opened, identity) in claims {
            let work = entry.work_path(&tenant.paths.work);
            if let Err(error) = std::fs::rename(&file.path, &work) {
                tracing::warn!(tenant = %tenant.id, file = %file.relative, %error, "A claimed file vanished from staging.");
                let gone = Entry {
                    state: FileState::Retried,
                    ts: Utc::now(),
                    reason: Some(format!("vanished before ingestion: {error}")),
                    ..entry
                };
                self.record(state, &[gone], false);
                continue;
            }
            self.enqueue(&tenant.id, Job { entry, file: opened, identity, queued_at: Instant::now() });
        }
    }
}

enum OpenFailure {
    /// Not a file the host ingests (a link, a special file, outside).
    Refused(crate::opened_file::OpenRefused),
    /// Could not be read now; the next scan tries again.
    Unreadable(String),
}

/// Opens a staged file once (never through a link, inside `within`) and
/// hashes it through that descriptor, off the async workers.
async fn open_and_hash(path: &Path, within: &Path) -> Result<(OpenedFile, FileIdentity), OpenFailure> {
    use crate::opened_file::OpenRefused;
    let opened = match OpenedFile::open(path, Some(within)) {
        Ok(opened) => opened,
        Err(OpenRefused::Io { source, .. }) => return Err(OpenFailure::Unreadable(source.to_string())),
        Err(refused) => return Err(OpenFailure::Refused(refused)),
    };
    let hashed = opened.clone();
    match tokio::task::spawn_blocking(move || hashed.identify()).await {
        Ok(Ok(identity)) => Ok((opened, identity)),
        Ok(Err(error)) => Err(OpenFailure::Unreadable(error.to_string())),
        Err(error) => Err(OpenFailure::Unreadable(error.to_string())),
    }
}
