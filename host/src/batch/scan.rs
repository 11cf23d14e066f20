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
use std::path::Path;
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
    /// to quarantine and what this run takes; then those files are claimed.
    async fn scan_tenant(self: &Arc<Self>, state: &TenantState, due: &DueCron) -> anyhow::Result<()> {
        let tenant = &state.tenant();
        let files = staging::list(&tenant.paths.staging)?;
        let min_age = Duration::from_millis(self.config.min_file_age_ms);
        let admission = admission::admit(&tenant.profile, files, SystemTime::now(), min_age, due);
        for (file, violation) in &admission.quarantine {
            self.quarantine(state, file, violation);
        }
        if !admission.take.is_empty() {
            self.claim(state, admission.take, due).await;
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
                self.record(state, std::slice::from_ref(&entry), true);
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
        self.record(state, &entries, true);
        for (entry, file, opened, identity) in claims {
            let work = entry.work_path(&tenant.paths.work);
            if let Err(error) = std::fs::rename(&file.path, &work) {
                tracing::warn!(tenant = %tenant.id, file = %file.relative, %error, "A claimed file vanished from staging.");
                self.record(state, &[entry.after(Step::Vanish, Some(format!("vanished before ingestion: {error}")))], false);
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
