//! One scan of a tenant's staging directory: the files it may take now
//! (per-file rules, the staging quota, the run limit, the cron ticks due),
//! quarantining those that break a rule, and the claim of the rest.

use super::constraints::{Violation, check_file};
use super::lifecycle::{self, Step};
use super::manager::{DueCron, Inner, Job, TenantState};
use super::manifest::{self, Entry};
use super::staging::{self, StagedFile};
use super::{admission, schedule};
use crate::config::{PipelineKind, TenantId};
use crate::opened_file::{FileIdentity, OpenedFile};
use crate::telemetry::events;
use chrono::Utc;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

impl Inner {
    /// Cron pipelines whose tick has come, per tenant, with that tick
    /// ([`schedule::due_ticks`]); advances their ticks.
    pub(super) fn due_cron(&self, now: chrono::DateTime<Utc>) -> HashMap<TenantId, DueCron> {
        let mut due = HashMap::new();
        for (id, state) in self.states() {
            let ticks = schedule::due_ticks(&state.tenant().profile, &mut state.cron_next.lock().expect("cron poisoned"), now);
            if !ticks.is_empty() {
                due.insert(id, ticks);
            }
        }
        due
    }

    pub(super) fn next_cron(&self) -> Option<chrono::DateTime<Utc>> {
        self.states().into_iter().flat_map(|(_, s)| s.cron_next.lock().expect("cron poisoned").values().copied().collect::<Vec<_>>()).min()
    }

    /// Scans every tenant under the scan lock (listing, deciding,
    /// quarantining), then claims what each takes in a task of its own,
    /// outside the lock: hashing one tenant's large files delays neither
    /// another tenant's claims nor the next scan. Returns the claim tasks.
    pub(super) async fn scan_all(self: &Arc<Self>, due_cron: &HashMap<TenantId, DueCron>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut claims = Vec::new();
        {
            let _one_scan_at_a_time = self.scan_lock.lock().await;
            let no_cron = DueCron::new();
            for (id, state) in self.states() {
                let cron = due_cron.get(&id).unwrap_or(&no_cron);
                match self.scan_tenant(&state, cron) {
                    Ok(take) if !take.is_empty() => {
                        let (inner, cron) = (self.clone(), cron.clone());
                        claims.push(tokio::spawn(async move {
                            inner.claim(&state, take, &cron).await;
                            inner.publish_load();
                            inner.wake.notify_one();
                        }));
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(tenant = %id, error = %format!("{error:#}"), "Scanning the staging directory failed."),
                }
            }
        }
        self.publish_load();
        self.wake.notify_one();
        claims
    }

    fn quarantine(&self, state: &TenantState, file: &StagedFile, violation: &Violation) {
        let tenant = &state.tenant();
        match staging::quarantine(tenant, file, violation) {
            Ok(moved) => events::Quarantined {
                tenant: &tenant.id,
                file: &file.relative,
                rule: &violation.rule,
                limit: &violation.limit,
                actual: &violation.actual,
                message: &violation.message(),
                moved_to: &moved,
            }
            .emit(&self.logs.tenant(tenant, PipelineKind::Batch)),
            Err(error) => tracing::error!(tenant = %tenant.id, file = %file.relative, %error, "Cannot quarantine a file."),
        }
    }

    /// One scan of a tenant's staging directory: the admission decides what
    /// to quarantine and what this run takes (files a claim still works on
    /// count towards the quota but are not taken again); returns the files
    /// to claim, marked as being claimed.
    fn scan_tenant(self: &Arc<Self>, state: &TenantState, due: &DueCron) -> anyhow::Result<Vec<StagedFile>> {
        if !self.try_resume(state) {
            // Writes are failing: files wait in staging until a probe succeeds.
            return Ok(Vec::new());
        }
        let tenant = &state.tenant();
        if self.invoker.suspended().is_suspended(&tenant.id) {
            // Suspended by the operator: its files wait in staging, unchecked.
            return Ok(Vec::new());
        }
        let files = staging::list(&tenant.paths.staging)?;
        let min_age = Duration::from_millis(self.config.min_file_age_ms);
        let mut claiming = state.claiming.lock().expect("claiming poisoned");
        let admission = admission::admit(&tenant.profile, files, SystemTime::now(), min_age, due, &claiming);
        for (file, violation) in &admission.quarantine {
            self.quarantine(state, file, violation);
        }
        claiming.extend(admission.take.iter().map(|f| f.path.clone()));
        Ok(admission.take)
    }

    /// Records the claims durably, each with the cron tick that took it, then
    /// moves the files to `work/` and queues them.
    async fn claim(self: &Arc<Self>, state: &TenantState, files: Vec<StagedFile>, due: &DueCron) {
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        self.claim_files(state, files, due).await;
        let mut claiming = state.claiming.lock().expect("claiming poisoned");
        for path in paths {
            claiming.remove(&path);
        }
    }

    async fn claim_files(self: &Arc<Self>, state: &TenantState, files: Vec<StagedFile>, due: &DueCron) {
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
                state: lifecycle::after(None, Step::Claim).expect("a file not in the manifest can be claimed"),
                file: file.relative.clone(),
                pipeline: pipeline.name.to_string(),
                checksum: identity.sha256.clone(),
                bytes: identity.bytes,
                ts: Utc::now(),
                reason: None,
                tick: due.get(pipeline.name.as_str()).copied(),
            };
            if state.done.lock().expect("done poisoned").contains(&(entry.pipeline.clone(), identity.sha256.clone())) {
                let state_after = lifecycle::after(None, Step::Duplicate).expect("a file not in the manifest can be a duplicate");
                let entry = Entry { state: state_after, reason: Some("a file with this checksum was already ingested".into()), ..entry };
                if !self.record(state, std::slice::from_ref(&entry), true) {
                    // Not recorded: it stays staged, and is judged again once writes succeed.
                    return;
                }
                let duplicate = events::Duplicate { tenant: &tenant.id, file: &file.relative, checksum: &identity.sha256 };
                duplicate.emit(&self.logs.tenant(tenant, PipelineKind::Batch));
                self.dispose(state, &entry, &file.path, pipeline.on_success);
                continue;
            }
            claims.push((entry, file, opened, identity));
        }
        let entries: Vec<Entry> = claims.iter().map(|(entry, ..)| entry.clone()).collect();
        if entries.is_empty() {
            return;
        }
        if !self.record(state, &entries, true) {
            // Not recorded: the files stay staged, and are claimed once writes succeed.
            return;
        }
        for (entry, file, opened, identity) in claims {
            let work = entry.work_path(&tenant.paths.work);
            if let Err(error) = std::fs::rename(&file.path, &work) {
                tracing::warn!(tenant = %tenant.id, file = %file.relative, %error, "A claimed file vanished from staging.");
                let _ = self.record(state, &[entry.after(Step::Vanish, Some(format!("vanished before ingestion: {error}")))], false);
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
