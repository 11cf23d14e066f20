//! The work on claimed files: resuming what a stop interrupted, picking the
//! next file fairly, ingesting it through the invocation layer, and moving
//! it where its outcome says.

use super::lifecycle::{self, Recovery, Step};
use super::manager::{Inner, Job, TenantState};
use super::manifest::{self, Entry};
use super::schedule::{self, Next, Waiting};
use super::staging::{self, Reason};
use super::write_stop::{self, Then, Unrecorded, WriteStop};
use crate::config::{OnSuccess, PipelineKind, TenantId};
use crate::failure::FailureKind;
use crate::invocation::{FileInput, Input};
use crate::opened_file::{FileIdentity, OpenedFile};
use crate::telemetry::events;
use crate::telemetry::{IngestionRecord, Outcome};
use chrono::Utc;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Inner {
    /// Resumes what a previous run left: claimed or ingesting files are queued
    /// again, finished ones moved where they belong.
    pub(super) async fn recover(self: &Arc<Self>, tenant: &TenantId, entries: Vec<Entry>) {
        let state = &self.state(tenant);
        let work = &state.tenant().paths.work;
        let mut known = HashSet::new();
        for entry in entries {
            let path = entry.work_path(work);
            known.insert(path.clone());
            let recovery = lifecycle::recovery(entry.state, path.exists());
            let how = match recovery {
                Recovery::Resume => Some("resumed"),
                Recovery::Forget => Some("forgotten"),
                Recovery::FinishDone | Recovery::FinishFailed => Some("finished"),
                Recovery::Nothing => None,
            };
            if let Some(how) = how {
                events::IngestionRecovered { tenant, file: &entry.file, how }.emit(&self.logs.tenant(&state.tenant(), PipelineKind::Batch));
            }
            match recovery {
                Recovery::Resume => match reopen(&path, &state.tenant().paths.work, &entry).await {
                    Ok((file, identity)) => self.enqueue(tenant, Job { entry, file, identity, queued_at: Instant::now() }),
                    Err(message) => {
                        tracing::error!(tenant = %tenant, file = %entry.file, %message, "A claimed file cannot be resumed.");
                        self.fail(state, &entry, &path, "not-started", &message);
                    }
                },
                Recovery::Forget => {
                    // Stopped between the claim and the move: the file is still staged.
                    let forgotten = entry.after(Step::Vanish, Some("claim interrupted; the file is still in staging".into()));
                    let _ = self.record(state, &[forgotten], true);
                }
                Recovery::FinishDone => self.finish_done(state, &entry, &path),
                Recovery::FinishFailed => {
                    let reason = entry.reason.clone().unwrap_or_default();
                    self.finish_failed(state, &entry, &path, "interrupted", &reason);
                }
                Recovery::Nothing => {}
            }
        }
        // A file in work/ the manifest does not know goes back to staging.
        for file in staging::list(work).unwrap_or_default() {
            if !known.contains(&file.path) {
                let name = file.relative.split_once('-').map_or(file.relative.as_str(), |(_, n)| n).to_string();
                if let Err(error) = staging::move_into(&file.path, &state.tenant().paths.staging, &name, &manifest::new_id()) {
                    tracing::error!(tenant = %tenant, file = %file.path.display(), %error, "Cannot return an unknown work file to staging.");
                }
            }
        }
        self.wake.notify_one();
    }

    /// Records `entries` in the tenant's manifest; whether they were
    /// written. A failed write stops the tenant's claims, loudly, until the
    /// host can write there again ([`Inner::try_resume`]).
    pub(super) fn record(&self, state: &TenantState, entries: &[Entry], durable: bool) -> bool {
        match state.manifest.record(entries, durable) {
            Ok(()) => true,
            Err(error) => {
                let dir = state.manifest.path().parent().map(Path::to_path_buf).unwrap_or_default();
                self.stop_writes(state, "manifest", &format!("{}: {error}", state.manifest.path().display()), dir);
                false
            }
        }
    }

    /// Stops the tenant's claims after a failed write of `what` (`manifest`
    /// or `store`); `probe` is the directory tried until writes succeed again.
    pub(super) fn stop_writes(&self, state: &TenantState, what: &str, error: &str, probe: PathBuf) {
        let mut stop = state.stop.lock().expect("stop poisoned");
        if stop.is_none() {
            let stopped = WriteStop { what: what.to_string(), error: write_stop::without_paths(error), since: Utc::now(), probe };
            events::WritesStopped { tenant: &state.tenant().id, what, error }.emit(&self.logs.platform());
            *stop = Some(stopped);
        }
    }

    /// Whether the tenant may take files: when its writes had failed, once a
    /// probe write succeeds where they failed, the outcomes that waited are
    /// recorded and their files moved on, the files that failed for the store
    /// are staged again, and it takes files again.
    pub(super) fn try_resume(&self, state: &TenantState) -> bool {
        let Some(stop) = state.stop.lock().expect("stop poisoned").clone() else { return true };
        if write_stop::probe(&stop.probe).is_err() {
            return false;
        }
        let waiting = std::mem::take(&mut *state.unrecorded.lock().expect("unrecorded poisoned"));
        let mut recorded = 0;
        for (at, unrecorded) in waiting.iter().enumerate() {
            if let Err(error) = state.manifest.record(std::slice::from_ref(&unrecorded.entry), true) {
                tracing::warn!(tenant = %state.tenant().id, %error, "The manifest still cannot be written.");
                state.unrecorded.lock().expect("unrecorded poisoned").extend_from_slice(&waiting[at..]);
                return false;
            }
            recorded += 1;
            let entry = &unrecorded.entry;
            let path = entry.work_path(&state.tenant().paths.work);
            match (unrecorded.then, &unrecorded.failure) {
                (Then::Archive, _) => {
                    state.done.lock().expect("done poisoned").insert((entry.pipeline.clone(), entry.checksum.clone()));
                    self.finish_done(state, entry, &path);
                }
                (Then::Fail, failure) => {
                    let (kind, message) = failure.clone().unwrap_or_default();
                    self.finish_failed(state, entry, &path, &kind, &message);
                }
            }
        }
        *state.stop.lock().expect("stop poisoned") = None;
        let files = std::mem::take(&mut *state.failed_for_disk.lock().expect("failed_for_disk poisoned"));
        let restaged = if files.is_empty() {
            0
        } else {
            match super::status::retry(&state.tenant(), &state.manifest, &files, false) {
                Ok(moved) => moved.len(),
                Err(error) => {
                    tracing::error!(tenant = %state.tenant().id, error = %format!("{error:#}"), "Cannot stage again the files that failed for the store; `mysimbdp batch retry` does it.");
                    0
                }
            }
        };
        events::WritesResumed { tenant: &state.tenant().id, what: &stop.what, recorded, restaged }.emit(&self.logs.platform());
        true
    }

    pub(super) fn enqueue(&self, tenant: &TenantId, job: Job) {
        self.queues.lock().expect("queues poisoned").entry(tenant.clone()).or_default().push_back(job);
    }

    /// Archives (or deletes, per the profile) a file whose content is in the store.
    pub(super) fn dispose(&self, state: &TenantState, entry: &Entry, path: &Path, on_success: OnSuccess) {
        let result = match on_success {
            OnSuccess::Archive => staging::move_into(path, &state.tenant().paths.archive, &entry.file, &entry.id).map(drop),
            OnSuccess::Delete => std::fs::remove_file(path),
        };
        if let Err(error) = result {
            tracing::error!(tenant = %state.tenant().id, file = %entry.file, %error, "Cannot archive an ingested file.");
        }
    }

    pub(super) fn finish_done(&self, state: &TenantState, entry: &Entry, path: &Path) {
        let on_success = state.tenant().profile.batch_pipeline(&entry.pipeline).map_or(OnSuccess::Archive, |p| p.on_success);
        self.dispose(state, entry, path, on_success);
    }

    pub(super) fn finish_failed(&self, state: &TenantState, entry: &Entry, path: &Path, kind: &str, message: &str) {
        let tenant = &state.tenant();
        let reason = Reason {
            tenant: tenant.id.to_string(),
            file: entry.file.clone(),
            rule: kind.to_string(),
            limit: None,
            actual: None,
            message: message.to_string(),
            at: Utc::now(),
            id: Some(entry.id.clone()),
            pipeline: Some(entry.pipeline.clone()),
        };
        if let Err(error) = staging::move_with_reason(path, &tenant.paths.failed, &entry.id, &reason) {
            tracing::error!(tenant = %tenant.id, file = %entry.file, %error, "Cannot move a failed file to failed/.");
        }
    }

    /// The next job: highest priority plus waiting time, among tenants below
    /// their concurrency cap.
    pub(super) fn pick(&self) -> Option<(TenantId, Job)> {
        let aging = Duration::from_millis(self.config.priority_aging_ms);
        let mut queues = self.queues.lock().expect("queues poisoned");
        let mut waiting: Vec<Waiting<TenantId>> = Vec::new();
        for (id, state) in self.states() {
            if self.invoker.suspended().is_suspended(&id) {
                // Its claimed files wait in work/ until it is resumed.
                continue;
            }
            let agreement = state.tenant().profile.agreement.clone();
            let candidate = |waited, queued| Waiting {
                tenant: id.clone(),
                priority: agreement.priority,
                running: state.running.load(Ordering::Acquire),
                cap: agreement.max_concurrent_ingestions,
                waited,
                queued,
            };
            match queues.get(&id).and_then(|queue| queue.front()) {
                Some(head) => {
                    let since = schedule::waited_since(head.queued_at, *state.last_served.lock().expect("poisoned"));
                    waiting.push(candidate(since.elapsed(), true));
                }
                // Files being claimed take part: their tenant keeps its turn.
                None if !state.claiming.lock().expect("claiming poisoned").is_empty() => waiting.push(candidate(Duration::ZERO, false)),
                None => {}
            }
        }
        let Next::Run(id) = schedule::pick(&waiting, aging)? else { return None };
        let job = queues.get_mut(&id)?.pop_front()?;
        let state = &self.state(&id);
        state.running.fetch_add(1, Ordering::AcqRel);
        *state.last_served.lock().expect("poisoned") = Some(Instant::now());
        Some((id, job))
    }

    /// Ingests one claimed file and moves it where its outcome says.
    pub(super) async fn work(&self, tenant_id: &TenantId, job: Job) {
        let state = &self.state(tenant_id);
        let tenant = &state.tenant();
        let entry = job.entry.after(Step::Start, None);
        let path = entry.work_path(&tenant.paths.work);
        // Not durable: after a stop the claim alone resumes the file. A failed
        // write stops further claims, but this file goes on.
        let _ = self.record(state, std::slice::from_ref(&entry), false);
        let outcome: Result<IngestionRecord, String> = match tenant.profile.batch_pipeline(&entry.pipeline) {
            None => Err(format!("the profile no longer declares batch pipeline `{}`", entry.pipeline)),
            Some(spec) => {
                let name = Path::new(&entry.file).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let input = FileInput { identity: Some(job.identity), ..FileInput::new(job.file, &name) };
                let invoked = async {
                    let loaded = self.invoker.load_batch(tenant, spec).await?;
                    self.invoker.invoke(&loaded, Input::File(input)).await
                };
                invoked.await.map(|invoked| invoked.record).map_err(|e| format!("{e:#}"))
            }
        };
        match outcome {
            Ok(record) if record.outcome == Outcome::Ok => {
                let done = entry.after(Step::Succeed, None);
                if self.record(state, std::slice::from_ref(&done), true) {
                    state.done.lock().expect("done poisoned").insert((entry.pipeline.clone(), entry.checksum.clone()));
                    self.finish_done(state, &entry, &path);
                } else {
                    // The file stays in work/ until its outcome is on disk.
                    state.unrecorded.lock().expect("unrecorded poisoned").push(Unrecorded {
                        entry: done,
                        then: Then::Archive,
                        failure: None,
                    });
                }
            }
            Ok(record) => {
                let kind = record.failure.map_or("failed", |k| k.as_str());
                let message = record.reason.clone().unwrap_or_default();
                if record.failure == Some(FailureKind::SinkError)
                    && write_stop::is_disk_write_failure(&message)
                    && let Some(store_dir) = &self.store_dir
                {
                    // The store could not write: stop taking files, and stage this one again once it can.
                    self.stop_writes(state, "store", &message, store_dir.clone());
                    state.failed_for_disk.lock().expect("failed_for_disk poisoned").push(entry.file.clone());
                }
                self.fail(state, &entry, &path, kind, &message);
            }
            Err(message) => {
                tracing::error!(tenant = %tenant.id, file = %entry.file, %message, "Ingestion could not start.");
                self.fail(state, &entry, &path, "not-started", &message);
            }
        }
    }

    /// Records the failure of `entry` and moves its file to `failed/`, or,
    /// when the manifest cannot be written, keeps both waiting.
    fn fail(&self, state: &TenantState, entry: &Entry, path: &Path, kind: &str, message: &str) {
        let failed = entry.after(Step::Fail, Some(format!("{kind}: {message}")));
        if self.record(state, std::slice::from_ref(&failed), true) {
            self.finish_failed(state, entry, path, kind, message);
        } else {
            let failure = Some((kind.to_string(), message.to_string()));
            state.unrecorded.lock().expect("unrecorded poisoned").push(Unrecorded { entry: failed, then: Then::Fail, failure });
        }
    }
}

/// Opens a claimed file again after a restart: the claim's size and
/// checksum must still be what the file holds (read up to that size).
async fn reopen(path: &Path, work: &Path, entry: &Entry) -> Result<(OpenedFile, FileIdentity), String> {
    let opened = OpenedFile::open(path, Some(work)).map_err(|e| e.to_string())?;
    let opened = opened.limited_to(entry.bytes).map_err(|e| e.to_string())?;
    let hashed = opened.clone();
    let identity = tokio::task::spawn_blocking(move || hashed.identify()).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    if identity.sha256 != entry.checksum {
        return Err(format!(
            "{} changed after it was claimed (checksum {} now, {} when claimed)",
            path.display(),
            &identity.sha256[..12],
            &entry.checksum[..entry.checksum.len().min(12)]
        ));
    }
    Ok((opened, identity))
}
